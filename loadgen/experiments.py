"""The experiments: capacity, scale, cache and async. Each returns one JSON-ready result.

  capacity  open-loop steps of growing rate; a step passes when its p99 (and any other SLO
            bound) and its error rate are within the SLO and the server kept up with the offered
            rate; then a few bisection steps between the last pass and the first failure. The
            capacity is the highest throughput that passed: the knee of the latency curve.
  scale     the capacity search at 1, 2, 4... replicas of one service; the ideal line is
            n x capacity(1), the efficiency capacity(n) / (n x capacity(1)); beside it the CPU
            available to the replicas and used at each answer, throughput per CPU-second, and
            whether the 1-replica point was limited by its own CPU (scale_summary).
  cache     the same load (closed loop by default: throughput is what changes) with each
            CACHE_PATTERNS setting; hit ratio and DB round trips from the response headers and,
            locally, the replicas' /metrics.
  async     import jobs of growing size, with 1..n workers: the time to accept (202) and the
            time until the job is seen `succeeded`.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from . import data
from .engine import RunConfig, run_load
from .http import Client, HttpError
from .journeys import DEFAULT_MIX
from .platform import CpuSampler, baseline_check, cpu_told, cpu_usage, make_platform
from .stats import samples_needed
from .summary import fmt_ms
from .target import Target, TargetError, UsageError
from .workload import Workload, discover, sign_in

Printer = Callable[[str], None]

SERVICE_MIX: dict[str, dict[str, float]] = {"catalog": {"browse": 30, "product": 70}, "user": {"signin": 100}}
# reads only: writes make every cached list stale (see README)
CAPACITY_MIX: dict[str, float] = {"browse": 40, "product": 60}
CACHE_SETTINGS = {"off": "", "queries": "queries", "objects": "objects", "both": "objects,queries"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------
# Preparation
# ------------------------------------------------------------------------------------------

def prepare_workload(target: Target, seed: int, users: int, tokens: int, import_size: int,
                     mix: dict[str, float] | None, printer: Printer) -> tuple[Workload, dict[str, float]]:
    async def go():
        client = Client(target.host, target.port, max_connections=8, timeout=30)
        try:
            chosen = dict(DEFAULT_MIX) if mix is None else dict(mix)
            writes = any(k in chosen for k in ("review", "import"))
            workload = await discover(client, seed, users, max_products=50_000, tokens=tokens if writes else 0,
                                      import_size=import_size)
            return workload, chosen
        except HttpError as exc:
            raise TargetError(f"while preparing: {exc}") from None
        finally:
            client.close()

    return asyncio.run(go())


def prime_paths(workload: Workload, lists: bool = True, pages: bool = True) -> list[str]:
    """Every read the browse and product journeys can make: requesting each once fills the cache."""
    from .journeys import SORTS
    paths = []
    if lists:
        paths.append("/v1/categories")
        for slug, _ in workload.categories:
            for sort in dict.fromkeys(SORTS):
                paths += [f"/v1/products?category={slug}&sort={sort}&page={page}&per_page=20" for page in (1, 2, 3)]
        paths += [f"/v1/products?q={word}&per_page=20" for word in data.NOUNS]
    if pages:
        paths += [f"/v1/products/{pid}" for pid in workload.products]
    return paths


def prime_cache(target: Target, workload: Workload, printer: Printer, concurrency: int = 8,
                lists: bool = True, pages: bool = True) -> dict:
    """Read everything once so that every measurement starts from the same, warm cache."""
    paths = prime_paths(workload, lists, pages)

    async def go() -> dict:
        client = Client(target.host, target.port, max_connections=concurrency, timeout=30)
        statuses: dict[str, int] = {}
        queue = list(reversed(paths))

        async def worker() -> None:
            while queue:
                path = queue.pop()
                try:
                    response = await client.request("GET", path)
                    key = str(response.status)
                except HttpError as exc:
                    key = exc.kind
                statuses[key] = statuses.get(key, 0) + 1

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            client.close()
        return statuses

    started = time.monotonic()
    statuses = asyncio.run(go())
    printer(f"primed the cache: {len(paths)} reads in {time.monotonic() - started:.1f}s ({statuses})")
    return {"reads": len(paths), "statuses": statuses}


def _base_config(args, target: Target, mix: dict[str, float], mode: str = "open") -> RunConfig:
    cfg = RunConfig(target=target.url, mode=mode, mix=mix, processes=args.processes,
                    connections=args.connections, timeout=args.timeout or 5.0,
                    warmup=1.0 if args.warmup is None else args.warmup, seed=args.seed, arrival=args.arrival,
                    slo=args.slo, max_error_rate=args.max_error_rate)
    try:
        cfg.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cfg


def _slim(result: dict) -> dict:
    """A run result without its bulky parts, for embedding in an experiment's result."""
    return {k: v for k, v in result.items() if k not in ("config", "workload")}


# ------------------------------------------------------------------------------------------
# capacity
# ------------------------------------------------------------------------------------------

def settle(target_url: str, path: str, max_wait: float = 20.0, fast: float = 0.25) -> float:
    """Wait until the target answers `path` quickly twice in a row (it has worked off its backlog).

    After an overload the server still holds requests whose clients gave up; measuring the next
    step before they are done would charge it for the previous one. Returns the seconds waited.
    """
    from .target import parse_target
    target = parse_target(target_url)

    async def go() -> float:
        client = Client(target.host, target.port, max_connections=1, timeout=max_wait)
        started = time.monotonic()
        quick = 0
        try:
            while time.monotonic() - started < max_wait and quick < 2:
                sent = time.monotonic()
                try:
                    await client.request("GET", path, timeout=max(0.1, max_wait - (sent - started)))
                    quick = quick + 1 if time.monotonic() - sent < fast else 0
                except HttpError:
                    quick = 0
                if quick < 2:
                    await asyncio.sleep(0.2)
        finally:
            client.close()
        return time.monotonic() - started

    return asyncio.run(go())


def passes(result: dict) -> bool:
    return bool(result["slo"]["met"] and result["kept_up"])


