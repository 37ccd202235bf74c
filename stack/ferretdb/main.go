// Command ferretdb runs FerretDB 1.x (a MongoDB-wire database on SQLite) for
// Scaleshop's local stack. It embeds the upstream ferretdb package rather than
// building upstream's cmd/ferretdb, whose build needs a git-ignored version file.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteDir := flag.String("sqlite-dir", "", "absolute path of the folder that holds the SQLite databases")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	if *sqliteDir == "" {
		slog.Error("--sqlite-dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*sqliteDir, 0o755); err != nil {
		slog.Error("cannot create data folder", "error", err)
		os.Exit(1)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		slog.Error("bad --log-level", "error", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *sqliteDir + "/",
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Warn("FerretDB listening", "addr", *listenAddr, "data", *sqliteDir)
	db.Run(ctx)
}
