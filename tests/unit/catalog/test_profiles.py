"""The catalog's batch profile call (services/catalog/profiles.py): what it sends the user service,
recorded by a stand-in for its HTTP session (no server)."""
from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
import requests

from services.catalog import profiles
from services.shared.errors import DependencyUnavailable
from services.shared.service_identity import HEADER, verify_service_token
from tests.unit.conftest import AUTH_SECRET


class FakeResponse:
    def __init__(self, status_code: int, items: list[dict]):
        self.status_code = status_code
        self._items = items

    def json(self) -> dict:
        return {"items": self._items}


class RecordingSession:
    """requests.Session's `get`, answering each known id's profile (or `status`, or a dropped connection)."""

    def __init__(self, status: int = 200, fail: bool = False):
        self.calls: list[dict] = []
        self.status, self.fail = status, fail

    def get(self, url: str, params: dict, headers: dict, timeout: float) -> FakeResponse:
        self.calls.append({"url": url, "ids": params["ids"].split(","), "headers": headers, "timeout": timeout})
        if self.fail:
            raise requests.ConnectionError("refused")
        return FakeResponse(self.status, [{"id": i, "display_name": f"User {i}"} for i in params["ids"].split(",")])


@pytest.fixture
def session(monkeypatch) -> RecordingSession:
    recording = RecordingSession()
    monkeypatch.setattr(profiles, "_session", lambda: recording)
    return recording


def test_every_call_carries_the_catalogs_service_identity_and_the_request_id(session):
    found = profiles.fetch_profiles("http://user.internal:8080/", ["u1", "u2", "u1"], "req-1", AUTH_SECRET)
    assert set(found) == {"u1", "u2"}
    (call,) = session.calls
    assert call["url"] == "http://user.internal:8080/v1/users" and call["ids"] == ["u1", "u2"]
    assert call["headers"]["X-Request-ID"] == "req-1"
    assert verify_service_token(AUTH_SECRET, call["headers"][HEADER]) == "catalog"


def test_the_token_is_reused_across_calls_and_chunks(session):
    ids = [f"u{i}" for i in range(profiles.MAX_IDS_PER_CALL + 1)]
    profiles.fetch_profiles("http://user", ids, "req-2", AUTH_SECRET)
    profiles.fetch_profiles("http://user", ["u1"], "req-3", AUTH_SECRET)
    assert [len(call["ids"]) for call in session.calls] == [profiles.MAX_IDS_PER_CALL, 1, 1]
    assert len({call["headers"][HEADER] for call in session.calls}) == 1


@pytest.mark.parametrize("recording", [RecordingSession(status=429), RecordingSession(fail=True)])
def test_a_user_service_that_refuses_or_is_down_is_a_dependency_unavailable(monkeypatch, recording):
    monkeypatch.setattr(profiles, "_session", lambda: recording)
    with pytest.raises(DependencyUnavailable):
        profiles.fetch_profiles("http://user", ["u1"], "req-4", AUTH_SECRET)


class DropsFirstConnection(http.server.BaseHTTPRequestHandler):
    """Answers `/v1/users` like the user service, except that the first request's connection is closed unanswered
    (what a client sees when a proxy drops a pooled keep-alive connection while it reloads)."""

    dropped = 0
    answered = 0

    def do_GET(self):
        cls = type(self)
        if cls.dropped == 0:
            cls.dropped += 1
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        cls.answered += 1
        ids = self.path.split("ids=", 1)[1].split("%2C")
        body = json.dumps({"items": [{"id": i, "display_name": i} for i in ids]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_connection_dropped_under_the_call_is_retried_not_reported_as_an_outage():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DropsFirstConnection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        found = profiles.fetch_profiles(f"http://127.0.0.1:{server.server_port}", ["u1", "u2"], "req-5", AUTH_SECRET)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert set(found) == {"u1", "u2"}
    assert (DropsFirstConnection.dropped, DropsFirstConnection.answered) == (1, 1)