MAX_STEP_DURATION = 30.0  # seconds: the longest a step may grow to hold enough requests for its percentile
SAMPLE_MARGIN = 1.15  # a step is planned for this much more than the requests it needs (arrivals vary)
MIN_RATE = 0.5  # arrivals per second: the search never steps below this
MAX_RECHECKS = 3  # re-runs of passing rates before the answer (after a failed one: halfway to the next lower
#                   pass if that passes, else that pass; the last one the highest pass a whole step (×factor)
#                   below the failed rate, else the lowest pass)
NARROW_GAP = 0.04  # a failed re-check and the pass below it this close (share of the pass): no step halfway
StepRunner = Callable[[RunConfig], dict]


def judge(result: dict, slo: dict[str, float]) -> dict:
    """PASS, FAIL or UNSUPPORTED for one step's run, and why.

    A percentile bound is judged only on a step that measured `stats.samples_needed` requests; with
    fewer it is *unsupported* and the step is neither passed nor failed on it. Errors, a server that
    did not keep up and any bound that is supported still fail the step.
    """
    count = int(result["latency_ms"].get("count", 0))
    unsupported = sorted(key for key in slo if count < samples_needed(key))
    failures = [v for v in result["slo"]["violations"] if v.split(" ", 1)[0] not in unsupported]
    if not result["kept_up"]:
        failures.append(f"served {result['throughput_rps']:.1f}/s only")
    verdict = "FAIL" if failures else "UNSUPPORTED" if unsupported else "PASS"
    return {"verdict": verdict, "failures": failures, "samples": count,
            "samples_needed": max((samples_needed(key) for key in slo), default=1), "unsupported": unsupported}


def step_seconds(rate: float, requests_per_arrival: float, needed: int, shortest: float, longest: float) -> float:
    """How long a step at `rate` must measure to hold `needed` requests, within [shortest, longest]."""
    wanted = SAMPLE_MARGIN * needed / (rate * max(requests_per_arrival, 1e-6))
    return round(min(max(shortest, longest), max(shortest, wanted)), 1)


def spread(runs: list[dict], keys: list[str]) -> dict:
    """How far apart the repeated runs of one rate are: each measure's values and their range in % of the mean."""
    def one(values: list[float]) -> dict:
        mean = sum(values) / len(values)
        return {"values": values, "range_pct": round(100 * (max(values) - min(values)) / mean, 1) if mean else None}

    out = {"throughput_rps": one([r["throughput_rps"] for r in runs])}
    for key in keys:
        values = [r["latency_ms"].get(key) for r in runs]
        if all(v is not None for v in values):
            out[f"{key}_ms"] = one(values)
    return out


