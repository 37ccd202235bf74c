"""A bare Flask route under the services' own gunicorn launcher (same workers, threads, timeouts).

`make bench` compares the catalog's cached product page with this: what our middleware,
metrics, logging and the memcached look-up cost on top of Flask + gunicorn themselves.
Started as `python -m loadgen.bench.bare_app` with a replica's environment.
"""
from __future__ import annotations

from flask import Flask, jsonify


def create_app(settings=None) -> Flask:
    app = Flask("bare")

    @app.get("/bare")
    def bare():
        return jsonify({"status": "ok", "served_by": "bare"})

    return app


if __name__ == "__main__":
    from services.shared.server import serve

    serve("loadgen.bench.bare_app:create_app")
