"""The console's application factory: `create_app(config)` with its dependencies passed in, and
`create_app_from_env()`, the local stack's (its run folder, Prometheus and token from the Layout)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from services.shared.errors import register_error_handlers

from . import prometheus, views
from .actions import Console
from .controller import Controller

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ConsoleConfig:
    controller: Controller
    prometheus_url: str
    token: str
    audit_log: Path
    console: Console | None = None

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ValueError("the operator token must be at least 16 characters")
        if self.console is None:
            self.console = Console(self.controller, self.audit_log)


def create_app(config: ConsoleConfig) -> Flask:
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/console")
    app.config["CONSOLE"] = config
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for blueprint in (views.pages, views.state, views.actions, prometheus.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app


def create_app_from_env() -> Flask:
    """The local stack's console (SCALESHOP_RUN_DIR, SCALESHOP_PORT_OFFSET select the stack)."""
    from stack.control import console_token
    from stack.layout import Layout

    from .controller import LocalController

    layout = Layout.from_env()
    controller = LocalController(layout, log=lambda msg: print(f"[console] {msg}", flush=True))  # to its log file
    return create_app(ConsoleConfig(controller=controller, prometheus_url=layout.prometheus_url,
                                    token=console_token(layout), audit_log=layout.log_dir / "console-audit.jsonl"))