def capacity_search(base: RunConfig, workload: Workload, start_rate: float | None, factor: float, max_rate: float,
                    max_steps: int, refine: int, step_duration: float, printer: Printer,
                    label: str = "", pause: float = 1.0,
                    max_step_duration: float = MAX_STEP_DURATION, run_step: StepRunner | None = None,
                    settle_target: Callable[[], float] | None = None, cpu_sampler: CpuSampler | None = None) -> dict:
    """The highest rate that met the SLO twice, below the lowest rate that missed it twice.

    Steps grow by `factor` (up to `max_steps` rates); a failing step is run once more and only a
    repeated failure bounds the search; `refine` bisection steps follow; the highest rate that
    passed is then run again, and only a second pass makes it the answer (else the rate halfway to
    the next lower pass is tried, then whichever passed is re-checked, up to MAX_RECHECKS times).
    Each step lasts `step_duration`, longer at low rates (up to `max_step_duration`) to hold enough
    requests for the percentiles the SLO judges.
    `run_step` and `settle_target` replace the real load and the wait after an overload (tests).
    `cpu_sampler` (platform.py): sampled before and after each step, whose entry then holds the CPU
    the replicas, the gateway, the generator and the machine used meanwhile (`cpu`).
    """
    run = run_step or (lambda cfg: run_load(cfg, workload, None))
    settle_after = settle_target or (lambda: settle(base.target, base.path or "/v1/categories"))
    tag = f"[capacity{' ' + label if label else ''}]"
    needed = max((samples_needed(key) for key in base.slo), default=1)
    steps: list[dict] = []
    per_arrival = 1.0  # measured requests per arrival (journeys make one or more requests); learnt as we go

    def step(rate: float, why: str = "") -> dict:
        nonlocal per_arrival
        seconds = step_seconds(rate, per_arrival, needed, step_duration, max_step_duration)
        cfg = replace(base, mode="open", rate=round(rate, 2), duration=seconds,
                      label=f"{label} {rate:.1f}/s".strip())
        before = cpu_sampler() if cpu_sampler else None
        result = run(cfg)
        cpu = cpu_usage(before, cpu_sampler(), os.cpu_count() or 1, cfg.processes) \
            if cpu_sampler and before else None
        if result["requests"]:
            per_arrival = result["requests"] / (cfg.rate * seconds)
        judged = judge(result, base.slo)
        lat = result["latency_ms"]
        hits = (result.get("cache") or {}).get("hit_ratio")
        reason = ""
        if judged["failures"]:
            reason = "  (" + "; ".join(judged["failures"]) + ")"
        elif judged["unsupported"]:
            reason = (f"  ({', '.join(judged['unsupported'])} unsupported: {judged['samples']} of "
                      f"{judged['samples_needed']} requests needed)")
        printer(f"{tag} step {len(steps) + 1}{' ' + why if why else ''}: offered {rate:8.1f}/s for {seconds:g}s -> "
                f"{result['throughput_rps']:8.1f}/s  n={judged['samples']:<6} p50 {fmt_ms(lat.get('p50')):>9}  "
                f"p99 {fmt_ms(lat.get('p99')):>9}  errors {100 * result['error_rate']:.1f}%  "
                + (f"hits {100 * hits:.0f}%  " if hits is not None and hits < 0.995 else "")
                + f"{judged['verdict']}{reason}")
        entry = {"rate": round(rate, 2), "duration_s": seconds, "throughput_rps": result["throughput_rps"],
                 "latency_ms": lat, "error_rate": result["error_rate"], "slo_met": result["slo"]["met"],
                 "kept_up": result["kept_up"], "passed": judged["verdict"] == "PASS", **judged,
                 "role": why or "search", "run": _slim(result), "cpu": cpu}
        steps.append(entry)
        time.sleep(pause)  # let queues empty between steps
        if judged["verdict"] == "FAIL":  # after an overload the server still works off what it holds
            entry["settled_s"] = round(settle_after(), 2)
        return entry

    def measured(rate: float, why: str = "") -> dict:
        """One step; a failure is run once more and counts only if it fails again."""
        entry = step(rate, why)
        if entry["verdict"] != "FAIL":
            return entry
        again = step(rate, "confirm")
        again["confirmed"] = again["verdict"] == "FAIL"
        return again

    probe = None
    if start_rate is None:  # a short closed-loop probe says roughly where the limit is
        probe_cfg = replace(base, mode="closed", concurrency=max(1, min(16, base.connections)), duration=3.0,
                            warmup=1.0, label=f"{label} probe".strip())
        probe = run(probe_cfg)
        start_rate = max(MIN_RATE, round(0.5 * probe["journeys_per_s"], 1))
        if probe["journeys_per_s"] and probe["requests"]:
            per_arrival = probe["requests"] / (probe["journeys_per_s"] * probe_cfg.duration)
        printer(f"{tag} probe: {probe_cfg.concurrency} users get {probe['journeys_per_s']:.1f} journeys/s "
                f"(p99 {fmt_ms(probe['latency_ms'].get('p99'))}); starting at {start_rate:g}/s")
        time.sleep(pause)
        settle_after()

    good: dict | None = None  # the highest rate that passed, below `bad`
    bad: dict | None = None  # the lowest rate whose failure was confirmed
    rate = start_rate
    for _ in range(max_steps):
        entry = measured(rate)
        if entry["verdict"] == "FAIL":
            bad = entry
            lower_tried = any(s["rate"] < entry["rate"] for s in steps)
            if good is not None or lower_tried or rate <= MIN_RATE:
                break
            rate = max(MIN_RATE, rate / factor ** 2)  # the very first rate was too much: step down
            continue
        if entry["verdict"] == "PASS":
            good = entry
        if rate >= max_rate:
            break
        rate = min(rate * factor, max_rate)
        if bad is not None and rate >= bad["rate"]:
            break
    for _ in range(refine):
        if good is None or bad is None or bad["rate"] - good["rate"] < NARROW_GAP * good["rate"]:
            break
        entry = measured((good["rate"] * bad["rate"]) ** 0.5)
        if entry["verdict"] == "PASS":
            good = entry
        elif entry["verdict"] == "FAIL":
            bad = entry
        else:
            break

    answer: list[dict] = []  # the two passing runs of the answer's rate
    for recheck in range(MAX_RECHECKS):
        if good is None:
            break
        again = step(good["rate"], "re-check")
        if again["verdict"] == "PASS":
            answer = [good, again]
            break
        bad = again  # it passed once and not again: not an answer; a lower pass is re-checked
        lower = [s for s in steps if s["verdict"] == "PASS" and s["rate"] < again["rate"]]
        if recheck == MAX_RECHECKS - 2:  # the last try: a pass a whole step below, else the lowest pass
            step_below = [s for s in lower if s["rate"] <= bad["rate"] / factor]
            good = max(step_below, key=lambda s: s["rate"]) if step_below else \
                min(lower, key=lambda s: s["rate"], default=None)
            continue
        good = max(lower, key=lambda s: s["rate"], default=None)
        if good is not None and bad["rate"] - good["rate"] >= NARROW_GAP * good["rate"]:
            # the next lower pass may be a whole step (×factor) below: try halfway first, so that the
            # answer does not fall further below the limit at one run than at another
            middle = measured((good["rate"] * bad["rate"]) ** 0.5, "narrow")
            if middle["verdict"] == "PASS":
                good = middle
            elif middle["verdict"] == "FAIL":
                bad = middle
    return _capacity_result(base, workload, steps, answer, bad, probe, label, start_rate, factor, max_rate,
                            step_duration, max_step_duration, needed, printer)


def _point(entry: dict) -> dict:
    point = {"rate": entry["rate"], "throughput_rps": entry["throughput_rps"], "latency_ms": entry["latency_ms"],
             "kept_up": entry["kept_up"], "samples": entry["samples"], "routes": route_rows(entry["run"]),
             "cache": entry["run"].get("cache")}
    if entry.get("cpu") is not None:
        point["cpu"] = entry["cpu"]
    return point


def route_rows(run: dict) -> list[dict]:
    """Latency and X-Cache hit ratio of each request name in one run, each followed by its split per
    X-Cache value (`x_cache` set); `share` is the name's part of the run's requests."""
    names = run.get("by_request") or {}
    splits = run.get("by_request_cache") or {}
    total = sum((row.get("latency_ms") or {}).get("count", 0) for row in names.values())

    def one(route: str, x_cache: str | None, row: dict) -> dict:
        lat = row.get("latency_ms") or {}
        cache = row.get("cache") or {}
        looked = cache.get("hit", 0) + cache.get("miss", 0)
        count = lat.get("count", 0)
        return {"route": route, "x_cache": x_cache, "count": count,
                "share": round(count / total, 4) if total else None, "p50_ms": lat.get("p50"),
                "p99_ms": lat.get("p99"), "hit_ratio": round(cache.get("hit", 0) / looked, 4) if looked else None}

    rows = []
    for name, row in names.items():
        rows.append(one(name, None, row))
        prefix = f"{name} X-Cache: "
        rows += [one(name, key[len(prefix):], split) for key, split in splits.items() if key.startswith(prefix)]
    return rows


