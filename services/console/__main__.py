"""`python -m services.console`: the console under gunicorn (one process, threads: actions run one
at a time and the Console keeps its marks in memory) on $CONSOLE_BIND:$PORT (127.0.0.1:8083).

CONSOLE_PLATFORM says what it drives: `local` (the default: the local stack) or `kubernetes`
(a release, from inside its pod; charts/scaleshop/templates/console.yaml)."""
import os
import sys

from gunicorn.app.wsgiapp import run

FACTORIES = {"local": "create_app_from_env()", "kubernetes": "create_app_for_kubernetes()"}

platform = os.environ.get("CONSOLE_PLATFORM", "local")
if platform not in FACTORIES:
    sys.exit(f"CONSOLE_PLATFORM must be one of {', '.join(FACTORIES)}, not {platform!r}")
sys.argv = ["gunicorn", "--workers", "1", "--threads", "8", "--timeout", "900", "--graceful-timeout", "5",
            "--bind", f"{os.environ.get('CONSOLE_BIND', '127.0.0.1')}:{int(os.environ.get('PORT', '8083'))}",
            f"services.console.app:{FACTORIES[platform]}"]
run()
