"""The console's application factory: `create_app(config)` with its dependencies passed in;
`create_app_from_env()`, the local stack's (its run folder, Prometheus and token from the Layout);
`create_app_for_kubernetes()`, a release's (its settings from the pod's environment, set by the
chart: CONSOLE_TOKEN, PROMETHEUS_URL and services/console/kube_controller.py's)."""
from __future__ import annotations

import os
from collections.abc import Mapping
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


def create_app_for_kubernetes(environ: Mapping[str, str] = os.environ) -> Flask:
    """A release's console (CONSOLE_PLATFORM=kubernetes): the audit lines go to CONSOLE_AUDIT_LOG,
    by default the container's output (`kubectl logs`)."""
    from .kube_controller import KubernetesController

    controller = KubernetesController.from_env(environ, log=lambda msg: print(f"[console] {msg}", flush=True))
    return create_app(ConsoleConfig(controller=controller, prometheus_url=environ["PROMETHEUS_URL"],
                                    token=environ["CONSOLE_TOKEN"],
                                    audit_log=Path(environ.get("CONSOLE_AUDIT_LOG", "/dev/stdout"))))