def slow_requests(run: dict, slo: dict[str, float]) -> list[dict]:
    """The request names (and, where the run has it, name and X-Cache) whose own latency misses the SLO."""
    rows = []
    for table in ("by_request", "by_request_cache"):
        for name, row in (run.get(table) or {}).items():
            lat = row.get("latency_ms") or {}
            over = {key: lat.get(key) for key, limit in slo.items() if (lat.get(key) or 0) > limit}
            if over:
                rows.append({"request": name, "count": lat.get("count", 0), **{f"{k}_ms": v for k, v in over.items()},
                             **({"cache": row["cache"]} if row.get("cache") else {})})
    return sorted(rows, key=lambda r: -max(v for k, v in r.items() if k.endswith("_ms")))


HIT_RATIO_FALL = 0.95  # a step below this X-Cache hit ratio, in a search whose first step was all hits


def cache_fell(steps: list[dict]) -> str:
    """A warning when the X-Cache hit ratio fell during a search that started with every read a hit
    (cached entries expired or were evicted: those steps measured misses, not the rate); "" otherwise."""
    ratios: list[tuple[dict, float]] = [(s, float(s["run"]["cache"]["hit_ratio"])) for s in steps
                                        if (s["run"].get("cache") or {}).get("hit_ratio") is not None]
    if not ratios or ratios[0][1] < 0.99:
        return ""
    low = [(s, r) for s, r in ratios if r < HIT_RATIO_FALL]
    if not low:
        return ""
    worst, ratio = min(low, key=lambda sr: sr[1])
    return (f"the X-Cache hit ratio fell from {100 * ratios[0][1]:.0f}% to {100 * ratio:.0f}% during the search "
            f"(worst at {worst['rate']:g}/s, {worst['role']}; {len(low)} step(s) below {100 * HIT_RATIO_FALL:.0f}%): "
            "cached entries expired (CACHE_TTL_SECONDS, all primed at once) or were evicted, so those steps "
            "measured cache misses; keep the search shorter than the cache TTL or raise it")


def _capacity_result(base: RunConfig, workload: Workload, steps: list[dict], answer: list[dict], bad: dict | None,
                     probe: dict | None, label: str, start_rate: float, factor: float, max_rate: float,
                     step_duration: float, max_step_duration: float, needed: int, printer: Printer) -> dict:
    slo_text = ", ".join(f"{k} ≤ {v:g} ms" for k, v in base.slo.items())
    keys = list(base.slo) if "p99" in base.slo else ["p99", *base.slo]
    judged_key = next(iter(base.slo), "p99")
    answer_spread = spread(answer, keys) if answer else None
    misses: list[dict] = []
    if answer:
        capacity = min(r["throughput_rps"] for r in answer)
        runs = "; ".join(f"{r['throughput_rps']:.1f} req/s p99 {fmt_ms(r['latency_ms'].get('p99'))}" for r in answer)
        twice = (f"{answer[0]['rate']:g}/s met the SLO ({slo_text}) twice ({runs}; throughput range "
                 f"{answer_spread['throughput_rps']['range_pct']}%)") if answer_spread else ""
        if bad is None:
            limit = "bounded"
            verdict = (f"Capacity at least {capacity:.1f} req/s: {twice}; no higher rate missed it (the --max-rate "
                       "or --max-steps bound).")
        else:
            worse = [r["latency_ms"].get(judged_key) or 0 for r in answer]
            grew = (bad["latency_ms"].get(judged_key) or 0) > max(worse)
            served = f"served {bad['throughput_rps']:.1f}/s"
            if not bad["kept_up"]:
                limit = "knee"
                what = f"{served}: it stopped following the offered rate" + (
                    f", and {judged_key} grew to {fmt_ms(bad['latency_ms'].get(judged_key))}" if grew else "")
                verdict = f"Capacity {capacity:.1f} req/s: {twice}. The knee: at {bad['rate']:g}/s offered, {what}."
            else:
                limit = "limit"
                verdict = (f"Capacity {capacity:.1f} req/s: {twice}. At {bad['rate']:g}/s offered, {served} (it "
                           f"followed the offered rate) and the step failed ({'; '.join(bad['failures'])}): the SLO "
                           "is missed before throughput saturates, not at a knee.")
    else:
        capacity = 0.0
        once = sorted({s["rate"] for s in steps if s["verdict"] == "PASS"})
        if once:  # rates passed, but none passed again: run-to-run noise exceeded the SLO's margin
            limit = "unsteady"
            rechecks = [s for s in steps if s["role"] == "re-check"]
            verdict = (f"No capacity: no rate met the SLO twice. {', '.join(f'{r:g}/s' for r in once)} met it "
                       f"({slo_text}) once and failed when run again ("
                       + "; ".join(f"{s['rate']:g}/s: {', '.join(s['failures'])}" for s in rechecks)
                       + "): from run to run the target's latency at these rates varies by more than the SLO's "
                       "margin. Run again, or lengthen the steps (--step-duration).")
        elif bad is not None and bad["kept_up"]:  # no lower rate passed, and this one was served in full
            limit = "floor"
            misses = slow_requests(bad["run"], base.slo)
            named = "; ".join(
                f"{m['request']} ({', '.join(f'{k[:-3]} {fmt_ms(v)}' for k, v in m.items() if k.endswith('_ms'))}, "
                f"n={m['count']}" + (f", X-Cache {m['cache']}" if m.get("cache") else "") + ")"
                for m in misses[:4]) or "no single request name misses it on its own: the mix does"
            verdict = (f"No capacity: a latency floor. The SLO ({slo_text}) is missed already at the lowest rate "
                       f"judged, {bad['rate']:g}/s, where served followed offered ({bad['throughput_rps']:.1f}/s, "
                       f"{judged_key} {fmt_ms(bad['latency_ms'].get(judged_key))}); the requests that miss it: "
                       f"{named}.")
        elif bad is not None and (short := [s for s in steps
                                             if s["verdict"] == "UNSUPPORTED" and s["rate"] < bad["rate"]]):
            limit = "unsupported"  # the capacity lies below `bad`, where no step could be judged
            rates = ", ".join(f"{s['rate']:g}/s" for s in short)
            verdict = (f"No verdict: {bad['rate']:g}/s missed the SLO ({'; '.join(bad['failures'])}), and the lower "
                       f"rates {rates} held at most {max(s['samples'] for s in short)} of the {needed} requests "
                       f"needed to judge {slo_text} in --max-step-duration {max_step_duration:g} s; raise "
                       "--max-step-duration.")
        elif bad is not None:
            limit = "overload"
            verdict = (f"No capacity: even {bad['rate']:g}/s was not met ({'; '.join(bad['failures'])}); lower "
                       "--start-rate, or the target is overloaded or failing.")
        else:
            limit = "unsupported"
            verdict = (f"No verdict: no step measured the {needed} requests needed to judge {slo_text} (at most "
                       f"{max(s['samples'] for s in steps)}); raise --max-step-duration.")
    by_kind: dict[str, list[str]] = {}
    for entry in steps:
        for warning in entry["run"].get("warnings", []):
            by_kind.setdefault(warning[:30], []).append(warning)
    warnings = [found[0] + (f" (in {len(found)} steps)" if len(found) > 1 else "") for found in by_kind.values()]
    fallen = cache_fell(steps)
    if fallen:
        warnings.append(fallen)
    for warning in warnings:
        printer(f"warning: {warning}")
    return {
        "kind": "capacity", "schema": 2, "label": label, "started_at": _now(), "target": base.target,
        "config": {k: v for k, v in asdict(base).items() if k not in ("rate", "duration", "label")}
        | {"start_rate": start_rate, "factor": factor, "max_rate": max_rate, "step_duration": step_duration,
           "max_step_duration": max_step_duration},
        "workload": workload.to_json(),
        "slo": {**{f"{k}_ms": v for k, v in base.slo.items()}, "max_error_rate": base.max_error_rate},
        "samples_needed": needed,
        "steps": steps,
        "probe": {"journeys_per_s": probe["journeys_per_s"], "latency_ms": probe["latency_ms"]} if probe else None,
        "capacity_rps": capacity,
        "answer": {"rate": answer[0]["rate"], "runs": [_point(r) for r in answer], "spread": answer_spread}
        if answer else None,
        "knee": _point(answer[-1]) if answer else None,
        "first_failure": _point(bad) if bad else None,
        "limit": limit,
        "floor_misses": misses,
        "bounded": bad is None,
        "verdict": verdict,
        "warnings": warnings,
    }


