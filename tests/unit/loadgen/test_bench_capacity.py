"""The bench's capacity part (loadgen/bench/capacity.py) and what it relies on in `experiment capacity`
(--hot-set, priming by mix, the answer's hit ratio), with the searches replaced by recorded answers."""
from __future__ import annotations

from loadgen import experiments
from loadgen.bench import capacity, ratios
from loadgen.target import parse_target
from loadgen.workload import Workload


def test_the_bench_runs_experiment_capacity_with_the_clis_own_defaults():
    args = capacity.capacity_args("http://127.0.0.1:1580", quick=False)
    assert args.mix is None  # run_capacity then uses CAPACITY_MIX, the default read mix
    assert args.slo == {"p99": 250.0} and args.step_duration == 5.0 and args.factor == 1.3 and not args.no_prime
    quick = capacity.capacity_args("http://127.0.0.1:1580", quick=True, extra=["--mix", "product=1", "--hot-set", "50"])
    assert quick.step_duration == 3.0 and quick.max_step_duration == 12.0 and quick.refine == 1
    assert quick.mix == {"product": 1.0} and quick.hot_set == 50


def test_agreement_is_the_difference_over_the_larger_capacity():
    assert capacity.agreement_pct(400.0, 340.0) == 15.0
    assert capacity.agreement_pct(340.0, 400.0) == 15.0
    assert capacity.agreement_pct(0.0, 0.0) is None
    assert capacity.agreement_pct(0.0, 50.0) == 100.0


def test_a_hits_only_answer_below_the_hit_ratio_floor_is_not_a_ceiling_and_its_ratio_is_not_judged():
    assert capacity.hits_only_problem({"capacity_rps": 900.0, "limit": "knee", "hit_ratio": 0.995}) == ""
    problem = capacity.hits_only_problem({"capacity_rps": 900.0, "limit": "knee", "hit_ratio": 0.97})
    assert problem == "the hits-only answer is not hits alone: X-Cache hit ratio 0.9700 < 0.99"
    assert "found no capacity (floor)" in capacity.hits_only_problem({"capacity_rps": 0.0, "limit": "floor",
                                                                      "hit_ratio": None})
    voided = ratios.row("capacity-mix-vs-hits", 0.7, "", "mix 630 vs 900", {}, void=problem)
    assert voided["met"] is None and voided["note"].startswith("NOT JUDGED: the hits-only answer is not hits alone")


def capacity_result(rps: float, hits: int, misses: int, limit: str = "knee") -> dict:
    run = {"rate": rps, "throughput_rps": rps, "cache": {"hit": hits, "miss": misses}}
    return {"capacity_rps": rps, "limit": limit, "verdict": f"Capacity {rps}", "steps": [{}] * 6,
            "answer": {"rate": rps, "runs": [run, run], "spread": {}}, "knee": {"routes": []},
            "first_failure": None}


def test_measure_runs_the_mix_twice_then_hits_alone_and_keeps_every_result(monkeypatch):
    calls: list = []
    answers = iter([capacity_result(400.0, 900, 100), capacity_result(360.0, 900, 100),
                    capacity_result(950.0, 4990, 10)])

    def fake_run_capacity(args, target, printer, cpu_sampler=None):
        calls.append(args)
        return next(answers)

    monkeypatch.setattr(experiments, "run_capacity", fake_run_capacity)
    saved: dict = {}
    found = capacity.measure("http://127.0.0.1:1580", False, lambda line: None, saved.__setitem__)
    assert [a.mix for a in calls] == [None, None, {"product": 1.0}]
    assert calls[2].hot_set == capacity.HOT_SET and calls[0].hot_set is None
    assert list(saved) == ["capacity-mix-1", "capacity-mix-2", "capacity-hits-only"]
    assert found["agreement_pct"] == 10.0
    assert found["mix_mean_rps"] == 380.0 and found["mix_vs_hits"] == 380.0 / 950.0
    assert found["hits_only"]["hit_ratio"] == 0.998 and found["hits_only_problem"] == ""
    assert found["hits_only"]["cpu"] is None and capacity.cpu_text(found["hits_only"]) == ""


def test_a_capacity_with_cpu_says_what_limited_its_answer():
    cpu = {"used_cpus": 0.9, "available_cpus": 2.0, "share_of_available": 0.45, "throttled_share": None,
           "replicas": 2, "loadgen_cpus": 0.6, "loadgen_processes": 1, "gateway_cpus": 0.3, "gateway_workers": 2,
           "others": {}, "machine_busy_cpus": 1.95, "cores": 2, "other_processes_cpus": 0.15}
    result = capacity_result(1500.0, 10, 0)
    result["knee"] = {"routes": [], "cpu": cpu}
    kept = capacity.summary(result)
    assert kept["limited_by"].startswith("the machine (1.95 of 2 cores busy")
    assert capacity.cpu_text(kept).startswith("; at the answer catalog used 0.90 of 2.00 CPU, the load generator 0.60")


def test_answer_hit_ratio_counts_both_runs_of_the_answer():
    assert experiments.answer_hit_ratio(capacity_result(100.0, 99, 1)) == 0.99
    assert experiments.answer_hit_ratio({"answer": None}) is None


def test_the_hot_set_limits_product_pages_and_only_those_pages_are_primed(monkeypatch):
    workload = Workload(seed=1, products=[f"p{i}" for i in range(200)], categories=[("c", 200)], users=1)
    primed: dict = {}
    searched: dict = {}
    monkeypatch.setattr(experiments, "prepare_workload", lambda *a, **k: (workload, {"product": 1.0}))

    def fake_prime(target, wl, printer, concurrency=8, lists=True, pages=True):
        primed.update(products=len(wl.products), lists=lists, pages=pages)
        return {}

    def fake_search(base, wl, *args, **kwargs):
        searched["products"] = wl.products
        return {"verdict": "", "knee": None, "first_failure": None}

    monkeypatch.setattr(experiments, "prime_cache", fake_prime)
    monkeypatch.setattr(experiments, "capacity_search", fake_search)
    args = capacity.capacity_args("http://127.0.0.1:1580", quick=True, extra=["--mix", "product=1", "--hot-set", "50"])
    experiments.run_capacity(args, parse_target("http://127.0.0.1:1580"), lambda line: None)
    assert searched["products"] == workload.products[:50]
    assert primed == {"products": 50, "lists": False, "pages": True}
