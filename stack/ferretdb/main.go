// Command ferretdb runs FerretDB 1.x (a MongoDB-wire database on SQLite, or on
// PostgreSQL with --postgresql-url) for Scaleshop: the previous local database, kept to
// migrate old data folders and for the database benchmark. It embeds the upstream
// ferretdb package rather than building upstream's cmd/ferretdb, whose build needs a
// git-ignored version file.
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
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL connection string (the postgresql handler)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	if (*sqliteDir == "") == (*postgresqlURL == "") {
		slog.Error("give exactly one of --sqlite-dir and --postgresql-url")
		os.Exit(2)
	}
	handler, sqliteURL := "postgresql", ""
	if *sqliteDir != "" {
		if err := os.MkdirAll(*sqliteDir, 0o755); err != nil {
			slog.Error("cannot create data folder", "error", err)
			os.Exit(1)
		}
		handler, sqliteURL = "sqlite", "file:"+*sqliteDir+"/"
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		slog.Error("bad --log-level", "error", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	db, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:        logger,
		Handler:       handler,
		SQLiteURL:     sqliteURL,
		PostgreSQLURL: *postgresqlURL,
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Warn("FerretDB listening", "addr", *listenAddr, "handler", handler)
	db.Run(ctx)
}