def run_capacity(args, target: Target, printer: Printer, cpu_sampler: CpuSampler | None = None) -> dict:
    """`experiment capacity`; `cpu_sampler` (the bench's, which knows its stack) adds each step's CPU."""
    if args.mix is None:
        printer(f"note: capacity's default mix is the read journeys ({_mix_text(CAPACITY_MIX)}); add writes with "
                "e.g. --mix browse=40,product=50,signin=2,review=5,import=3 (each write makes every cached list stale)")
    workload, mix = prepare_workload(target, args.seed, args.users, args.tokens, args.import_size,
                                     args.mix or CAPACITY_MIX, printer)
    if args.hot_set:
        workload = hot_set(workload, args.hot_set)
        printer(f"product pages drawn from the {len(workload.products)} most popular products only (--hot-set)")
    base = _base_config(args, target, mix)
    primed = None
    lists, pages = "browse" in mix, any(k in mix for k in ("product", "review"))
    if not args.no_prime and (lists or pages):  # steady state, not the cold start, is measured
        primed = prime_cache(target, workload, printer, lists=lists, pages=pages)
    start = f"{args.start_rate:g}/s" if args.start_rate else "half of what a closed-loop probe gets"
    printer(f"capacity search on {target}: mix {_mix_text(mix)}, SLO {_slo_text(args)}, steps of "
            f"{args.step_duration:g}s from {start} ×{args.factor:g}")
    result = capacity_search(base, workload, args.start_rate, args.factor, args.max_rate, args.max_steps,
                             args.refine, args.step_duration, printer, args.label,
                             max_step_duration=args.max_step_duration, cpu_sampler=cpu_sampler)
    result["primed"] = primed
    print(result["verdict"])
    from .report import route_caption
    printer(route_caption(result))
    return result


def hot_set(workload: Workload, size: int) -> Workload:
    """The workload with its product journeys limited to the `size` most popular products."""
    return replace(workload, products=workload.products[:size])


def answer_hit_ratio(result: dict) -> float | None:
    """X-Cache hits / (hits + misses) over the answer's runs of a capacity result; None without an answer
    or without a cache look-up."""
    runs = (result.get("answer") or {}).get("runs") or []
    hits = sum((r.get("cache") or {}).get("hit", 0) for r in runs)
    looked = hits + sum((r.get("cache") or {}).get("miss", 0) for r in runs)
    return round(hits / looked, 4) if looked else None


def _mix_text(mix: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in mix.items())


def _slo_text(args) -> str:
    return ", ".join(f"{k}≤{v:g}ms" for k, v in args.slo.items()) + f", errors≤{100 * args.max_error_rate:g}%"


# ------------------------------------------------------------------------------------------
# scale
# ------------------------------------------------------------------------------------------

