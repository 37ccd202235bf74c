"""Latency histograms (HDR) and counters, per request name, mergeable across processes.

Latencies are recorded in microseconds in HdrHistogram (1 µs to 10 min, 3 significant
digits), so percentiles are exact to 0.1 % at any scale, and a worker process hands its
histograms to the parent as HDR's compressed encoding (`encode`/`decode_and_add`).

What is recorded: every request that got an HTTP response (any status) or timed out, from
its *intended* start (open loop) or its send time (closed loop) to its last response byte.
Requests that failed without a response (refused, reset) are counted as errors, not timed.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50, 90, 99, 99.9)
# A percentile is judged only when this many measured requests lie beyond it: a p99 needs 2,000
# requests, a p99.9 20,000. With fewer, "the p99" is the step's one or two slowest requests.
TAIL_SAMPLES = 20


def samples_needed(measure: str) -> int:
    """Measured requests a step needs before `measure` (p50, p99, p999, mean, max) can be judged."""
    if not measure.startswith("p"):
        return 1  # mean and max are what they are, whatever the count
    share_beyond = 1 - percentile_of(measure) / 100
    return math.ceil(round(TAIL_SAMPLES / share_beyond, 6))


def percentile_of(measure: str) -> float:
    """The inverse of percentile_key: p50 -> 50, p999 -> 99.9."""
    digits = measure[1:]
    return float(digits[:2] + "." + digits[2:]) if len(digits) > 2 else float(digits)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def decode(encoded: str | bytes) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.decode_and_add(encoded if isinstance(encoded, bytes) else encoded.encode())
    return hist


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode() if hist.get_total_count() else ""


def summary_ms(hist: HdrHistogram) -> dict[str, float | int]:
    """Count, mean, min, max and the usual percentiles of a histogram, in milliseconds."""
    n = hist.get_total_count()
    if not n:
        return {"count": 0}
    out: dict[str, float | int] = {"count": n, "mean": round(hist.get_mean_value() / 1000, 3),
                                   "min": round(hist.get_min_value() / 1000, 3)}
    for p in PERCENTILES:
        out[percentile_key(p)] = round(hist.get_value_at_percentile(p) / 1000, 3)
    out["max"] = round(hist.get_max_value() / 1000, 3)
    return out


def sample_percentile(ordered: list[int], p: float) -> int:
    """The p-th percentile of an ascending list (nearest rank)."""
    if not ordered:
        return 0
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def percentile_key(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", ""))  # 50 -> p50, 99.9 -> p999


def percentile_curve(hist: HdrHistogram, points: int = 60) -> list[tuple[float, float]]:
    """(percentile, latency ms) pairs from p0 to p99.99+, spaced for a log(1/(1-p)) axis."""
    if not hist.get_total_count():
        return []
    out = []
    for i in range(points + 1):
        p = 100.0 * (1 - 10 ** (-5 * i / points))  # 0 .. 99.999
        out.append((round(p, 5), round(hist.get_value_at_percentile(p) / 1000, 3)))
    out.append((100.0, round(hist.get_max_value() / 1000, 3)))
    return out


@dataclass
class NameStats:
    """Everything recorded about one request name (e.g. `GET /v1/products/{id}`)."""

    hist: HdrHistogram = field(default_factory=new_histogram)
    status: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    cache: Counter = field(default_factory=Counter)
    served_by: Counter = field(default_factory=Counter)
    db_round_trips: int = 0
    db_reported: int = 0  # responses that carried X-DB-Round-Trips

    def to_wire(self) -> dict:
        return {"hist": encode(self.hist), "status": dict(self.status), "errors": dict(self.errors),
                "cache": dict(self.cache), "served_by": dict(self.served_by),
                "db_round_trips": self.db_round_trips, "db_reported": self.db_reported}

    def add_wire(self, wire: dict) -> None:
        if wire["hist"]:
            self.hist.decode_and_add(wire["hist"].encode())
        self.status.update(wire["status"])
        self.errors.update(wire["errors"])
        self.cache.update(wire["cache"])
        self.served_by.update(wire["served_by"])
        self.db_round_trips += wire["db_round_trips"]
        self.db_reported += wire["db_reported"]


class Recorder:
    """Counters and histograms of one process for the measured window.

    Per request: one HDR record (its name's histogram) and one list append (the progress
    interval); the overall histogram is the merge of the names' at the end.
    """

    TICK_SAMPLE = 1000  # latencies per progress interval sent to the parent (a random sample)

    def __init__(self) -> None:
        self.requests: dict[str, NameStats] = {}
        self.journeys: dict[str, NameStats] = {}
        self.by_cache: dict[str, NameStats] = {}  # "<name> X-Cache: <value>": which of hits and misses are slow
        self.count = 0  # measured requests: answered, timed out or failed
        self.ok = 0
        self.errors: Counter = Counter()
        # The current progress interval (everything, warm-up included).
        self.tick_latencies: list[int] = []
        self.tick_done = 0
        self.tick_errors = 0

    def _name(self, table: dict[str, NameStats], name: str) -> NameStats:
        stats = table.get(name)
        if stats is None:
            stats = table[name] = NameStats()
        return stats

    def record_response(self, name: str, latency_us: int, status: int, headers: dict[str, str],
                        ok: bool, measured: bool) -> None:
        latency_us = min(max(latency_us, LOWEST_US), HIGHEST_US)
        self.tick_latencies.append(latency_us)
        self.tick_done += 1
        if not ok:
            self.tick_errors += 1
        if not measured:
            return
        self.count += 1
        stats = self.requests.get(name) or self._name(self.requests, name)
        stats.hist.record_value(latency_us)
        stats.status[status] += 1
        cache = headers.get("x-cache")
        if cache:
            stats.cache[cache] += 1
            split = self._name(self.by_cache, f"{name} X-Cache: {cache}")
            split.hist.record_value(latency_us)
            split.cache[cache] += 1
        trips = headers.get("x-db-round-trips")
        if trips is not None and trips.isdigit():
            stats.db_round_trips += int(trips)
            stats.db_reported += 1
        served = headers.get("x-served-by")
        if served:
            stats.served_by[served] += 1
        if ok:
            self.ok += 1
        else:
            kind = f"status {status}"
            stats.errors[kind] += 1
            self.errors[kind] += 1

    def record_error(self, name: str, kind: str, latency_us: int | None, measured: bool) -> None:
        """A request without a response. Timeouts are timed too (at the time they gave up)."""
        self.tick_done += 1
        self.tick_errors += 1
        if latency_us is not None:
            latency_us = min(max(latency_us, LOWEST_US), HIGHEST_US)
            self.tick_latencies.append(latency_us)
        if not measured:
            return
        self.count += 1
        stats = self._name(self.requests, name)
        stats.errors[kind] += 1
        self.errors[kind] += 1
        if latency_us is not None:
            stats.hist.record_value(latency_us)

    def record_journey(self, name: str, latency_us: int, ok: bool, measured: bool, timed: bool = True) -> None:
        """A whole journey. `timed=False` for one-request journeys: their request's histogram says it all."""
        if not measured:
            return
        stats = self.journeys.get(name) or self._name(self.journeys, name)
        if timed:
            stats.hist.record_value(min(max(latency_us, LOWEST_US), HIGHEST_US))
        stats.status["ok" if ok else "failed"] += 1

    def take_tick(self) -> dict:
        """The progress interval's numbers (a sample of its latencies), and start a new interval."""
        latencies = self.tick_latencies
        sample = latencies if len(latencies) <= self.TICK_SAMPLE else random.sample(latencies, self.TICK_SAMPLE)
        tick = {"done": self.tick_done, "errors": self.tick_errors, "sample": sample,
                "max_us": max(latencies) if latencies else 0}
        self.tick_latencies = []
        self.tick_done = self.tick_errors = 0
        return tick

    def to_wire(self) -> dict:
        return {"requests": {k: v.to_wire() for k, v in self.requests.items()},
                "journeys": {k: v.to_wire() for k, v in self.journeys.items()},
                "by_cache": {k: v.to_wire() for k, v in self.by_cache.items()},
                "count": self.count, "ok": self.ok, "errors": dict(self.errors)}


