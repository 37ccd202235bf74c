"""The load engine: an open loop (fixed arrival rate) or a closed loop (N users), in 1..P processes.

Open loop: arrival k is due at t0 + k/rate, whatever happened before. It is started when due,
never later because an earlier response is slow; its latency is measured from when it was
*due* (its intended start), so time spent queued anywhere (in the server, in the network, in
this client waiting for a connection or for the CPU) is counted. That is what "no coordinated
omission" means: a stall of the server shows up in the percentiles as every request that
should have been sent during it, not as the few that happened to be in flight.

Closed loop: N users, each sends a journey, waits for it, thinks, and sends the next one.
It measures what a fixed population sees, and throughput at a given concurrency.

With P processes, process i takes arrivals i, i+P, i+2P... (or 1/P of the users); each keeps
its own HDR histograms, the parent merges their encodings. Every loop is bounded: in time (the
duration, a drain limited by the request timeout) and in count (at most `max_inflight` journeys
in flight per process; beyond that an arrival is counted as a `backlog` error).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import multiprocessing
import os
import queue
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import stats
from .http import Client
from .journeys import DEFAULT_MIX, Journeys
from .target import TargetError, parse_target
from .workload import Workload

LIMITS = {"duration": 3600.0, "warmup": 600.0, "rate": 100_000.0, "concurrency": 10_000, "processes": 64,
          "connections": 20_000, "timeout": 300.0}


@dataclass
class RunConfig:
    target: str
    mode: str = "open"                   # open | closed
    rate: float = 50.0                   # arrivals per second (open)
    concurrency: int = 16                # users (closed)
    duration: float = 10.0               # measured seconds
    warmup: float = 2.0                  # seconds before, not measured
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    processes: int = 1
    connections: int = 256               # open loop: connections in total, shared by the processes
    timeout: float = 10.0                # per request
    seed: int = 1
    think: float = 0.0                   # closed loop: seconds between a user's journeys
    arrival: str = "uniform"             # uniform | poisson
    slo: dict[str, float] = field(default_factory=lambda: {"p99": 250.0})  # percentile -> ms
    max_error_rate: float = 0.01
    max_inflight: int = 20_000           # per process
    label: str = ""
    path: str = ""                       # when set: every arrival is one GET of this path (no journeys)

    def check(self) -> None:
        """Raise ValueError with a message naming the option when a value is out of range."""
        parse_target(self.target)
        if self.mode not in ("open", "closed"):
            raise ValueError("mode must be open or closed")
        if self.arrival not in ("uniform", "poisson"):
            raise ValueError("--arrival must be uniform or poisson")
        _within("--duration", self.duration, 0.1, LIMITS["duration"])
        _within("--warmup", self.warmup, 0, LIMITS["warmup"])
        _within("--timeout", self.timeout, 0.05, LIMITS["timeout"])
        _within("--processes", self.processes, 1, LIMITS["processes"])
        _within("--connections", self.connections, 1, LIMITS["connections"])
        _within("--think", self.think, 0, 60)
        _within("--max-error-rate", self.max_error_rate, 0, 1)
        if self.mode == "open":
            _within("--rate", self.rate, 0.1, LIMITS["rate"])
        else:
            _within("--concurrency", self.concurrency, 1, LIMITS["concurrency"])
            if self.processes > self.concurrency:
                raise ValueError("--processes must not exceed --concurrency in a closed loop")
        if self.path and (not self.path.startswith("/") or any(c in self.path for c in " \r\n")):
            raise ValueError("--path must start with / and contain no spaces")
        for key, value in self.slo.items():
            if key not in SLO_KEYS:
                raise ValueError(f"--slo: unknown measure {key!r} (one of {', '.join(SLO_KEYS)})")
            _within(f"--slo {key}", value, 0.001, 3_600_000)


SLO_KEYS = ("p50", "p90", "p99", "p999", "max", "mean")
MULTI_STEP = {"signin", "review", "import"}  # journeys of more than one request get their own histogram


def _within(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or value != value or not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value}")


def run_loop(coro):
    """Run on uvloop (about twice the requests per CPU-second) unless LOADGEN_LOOP=asyncio or it is absent."""
    if os.environ.get("LOADGEN_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------------
# One worker (a process, or the main process when processes == 1)
# ------------------------------------------------------------------------------------------

async def _worker(index: int, cfg: RunConfig, workload: Workload, t0: float, emit: Callable[[dict], None]) -> dict:
    target = parse_target(cfg.target)
    procs = cfg.processes
    if cfg.mode == "open":
        connections = max(1, math.ceil(cfg.connections / procs))
        users = 0
    else:
        users = cfg.concurrency // procs + (1 if index < cfg.concurrency % procs else 0)
        connections = max(1, users)
    client = Client(target.host, target.port, connections, cfg.timeout)
    rec = stats.Recorder()
    t_warm = t0 + cfg.warmup
    t_end = t_warm + cfg.duration
    rng = random.Random(f"{cfg.seed}:{index}:{cfg.label}")
    journeys = Journeys(client, rec, workload, rng, (t_warm, t_end), fixed_path=cfg.path)
    mix = {"path": 1.0} if cfg.path else cfg.mix
    names = list(mix)
    cum = list(itertools.accumulate(mix[n] for n in names))
    inflight: set[asyncio.Task] = set()
    state: dict[str, Any] = {"lag": 0.0, "max_lag": 0.0, "backlog": 0, "dispatched": 0, "crashes": 0, "crash": "",
                             "journeys_ok": 0}
    loop = asyncio.get_running_loop()
    cpu_start = time.process_time()

    async def one(name: str, start: float) -> None:
        measured = t_warm <= start < t_end
        try:
            good = await journeys.funcs[name](start, measured)
        except asyncio.CancelledError:
            rec.record_error(f"journey {name}", "cancelled at end", None, measured)
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected answer must not stop the run
            state["crashes"] += 1
            state["crash"] = f"{type(exc).__name__}: {exc}"
            rec.record_error(f"journey {name}", f"client {type(exc).__name__}", None, measured)
            good = False
        now = time.monotonic()
        rec.record_journey(name, int((now - start) * 1e6), good, measured, name in MULTI_STEP)
        if good and t_warm <= now < t_end:
            state["journeys_ok"] += 1

    async def ticker() -> None:
        for k in itertools.count(1):
            await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))
            tick = rec.take_tick()
            tick.update(type="tick", worker=index, k=k, inflight=len(inflight),
                        lag_ms=round(state["lag"] * 1000, 2))
            state["lag"] = 0.0
            emit(tick)

    async def open_loop() -> None:
        share = cfg.rate / procs
        t = t0 + index / cfg.rate  # uniform: process i takes arrivals i, i+P, ...
        step = 1.0 / share
        while True:
            if cfg.arrival == "poisson":
                t += rng.expovariate(share)
            elif state["dispatched"]:
                t += step
            if t >= t_end:
                return
            now = time.monotonic()
            if t > now + 0.0002:
                await asyncio.sleep(t - now)
                now = time.monotonic()
            lag = now - t
            if lag > state["lag"]:
                state["lag"] = lag
                if t >= t_warm:
                    state["max_lag"] = max(state["max_lag"], lag)
            state["dispatched"] += 1
            name = names[0] if len(names) == 1 else rng.choices(names, cum_weights=cum)[0]
            if len(inflight) >= cfg.max_inflight:
                state["backlog"] += 1
                rec.record_error(f"journey {name}", "backlog (client limit)", int(lag * 1e6), t_warm <= t < t_end)
                continue
            task = loop.create_task(one(name, t))
            inflight.add(task)
            task.add_done_callback(inflight.discard)

    async def user(u: int) -> None:
        user_rng = random.Random(f"{cfg.seed}:{index}:{u}:{cfg.label}")
        await asyncio.sleep(max(0.0, t0 - time.monotonic() + u * 0.001))  # staggered start
        while time.monotonic() < t_end:
            name = names[0] if len(names) == 1 else user_rng.choices(names, cum_weights=cum)[0]
            start = time.monotonic()
            state["dispatched"] += 1
            await one(name, start)
            if cfg.think:
                await asyncio.sleep(cfg.think * (0.5 + user_rng.random()))

    tick_task = loop.create_task(ticker())
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    try:
        if cfg.mode == "open":
            await open_loop()
            drain = [t for t in inflight if not t.done()]
        else:
            drain = [loop.create_task(user(u)) for u in range(users)]
        if drain:  # bounded: two steps' timeouts plus a second
            _, pending = await asyncio.wait(drain, timeout=max(0.0, t_end - time.monotonic()) + 2 * cfg.timeout + 1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
    finally:
        tick_task.cancel()
        client.close()
    final = rec.take_tick()
    final.update(type="tick", worker=index, k=math.ceil(time.monotonic() - t0 + 1e-9), inflight=0,
                 lag_ms=round(state["lag"] * 1000, 2), final=True)
    emit(final)
    return {"wire": rec.to_wire(), "window_ok": journeys.window_ok, "journeys_ok": state["journeys_ok"],
            "cpu_seconds": time.process_time() - cpu_start,
            "max_lag_ms": round(state["max_lag"] * 1000, 2), "dispatched": state["dispatched"],
            "backlog": state["backlog"], "crash": state["crash"], "crashes": state["crashes"],
            "connects": client.pool.connects}


def _process_main(index: int, cfg: RunConfig, workload: Workload, t0: float, out) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        result = run_loop(_worker(index, cfg, workload, t0, out.put))
        out.put({"type": "done", "worker": index, "result": result})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which exits cleanly
        out.put({"type": "failed", "worker": index,
                 "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


# ------------------------------------------------------------------------------------------
# Progress: ticks from every worker, merged per second
# ------------------------------------------------------------------------------------------

class Progress:
    def __init__(self, cfg: RunConfig, workers: int, printer: Callable[[str], None] | None):
        self.cfg, self.workers, self.printer = cfg, workers, printer
        self.pending: dict[int, list[dict]] = {}
        self.timeline: list[dict] = []
        self.total_done = 0
        self.total_errors = 0

    def add(self, tick: dict) -> None:
        k = tick["k"]
        self.pending.setdefault(k, []).append(tick)
        if len(self.pending[k]) >= self.workers:
            self._flush_until(k)

    def _flush_until(self, k: int) -> None:
        for key in sorted(p for p in self.pending if p <= k):
            self._emit(key, self.pending.pop(key))

    def finish(self) -> None:
        self._flush_until(max(self.pending, default=0))

    def _emit(self, k: int, ticks: list[dict]) -> None:
        sample = sorted(itertools.chain.from_iterable(t["sample"] for t in ticks))
        done = sum(t["done"] for t in ticks)
        errors = sum(t["errors"] for t in ticks)
        self.total_done += done
        self.total_errors += errors
        cfg = self.cfg
        phase = "warm-up" if k <= cfg.warmup else ("measure" if k <= cfg.warmup + cfg.duration else "drain")
        entry = {"t": k, "phase": phase, "done": done, "errors": errors,
                 "p50_ms": round(stats.sample_percentile(sample, 50) / 1000, 3) if sample else None,
                 "p99_ms": round(stats.sample_percentile(sample, 99) / 1000, 3) if sample else None,
                 "max_ms": round(max(t["max_us"] for t in ticks) / 1000, 3) if sample else None,
                 "inflight": sum(t["inflight"] for t in ticks),
                 "lag_ms": max(t["lag_ms"] for t in ticks)}
        if any(t.get("final") for t in ticks) and k > cfg.warmup + cfg.duration and not done:
            return
        self.timeline.append(entry)
        if self.printer:
            total = cfg.warmup + cfg.duration
            p50 = f"{entry['p50_ms']:.1f}" if sample else "-"
            p99 = f"{entry['p99_ms']:.1f}" if sample else "-"
            err_pct = 100.0 * errors / done if done else 0.0
            lag = f"  loadgen late {entry['lag_ms']:.0f} ms" if entry["lag_ms"] > 50 else ""
            self.printer(f"[{min(k, total + 99):4.0f}s/{total:g}s {phase:<7}] {done:6d} req/s  errors {errors} "
                         f"({err_pct:.1f}%)  p50 {p50} ms  p99 {p99} ms  in flight {entry['inflight']}{lag}")


# ------------------------------------------------------------------------------------------
# The run: start the workers, collect, summarize
# ------------------------------------------------------------------------------------------

def run_load(cfg: RunConfig, workload: Workload, printer: Callable[[str], None] | None = None) -> dict:
    """Run the load described by `cfg` and return the result (JSON-ready dict)."""
    cfg.check()
    progress = Progress(cfg, cfg.processes, printer)
    results: list[dict] = []
    started_at = dt.datetime.now(dt.UTC)
    if cfg.processes == 1:
        t0 = time.monotonic() + 0.2
        results.append(run_loop(_worker(0, cfg, workload, t0, progress.add)))
    else:
        t0 = time.monotonic() + 1.0  # time for the processes to start
        results = _run_processes(cfg, workload, t0, progress)
    progress.finish()
    return summarize(cfg, workload, results, progress.timeline, started_at)


def _run_processes(cfg: RunConfig, workload: Workload, t0: float, progress: Progress) -> list[dict]:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)  # fork or spawn, chosen at run time
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(i, cfg, workload, t0, out), daemon=True,
                         name=f"loadgen-worker-{i}") for i in range(cfg.processes)]
    results: dict[int, dict] = {}
    failure = None
    deadline = t0 + cfg.warmup + cfg.duration + 2 * cfg.timeout + 15
    try:
        for proc in procs:
            proc.start()
        while len(results) < len(procs) and failure is None:
            if time.monotonic() > deadline:
                failure = "the worker processes did not finish in time"
                break
            try:
                msg = out.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    failure = f"worker process {dead[0].name} died (exit code {dead[0].exitcode})"
                continue
            if msg["type"] == "tick":
                progress.add(msg)
            elif msg["type"] == "done":
                results[msg["worker"]] = msg["result"]
            elif msg["type"] == "failed":
                failure = f"worker {msg['worker']} failed: {msg['error']}"
                if os.environ.get("LOADGEN_DEBUG"):
                    print(msg["trace"], file=sys.stderr)
    finally:
        for proc in procs:
            proc.join(timeout=5 if failure is None else 0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    if failure:
        raise TargetError(failure)
    return [results[i] for i in sorted(results)]


def summarize(cfg: RunConfig, workload: Workload, results: list[dict], timeline: list[dict],
              started_at: dt.datetime) -> dict:
    merged = stats.Merged()
    for part in results:
        merged.add(part["wire"])
    latency = stats.summary_ms(merged.all)
    errors = merged.total_errors()
    count = merged.count
    error_rate = errors / count if count else 0.0
    throughput = sum(p["window_ok"] for p in results) / cfg.duration
    violations = []
    for key, limit in cfg.slo.items():
        value = latency.get(key)
        if value is None or value > limit:
            violations.append(f"{key} {value if value is not None else '-'} ms > {limit:g} ms")
    if error_rate > cfg.max_error_rate:
        violations.append(f"error rate {100 * error_rate:.2f}% > {100 * cfg.max_error_rate:g}%")
    if count == 0:
        violations.append("no request was measured")
    cpu = sum(p["cpu_seconds"] for p in results)
    max_lag = max((p["max_lag_ms"] for p in results), default=0.0)
    warnings = []
    if max_lag > 100:
        warnings.append(f"loadgen itself fell behind its schedule by up to {max_lag:.0f} ms (CPU-bound?); those "
                        "delays are counted in the latencies. Use --processes or a lower rate to be sure the "
                        "server, not the client, is measured.")
    if merged.errors.get("status 429"):
        warnings.append(f"{merged.errors['status 429']} requests were refused with 429: the target rate-limits this "
                        "client, so this run measures the rate limiter. Turn it off for load tests "
                        "(RATE_LIMIT_READS_PER_MINUTE=0, RATE_LIMIT_PER_MINUTE=0 and RATE_LIMIT_AUTH_PER_MINUTE=0 "
                        "on user and catalog).")
    crashes = sum(p["crashes"] for p in results)
    if crashes:
        example = next(p["crash"] for p in results if p["crash"])
        warnings.append(f"{crashes} journeys failed on an unexpected answer, e.g. {example}")
    offered = cfg.rate if cfg.mode == "open" else None
    journey_rate = sum(p["journeys_ok"] for p in results) / cfg.duration
    # Kept up: journeys finished at (nearly) the rate they were started, failures aside (one journey
    # of slack, for runs so short or slow that a handful is all there is).
    kept_up = offered is None or journey_rate * cfg.duration >= 0.9 * offered * cfg.duration * (1 - error_rate) - 1
    described = merged.describe()
    return {
        "kind": "run",
        "schema": 1,
        "label": cfg.label,
        "started_at": started_at.isoformat(timespec="seconds"),
        "target": cfg.target,
        "config": asdict(cfg),
        "workload": workload.to_json(),
        "window_s": cfg.duration,
        "offered_rps": offered,
        "throughput_rps": round(throughput, 2),
        "journeys_per_s": round(journey_rate, 2),
        "kept_up": kept_up,
        "requests": count,
        "ok": merged.ok,
        "errors": errors,
        "error_rate": round(error_rate, 5),
        "errors_by_kind": dict(merged.errors.most_common()),
        "latency_ms": latency,
        "percentile_curve": stats.percentile_curve(merged.all),
        "histogram": stats.encode(merged.all),
        "slo": {**{f"{k}_ms": v for k, v in cfg.slo.items()}, "max_error_rate": cfg.max_error_rate,
                "met": not violations, "violations": violations},
        "cache": merged.cache_totals(),
        **described,
        "timeline": timeline,
        "loadgen": {"processes": cfg.processes, "cpu_seconds": round(cpu, 3),
                    "requests_per_cpu_second": round(count / cpu, 1) if cpu else None,
                    "max_schedule_lag_ms": max_lag, "dispatched": sum(p["dispatched"] for p in results),
                    "connections_opened": sum(p["connects"] for p in results)},
        "warnings": warnings,
    }