def run_scale(args, target: Target, printer: Printer) -> dict:
    platform = make_platform(args.platform, target, args.namespace, args.deployment_prefix, args.ready_timeout,
                             printer)
    mix = args.mix or SERVICE_MIX[args.service]
    workload, mix = prepare_workload(target, args.seed, args.users, args.tokens, args.import_size, mix, printer)
    base = _base_config(args, target, mix)
    original = platform.replicas(args.service)
    printer(f"scale experiment: {args.service} at {args.replicas} replicas ({platform.name}), mix {_mix_text(mix)}, "
            f"SLO {_slo_text(args)}; {args.service} has {original} replicas now")
    points: list[dict] = []
    warnings: list[str] = []
    primed = None
    try:
        if not args.no_prime:  # the same warm cache for every replica count, or the first pays for the rest
            primed = prime_cache(target, workload, printer)
        for count in args.replicas:
            platform.scale(args.service, count)
            limits = platform.cpu_limits(args.service)
            if platform.name == "local" and not any("applied" in line and "NOT" not in line for line in limits):
                warnings.append(f"{args.service} replicas are not CPU-limited ({limits[0] if limits else 'none'}): "
                                "on a small machine the sweep measures the machine, not the replicas. Start "
                                "the stack with `python -m stack up --cpu-limit 0.25`.")
            time.sleep(2.0)
            start = args.start_rate * (count / args.replicas[0]) if args.start_rate else None  # None: probe
            capacity = capacity_search(base, workload, start, args.factor, args.max_rate, args.max_steps,
                                       args.refine, args.step_duration, printer, label=f"{count} replicas",
                                       max_step_duration=args.max_step_duration,
                                       cpu_sampler=platform.cpu_sampler(args.service))
            points.append({"replicas": count, "capacity_rps": capacity["capacity_rps"], "cpu_limits": limits,
                           "capacity": capacity})
            printer(f"[scale] {count} replicas: {capacity['capacity_rps']:.1f} req/s at the SLO")
    finally:
        if platform.replicas(args.service) != original:
            platform.scale(args.service, original)
    summary = scale_summary(points)
    print(summary["verdict"])
    return {"kind": "scale", "schema": 2, "started_at": _now(), "target": target.url, "platform": platform.name,
            "service": args.service, "mix": mix, "slo": {**{f"{k}_ms": v for k, v in args.slo.items()},
                                                         "max_error_rate": args.max_error_rate},
            "points": points, "primed": primed, **summary, "warnings": sorted(set(warnings))}


def search_settled_low(point: dict, check: dict) -> dict:
    """`check` (platform.baseline_check of a point) where nothing outside the replicas was used up, but
    the point's answer sits below its limit: rates above it passed once and not again, or the cache hit
    ratio fell mid-search. Then that, not latency, is what held the point back."""
    if check["cpu_bound"] is not False or check["external"]:
        return check
    capacity = point["capacity"]
    answer = (capacity.get("answer") or {}).get("rate")
    higher = [s["rate"] for s in capacity.get("steps") or [] if answer is not None and s["verdict"] == "PASS"
              and s["rate"] > answer]
    reasons = []
    if higher:
        reasons.append(f"its search, whose answer ({answer:g}/s) fell below rates that passed once but not again "
                       f"(up to {max(higher):g}/s)")
    fell = next((w for w in capacity.get("warnings", []) if w.startswith("the X-Cache hit ratio fell")), None)
    if fell:
        reasons.append("cache misses mid-search (" + fell.split(":", 1)[0] + ")")
    if not reasons:
        return check
    return {**check, "limited_by": "; ".join(reasons),
            "text": f"{point['replicas']} replica(s) {cpu_told(point['cpu'])} at the answer: not CPU-bound there; "
                    f"held back by {'; '.join(reasons)}."}


def scale_summary(points: list[dict]) -> dict:
    """Each point's CPU at its answer and its efficiencies, the smallest point's check, and the verdict.

    Per point (in place): `cpu` (platform.cpu_usage at the answer's last run: the CPU available to the
    replicas and what they used), `rps_per_cpu` (that run's throughput per CPU-second the replicas
    used), `efficiency` = (rps_n / rps_1) / (n / 1) and `per_cpu_efficiency` = (rps_n / cpu_n) /
    (rps_1 / cpu_1), each against the smallest replica count; `peak_rps`, the most any step served (the
    SLO met or not), whose ratio does not depend on where the search's steps fell. That point's `baseline` check says
    whether it was CPU-bound; a speed-up above the replica ratio over a point that was not is called
    what it is, not super-linear scaling.
    """
    for point in points:
        knee = point["capacity"].get("knee") or {}
        cpu = knee.get("cpu")
        point["cpu"] = cpu
        used = (cpu or {}).get("used_cpus") or 0
        point["rps_per_cpu"] = round(knee["throughput_rps"] / used, 1) if used and knee else None
        point["peak_rps"] = max((s["throughput_rps"] for s in point["capacity"].get("steps") or []), default=None)
    base = min(points, key=lambda p: p["replicas"])
    per_replica = base["capacity_rps"] / base["replicas"]
    for point in points:
        ideal = per_replica * point["replicas"]
        point["ideal_rps"] = round(ideal, 2)
        point["efficiency"] = round(point["capacity_rps"] / ideal, 3) if ideal else None
        point["per_cpu_efficiency"] = (round(point["rps_per_cpu"] / base["rps_per_cpu"], 3)
                                       if point["rps_per_cpu"] and base["rps_per_cpu"] else None)
    check = search_settled_low(base, baseline_check(base["cpu"]))
    base["baseline"] = check
    top = max(points, key=lambda p: p["replicas"])
    speedup = top["capacity_rps"] / base["capacity_rps"] if base["capacity_rps"] else None
    if not speedup:
        return {"speedup": None, "baseline": check,
                "verdict": f"No speed-up can be computed: the {base['replicas']}-replica point has no capacity at the "
                           f"SLO. {base['capacity']['verdict']}"}
    n = top["replicas"] / base["replicas"]

    def cpu_text(p: dict) -> str:
        cpu = p["cpu"]
        return "CPU not measured" if cpu is None else (f"{cpu['used_cpus']:.2f} of {cpu['available_cpus']:.2f} "
                                                       "CPU available used")

    verdict = (f"{top['replicas']} replicas serve {top['capacity_rps']:.1f} req/s at the SLO, {speedup:.2f}× the "
               f"{base['capacity_rps']:.1f} req/s of {base['replicas']} (efficiency (rps_n/rps_1)/n "
               f"{100 * (top['efficiency'] or 0):.0f}%; {cpu_text(top)} vs {cpu_text(base)}")
    if top["per_cpu_efficiency"] is not None:
        verdict += (f"; per CPU-second used {top['rps_per_cpu']:.0f} vs {base['rps_per_cpu']:.0f} requests: "
                    f"(rps_n/cpu_n)/(rps_1/cpu_1) {top['per_cpu_efficiency']:.2f}")
    peak = top["peak_rps"] / base["peak_rps"] if top["peak_rps"] and base["peak_rps"] else None
    if peak:  # the search's answer falls a step below the limit; the most served, SLO or not, does not
        verdict += (f"; the most any step served, within the SLO or not: {top['peak_rps']:.0f} vs "
                    f"{base['peak_rps']:.0f} req/s, {peak:.2f}×")
    verdict += f"). The {base['replicas']}-replica point: {check['text']}"
    if speedup > n * 1.02 and check["cpu_bound"] is False:
        verdict += (f" The speed-up above {n:g}× is therefore not super-linear scaling: the "
                    f"{base['replicas']}-replica point was held back by {check['limited_by']}.")
    elif speedup > n * 1.02 and check["cpu_bound"] and top["per_cpu_efficiency"] is not None:
        verdict += (f" The speed-up above {n:g}× is not more CPU per replica ({cpu_text(top)} vs {cpu_text(base)}): "
                    f"the replicas served {top['rps_per_cpu']:.0f} requests per CPU-second at {top['replicas']} and "
                    f"{base['rps_per_cpu']:.0f} at {base['replicas']}, so the difference is the CPU each request "
                    f"cost at the two answers ({top['per_cpu_efficiency']:.2f}×).")
    elif check["external"]:
        verdict += " The speed-up measures that limit as much as the replicas."
    return {"speedup": round(speedup, 3), "peak_speedup": round(peak, 3) if peak else None, "baseline": check,
            "verdict": verdict}


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------

