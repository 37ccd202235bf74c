"""Runs a service's Flask app under gunicorn: `python -m services.<name>` everywhere.

The same entry point serves the local stack and the container image. Settings come
from the environment; a bad one stops the process with a clear message (exit 2).
Gunicorn runs `GUNICORN_WORKERS` processes of `GUNICORN_THREADS` threads; SIGTERM
drains in-flight requests for up to `GUNICORN_GRACEFUL_TIMEOUT` seconds.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .config import ConfigError, Settings, load_settings


def _prepare_metrics_dir(replica_id: str) -> None:
    """Give this replica's processes a fresh shared folder for Prometheus samples."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
        tempfile.gettempdir(), f"scaleshop-metrics-{replica_id}-{os.getpid()}"
    )
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _logconfig(level: str) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "services.shared.logs.json_formatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": []},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


class _LoggerWithoutAccessLog(Logger):
    """Gunicorn's logger without its access log: each app logs its own requests, with the request
    id (services/shared/app.py). With a logging configuration set, gunicorn formats every
    request's access line only to drop it: 5 % of a cached product page's CPU in a py-spy profile."""

    def access(self, resp, req, environ, request_time) -> None:
        return None


class _Gunicorn(BaseApplication):
    def __init__(self, factory_path: str, settings: Settings):
        self.factory_path, self.settings = factory_path, settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        from .metrics import mark_process_dead

        options = {
            "bind": f"{s.bind_host}:{s.port}",
            "workers": s.gunicorn_workers,
            "threads": s.gunicorn_threads,
            "worker_class": "gthread",
            "timeout": s.gunicorn_timeout,
            "graceful_timeout": s.gunicorn_graceful_timeout,
            "keepalive": s.gunicorn_keepalive,
            # As large as nginx's buffers, so an over-long request is refused by the gateway (JSON), not here.
            "limit_request_line": 8190,
            "limit_request_field_size": 8190,
            "proc_name": f"scaleshop-{s.replica_id}",
            "logconfig_dict": _logconfig(s.log_level),
            "accesslog": None,
            "logger_class": _LoggerWithoutAccessLog,
            "child_exit": lambda _server, worker: mark_process_dead(worker.pid),
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        }
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        # Imported here, in the worker, after PROMETHEUS_MULTIPROC_DIR is set.
        module_name, _, attr = self.factory_path.partition(":")
        factory: Callable[[Settings], Flask] = getattr(importlib.import_module(module_name), attr)
        return factory(self.settings)


def serve(factory_path: str) -> None:
    """Run the app that `factory_path` ("module:create_app") builds, under gunicorn, until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    _prepare_metrics_dir(settings.replica_id)
    _Gunicorn(factory_path, settings).run()