class Merged:
    """The sum of every process's Recorder."""

    def __init__(self) -> None:
        self.requests: dict[str, NameStats] = {}
        self.journeys: dict[str, NameStats] = {}
        self.by_cache: dict[str, NameStats] = {}
        self.all = new_histogram()
        self.count = 0
        self.ok = 0
        self.errors: Counter = Counter()

    def add(self, wire: dict) -> None:
        for table_name in ("requests", "journeys", "by_cache"):
            table = getattr(self, table_name)
            for name, part in wire.get(table_name, {}).items():
                stats = table.setdefault(name, NameStats())
                stats.add_wire(part)
                if table_name == "requests" and part["hist"]:
                    self.all.decode_and_add(part["hist"].encode())
        self.count += wire["count"]
        self.ok += wire["ok"]
        self.errors.update(wire["errors"])

    def total_errors(self) -> int:
        return sum(self.errors.values())

    def describe(self) -> dict[str, Any]:
        """The JSON-ready summary: per request name, per request name and X-Cache value, and per journey."""
        def one(stats: NameStats, journey: bool = False) -> dict:
            out: dict[str, Any] = {"latency_ms": summary_ms(stats.hist)}
            if journey and not stats.hist.get_total_count():
                out["latency_ms"] = "one request: see by_request"
            if journey:
                out["ok"] = stats.status.get("ok", 0)
                out["failed"] = stats.status.get("failed", 0)
                return out
            out["status"] = {str(k): v for k, v in sorted(stats.status.items())}
            out["errors"] = dict(stats.errors)
            if stats.cache:
                out["cache"] = dict(stats.cache)
            if stats.db_reported:
                out["db_round_trips_per_request"] = round(stats.db_round_trips / stats.db_reported, 3)
            if stats.served_by:
                out["served_by"] = dict(sorted(stats.served_by.items()))
            return out

        return {"by_request": {k: one(v) for k, v in sorted(self.requests.items())},
                "by_request_cache": {k: one(v) for k, v in sorted(self.by_cache.items())},
                "by_journey": {k: one(v, True) for k, v in sorted(self.journeys.items())}}

    def cache_totals(self) -> dict[str, Any]:
        counts: Counter = Counter()
        trips = reported = 0
        for stats in self.requests.values():
            counts.update(stats.cache)
            trips += stats.db_round_trips
            reported += stats.db_reported
        looked_up = counts.get("hit", 0) + counts.get("miss", 0)
        return {
            "hit": counts.get("hit", 0), "miss": counts.get("miss", 0), "bypass": counts.get("bypass", 0),
            "hit_ratio": round(counts.get("hit", 0) / looked_up, 4) if looked_up else None,
            "db_round_trips": trips,
            "db_round_trips_per_request": round(trips / reported, 3) if reported else None,
        }
