"""The load generator's own logic, against small real HTTP servers started here (no stack needed).

Each server is a threading HTTP/1.1 server on 127.0.0.1:0 that answers the routes the
journeys use, with delays, failures and stalls the test controls, and records when each
request arrived. What is checked: the open loop sends at the requested rate (also from
several processes), percentiles match known delays, a stall shows up in p99/max (no
coordinated omission) while a closed loop hides it, errors are counted by kind, the
client parses what HTTP/1.1 servers send, the capacity search finds a known capacity,
options are refused with clear messages, and reports are written with valid PNGs.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadgen import report, stats
from loadgen.cli import main as loadgen_main
from loadgen.engine import RunConfig, run_load
from loadgen.experiments import capacity_search
from loadgen.http import Client, HttpError
from loadgen.target import UsageError, parse_target
from loadgen.workload import Workload

FAST, SLOW, BAD = "a" * 24, "b" * 24, "c" * 24


class FakeShop:
    """What the journeys need from Scaleshop, with knobs: per-product delay, failures, a stall, a serial lock."""

    def __init__(self):
        self.delays: dict[str, float] = {}
        self.fail: set[str] = set()
        self.stall_until = 0.0
        self.serial: threading.Lock | None = None
        self.serial_cost = 0.0
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        shop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between head and body
            wbufsize = 64 * 1024            # head and body leave in one write

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, chunked: bool = False, close: bool = False):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Cache", "hit" if status == 200 else "miss")
                self.send_header("X-DB-Round-Trips", "0" if status == 200 else "3")
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 7):
                        part = body[i:i + 7]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                arrived = time.monotonic()
                with shop.lock:
                    shop.arrivals.append(arrived)
                if arrived < shop.stall_until:
                    time.sleep(shop.stall_until - arrived)
                path = self.path
                if path == "/healthz":
                    return self._send(200, b'{"status":"ok"}')
                if path == "/chunked":
                    return self._send(200, json.dumps({"hello": "world" * 20}).encode(), chunked=True)
                if path == "/close":
                    return self._send(200, b'{"closing":true}', close=True)
                if path.startswith("/v1/products/"):
                    product = path.rsplit("/", 1)[1]
                    if shop.serial is not None:
                        with shop.serial:
                            time.sleep(shop.serial_cost)
                    time.sleep(shop.delays.get(product, 0.0))
                    if product in shop.fail:
                        return self._send(500, b'{"error":{"code":"internal_error"}}')
                    return self._send(200, json.dumps({"product": {"id": product}}).encode())
                return self._send(404, b'{"error":{"code":"not_found"}}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def workload(*products: str) -> Workload:
    return Workload(seed=1, products=list(products), categories=[("books", 1)], users=1)


def config(url: str, **overrides) -> RunConfig:
    base = dict(target=url, mode="open", rate=100.0, duration=2.0, warmup=0.5, mix={"product": 1.0},
                timeout=5.0, connections=64, slo={"p99": 250.0})
    base.update(overrides)
    return RunConfig(**base)


# ------------------------------------------------------------------------------------------
# Schedule
# ------------------------------------------------------------------------------------------

def test_open_loop_sends_at_the_requested_rate():
    with FakeShop() as shop:
        result = run_load(config(shop.url, rate=200.0, duration=3.0, warmup=0.5), workload(FAST))
        arrivals = sorted(shop.arrivals)
    assert result["errors"] == 0
    assert result["requests"] == pytest.approx(600, abs=3)  # arrivals due in the 3 s window
    assert result["throughput_rps"] == pytest.approx(200, rel=0.05)
    # Evenly spaced: by the end of every 250 ms slice the run had sent its share (50 a slice), give or take
    # 15 (75 ms of schedule); a slice a busy machine delays is made up in the next (open loop: no request
    # waits for another), so the count never drifts.
    start = arrivals[0]
    slices = [0] * 14
    for t in arrivals:
        index = int((t - start) / 0.25)
        if index < len(slices):
            slices[index] += 1
    sent_by = [sum(slices[:i + 1]) for i in range(len(slices))]
    assert all(abs(sent - 50 * (i + 1)) <= 15 for i, sent in enumerate(sent_by)), slices


def test_several_processes_share_the_schedule_and_merge_histograms():
    with FakeShop() as shop:
        shop.delays[FAST] = 0.005
        result = run_load(config(shop.url, rate=150.0, duration=2.0, processes=2), workload(FAST))
    assert result["loadgen"]["processes"] == 2
    assert result["requests"] == pytest.approx(300, abs=3)
    assert result["throughput_rps"] == pytest.approx(150, rel=0.07)
    assert result["latency_ms"]["p50"] >= 5.0
    assert result["by_request"]["GET /v1/products/{id}"]["status"] == {"200": result["requests"]}


def test_closed_loop_keeps_the_number_of_users():
    with FakeShop() as shop:
        shop.delays[FAST] = 0.02
        result = run_load(config(shop.url, mode="closed", concurrency=4, duration=2.0), workload(FAST))
    # 4 users, each one request at a time of ~20 ms: at most 4 / 0.02 = 200/s, at least half of it.
    assert 100 <= result["throughput_rps"] <= 205
    assert result["latency_ms"]["p50"] >= 20.0


# ------------------------------------------------------------------------------------------
# Percentiles
# ------------------------------------------------------------------------------------------

def test_percentiles_match_known_delays():
    with FakeShop() as shop:
        shop.delays.update({FAST: 0.010, SLOW: 0.080})
        # Two products under Zipf: rank 0 gets 2/3 of the views, rank 1 gets 1/3.
        result = run_load(config(shop.url, rate=100.0, duration=3.0), workload(FAST, SLOW))
    lat = result["latency_ms"]
    assert 10.0 <= lat["p50"] <= 30.0
    assert 80.0 <= lat["p90"] <= 120.0
    assert 80.0 <= lat["p99"] <= 150.0
    hist = stats.decode(result["histogram"])
    above = sum(c for v, c in _iter_counts(hist) if v >= 75_000) / hist.get_total_count()
    assert above == pytest.approx(1 / 3, abs=0.08), above


def _iter_counts(hist):
    for item in hist.get_recorded_iterator():
        yield item.value_iterated_to, item.count_at_value_iterated_to


def test_histograms_merge_exactly_across_encodings():
    a, b = stats.Recorder(), stats.Recorder()
    for value in range(1, 1001):
        (a if value % 2 else b).record_response("x", value * 1000, 200, {}, True, True)
    merged = stats.Merged()
    merged.add(a.to_wire())
    merged.add(b.to_wire())
    summary = stats.summary_ms(merged.all)
    assert summary["count"] == 1000
    assert summary["p50"] == pytest.approx(500, rel=0.002)
    assert summary["p99"] == pytest.approx(990, rel=0.002)
    assert summary["max"] == pytest.approx(1000, rel=0.002)


# ------------------------------------------------------------------------------------------
# A stalled server: coordinated omission avoided
# ------------------------------------------------------------------------------------------

def _stall_during(shop: FakeShop, at: float, length: float) -> threading.Timer:
    def stall():
        shop.stall_until = time.monotonic() + length
    timer = threading.Timer(at, stall)
    timer.start()
    return timer


def test_a_stall_shows_in_p99_and_max_of_the_open_loop():
    with FakeShop() as shop:
        shop.delays[FAST] = 0.002
        timer = _stall_during(shop, at=2.0, length=1.0)  # in the middle of the measured window
        result = run_load(config(shop.url, rate=100.0, duration=4.0, warmup=0.5), workload(FAST))
        timer.cancel()
    lat = result["latency_ms"]
    # Every request due during the 1 s stall waited for its end: ~100 of ~400 delayed 0..1 s.
    assert lat["max"] >= 900.0
    assert lat["p99"] >= 800.0
    assert lat["p90"] >= 400.0
    assert lat["p50"] < 50.0
    assert result["errors"] == 0
    assert not result["slo"]["met"]


def test_a_closed_loop_hides_the_same_stall():
    """The closed loop's users wait through the stall, so only a handful of samples see it."""
    with FakeShop() as shop:
        shop.delays[FAST] = 0.002
        timer = _stall_during(shop, at=2.0, length=1.0)
        result = run_load(config(shop.url, mode="closed", concurrency=4, duration=4.0), workload(FAST))
        timer.cancel()
    lat = result["latency_ms"]
    assert lat["max"] >= 900.0  # the few requests caught in the stall
    assert lat["p99"] < 100.0   # ...are too few to move the p99: coordinated omission


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------

