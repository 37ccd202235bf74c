"""`python -m services.console`: the local stack's console under gunicorn (one process, threads:
actions run one at a time and the Console keeps its marks in memory), on 127.0.0.1:$PORT."""
import os
import sys

from gunicorn.app.wsgiapp import run

sys.argv = ["gunicorn", "--workers", "1", "--threads", "8", "--timeout", "900", "--graceful-timeout", "5",
            "--bind", f"127.0.0.1:{int(os.environ.get('PORT', '8083'))}",
            "services.console.app:create_app_from_env()"]
run()
