"""`python -m stack`: the local stack's CLI, shaped like kubectl for a machine without a cluster.

  up [--cpu-limit CPUS] [SERVICE=N ...]   start what is missing, print the URLs (gateway, shop, Prometheus, console)
  down                                    stop everything by pid (data is kept)
  status                                  every process: port, pid, state, health, CPU limit
  scale SERVICE=N [...]                   start or drain replicas; the gateway reloads
  logs [NAME] [-n LINES] [-f]             a replica's, a service's or a server's log
"""
from __future__ import annotations

import argparse
import sys
import time

from . import migrate, servers
from .control import Stack, console_token
from .layout import MAX_REPLICAS, SERVICES, Layout
from .procs import StackError


def _replica_counts(items: list[str]) -> dict[str, int]:
    counts = {}
    for item in items:
        service, sep, number = item.partition("=")
        if not sep or service not in SERVICES or not number.isdigit():
            raise StackError(f"'{item}' is not SERVICE=N (SERVICE one of {', '.join(SERVICES)})")
        if int(number) > MAX_REPLICAS:
            raise StackError(f"{service}: at most {MAX_REPLICAS} replicas")
        counts[service] = int(number)
    return counts


def _print_status(stack: Stack) -> None:
    rows = stack.status()
    header = ("NAME", "PORT", "PID", "STATE", "HEALTH", "CPU LIMIT")
    table = [header] + [
        (r["name"], str(r["port"] or "-"), str(r["pid"] or "-"), r["state"], r["health"], r["cpu_limit"]) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _print_welcome(layout: Layout) -> None:
    url = layout.gateway_url
    print(f"""
Scaleshop is up. Gateway: {url}
The shop: {url}/ (open it in a browser; "Under the hood" shows what each API call cost)
(The services reach the user service at {layout.user_service_url}, the gateway's internal listener.)
Prometheus: {layout.prometheus_url} (every replica, the workers and the gateway, every {servers.SCRAPE_INTERVAL_S} s)
Lab console: {layout.console_url}  operator token: {console_token(layout)}
  (watch it live, scale, switch the cache, run a load, inject faults; README "Watch it live")

Try:
  curl -s -X POST {url}/v1/users -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}}'
  curl -s -X POST {url}/v1/sessions -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery"}}'
  curl -si {url}/v1/users/<id>          # X-Served-By shows which replica answered

  make status                 every replica, its port, pid and health
  make scale SERVICE=user N=4 more replicas, no failed request
  make logs SERVICE=user-1    one replica's JSON logs
  curl -s '{layout.prometheus_url}/api/v1/query?query=up'   what Prometheus scrapes, per service and replica
  make down                   stop everything (data is kept for the next make up)
""")


def _logs(layout: Layout, name: str | None, lines: int, follow: bool) -> None:
    files = sorted(layout.log_dir.glob("*.log"))
    if name:
        files = [f for f in files if f.stem == name or f.stem.rsplit("-", 1)[0] == name]
        if not files:
            known = ", ".join(sorted(f.stem for f in layout.log_dir.glob("*.log")))
            raise StackError(f"no log for '{name}' (known: {known or 'none yet'})")
    handles = []
    for path in files:
        text = path.read_text(errors="replace").splitlines()[-lines:]
        for line in text:
            print(f"{path.stem:<12} {line}" if len(files) > 1 else line)
        handles.append((path, path.open(errors="replace")))
        handles[-1][1].seek(0, 2)
    while follow:
        for path, handle in handles:
            for line in handle:
                print(f"{path.stem:<12} {line.rstrip()}" if len(files) > 1 else line.rstrip(), flush=True)
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description="Scaleshop's local stack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack (what is running is kept)")
    up.add_argument("--cpu-limit", type=float, metavar="CPUS",
                    help="CPU limit of each replica, like resources.limits.cpu (e.g. 0.25)")
    up.add_argument("replicas", nargs="*", metavar="SERVICE=N")
    sub.add_parser("down", help="stop everything by pid; data is kept")
    sub.add_parser("status", help="every process, its port, pid, state, health and CPU limit")
    sub.add_parser("migrate",
                   help="copy a data folder written by FerretDB to the current database (make up does it too)")
    scale = sub.add_parser("scale", help="start or drain replicas")
    scale.add_argument("replicas", nargs="+", metavar="SERVICE=N")
    logs = sub.add_parser("logs", help="print logs")
    logs.add_argument("name", nargs="?",
                      help="replica (user-1), service (user) or server (kafka, gateway, prometheus, ...)")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)

    try:
        stack = Stack(log=lambda msg: print(f"[stack] {msg}", flush=True))
        if args.command == "up":
            if args.cpu_limit is not None and not 0.01 <= args.cpu_limit <= 64:
                raise StackError("--cpu-limit must be between 0.01 and 64")
            stack.up(_replica_counts(args.replicas), cpu_limit=args.cpu_limit)
            _print_status(stack)
            _print_welcome(stack.layout)
        elif args.command == "down":
            stack.down()
            print("[stack] stopped; data kept in", stack.layout.data_dir)
        elif args.command == "status":
            _print_status(stack)
        elif args.command == "migrate":
            if stack.server_alive("database"):
                raise StackError("the database is running: `make down` first")
            if migrate.needs_migration(stack.layout):
                migrate.migrate(stack.layout, stack.log)
            else:
                print("[stack] nothing to migrate in", servers.database_dir(stack.layout))
        elif args.command == "scale":
            for service, count in _replica_counts(args.replicas).items():
                stack.scale(service, count)
            _print_status(stack)
        elif args.command == "logs":
            _logs(stack.layout, args.name, args.lines, args.follow)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