def test_server_errors_are_counted_by_status():
    with FakeShop() as shop:
        shop.fail.add(SLOW)
        result = run_load(config(shop.url, rate=100.0, duration=2.0), workload(FAST, SLOW))
    errors = result["errors_by_kind"]
    assert set(errors) == {"status 500"}
    assert errors["status 500"] == result["errors"]
    assert result["errors"] / result["requests"] == pytest.approx(1 / 3, abs=0.1)
    assert result["ok"] + result["errors"] == result["requests"]
    assert result["by_request"]["GET /v1/products/{id}"]["status"]["500"] == result["errors"]
    assert not result["slo"]["met"]


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_refused_connections_are_counted_not_timed():
    result = run_load(config(f"http://127.0.0.1:{_closed_port()}", rate=50.0, duration=1.0, warmup=0.2),
                      workload(FAST))
    assert result["errors"] == result["requests"] == pytest.approx(50, abs=2)
    assert result["errors_by_kind"] == {"refused": result["requests"]}
    assert result["latency_ms"] == {"count": 0}
    assert result["throughput_rps"] == 0


def test_timeouts_are_counted_and_timed():
    with FakeShop() as shop:
        shop.delays[SLOW] = 2.0
        result = run_load(config(shop.url, rate=20.0, duration=1.0, warmup=0.2, timeout=0.3), workload(SLOW))
    assert result["errors_by_kind"] == {"timeout": result["requests"]}
    assert 299.0 <= result["latency_ms"]["p50"] <= 400.0  # 0.3 s, within the histogram's 3 significant digits


