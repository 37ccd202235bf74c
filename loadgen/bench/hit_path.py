"""`make bench` part `bare`: the cached product page against Python's ceiling, with its profile.

Three closed-loop runs at one catalog replica's CPU limit, under the same gunicorn settings:
the cached product page (directly at catalog-1), a bare Flask route, and a bare route that does
the least any cache hit does (one memcached multi-get, the stored body sent as it is:
loadgen/bench/bare_app.py). The ratio page / bare is issue 14's target; page / bare-with-memcached
says how much of the gap is our code rather than the round trip itself.

Then, in a run of its own so that the profiler does not slow the measured ones, py-spy samples
the replica's processes (`--gil`: only the thread that runs Python, i.e. CPU, not waiting) and
the summary says where that CPU goes: by package (self time) and by our functions (inclusive).
"""
from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

PY_SPY = Path(sys.executable).with_name("py-spy")
_FRAME = re.compile(r"^(?P<function>.+) \((?P<path>[^()]*?)(?::\d+)?\)$")
PACKAGE_NAMES = {"services": "ours (services/)"}


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, path) of each Python frame of one raw py-spy stack, outermost first."""
    frames = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match and not frame.startswith(("process ", "thread ")):
            frames.append((match["function"], match["path"]))
    return frames


def _package(path: str) -> str:
    first = path.lstrip("/").split("/", 1)[0].removesuffix(".py")
    if first.startswith("<"):
        return "python"
    return PACKAGE_NAMES.get(first, first)


def summarize(raw: str, top: int = 8) -> dict[str, Any]:
    """A py-spy `--format raw` profile as shares of the samples: self time by package, and the
    inclusive time of our functions (services/), each as a fraction of all samples."""
    total = 0
    by_package: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = _frames(stack)
        if not frames:
            continue
        count = int(count_text)
        total += count
        by_package[_package(frames[-1][1])] += count
        for name in dict.fromkeys(f"{function} ({path})" for function, path in frames
                                  if path.startswith("services/")):
            ours[name] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self_by_package": [{"package": name, "share": round(n / total, 3)} for name, n in by_package.most_common(top)],
        "ours_inclusive": [{"function": name, "share": round(n / total, 3)} for name, n in ours.most_common(top)],
    }


def describe(summary: dict[str, Any]) -> str:
    if not summary.get("samples"):
        return "no samples"
    packages = ", ".join(f"{p['package']} {p['share']:.0%}" for p in summary["self_by_package"][:6])
    ours = ", ".join(f"{o['function'].split(' (')[0]} {o['share']:.0%}" for o in summary["ours_inclusive"][:4])
    return f"{summary['samples']} samples; self time by package: {packages}; ours, inclusive: {ours}"


def profile(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Sample `pid` and its child processes for `seconds` with py-spy; the summary (raw file kept in `out`)."""
    if not PY_SPY.exists():
        return {"samples": 0, "error": f"py-spy not found at {PY_SPY}"}
    proc = subprocess.run([str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--gil", "--nonblocking",
                           "--format", "raw", "--rate", "200", "--duration", str(int(seconds)), "--output", str(out)],
                          capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not out.exists():
        return {"samples": 0, "error": f"py-spy failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return {**summarize(out.read_text()), "raw": str(out)}


def run_part(bench, log) -> None:
    """The `bare` part of `make bench` (bench: loadgen.bench.run.Bench, its stack at the CPU limit)."""
    stack = bench.running_stack
    catalog = stack.service_replicas("catalog")[0]
    page_url, page_path = f"http://127.0.0.1:{catalog.port}", f"/v1/products/{bench.hot}"
    bare_url = bench.start_bare()
    seconds = 5 if bench.quick else 8
    urllib.request.urlopen(f"{page_url}{page_path}", timeout=10).read()  # fill the cache
    page = bench.closed(page_url, page_path, seconds)
    bare = bench.closed(bare_url, "/bare", seconds)
    floor = bench.closed(bare_url, "/bare/memcached", seconds)

    profiled: dict[str, Any] = {}
    load = threading.Thread(target=lambda: profiled.update(run=bench.closed(page_url, page_path, seconds + 3)))
    load.start()
    time.sleep(2.5)  # past the run's warm-up
    summary = profile(catalog.proc.pid, seconds, bench.out / "profile-cached-page.txt")
    load.join()
    log(f"profile of the cached product page (py-spy --gil, catalog-1): {describe(summary)}")

    hits = page["cache"]
    rps = {name: run["throughput_rps"] for name, run in (("page", page), ("bare", bare), ("floor", floor))}
    ratio = rps["page"] / rps["bare"] if rps["bare"] else None
    bench.ratio("bare", "cached product page / bare Flask route (same gunicorn, 0.25 CPU)", ratio, "≥ 0.8×",
                None if ratio is None else ratio >= 0.8,
                f"closed loop, 16 users, {seconds}s each, directly at catalog-1 (GET /v1/products/<id>)"
                ", at the bare app (GET /bare) and at its one-memcached-get route (GET /bare/memcached)",
                note=f"{rps['page']:.0f} vs {rps['bare']:.0f} req/s; bare route with one memcached get "
                     f"{rps['floor']:.0f} req/s (page / that: {rps['page'] / rps['floor']:.2f}×); page p50 "
                     f"{page['latency_ms'].get('p50')} ms vs {bare['latency_ms'].get('p50')} ms; cache hits "
                     f"{hits['hit']}/{hits['hit'] + hits['miss']}",
                page={"throughput_rps": rps["page"], "latency_ms": page["latency_ms"], "cache": hits},
                bare={"throughput_rps": rps["bare"], "latency_ms": bare["latency_ms"]},
                bare_memcached={"throughput_rps": rps["floor"], "latency_ms": floor["latency_ms"]},
                profile=summary)