def run_cache(args, target: Target, printer: Printer) -> dict:
    names = [p.strip() for p in args.patterns.split(",") if p.strip()]
    unknown = [n for n in names if n not in CACHE_SETTINGS]
    if unknown or not names:
        raise UsageError(f"--patterns: unknown {', '.join(unknown) or '(none)'}; use off,queries,objects,both")
    platform = make_platform(args.platform, target, args.namespace, args.deployment_prefix, args.ready_timeout,
                             printer)
    mix = args.mix or {"browse": 40, "product": 60}
    workload, mix = prepare_workload(target, args.seed, args.users, args.tokens, args.import_size, mix, printer)
    closed = args.rate is None
    base = replace(_base_config(args, target, mix, "closed" if closed else "open"),
                   concurrency=args.concurrency, rate=args.rate or 50.0, duration=args.duration,
                   warmup=3.0 if args.warmup is None else args.warmup)
    try:
        base.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    original = platform.env("catalog").get("CACHE_PATTERNS", "objects,queries")
    shape = f"closed loop, {args.concurrency} users" if closed else f"open loop, {args.rate:g}/s"
    printer(f"cache experiment ({platform.name}): {', '.join(names)}; {shape}, {args.duration:g}s each, "
            f"mix {_mix_text(mix)}; CACHE_PATTERNS is {original!r} now")
    rows = []
    try:
        for name in names:
            platform.restart_with("catalog", {"CACHE_PATTERNS": CACHE_SETTINGS[name]})
            time.sleep(1.0)
            primed = None
            if not args.no_prime and name != "off":  # measure each pattern warm, whatever ran before it
                primed = prime_cache(target, workload, printer, lists=name in ("queries", "both"),
                                     pages=name in ("objects", "both"))
            before = platform.metrics(("catalog", "user"))
            result = run_load(replace(base, label=f"cache {name}"), workload, None)
            after = platform.metrics(("catalog", "user"))
            server = None
            if before is not None and after is not None:
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                # requests the replicas answered, including the catalog's own calls to the user service
                server = {"db_round_trips": delta.get("db_round_trips", 0.0),
                          "http_requests": delta.get("http_requests", 0.0),
                          "db_round_trips_per_client_request":
                              round(delta.get("db_round_trips", 0.0) / max(1, result["requests"]), 3)}
            cache = result["cache"]
            lat = result["latency_ms"]
            ratio = "-" if cache["hit_ratio"] is None else f"{100 * cache['hit_ratio']:.1f}%"
            printer(f"[cache] {name:<8} {result['throughput_rps']:8.1f} req/s  p50 {fmt_ms(lat.get('p50')):>9}  "
                    f"p99 {fmt_ms(lat.get('p99')):>9}  hit ratio {ratio}  DB trips/request "
                    f"{cache['db_round_trips_per_request']}"
                    + (f" (all services: {server['db_round_trips_per_client_request']})" if server else ""))
            rows.append({"setting": name, "cache_patterns": CACHE_SETTINGS[name],
                         "throughput_rps": result["throughput_rps"], "latency_ms": lat,
                         "error_rate": result["error_rate"], "hit_ratio": cache["hit_ratio"],
                         "db_round_trips_per_request": cache["db_round_trips_per_request"],
                         "server_metrics": server, "primed": primed, "run": _slim(result)})
    finally:
        platform.restart_with("catalog", {"CACHE_PATTERNS": original})
    by = {r["setting"]: r for r in rows}
    verdict = ""
    if "off" in by and "both" in by and by["off"]["throughput_rps"]:
        verdict = (f"With both patterns the same load gets {by['both']['throughput_rps']:.1f} req/s against "
                   f"{by['off']['throughput_rps']:.1f} with the cache off "
                   f"({by['both']['throughput_rps'] / by['off']['throughput_rps']:.2f}×), p99 "
                   f"{fmt_ms(by['both']['latency_ms'].get('p99'))} vs {fmt_ms(by['off']['latency_ms'].get('p99'))}.")
        print(verdict)
    return {"kind": "cache", "schema": 1, "started_at": _now(), "target": target.url, "platform": platform.name,
            "mode": "closed" if closed else "open", "concurrency": args.concurrency if closed else None,
            "rate": args.rate, "duration_s": args.duration, "mix": mix, "rows": rows, "verdict": verdict}


# ------------------------------------------------------------------------------------------
# async
# ------------------------------------------------------------------------------------------