# ------------------------------------------------------------------------------------------
# The HTTP client
# ------------------------------------------------------------------------------------------

def test_client_reads_chunked_bodies_reuses_connections_and_honours_close():
    import asyncio

    async def go():
        client = Client("127.0.0.1", shop.port, max_connections=2, timeout=5)
        try:
            chunked = await client.request("GET", "/chunked")
            assert chunked.status == 200 and chunked.json() == {"hello": "world" * 20}
            for _ in range(20):
                assert (await client.request("GET", "/healthz")).status == 200
            assert client.pool.connects == 1  # one keep-alive connection did it all
            closing = await client.request("GET", "/close")
            assert closing.json() == {"closing": True}
            assert (await client.request("GET", "/healthz")).status == 200
            assert client.pool.connects == 2  # the server said close: a new one
            many = await asyncio.gather(*(client.request("GET", "/healthz") for _ in range(50)))
            assert all(r.status == 200 for r in many)
            assert client.pool.open <= 2
            with pytest.raises(HttpError) as refused:
                await Client("127.0.0.1", _closed_port(), timeout=2).request("GET", "/")
            assert refused.value.kind == "refused"
        finally:
            client.close()

    with FakeShop() as shop:
        asyncio.run(go())


# ------------------------------------------------------------------------------------------
# Capacity search
# ------------------------------------------------------------------------------------------

def test_capacity_search_finds_a_serial_servers_limit():
    with FakeShop() as shop:
        shop.serial, shop.serial_cost = threading.Lock(), 0.010  # one at a time, 10 ms each: ~100/s at most
        # a p50 is judged on 40 requests, so short steps hold enough of them (a p99 needs 2,000)
        base = config(shop.url, warmup=0.3, slo={"p50": 60.0}, timeout=2.0)
        result = capacity_search(base, workload(FAST), start_rate=30, factor=2.0, max_rate=400, max_steps=5,
                                 refine=1, step_duration=1.5, printer=lambda line: None, pause=0.2)
    assert result["knee"] is not None and result["first_failure"] is not None
    assert 45 <= result["capacity_rps"] <= 100
    assert result["first_failure"]["rate"] > result["knee"]["rate"]
    assert all(s["passed"] for s in result["steps"] if s["rate"] <= result["knee"]["rate"])
    assert result["limit"] == "knee" and result["answer"]["rate"] == result["knee"]["rate"]
    assert [s["role"] for s in result["steps"]].count("re-check") >= 1  # the answer was run twice


