"""The `capacity` part of `make bench` (issue 14 items 1 and 2): is the capacity method repeatable,
and how close does the default read mix come to its ceiling?

On the bench stack, restarted by the caller to `make up`'s replica counts without CPU limits and
seeded with `loadgen seed`'s default products and reviews:

- **agreement**: `loadgen experiment capacity` as a user runs it (its options parsed by the CLI's own
  parser, so its defaults are the CLI's: the read mix, SLO, steps, priming), twice in a row;
  |a - b| / max(a, b) of the two capacities.
- **the mix against its ceiling**: the same search on product-page reads alone, drawn from the
  `HOT_SET` most popular products after priming exactly those pages: cached hits only. Its answer's
  X-Cache hit ratio must be at least `MIN_HIT_RATIO`, else the "ceiling" is not hits alone and the
  ratio is not judged. The ratio is the mean capacity of the two mix runs over the hits-only one.
"""
from __future__ import annotations

from collections.abc import Callable

from .. import experiments
from ..cli import build_parser
from ..platform import CpuSampler, baseline_check
from ..target import parse_target

HOT_SET = 50  # products whose cached pages the hits-only search reads
MIN_HIT_RATIO = 0.99
QUICK_OPTIONS = ["--step-duration", "3", "--max-step-duration", "12", "--refine", "1"]


def capacity_args(gateway: str, quick: bool, extra: list[str] | None = None):
    """`loadgen experiment capacity --target GATEWAY [extra]` as the CLI parses it (its defaults)."""
    argv = ["experiment", "capacity", "--target", gateway, *(QUICK_OPTIONS if quick else []), *(extra or [])]
    return build_parser().parse_args(argv)


def agreement_pct(a: float, b: float) -> float | None:
    """|a - b| / max(a, b) in percent; None when neither run found a capacity."""
    top = max(a, b)
    return round(100 * abs(a - b) / top, 2) if top > 0 else None


def summary(result: dict) -> dict:
    """What the bench keeps of one capacity search (the whole result goes to its own JSON file), with the
    CPU at its answer and what that CPU says limited it (platform.baseline_check)."""
    answer = result.get("answer") or {}
    cpu = (result.get("knee") or {}).get("cpu")
    return {"capacity_rps": result["capacity_rps"], "limit": result["limit"], "verdict": result["verdict"],
            "answer_rate": answer.get("rate"), "spread": answer.get("spread"),
            "hit_ratio": experiments.answer_hit_ratio(result), "steps": len(result["steps"]),
            "knee_routes": (result.get("knee") or {}).get("routes"), "cpu": cpu,
            "limited_by": baseline_check(cpu)["limited_by"] if cpu else None,
            "first_failure": result.get("first_failure"), "warnings": result.get("warnings", [])}


def hits_only_problem(hits: dict) -> str:
    """Why the hits-only capacity is not a ceiling of cached hits ("" when it is)."""
    if not hits["capacity_rps"]:
        return f"the hits-only search found no capacity ({hits['limit']})"
    ratio = hits["hit_ratio"]
    if ratio is None or ratio < MIN_HIT_RATIO:
        shown = "no X-Cache look-up" if ratio is None else f"X-Cache hit ratio {ratio:.4f}"
        return f"the hits-only answer is not hits alone: {shown} < {MIN_HIT_RATIO}"
    return ""


def measure(gateway: str, quick: bool, log: Callable[[str], None], save: Callable[[str, dict], None],
            cpu_sampler: CpuSampler | None = None) -> dict:
    """Two searches of the default mix, then the hits-only one; each full result handed to `save`."""
    target = parse_target(gateway)
    runs = []
    for index in (1, 2):
        log(f"capacity of the default read mix, run {index} of 2")
        result = experiments.run_capacity(capacity_args(gateway, quick, ["--label", f"mix {index}"]), target, log,
                                          cpu_sampler)
        save(f"capacity-mix-{index}", result)
        runs.append(summary(result))
    log(f"capacity of cached product-page hits alone ({HOT_SET} hottest products)")
    hits_result = experiments.run_capacity(
        capacity_args(gateway, quick, ["--mix", "product=1", "--hot-set", str(HOT_SET), "--label", "hits only"]),
        target, log, cpu_sampler)
    save("capacity-hits-only", hits_result)
    hits = summary(hits_result)
    a, b = runs[0]["capacity_rps"], runs[1]["capacity_rps"]
    mix_mean = (a + b) / 2
    return {"mix": runs, "hits_only": hits, "agreement_pct": agreement_pct(a, b), "mix_mean_rps": mix_mean,
            "mix_vs_hits": mix_mean / hits["capacity_rps"] if hits["capacity_rps"] else None,
            "hits_only_problem": hits_only_problem(hits), "quick_options": QUICK_OPTIONS if quick else []}


def cpu_text(run: dict) -> str:
    """", at the answer: catalog used X CPU of Y, ...; limited by Z" for a summary with CPU, else ""."""
    cpu = run.get("cpu")
    if not cpu:
        return ""
    return (f"; at the answer catalog used {cpu['used_cpus']:.2f} of {cpu['available_cpus']:.2f} CPU, the load "
            f"generator {cpu['loadgen_cpus']:.2f}, the gateway {cpu['gateway_cpus']:.2f}, the machine "
            f"{cpu['machine_busy_cpus']:.2f} of {cpu['cores']} cores: limited by {run['limited_by']}")
