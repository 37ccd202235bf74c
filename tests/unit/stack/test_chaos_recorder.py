"""The chaos recorder's rule for a response cut off mid-body (stack/chaos.py, Recorder.call).

A small HTTP server on loopback sends a response's headers (naming a replica in X-Served-By, as the
services do) and closes the connection before the body, as a replica SIGKILLed between gunicorn's
header and body writes does. Such a response is expected only when that replica was killed while the
request was in flight; otherwise it is a violation.
"""
from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from stack.chaos import READ, WRITE, Recorder


class CutsTheBody(http.server.BaseHTTPRequestHandler):
    """Headers of a 100-byte JSON body from `user-1`, then the connection closed; `between` runs in between."""

    between: Callable[[], None] = staticmethod(lambda: None)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.send_header("X-Served-By", "user-1")
        self.end_headers()
        self.wfile.flush()
        type(self).between()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cutting_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutsTheBody)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/users/u1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        CutsTheBody.between = staticmethod(lambda: None)


@pytest.mark.parametrize("klass", [READ, WRITE])
def test_a_response_cut_off_by_the_kill_of_the_replica_sending_it_is_counted_not_a_violation(cutting_server, klass):
    """Counted, and not confirmed (None): a write's caller then reads it back, as after a 503."""
    recorder = Recorder()
    CutsTheBody.between = staticmethod(lambda: recorder.mark_killed("user-1"))
    assert recorder.call(requests.Session(), "user_profile", klass, "GET", cutting_server, (200,)) is None
    assert recorder.violations == []
    assert recorder.counts[("user_profile", "cut_by_sigkill")] == 1


@pytest.mark.parametrize("killed", [None, "user-2"], ids=["nobody killed", "another replica killed"])
def test_any_other_read_cut_off_through_the_gateway_is_a_violation(cutting_server, killed):
    recorder = Recorder()
    if killed:
        CutsTheBody.between = staticmethod(lambda: recorder.mark_killed(killed))
    assert recorder.call(requests.Session(), "user_profile", READ, "GET", cutting_server, (200,)) is None
    (violation,) = recorder.violations
    assert violation["what"] == "read user_profile: response cut off through the gateway"
    assert violation["served_by"] == "user-1"
    assert recorder.counts[("user_profile", "connection_error")] == 1