# ------------------------------------------------------------------------------------------
# Options and targets
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://example.com:8080", "http://10.0.0.1", "http://8.8.8.8",
                                 "http://localhost.example.com", "https://127.0.0.1", "http://0x7f000001",
                                 "http://[::2]:80", "127.0.0.1:8080"])
def test_targets_outside_loopback_and_the_cluster_are_refused(url):
    with pytest.raises(UsageError):
        parse_target(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.3.2.1", "http://localhost:1",
                                 "http://[::1]:8080", "http://gateway:8080", "http://gateway.shop.svc",
                                 "http://gateway.shop.svc.cluster.local:80"])
def test_loopback_and_cluster_targets_are_accepted(url):
    assert parse_target(url).port > 0


def test_cli_gives_clear_messages_and_exit_codes(capsys, tmp_path):
    assert loadgen_main(["run", "--target", "http://example.com"]) == 2
    assert "not allowed" in capsys.readouterr().err
    assert loadgen_main(["run", "--target", f"http://127.0.0.1:{_closed_port()}"]) == 3
    err = capsys.readouterr().err
    assert "connection refused" in err and "Traceback" not in err
    for bad in (["run", "--rate", "-5"], ["run", "--duration", "forever"], ["run", "--mix", "dance=1"],
                ["run", "--slo", "p42=1ms"], ["run", "--rate", "5", "--concurrency", "3"],
                ["experiment", "capacity", "--factor", "1"], ["report"]):
        with pytest.raises(SystemExit) as exit_:
            loadgen_main(bad)
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert loadgen_main(["report", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_run_command_end_to_end_against_a_server_without_seed_data(capsys):
    with FakeShop() as shop:
        code = loadgen_main(["run", "--target", shop.url, "--rate", "5", "--duration", "1", "--no-report"])
    assert code == 3
    assert "GET /v1/products answered 404" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------

def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_from_run_and_capacity_results(tmp_path):
    with FakeShop() as shop:
        shop.delays[FAST] = 0.003
        run = run_load(config(shop.url, rate=50.0, duration=1.5, label="smoke"), workload(FAST))
        shop.serial, shop.serial_cost = threading.Lock(), 0.010
        capacity = capacity_search(config(shop.url, warmup=0.2, slo={"p50": 60.0}, timeout=2.0), workload(FAST),
                                   start_rate=40, factor=3.0, max_rate=400, max_steps=3, refine=0,
                                   step_duration=1.0, printer=lambda line: None, pause=0.1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps(run))
    (tmp_path / "capacity.json").write_text(json.dumps(capacity))
    out = tmp_path / "report"
    files = report.build([tmp_path / "run", tmp_path / "capacity.json"], out)
    assert files["html"].exists() and files["markdown"].exists()
    assert [p.name.split("-", 1)[1] for p in files["plots"]] == ["percentiles.png", "timeline.png", "capacity.png",
                                                                   "routes.png"]
    for plot in files["plots"]:
        width, height = _png_size(plot)
        assert width >= 400 and height >= 200
        from PIL import Image
        with Image.open(plot) as image:
            image.verify()
    markdown = files["markdown"].read_text()
    page = files["html"].read_text()
    for plot in files["plots"]:
        assert f"({plot.name})" in markdown and f"src='{plot.name}'" in page
    assert "knee" in markdown and "Capacity" in markdown
    assert page.count("<p class='caption'>") == 4


def test_report_refuses_files_that_are_not_results(tmp_path):
    bogus = tmp_path / "x.json"
    bogus.write_text('{"hello": 1}')
    with pytest.raises(UsageError):
        report.build([bogus], tmp_path / "out")
