"""A bare Flask app under the services' own gunicorn launcher (same workers, threads, timeouts).

`make bench` compares the catalog's cached product page with it (loadgen/bench/hit_path.py):
- `GET /bare`: a route that answers a small JSON object, what Flask + gunicorn cost by themselves;
- `GET /bare/memcached`: the least any cache hit does, one memcached multi-get of a page-sized
  entry and one generation through the services' own cache client, its body sent as stored.
Neither has our request hooks (metrics, logging, request id, rate limit). Started as
`python -m loadgen.bench.bare_app` with a catalog replica's environment.
"""
from __future__ import annotations

from flask import Flask, Response, jsonify

from services.shared.cache import Cache
from services.shared.config import Settings, load_settings

ENTRY_KEY = "bench:bare:entry"
GENERATION_KEY = "bench:bare:generation"
BODY = b'{"product":' + b'"x"' * 1100 + b"}"  # about the size of a product page with 10 reviews


def create_app(settings: Settings | None = None) -> Flask:
    app = Flask("bare")
    cache = Cache(settings or load_settings())
    cache.set(GENERATION_KEY, 1, ttl=0)
    cache.set(ENTRY_KEY, {"body": BODY, "deps": {GENERATION_KEY: 1}}, ttl=0)

    @app.get("/bare")
    def bare():
        return jsonify({"status": "ok", "served_by": "bare"})

    @app.get("/bare/memcached")
    def bare_memcached():
        found = cache.get_many([ENTRY_KEY, GENERATION_KEY]) or {}
        entry = found.get(ENTRY_KEY)
        if not isinstance(entry, dict):
            return jsonify({"error": "the entry is not in memcached"}), 503
        return Response(entry["body"], mimetype="application/json")

    return app


if __name__ == "__main__":
    from services.shared.server import serve

    serve("loadgen.bench.bare_app:create_app")
