"""The console's own routes: the page (static files), the state, the marks, and the actions."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request, send_from_directory

from services.shared.api import parse_json_object

from .actions import Console
from .auth import operator_only

pages = Blueprint("pages", __name__)
state = Blueprint("state", __name__)
actions = Blueprint("actions", __name__)


def _console() -> Console:
    return current_app.config["CONSOLE"].console


@pages.get("/console/")
def index():
    return send_from_directory(current_app.static_folder or "", "index.html")


@state.get("/console/api/state")
def get_state():
    return jsonify(_console().state())


@state.get("/console/api/marks")
def get_marks():
    since = request.args.get("since", type=float, default=0.0)
    return jsonify({"marks": [m for m in _console().marks if m["time"] >= since]})


@actions.post("/console/api/actions/scale")
@operator_only
def scale():
    return jsonify(_console().scale(parse_json_object())), 202


@actions.post("/console/api/actions/cache")
@operator_only
def cache():
    return jsonify(_console().cache(parse_json_object())), 202


@actions.post("/console/api/actions/load")
@operator_only
def load_start():
    return jsonify(_console().start_load(parse_json_object())), 201


@actions.delete("/console/api/actions/load")
@operator_only
def load_stop():
    return jsonify(_console().stop_load())


@actions.post("/console/api/actions/kill")
@operator_only
def kill():
    return jsonify(_console().kill(parse_json_object())), 202


@actions.post("/console/api/actions/pause-memcached")
@operator_only
def pause_memcached():
    return jsonify(_console().pause_memcached(parse_json_object())), 202


@actions.post("/console/api/actions/stop-kafka")
@operator_only
def stop_kafka():
    return jsonify(_console().stop_kafka(parse_json_object())), 202
