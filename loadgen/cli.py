"""`python -m loadgen`: seed, run, experiments and reports against a Scaleshop gateway.

  seed                      users, products, reviews (deterministic, idempotent)
  run                       a mix of journeys: open loop (--rate) or closed loop (--concurrency)
  experiment capacity       step the rate; the highest rate whose p99 met the SLO twice
  experiment scale          throughput at the SLO for 1, 2, 4 replicas; ideal line, efficiency
  experiment cache          the same load with CACHE_PATTERNS off / queries / objects / both
  experiment async          import submit latency and completion time vs job size and workers
  report PATH...            HTML + Markdown report with plots from result files or folders

Exit codes: 0 done, 1 internal error, 2 bad option, 3 target unusable (unreachable, not
seeded, route missing), 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path

from . import options
from .journeys import DEFAULT_MIX, parse_mix
from .target import Target, TargetError, UsageError, check_reachable, parse_target

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("reports")  # relative to the working directory
SEED_DEFAULTS = {"users": 50, "products": 1000, "reviews": 300}  # `seed` without options: what a new user gets


def default_target() -> str:
    if os.environ.get("LOADGEN_TARGET"):
        return os.environ["LOADGEN_TARGET"]
    offset = os.environ.get("SCALESHOP_PORT_OFFSET", "0")
    port = 8080 + (int(offset) if offset.lstrip("-").isdigit() else 0)
    return f"http://127.0.0.1:{port}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _typed(parse, name: str):
    """An argparse type from one of options.*, with the option's name in the message."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name
    return convert