async def _import_round(client: Client, token: str, size: int, jobs: int, job_timeout: float, rng: random.Random,
                        label: str) -> list[dict]:
    auth = {"Authorization": f"Bearer {token}"}
    submitted = []
    for j in range(jobs):
        body = json.dumps(data.import_batch(size, f"{label}{j}", rng), separators=(",", ":")).encode()
        start = time.monotonic()
        try:
            response = await client.request("POST", "/v1/imports", body, headers=auth, timeout=60)
        except HttpError as exc:
            submitted.append({"size": size, "status": "submit failed", "error": str(exc)})
            continue
        submit_ms = (time.monotonic() - start) * 1000
        if response.status != 202:
            hint = " (the body is larger than the service accepts: MAX_BODY_BYTES)" if response.status == 413 else ""
            submitted.append({"size": size, "status": "rejected", "http_status": response.status,
                              "submit_ms": round(submit_ms, 3), "bytes": len(body),
                              "error": f"{response.status}{hint}: {response.body[:200]!r}"})
            continue
        job = response.json()
        submitted.append({"size": size, "job_id": job["job_id"], "submit_ms": round(submit_ms, 3), "bytes": len(body),
                          "submitted_at": start, "status": job.get("status", "queued")})

    async def follow(entry: dict) -> None:
        deadline = entry["submitted_at"] + job_timeout
        while time.monotonic() < deadline:
            try:
                response = await client.request("GET", f"/v1/jobs/{entry['job_id']}", headers=auth, timeout=10)
            except HttpError as exc:
                entry["poll_errors"] = entry.get("poll_errors", 0) + 1
                entry["last_error"] = str(exc)
                await asyncio.sleep(0.2)
                continue
            if response.status == 200:
                job = response.json()
                entry["status"] = job.get("status")
                entry["progress"] = job.get("progress")
                if job.get("status") in ("succeeded", "failed"):
                    entry["completion_s"] = round(time.monotonic() - entry["submitted_at"], 3)
                    entry["server_times"] = {k: job.get(k) for k in ("created_at", "updated_at")}
                    if job.get("error"):
                        entry["error"] = job["error"]
                    return
            else:
                entry["poll_status"] = response.status
            await asyncio.sleep(0.05 if time.monotonic() - entry["submitted_at"] < 2 else 0.2)
        entry["status"] = "timed out"

    await asyncio.gather(*(follow(e) for e in submitted if "job_id" in e))
    for entry in submitted:
        entry.pop("submitted_at", None)
    return submitted


def run_async(args, target: Target, printer: Printer) -> dict:
    async def setup() -> tuple[Client, str]:
        client = Client(target.host, target.port, max_connections=max(8, args.jobs * 2), timeout=60)
        _, token = await sign_in(client, args.seed, 0)
        # One submission first, not measured: connections, caches and the producer get warm.
        await client.request("POST", "/v1/imports", data.import_batch(1, "warm", random.Random(0)),
                             headers={"Authorization": f"Bearer {token}"})
        return client, token

    platform = make_platform(args.platform, target, args.namespace, args.deployment_prefix, args.ready_timeout,
                             printer) if args.workers else None
    rng = random.Random(f"async:{args.seed}")
    label = f"{int(time.time()) % 100000:05d}"
    rows: list[dict] = []

    async def sweep(worker_counts: list[int | None]) -> None:
        client, token = await setup()
        try:
            for workers in worker_counts:
                if workers is not None:
                    assert platform is not None  # worker counts come from --workers, which made the platform
                    await asyncio.to_thread(platform.scale, "worker", workers)
                    await asyncio.sleep(3.0)  # consumers rejoin the group and get partitions
                for size in args.sizes:
                    jobs = await _import_round(client, token, size, args.jobs, args.job_timeout, rng, label)
                    done = [j for j in jobs if j.get("status") == "succeeded"]
                    submits = [j["submit_ms"] for j in jobs if "submit_ms" in j and "job_id" in j]
                    completions = [j["completion_s"] for j in done]
                    row = {"workers": workers, "size": size, "jobs": jobs, "succeeded": len(done),
                           "submit_ms_median": _median(submits), "submit_ms_max": max(submits, default=None),
                           "completion_s_median": _median(completions),
                           "completion_s_max": max(completions, default=None),
                           "products_per_s": round(size * len(done) / max(completions), 1) if completions else None}
                    rows.append(row)
                    failures = [j for j in jobs if j.get("status") != "succeeded"]
                    median = row["completion_s_median"]
                    shown = "-" if median is None else f"{median:.2f} s"
                    printer(f"[async] workers {workers if workers is not None else '(as is)'}  size {size:>6}: "
                            f"submit median {fmt_ms(row['submit_ms_median'])}, completion median {shown}"
                            f"  ({len(done)}/{len(jobs)} succeeded"
                            + (f"; {failures[0].get('status')}: {failures[0].get('error', '')}" if failures else "")
                            + ")")
        finally:
            client.close()

    original = platform.replicas("worker") if platform else None
    try:
        asyncio.run(sweep(list(args.workers) if args.workers else [None]))
    finally:
        if platform and original is not None and platform.replicas("worker") != original:
            platform.scale("worker", original)
    smallest = min(args.sizes)
    largest = max(args.sizes)
    ratio = None
    small = [r["submit_ms_median"] for r in rows if r["size"] == smallest and r["submit_ms_median"]]
    large = [r["submit_ms_median"] for r in rows if r["size"] == largest and r["submit_ms_median"]]
    small_median, large_median = _median(small), _median(large)  # None when empty; else > 0
    if small_median and large_median and smallest != largest:
        ratio = round(large_median / small_median, 2)
    verdict = (f"Submitting {largest} products takes {ratio:.2f}× the time of submitting {smallest} "
               "(the work itself happens on the workers)." if ratio else "")
    if verdict:
        print(verdict)
    return {"kind": "async", "schema": 1, "started_at": _now(), "target": target.url,
            "platform": platform.name if platform else None, "sizes": args.sizes, "workers": args.workers,
            "jobs_per_point": args.jobs, "rows": rows, "submit_ratio_largest_vs_smallest": ratio, "verdict": verdict}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return round(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2, 3)


def dispatch(args, target: Target, printer: Printer) -> dict:
    return {"capacity": run_capacity, "scale": run_scale, "cache": run_cache, "async": run_async}[args.experiment](
        args, target, printer)
