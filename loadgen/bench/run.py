"""`make bench` (python -m loadgen.bench): every target of issues 6, 11 and 14, measured side by side here.

The targets themselves (bound, unit, issue item) are in loadgen/bench/ratios.py; at the end the
bench prints one table of all of them, measured or not, from the bench.json it wrote.

  bare     the catalog's cached product page vs a bare Flask route under the same gunicorn
           settings and CPU limit, each driven directly at its port     (target >= 0.8x)
  cache    the product page through the gateway with the cache vs without   (target >= 5x)
  scale    throughput at the SLO, 4 catalog replicas vs 1, each 0.25 CPU    (target >= 3.5x)
  import   submit latency of a 10,000-product import vs a 1-product one     (target <= 2x);
           one 10,000-product import on 2 workers vs on 1 (loadgen/bench/imports.py)
                                                                             (target <= 0.6x)
  locust   loadgen vs Locust (FastHttpUser) on the same endpoint for the same time:
           requests per CPU-second of the generator                          (target >= 1.5x)
  stall    the p99 each reports against a server that stalls for a known time
  fold     catalog.events folded per second by 2 workers, and how long after a 10,000-product
           import ends its events are all folded (loadgen/bench/folding.py)  (>= 2,000/s, <= 10 s)
  database every MongoDB-wire server that can run here, on the catalog's own queries at
           1,000 and 10,000 products, and the concurrency checks (loadgen/bench/database.py;
           its own servers, no stack; database.json and its tables)
  reads    product-list and product-page cache misses through the gateway at 1,000 and 10,000
           products, on a stack of its own (loadgen/bench/reads.py)      (each p50 <= 15 ms)

It starts its own local stack (ports + BENCH_PORT_OFFSET, default stack/layout.py's; data in a temp
folder), stops it at the end even on failure, writes bench.json and a report under
bench-results/, and prints every ratio it could measure and why any other could not.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine import RunConfig, run_load
from ..target import TargetError
from ..workload import Workload
from . import ratios

if TYPE_CHECKING:
    from stack.cgroups import CpuLimit
    from stack.control import Stack

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PARTS = ("database", "reads", "locust", "stall", "capacity", "import", "bare", "cache", "scale", "fold")
LOCUST = Path(os.environ.get("LOCUST_BIN", REPO / ".cache" / "locust-venv" / "bin" / "locust"))
CPU_LIMIT = 0.25
# The capacity and scale parts prime the cache once and then search for minutes; with the services'
# default TTL (300 s) every primed entry expires at the same moment, mid-search, and the step that
# meets it measures a storm of misses (a quick run: 516 misses in one 1-replica re-check). Those parts
# run their replicas with entries that outlive the search.
LONG_CACHE_TTL = {"CACHE_TTL_SECONDS": "3600"}


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class Bench:
    def __init__(self, out: Path, offset: int, parts: list[str], quick: bool, db_servers: list[str] | None = None):
        self.out, self.offset, self.parts, self.quick = out, offset, parts, quick
        self.db_servers = db_servers
        self.ratios: list[dict] = []
        self.details: dict = {}
        self.results: list[Path] = []  # experiment results (capacity, scale) the report shows beside bench.json
        self.stack: Stack | None = None
        self.extra_procs: list[subprocess.Popen] = []
        self.bare_cgroup: CpuLimit | None = None
        self.python = str(REPO / ".cache" / "venv" / "bin" / "python") \
            if (REPO / ".cache" / "venv" / "bin" / "python").exists() else sys.executable

    # ------------------------------------------------------------------ bookkeeping
    def ratio(self, key: str, name: str, value: float | None, target: str, met: bool | None, command: str,
              note: str = "", void: str = "", **numbers) -> None:
        """Record one measured number. A key of ratios.TARGETS takes its target, unit and verdict from
        there (`target` and `met` are then only the part's own wording); any other keeps them as given.
        `void`: why the value is not judged (ratios.row)."""
        entry = ratios.row(key, value, command, note, numbers, name=None if key in ratios.TARGETS else name,
                           unregistered=(target, met), void=void)
        self.ratios.append(entry)
        shown = "not measured" if value is None else ratios.fmt_value(value, entry["unit"])
        log(f"{entry['name']}: {shown} (target {entry['target']})" + (f" — {note}" if note else ""))

    def not_measured(self, key: str, name: str, target: str, why: str) -> None:
        self.ratio(key, name, None, target, None, "", note=why)

    # ------------------------------------------------------------------ the stack
    def start_stack(self) -> None:
        from stack.control import Stack
        from stack.layout import Layout

        run_dir = Path(tempfile.mkdtemp(prefix="scaleshop-bench-"))
        layout = Layout(run_dir=run_dir, cache_dir=REPO / ".cache", port_offset=self.offset)
        self.stack = stack = Stack(layout, log=lambda m: log(f"stack: {m}"))
        atexit.register(self.stop_stack)
        log(f"starting a stack on ports +{self.offset} in {run_dir} (catalog ×1, user ×1, worker ×1)")
        stack.up({"user": 1, "catalog": 1, "worker": 1}, settings={})
        self.gateway = layout.gateway_url

    @property
    def running_stack(self) -> Stack:
        """The shared bench stack; the parts that use it run only after start_stack()."""
        if self.stack is None:
            raise RuntimeError("the bench stack is not started (start_stack() first)")
        return self.stack

    def stop_stack(self) -> None:
        for proc in self.extra_procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.extra_procs.clear()
        if self.bare_cgroup is not None:
            from stack import cgroups
            cgroups.remove(self.bare_cgroup)
            self.bare_cgroup = None
        if self.stack is not None:
            log("stopping the bench stack")
            try:
                self.stack.down()
            finally:
                shutil.rmtree(self.stack.layout.run_dir, ignore_errors=True)
                self.stack = None

    def limit_replicas(self, catalog: int, cpu_limit: float | None) -> None:
        """Restart user and catalog with each replica limited to `cpu_limit` CPUs (None: unlimited)."""
        self.restart_replicas({"user": 1, "catalog": catalog, "worker": 1}, cpu_limit)

    def restart_replicas(self, counts: dict[str, int], cpu_limit: float | None,
                         settings: dict[str, str] | None = None) -> None:
        """Restart user and catalog as `counts` says with `cpu_limit` CPUs each (None: unlimited) and
        `settings` added to the stack's; workers scaled to their count."""
        stack = self.running_stack
        stack.scale("catalog", 0)
        stack.scale("user", 0)
        if len(stack.service_replicas("worker")) != counts["worker"]:
            stack.scale("worker", counts["worker"])
        stack.up(counts, cpu_limit=cpu_limit, settings={**stack.env_overrides, **(settings or {})})
        limits = {r.name: r.cpu.describe() for r in stack.replicas.values()}
        log(f"CPU limits: {limits}")
        self.details["cpu_limits"] = limits

    def restart_catalog(self, settings: dict[str, str]) -> None:
        stack = self.running_stack
        count = len(stack.service_replicas("catalog"))
        stack.scale("catalog", 0)
        stack.up({"user": len(stack.service_replicas("user")), "catalog": count,
                  "worker": len(stack.service_replicas("worker"))},
                 cpu_limit=stack.cpu_limit, settings={**stack.env_overrides, **settings})

    # ------------------------------------------------------------------ helpers
    def loadgen_cli(self, args: list[str], out: Path) -> tuple[dict, float]:
        """Run `python -m loadgen ...` as a child; its result and the CPU seconds it used."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([self.python, "-m", "loadgen", *args, "--out", str(out), "--no-report", "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise TargetError(f"loadgen {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return json.loads((out / "result.json").read_text()), cpu

    def locust(self, url: str, users: int, seconds: float, path: str, wait: float, prefix: Path) -> tuple[dict, float]:
        env = {**os.environ, "LOCUST_PATH": path, "LOCUST_WAIT": str(wait)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([str(LOCUST), "-f", str(HERE / "locustfile.py"), "--headless", "-u", str(users),
                               "-r", str(max(users, 100)), "-t", f"{seconds:g}s", "--host", url, "--csv", str(prefix),
                               "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"],
                              cwd=HERE, env=env, capture_output=True, text=True, timeout=seconds + 120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats_file = Path(f"{prefix}_stats.csv")
        if not stats_file.exists():
            raise TargetError(f"locust wrote no statistics (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        with stats_file.open() as handle:
            row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return row, cpu

    def run(self, cfg: RunConfig) -> dict:
        return run_load(cfg, Workload(1, [], [], 1), None)

    # ------------------------------------------------------------------ parts
    def part_locust(self) -> None:
        name = "loadgen vs Locust: requests per second per core"
        if not LOCUST.exists():
            return self.not_measured("locust", name, "≥ 1.5×", f"Locust is not installed at {LOCUST} "
                                     "(make bench installs it into .cache/locust-venv)")
        users = 32
        long_s, short_s = (6, 2) if self.quick else (10, 2)
        tmp = self.out / "locust"
        tmp.mkdir(parents=True, exist_ok=True)
        measured = {}
        for tool in ("loadgen", "locust"):
            runs = {}
            for seconds in (short_s, long_s):
                if tool == "loadgen":
                    result, cpu = self.loadgen_cli(["run", "--target", self.gateway, "--path", "/healthz",
                                                    "--concurrency", str(users), "--duration", str(seconds),
                                                    "--warmup", "0"], tmp / f"loadgen-{seconds}")
                    runs[seconds] = (result["requests"], cpu)
                else:
                    row, cpu = self.locust(self.gateway, users, seconds, "/healthz", 0.0, tmp / f"locust-{seconds}")
                    runs[seconds] = (int(row["Request Count"]), cpu)
            (n_long, cpu_long), (n_short, cpu_short) = runs[long_s], runs[short_s]
            per_core = (n_long - n_short) / max(cpu_long - cpu_short, 1e-3)  # start-up cost cancels out
            measured[tool] = {"requests": {str(k): v[0] for k, v in runs.items()},
                              "cpu_seconds": {str(k): round(v[1], 3) for k, v in runs.items()},
                              "requests_per_cpu_second": round(per_core, 1),
                              "requests_per_second": round(n_long / long_s, 1)}
            log(f"{tool}: {measured[tool]['requests_per_second']:.0f} req/s wall, {per_core:.0f} requests per "
                "CPU-second")
        ratio = measured["loadgen"]["requests_per_cpu_second"] / measured["locust"]["requests_per_cpu_second"]
        self.ratio("locust", name, ratio, "≥ 1.5×", ratio >= 1.5,
                   f"loadgen run --path /healthz --concurrency {users} vs locust FastHttpUser -u {users}, wait 0, "
                   f"{short_s}s and {long_s}s runs each against the gateway's /healthz (nginx)",
                   note=f"loadgen {measured['loadgen']['requests_per_cpu_second']:.0f} vs Locust "
                        f"{measured['locust']['requests_per_cpu_second']:.0f} requests per CPU-second "
                        "(CPU of each generator process, start-up cancelled by subtracting a short run)",
                   loadgen=measured["loadgen"], locust=measured["locust"])

    def part_stall(self) -> None:
        from .stall_server import StallServer
        name = "p99 against a server that stalls 2 s: loadgen vs Locust"
        after, length, seconds, rate, users = 3.0, 2.0, 10, 200, 10
        server = StallServer(after, length).start()
        url = f"http://127.0.0.1:{server.port}"
        tmp = self.out / "stall"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            result, _ = self.loadgen_cli(["run", "--target", url, "--path", "/", "--rate", str(rate), "--duration",
                                          str(seconds), "--warmup", "0"], tmp / "loadgen")
            lg = result["latency_ms"]
            server.reset()
            locust = None
            if LOCUST.exists():
                row, _ = self.locust(url, users, seconds, "/", users / rate, tmp / "locust")
                locust = {"p50": float(row["50%"]), "p99": float(row["99%"]), "max": float(row["Max Response Time"]),
                          "requests": int(row["Request Count"])}
        finally:
            server.stop()
        note = (f"stall {length:g} s: loadgen (open loop {rate}/s) p99 {lg['p99']:.0f} ms, max {lg['max']:.0f} ms, "
                f"{result['requests']} requests")
        if locust:
            note += (f"; Locust ({users} users, ~{rate}/s) p99 {locust['p99']:.0f} ms, max {locust['max']:.0f} ms, "
                     f"{locust['requests']} requests — Locust's users wait out the stall, so only {users} "
                     "samples see it (coordinated omission)")
        reported = lg["p99"] >= 0.8 * length * 1000
        value = lg["p99"] / locust["p99"] if locust and locust["p99"] > 0 else None
        self.ratio("stall", name, value, "loadgen reports the stall", reported,
                   f"loadgen run --path / --rate {rate} --duration {seconds} vs locust -u {users} with wait "
                   f"{users / rate:g}s, against a server stalling {length:g}s after {after:g}s", note=note,
                   loadgen={"p50": lg["p50"], "p99": lg["p99"], "max": lg["max"], "requests": result["requests"]},
                   locust=locust, stall_seconds=length)

    def seed(self) -> None:
        log("seeding (10 users, 200 products, 100 reviews)")
        proc = subprocess.run([self.python, "-m", "loadgen", "seed", "--target", self.gateway, "--users", "10",
                               "--products", "200", "--reviews", "100"], cwd=REPO, capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise TargetError(f"seeding failed: {proc.stdout[-300:]} {proc.stderr[-300:]}")
        from ..experiments import prepare_workload
        from ..target import parse_target
        workload, _ = prepare_workload(parse_target(self.gateway), 1, 10, 0, 10, {"product": 1}, log)
        self.hot = workload.products[0]  # the most popular product: the one with the most reviews
        page = json.loads(urllib.request.urlopen(f"{self.gateway}/v1/products/{self.hot}", timeout=10).read())
        self.details["hot_product"] = {"id": self.hot, "reviews_on_page": len(page["reviews"]),
                                       "bytes": len(json.dumps(page))}
        log(f"hot product {self.hot}: {len(page['reviews'])} reviews on its page")

    def part_import(self) -> None:
        from . import imports
        name = "import submit latency: 10,000 products vs 1"
        # Each submission timed alone, on a quiet stack (imports.submit_latency says why).
        rounds = 3
        quiet = imports.submit_latency(self.running_stack, self.gateway, rounds, log)
        ratio = quiet["ratio"]
        self.ratio("import", name, ratio, "≤ 2×", ratio <= 2.0,
                   f"{rounds} submissions of 1 and of 10,000 products through the gateway, alternately, each once the "
                   "imports before it have ended and their events are folded (loadgen/bench/imports.py)",
                   note=f"median {quiet['median'][1]:.1f} ms (1 product) vs {quiet['median'][10000]:.1f} ms "
                        f"({quiet['bytes'][10000]:,} bytes); all {quiet['ms']}", **quiet)
        self._guard("import", self.import_workers)

    def import_workers(self) -> None:
        from . import imports
        rounds = 2  # 40,000 products: the database of the shared bench stack holds about 100,000 (its heap)
        result = imports.measure(self.running_stack, self.gateway, rounds, log)
        ratio = result["ratio"]
        self.ratio("import_workers", "one 10,000-product import: time on 2 workers vs on 1", ratio, "≤ 0.6×",
                   ratio <= 0.6, f"{rounds} imports of 10,000 products on each worker count, alternately 1, 2, 1, 2, "
                   "each timed from its POST to `succeeded`, the workers settled and earlier events folded first",
                   note=f"median {result['median'][1]:.2f} s on 1 worker vs {result['median'][2]:.2f} s on 2 "
                        f"(all: {result['seconds'][1]} vs {result['seconds'][2]})",
                   seconds=result["seconds"], median=result["median"])

    def start_bare(self) -> str:
        from stack import cgroups

        stack = self.running_stack
        port = stack.layout.replica_port("catalog", 40)  # a port of the stack's range no replica uses
        env = stack.replica_env("catalog", 40)
        env.update({"REPLICA_ID": "bare-1", "PORT": str(port),
                    "PROMETHEUS_MULTIPROC_DIR": str(stack.layout.run_dir / "metrics" / "bare-1")})
        self.bare_cgroup = bare_cgroup = cgroups.create(f"{self.offset}-bench-bare", CPU_LIMIT)
        argv = cgroups.wrap_command(bare_cgroup, [self.python, "-m", "loadgen.bench.bare_app"])
        log_path = stack.layout.log_dir / "bare.log"
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.extra_procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/bare", timeout=1)
                return f"http://127.0.0.1:{port}"
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise TargetError(f"the bare Flask app did not start; see {log_path}")

    def closed(self, url: str, path: str, seconds: float, users: int = 16, warmup: float = 2.0) -> dict:
        cfg = RunConfig(target=url, mode="closed", concurrency=users, duration=seconds, warmup=warmup, path=path,
                        timeout=10.0, slo={"p99": 10_000.0})
        return self.run(cfg)

    def part_bare(self) -> None:
        from . import hit_path
        hit_path.run_part(self, log)

    def part_cache(self) -> None:
        name = "product page with cache vs without (through the gateway, 0.25 CPU per replica)"
        seconds = 5 if self.quick else 8
        path = f"/v1/products/{self.hot}"
        urllib.request.urlopen(f"{self.gateway}{path}", timeout=10).read()
        cached = self.closed(self.gateway, path, seconds)
        self.restart_catalog({"CACHE_PATTERNS": ""})
        try:
            uncached = self.closed(self.gateway, path, seconds)
        finally:
            self.restart_catalog({"CACHE_PATTERNS": "objects,queries"})
        ratio = cached["throughput_rps"] / uncached["throughput_rps"] if uncached["throughput_rps"] else None
        self.ratio("cache", name, ratio, "≥ 5×", None if ratio is None else ratio >= 5.0,
                   f"closed loop, 16 users, {seconds}s each, GET /v1/products/<id> through the gateway with "
                   "CACHE_PATTERNS=objects,queries and with CACHE_PATTERNS= (catalog restarted)",
                   note=f"{cached['throughput_rps']:.0f} vs {uncached['throughput_rps']:.0f} req/s; p50 "
                        f"{cached['latency_ms'].get('p50')} vs {uncached['latency_ms'].get('p50')} ms; DB round trips "
                        f"per request {cached['cache']['db_round_trips_per_request']} vs "
                        f"{uncached['cache']['db_round_trips_per_request']}",
                   cached={"throughput_rps": cached["throughput_rps"], "latency_ms": cached["latency_ms"],
                           "cache": cached["cache"]},
                   uncached={"throughput_rps": uncached["throughput_rps"], "latency_ms": uncached["latency_ms"],
                             "cache": uncached["cache"]})

    def part_scale(self) -> None:
        from ..experiments import capacity_search, prepare_workload, prime_cache, scale_summary
        from ..platform import stack_cpu_sampler
        from ..target import parse_target
        name = "throughput at the SLO: 4 catalog replicas vs 1 (0.25 CPU each)"
        target = parse_target(self.gateway)
        workload, mix = prepare_workload(target, 1, 10, 0, 10, {"browse": 30, "product": 70}, log)
        base = RunConfig(target=self.gateway, mix=mix, warmup=1.5, timeout=5.0, slo={"p99": 250.0},
                         connections=256)
        step = 3.0 if self.quick else 5.0
        stack = self.running_stack
        if any(stack.env_overrides.get(k) != v for k, v in LONG_CACHE_TTL.items()):
            log(f"restarting catalog with {LONG_CACHE_TTL}: the primed entries must outlive both searches")
            self.restart_catalog(LONG_CACHE_TTL)
        # Every page and list in the cache (shared by every replica) before either measurement, so that
        # both see the same hit ratio and neither pays for filling it. 4 replicas prime it faster.
        stack.scale("catalog", 4)
        primed = prime_cache(target, workload, log, concurrency=8)
        points = []
        for count in (1, 4):
            if len(stack.service_replicas("catalog")) != count:
                stack.scale("catalog", count)
                time.sleep(2)
            result = capacity_search(base, workload, None, 1.25, 5000, 12, 2, step,
                                     lambda line: log(line), label=f"{count} replicas", pause=0.5,
                                     cpu_sampler=stack_cpu_sampler(stack, "catalog"))
            points.append({"replicas": count, "capacity_rps": result["capacity_rps"], "capacity": result,
                           "cpu_limits": [r.cpu.describe() for r in stack.service_replicas("catalog")]})
        summary = scale_summary(points)
        log(summary["verdict"])
        scale_file = self.out / "scale.json"  # an `experiment scale` result, so the report shows it as one
        scale_file.write_text(json.dumps({"kind": "scale", "schema": 2, "target": self.gateway, "platform":
                                          "local (bench stack)", "service": "catalog", "mix": mix,
                                          "slo": {"p99_ms": 250.0}, "points": points, "primed": primed, **summary,
                                          "warnings": []}, indent=1, default=str))
        self.results.append(scale_file)
        one, four = points
        self.details["scale"] = {"primed": primed, **summary, **{str(p["replicas"]): p for p in points}}
        check = summary["baseline"]
        void = (f"the 1-replica point was not limited by its own CPU but by {check['limited_by']}"
                if check["external"] else "")
        cpu = {str(p["replicas"]): {k: p[k] for k in ("cpu", "rps_per_cpu", "efficiency", "per_cpu_efficiency")}
               for p in points}
        self.ratio("scale", name, summary["speedup"], "≥ 3.5×", None, f"capacity search (closed-loop probe, then "
                   f"open-loop steps of {step:g}s ×1.25 from half the probe, a failing step confirmed once, 2 "
                   "refinements, SLO p99 ≤ 250 ms) after priming the cache, through the gateway, mix "
                   "browse=30,product=70, catalog ×1 then ×4; CPU of each answer's run from the replicas' cgroups",
                   note=summary["verdict"], void=void, one=one["capacity_rps"], four=four["capacity_rps"], cpu=cpu,
                   peak_speedup=summary["peak_speedup"])
        self.ratio("scale-per-cpu", "", four["per_cpu_efficiency"], "", None,
                   "the same two answers: each run's throughput per CPU-second its catalog replicas used",
                   note=f"{four['rps_per_cpu']} vs {one['rps_per_cpu']} requests per CPU-second; 1 replica: "
                        f"{check['text']}", cpu=cpu)

    def part_capacity(self) -> None:
        """Issue 14 items 1 and 2 on `make up`'s replica counts without CPU limits (loadgen/bench/capacity.py)."""
        from stack.layout import DEFAULT_REPLICAS

        from ..cli import SEED_DEFAULTS
        from ..platform import stack_cpu_sampler
        from . import capacity
        log(f"restarting the replicas as `make up` starts them ({DEFAULT_REPLICAS}), without CPU limits, "
            f"with {LONG_CACHE_TTL}")
        self.restart_replicas(dict(DEFAULT_REPLICAS), cpu_limit=None, settings=LONG_CACHE_TTL)
        self.seed_more(SEED_DEFAULTS["products"], SEED_DEFAULTS["reviews"])
        folder = self.out / "capacity"
        folder.mkdir(parents=True, exist_ok=True)

        def save(stem: str, result: dict) -> None:
            (folder / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
            self.results.append(folder / f"{stem}.json")

        found = capacity.measure(self.gateway, self.quick, log, save, stack_cpu_sampler(self.running_stack, "catalog"))
        self.details["capacity"] = {"replicas": dict(DEFAULT_REPLICAS), "cpu_limit": None,
                                    "results": str(folder), **found}
        hits = found["hits_only"]
        options = " ".join(found["quick_options"]) or "its defaults"
        runs = "; ".join(f"run {i} {r['capacity_rps']:.1f} req/s ({r['limit']}{capacity.cpu_text(r)})"
                         for i, r in enumerate(found["mix"], 1))
        self.ratio("capacity-agreement", "", found["agreement_pct"], "", None,
                   f"loadgen experiment capacity --target <gateway> ({options}) twice in a row, on catalog, user "
                   f"and worker ×{DEFAULT_REPLICAS['catalog']} without CPU limits, {SEED_DEFAULTS['products']:,} "
                   "products",
                   note=runs if found["agreement_pct"] is not None else f"{runs}: neither found a capacity",
                   runs=found["mix"])
        hit_ratio = "-" if hits["hit_ratio"] is None else f"{hits['hit_ratio']:.4f}"
        self.ratio("capacity-mix-vs-hits", "", found["mix_vs_hits"], "", None,
                   f"the mean of the two runs above vs loadgen experiment capacity --mix product=1 --hot-set "
                   f"{capacity.HOT_SET} ({options}), the {capacity.HOT_SET} hottest pages primed",
                   note=f"mix {found['mix_mean_rps']:.1f} req/s vs hits only {hits['capacity_rps']:.1f} req/s "
                        f"({hits['limit']}; X-Cache hit ratio at its answer {hit_ratio}{capacity.cpu_text(hits)})",
                   void=found["hits_only_problem"], mix_mean_rps=found["mix_mean_rps"], hits_only=hits)

    def seed_more(self, products: int, reviews: int) -> None:
        """`loadgen seed` up to `products` and `reviews` (it is idempotent: only what is missing is made)."""
        log(f"seeding up to {products:,} products and {reviews:,} reviews")
        proc = subprocess.run([self.python, "-m", "loadgen", "seed", "--target", self.gateway, "--users", "10",
                               "--products", str(products), "--reviews", str(reviews)], cwd=REPO,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise TargetError(f"seeding failed: {proc.stdout[-300:]} {proc.stderr[-300:]}")

    def part_database(self) -> None:
        from . import database
        sizes = database.SIZES[:1] if self.quick else database.SIZES
        cache_dir = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()
        result = database.run(self.out, self.offset, cache_dir, self.db_servers, sizes)
        self.details["database"] = {
            "json": str(self.out / "database.json"), "seconds": result["seconds"],
            "servers": {s["name"]: ("measured" if s.get("sizes") else s.get("why") or s.get("error"))
                        for s in result["servers"]}}

    def part_reads(self) -> None:
        """List and page cache misses at 1,000 and 10,000 products, on a stack of its own with the
        replicas of `make up` (ports + offset + BENCH_READS_STACK_SHIFT), so the other parts' data does not count."""
        from stack.control import Stack
        from stack.layout import BENCH_READS_STACK_SHIFT, Layout

        from . import reads
        run_dir = Path(tempfile.mkdtemp(prefix="scaleshop-bench-reads-"))
        layout = Layout(run_dir=run_dir, cache_dir=REPO / ".cache", port_offset=self.offset + BENCH_READS_STACK_SHIFT)
        stack = Stack(layout, log=lambda m: log(f"reads stack: {m}"))
        sizes = reads.SIZES[:1] if self.quick else reads.SIZES
        try:
            stack.up()
            found = reads.run(stack.layout.gateway_url, sizes, reads.SAMPLES, log)
        finally:
            stack.down()
            shutil.rmtree(run_dir, ignore_errors=True)
        self.details["reads"] = found
        for size, shapes in found.items():
            for shape, label in (("product_list_miss", "product-list"), ("product_page_miss", "product-page")):
                p50 = shapes[shape].get("p50_ms")
                self.ratio(f"reads-{shape}-{size}", f"{label} miss p50 at {size:,} products", p50, "", None,
                           "loadgen/bench/reads.py through the gateway, every sample an X-Cache miss",
                           note=f"p50 {p50} ms, p90 {shapes[shape].get('p90_ms')} ms of {shapes[shape]['samples']}; "
                                f"search (q) apart: p50 {shapes['search_miss'].get('p50_ms')} ms", **shapes)

    def part_fold(self) -> None:
        from . import folding
        found = folding.measure(self.running_stack, log)
        self.details["fold"] = found
        slowest = min(found["rate"].values(), key=lambda r: r["events_per_s"] or 0)
        rate = slowest["events_per_s"]
        self.ratio("fold", "events folded per second (2 workers)", rate, "", None,
                   f"rounds of {folding.ROUND:,} events (creations into an empty product_index, as many "
                   "again, moves of the latter to another category), each published to catalog.events while the "
                   "workers are stopped, then folded by 2 workers; the slowest round",
                   note="; ".join(f"{name}: {r['events_per_s']} events/s "
                                  f"({r['folded_after_first']} in {r['seconds']} s), "
                                  f"CPU ms per event {r['cpu_ms_per_event']}, load average {r['load_average']}"
                                  for name, r in found["rate"].items()), **found["rate"])
        lag = found["import"]["lag_s"]
        self.ratio("fold-lag", "import events folded after the import ends", lag, "", None,
                   f"a {folding.IMPORT_SIZE:,}-product import through the API, 2 workers",
                   note=f"import {found['import']['import_s']} s; {found['import']['folded_at_end']} events "
                        f"folded when it ended, all {lag} s later", **found["import"])

    # ------------------------------------------------------------------ all of it
    def main(self) -> None:
        started = time.monotonic()
        if "database" in self.parts:  # first, alone: its servers must not compete with the stack
            try:
                self.part_database()
            except Exception as exc:  # noqa: BLE001 - the other parts still run
                log(f"database part failed: {type(exc).__name__}: {exc}")
                self.details["database"] = {"error": f"{type(exc).__name__}: {exc}"}
        if "reads" in self.parts:  # a stack of its own, before the shared one starts
            self._guard("reads", self.part_reads)
        needs_stack = any(p in self.parts for p in ("locust", "capacity", "import", "bare", "cache", "scale", "fold"))
        if needs_stack:
            self.start_stack()
        if "locust" in self.parts:
            self._guard("locust", self.part_locust)
        if "stall" in self.parts:
            self._guard("stall", self.part_stall)
        if any(p in self.parts for p in ("capacity", "import", "bare", "cache", "scale")):
            self.seed()
            if "capacity" in self.parts:  # make up's replicas, unlimited; the parts below restart them limited
                self._guard("capacity", self.part_capacity)
            if any(p in self.parts for p in ("bare", "cache", "scale")):
                log(f"restarting user and catalog with a CPU limit of {CPU_LIMIT} each")
                self.limit_replicas(catalog=1, cpu_limit=CPU_LIMIT)
                if "bare" in self.parts:
                    self._guard("bare", self.part_bare)
                if "cache" in self.parts:
                    self._guard("cache", self.part_cache)
                if "scale" in self.parts:
                    self._guard("scale", self.part_scale)
            if "import" in self.parts:  # last: the jobs keep the workers and the database busy
                if self.running_stack.cpu_limit is not None:
                    log("restarting user and catalog without CPU limit for the import submissions")
                    self.limit_replicas(catalog=1, cpu_limit=None)
                self._guard("import", self.part_import)
        if "fold" in self.parts:  # last: it leaves the stack with 2 workers
            self._guard("fold", self.part_fold)
        self.details["seconds"] = round(time.monotonic() - started, 1)

    def _guard(self, key: str, part) -> None:
        try:
            part()
        except (TargetError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            names = {"capacity": "capacity, agreement and mix vs hits",
                     "locust": "loadgen vs Locust", "stall": "stalled server p99", "import": "import submit ratio",
                     "bare": "cached page vs bare Flask", "cache": "cache vs no cache", "scale": "4 vs 1 replicas",
                     "fold": "event folding", "reads": "list and page misses"}
            self.not_measured(key, names[key], "-", f"failed: {type(exc).__name__}: {exc}")


def _db_server_names() -> list[str]:
    from stack.dbservers import SERVERS
    return list(SERVERS)


def main(argv: list[str] | None = None) -> int:
    from stack.layout import BENCH_PORT_OFFSET

    parser = argparse.ArgumentParser(prog="python -m loadgen.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, from {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=None, help="default bench-results/<time>")
    parser.add_argument("--port-offset", type=int, default=int(os.environ.get("BENCH_PORT_OFFSET", BENCH_PORT_OFFSET)),
                        help="added to every port of the bench's stacks and database servers (default "
                             "%(default)s: $BENCH_PORT_OFFSET, else stack/layout.py's BENCH_PORT_OFFSET)")
    parser.add_argument("--quick", action="store_true", help="shorter measurements (database: 1,000 products only)")
    parser.add_argument("--db-servers", default=None,
                        help="database part: the servers to measure, from " + ",".join(_db_server_names()))
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if any(p not in PARTS for p in parts):
        print(f"error: --only takes parts from {','.join(PARTS)}", file=sys.stderr)
        return 2
    out = args.out or REPO / "bench-results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    db_servers = [s.strip() for s in args.db_servers.split(",") if s.strip()] if args.db_servers else None
    if db_servers and any(s not in _db_server_names() for s in db_servers):
        print(f"error: --db-servers takes servers from {','.join(_db_server_names())}", file=sys.stderr)
        return 2
    bench = Bench(out, args.port_offset, parts, args.quick, db_servers)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        bench.main()
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - report what was measured, then fail
        log(f"error: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        bench.stop_stack()
    rows = ratios.complete(bench.ratios, parts)
    judged = [r for r in rows if r["met"] is not None]
    result = {"kind": "bench", "schema": 2,
              "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}, "parts": parts,
              "quick": args.quick, "ratios": rows, "details": bench.details,
              "summary": f"{sum(1 for r in rows if r['value'] is not None)} of {len(rows)} numbers measured; "
                         f"{sum(1 for r in judged if r['met'])} of {len(judged)} judged met their target."}
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    try:
        from .. import report
        report.build([out / "bench.json", *bench.results], out)
    except Exception as exc:  # noqa: BLE001 - the JSON is what matters
        log(f"report not written: {exc}")
    print()
    written = json.loads((out / "bench.json").read_text())  # the table is what the JSON says, nothing else
    for line in ratios.table(written["ratios"]):
        print(line)
    print(f"\nresults: {out / 'bench.json'}")
    return code