def _bounded_int(low: int, high: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    convert.__name__ = "integer"
    return convert


def _bounded_float(low: float, high: float):
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {value:g}")
        return value
    convert.__name__ = "number"
    return convert


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------------------------------
# Parser
# ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=default_target(),
                        help="gateway URL (default: $LOADGEN_TARGET, else http://127.0.0.1:8080 + "
                             "$SCALESHOP_PORT_OFFSET); loopback or in-cluster names only")
    common.add_argument("--seed", type=_bounded_int(0, 10**9), default=1,
                        help="seed number: which seeded users/products to use (default 1)")

    load = argparse.ArgumentParser(add_help=False)
    load.add_argument("--mix", type=_mix, default=None,
                      help="journey weights, e.g. browse=40,product=50,signin=2,review=5,import=3 "
                           f"(default {','.join(f'{k}={v:g}' for k, v in DEFAULT_MIX.items())})")
    load.add_argument("--slo", type=_typed(options.slo, "slo"), default={"p99": 250.0},
                      help="latency objective, e.g. p99=250ms or p50=20ms,p99=200ms (default p99=250ms)")
    load.add_argument("--max-error-rate", type=_typed(options.fraction, "fraction"), default=0.01,
                      help="errors allowed within the SLO (default 1%%)")
    load.add_argument("--processes", type=_bounded_int(1, 64), default=1,
                      help="worker processes generating load (default 1; use more when one core is not enough)")
    load.add_argument("--connections", type=_bounded_int(1, 20_000), default=256,
                      help="open loop: keep-alive connections in total (default 256)")
    load.add_argument("--timeout", type=_typed(options.duration, "duration"), default=None,
                      help="per request (default 10s for run, 5s in experiments)")
    load.add_argument("--warmup", type=_typed(options.duration, "duration"), default=None,
                      help="seconds of load before measuring")
    load.add_argument("--users", type=_bounded_int(1, 100_000), default=50,
                      help="seeded users to sign in as (at most `seed --users`, default 50)")
    load.add_argument("--tokens", type=_bounded_int(0, 1000), default=20,
                      help="seeded users signed in before the run for review/import journeys (default 20)")
    load.add_argument("--import-size", type=_bounded_int(1, 10_000), default=10,
                      help="products per import in the import journey (default 10)")
    load.add_argument("--arrival", choices=("uniform", "poisson"), default="uniform",
                      help="open loop arrivals: evenly spaced or a Poisson process (default uniform)")

    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--out", type=Path, default=None,
                        help="folder for result.json and the report (default reports/<time>-<kind>)")
    output.add_argument("--no-report", action="store_true", help="write result.json only")
    output.add_argument("--quiet", action="store_true", help="no live progress lines")

    parser = argparse.ArgumentParser(prog="python -m loadgen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seed = sub.add_parser("seed", parents=[common], help="create users, products and reviews (idempotent)")
    seed.add_argument("--users", type=_bounded_int(1, 100_000), default=SEED_DEFAULTS["users"],
                      help=f"accounts (default {SEED_DEFAULTS['users']}; each costs two argon2 hashes on the server)")
    seed.add_argument("--products", type=_bounded_int(1, 1_000_000), default=SEED_DEFAULTS["products"],
                      help=f"default {SEED_DEFAULTS['products']}")
    seed.add_argument("--reviews", type=_bounded_int(0, 1_000_000), default=SEED_DEFAULTS["reviews"],
                      help=f"default {SEED_DEFAULTS['reviews']}")
    seed.add_argument("--concurrency", type=_bounded_int(1, 256), default=8)

    run = sub.add_parser("run", parents=[common, load, output], help="run a mix of journeys and measure it")
    shape = run.add_mutually_exclusive_group()
    shape.add_argument("--rate", type=_bounded_float(0.1, 100_000), default=None,
                       help="open loop: journeys started per second (default 10)")
    shape.add_argument("--concurrency", type=_bounded_int(1, 10_000), default=None,
                       help="closed loop: number of users, each waiting for its answer")
    run.add_argument("--duration", type=_typed(options.duration, "duration"), default=10.0,
                     help="measured time (default 10s)")
    run.add_argument("--think", type=_typed(options.duration, "duration"), default=0.0,
                     help="closed loop: mean pause between a user's journeys (default 0)")
    run.add_argument("--label", default="", help="a name for this run in the report")
    run.add_argument("--path", default="",
                     help="drive one endpoint (GET PATH, any 2xx is success) instead of the journeys; "
                          "needs no seed data, e.g. --path /healthz")

    exp = sub.add_parser("experiment", help="capacity, scale, cache or async")
    exps = exp.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")

    search = argparse.ArgumentParser(add_help=False)
    search.add_argument("--start-rate", type=_bounded_float(0.1, 100_000), default=None,
                        help="first step's rate (default: half the rate a 3 s closed-loop probe reaches)")
    search.add_argument("--factor", type=_bounded_float(1.05, 10), default=1.3,
                        help="each step multiplies the rate by this (default 1.3)")
    search.add_argument("--max-rate", type=_bounded_float(0.1, 100_000), default=5000,
                        help="never offer more than this (default 5000/s)")
    search.add_argument("--max-steps", type=_bounded_int(1, 40), default=12, help="bound on steps (default 12)")
    search.add_argument("--refine", type=_bounded_int(0, 6), default=2,
                        help="bisection steps between the last good and first bad rate (default 2)")
    search.add_argument("--step-duration", type=_typed(options.duration, "duration"), default=5.0,
                        help="shortest measured time per step (default 5s)")
    from .experiments import MAX_STEP_DURATION
    from .stats import samples_needed
    search.add_argument("--max-step-duration", type=_typed(options.duration, "duration"), default=MAX_STEP_DURATION,
                        help="a step at a low rate lasts longer to hold the requests its percentile needs "
                             f"({samples_needed('p99'):,} for a p99), up to this (default {MAX_STEP_DURATION:g}s)")

    platform = argparse.ArgumentParser(add_help=False)
    platform.add_argument("--platform", choices=("auto", "local", "k8s"), default="auto",
                          help="how to scale and reconfigure: the local stack or Kubernetes "
                               "(auto: k8s inside a cluster, else local)")
    platform.add_argument("--namespace", default=None, help="k8s: namespace (default: the pod's own, else default)")
    platform.add_argument("--deployment-prefix", default="",
                          help="k8s: Deployment names are <prefix><service> (e.g. 'scaleshop-')")
    platform.add_argument("--ready-timeout", type=_typed(options.duration, "duration"), default=180.0,
                          help="how long to wait for replicas to be ready (default 180s)")

    cap = exps.add_parser("capacity", parents=[common, load, search, output],
                          help="highest throughput whose p99 stays under the SLO")
    cap.add_argument("--label", default="")
    cap.add_argument("--no-prime", action="store_true",
                     help="do not read every page and list once first (measure from a cold cache)")
    cap.add_argument("--hot-set", type=_bounded_int(1, 1_000_000), default=None,
                     help="draw product pages from only the N most popular products (with --mix product=1: "
                          "cached product-page hits alone, the mix's ceiling)")

    scl = exps.add_parser("scale", parents=[common, load, search, platform, output],
                          help="throughput at the SLO for 1, 2, 4 replicas")
    scl.add_argument("--service", choices=("catalog", "user"), default="catalog")
    scl.add_argument("--replicas", type=_typed(lambda t: options.int_list(t, "--replicas", 1, 50), "list"),
                     default=[1, 2, 4], help="replica counts to measure (default 1,2,4)")
    scl.add_argument("--no-prime", action="store_true",
                     help="do not read every page and list once before measuring (cache priming)")

    cch = exps.add_parser("cache", parents=[common, load, platform, output],
                          help="the same load with each CACHE_PATTERNS setting")
    cch.add_argument("--patterns", default="off,queries,objects,both",
                     help="settings to compare, from off,queries,objects,both (default all four)")
    cch.add_argument("--rate", type=_bounded_float(0.1, 100_000), default=None,
                     help="open loop at this rate for every setting (default: closed loop, --concurrency users)")
    cch.add_argument("--concurrency", type=_bounded_int(1, 10_000), default=16,
                     help="closed loop users (default 16)")
    cch.add_argument("--duration", type=_typed(options.duration, "duration"), default=8.0,
                     help="measured seconds per setting (default 8s)")
    cch.add_argument("--no-prime", action="store_true",
                     help="do not read every list/page once before each cached setting (measure it cold)")

    asy = exps.add_parser("async", parents=[common, platform, output],
                          help="import submit latency and completion time vs job size and workers")
    asy.add_argument("--sizes", type=_typed(lambda t: options.int_list(t, "--sizes", 1, 10_000), "list"),
                     default=[1, 100, 1000], help="products per import, up to 10000 (default 1,100,1000)")
    asy.add_argument("--workers", type=_typed(lambda t: options.int_list(t, "--workers", 1, 50), "list"),
                     default=None, help="worker replica counts (default: leave as is; e.g. 1,2,4)")
    asy.add_argument("--jobs", type=_bounded_int(1, 50), default=3, help="imports per size (default 3)")
    asy.add_argument("--job-timeout", type=_typed(options.duration, "duration"), default=60.0,
                     help="give up waiting for a job after this long (default 60s)")
    asy.add_argument("--quiet-progress", action="store_true", help=argparse.SUPPRESS)

    rep = sub.add_parser("report", help="HTML + Markdown report with plots from results")
    rep.add_argument("paths", nargs="+", type=Path, help="result.json files or folders holding them")
    rep.add_argument("--out", type=Path, default=None, help="report folder (default reports/<time>-report)")
    return parser


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------

def _out_dir(args, kind: str) -> Path:
    if args.out is not None:
        return args.out
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = getattr(args, "label", "") or ""
    suffix = f"-{''.join(c if c.isalnum() or c in '-_' else '-' for c in label)}" if label else ""
    return DEFAULT_OUT / f"{stamp}-{kind}{suffix}"


def write_result(result: dict, out: Path, make_report: bool) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "result.json"
        path.write_text(json.dumps(result, indent=1))
    except OSError as exc:
        raise UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None
    print(f"result: {path}")
    if make_report:
        from . import report
        files = report.build([path], out)
        print(f"report: {files['html']}  ({files['markdown'].name}, {len(files['plots'])} plots)")
    return path


def _target(args) -> Target:
    target = parse_target(args.target)
    check_reachable(target)
    return target


def cmd_seed(args) -> int:
    from .seed import ProgressLine, seed
    target = _target(args)
    print(f"seeding {target} (seed {args.seed}): {args.users} users, {args.products} products, "
          f"{args.reviews} reviews")
    summary = asyncio.run(seed(target, args.seed, args.users, args.products, args.reviews, args.concurrency,
                               ProgressLine()))
    failed = sum(summary[p]["failed"] for p in ("users", "products", "reviews"))
    print(f"seeded in {summary['seconds']}s: " + "; ".join(
        f"{p} {summary[p]['created']} created, {summary[p]['existing']} existing"
        + (f", {summary[p]['failed']} failed ({summary[p]['first_failure']})" if summary[p]['failed'] else "")
        for p in ("users", "products", "reviews")))
    return 1 if failed else 0


def prepare(args, target: Target, mix: dict[str, float] | None):
    """The workload (products, tokens) and the mix to use, after checking what the target offers."""
    from .experiments import prepare_workload
    return prepare_workload(target, args.seed, args.users, args.tokens, args.import_size, mix, printer=_stderr)


def cmd_run(args) -> int:
    from .engine import RunConfig, run_load
    from .summary import print_run
    target = _target(args)
    if args.path:
        from .workload import Workload
        workload, mix = Workload(args.seed, [], [], args.users), {"path": 1.0}
    else:
        workload, mix = prepare(args, target, args.mix)
    closed = args.concurrency is not None
    cfg = RunConfig(target=target.url, mode="closed" if closed else "open", rate=args.rate or 10.0,
                    concurrency=args.concurrency or 16, duration=args.duration,
                    warmup=2.0 if args.warmup is None else args.warmup, mix=mix, processes=args.processes,
                    connections=args.connections, timeout=args.timeout or 10.0, seed=args.seed, think=args.think,
                    arrival=args.arrival, slo=args.slo, max_error_rate=args.max_error_rate, label=args.label,
                    path=args.path)
    try:
        cfg.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    shape = f"{cfg.concurrency} users (closed loop)" if closed else f"{cfg.rate:g}/s (open loop, {cfg.arrival})"
    what = f"GET {cfg.path}" if cfg.path else f"mix {','.join(f'{k}={v:g}' for k, v in mix.items())}"
    _stderr(f"running {shape} against {target} for {cfg.warmup:g}s warm-up + {cfg.duration:g}s, "
            f"{what}, {cfg.processes} process(es)")
    result = run_load(cfg, workload, None if args.quiet else _stderr)
    print_run(result)
    write_result(result, _out_dir(args, "run"), not args.no_report)
    return 0


def cmd_experiment(args) -> int:
    from . import experiments
    target = _target(args)
    result = experiments.dispatch(args, target, _stderr)
    write_result(result, _out_dir(args, args.experiment), not args.no_report)
    return 0


def cmd_report(args) -> int:
    from . import report
    out = args.out or _out_dir(args, "report")
    files = report.build(args.paths, out)
    print(f"report: {files['html']}\n        {files['markdown']}\n        {len(files['plots'])} plots")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"seed": cmd_seed, "run": cmd_run, "experiment": cmd_experiment, "report": cmd_report}
    try:
        return commands[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a clear line, the traceback only on request
        if os.environ.get("LOADGEN_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (set LOADGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
