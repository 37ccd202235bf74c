"""The capacity search (loadgen/experiments.py capacity_search) with a model server instead of a real
one: each step's "run" is computed from the offered rate, so the rules can be checked without load.

Checked: a step holds enough requests for the percentile it judges (and lasts longer at low rates,
up to --max-step-duration); a step that cannot is marked unsupported, not PASS or FAIL; the search
never climbs past a confirmed failure, confirms a failure once, re-checks the rate it answers and
reports the spread of the two runs; the verdict tells a knee from a latency floor.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from loadgen.engine import RunConfig
from loadgen.experiments import MAX_STEP_DURATION, capacity_search, judge, slow_requests, step_seconds
from loadgen.stats import samples_needed
from loadgen.workload import Workload

WORKLOAD = Workload(seed=1, products=["p1"], categories=[("c", 1)], users=1)


def fake_run(cfg: RunConfig, p99_ms: float, served: float | None = None, by_request: dict | None = None) -> dict:
    """What run_load returns, for a server that answers with `p99_ms` and serves `served`/s (default: all)."""
    served = cfg.rate if served is None else served
    count = int(served * cfg.duration)
    latency = {"count": count, "p50": p99_ms / 4, "p99": p99_ms}
    violations = [f"{k} {latency[k]} ms > {v:g} ms" for k, v in cfg.slo.items() if latency[k] > v]
    return {"requests": count, "throughput_rps": round(served, 2), "journeys_per_s": served, "error_rate": 0.0,
            "kept_up": served >= 0.9 * cfg.rate, "latency_ms": latency, "warnings": [],
            "slo": {"met": not violations, "violations": violations}, "by_request": by_request or {}}


class ModelServer:
    """Records the steps it was asked for; `answer(cfg, nth_call_at_this_rate)` makes each run."""

    def __init__(self, answer: Callable[[RunConfig, int], dict]) -> None:
        self.answer = answer
        self.calls: list[RunConfig] = []

    def __call__(self, cfg: RunConfig) -> dict:
        self.calls.append(cfg)
        return self.answer(cfg, sum(1 for c in self.calls if c.rate == cfg.rate))


def knee_at(capacity: float) -> Callable[[RunConfig, int], dict]:
    """Flat 20 ms up to `capacity`; beyond it the server serves `capacity`/s and latency explodes."""
    def answer(cfg: RunConfig, _nth: int) -> dict:
        if cfg.rate <= capacity:
            return fake_run(cfg, 20.0)
        return fake_run(cfg, 2000.0, served=capacity)
    return answer


def search(server: ModelServer, start_rate: float, slo: dict | None = None, step_duration: float = 5.0,
           max_step_duration: float = MAX_STEP_DURATION, max_steps: int = 10, refine: int = 1) -> dict:
    base = RunConfig(target="http://127.0.0.1:1", slo=slo or {"p99": 250.0})
    return capacity_search(base, WORKLOAD, start_rate, 1.3, 5000, max_steps, refine, step_duration,
                           printer=lambda line: None, pause=0, max_step_duration=max_step_duration,
                           run_step=server, settle_target=lambda: 0.0)


def test_a_p99_needs_enough_requests_beyond_it():
    assert samples_needed("p99") == 2000  # 20 requests beyond the 99th percentile
    assert samples_needed("p999") == 20_000
    assert samples_needed("p90") == 200
    assert samples_needed("max") == 1


def test_a_step_at_a_low_rate_lasts_long_enough_for_its_percentile_within_the_bound():
    assert step_seconds(1000, 1.0, 2000, 5.0, 30.0) == 5.0  # 5,000 requests: the shortest step will do
    assert step_seconds(200, 1.0, 2000, 5.0, 30.0) == 11.5  # 2,000 requests and a margin
    assert step_seconds(200, 2.0, 2000, 5.0, 30.0) == 5.8  # journeys of two requests each
    assert step_seconds(10, 1.0, 2000, 5.0, 30.0) == 30.0  # bounded
    server = ModelServer(knee_at(1000.0))
    search(server, start_rate=100.0, max_steps=2)
    first = server.calls[0]
    assert first.rate * first.duration >= 2000 and first.duration > 5.0


def test_a_step_without_enough_requests_is_unsupported_not_judged():
    cfg = RunConfig(target="http://127.0.0.1:1", rate=10.0, duration=30.0)
    slow = judge(fake_run(cfg, 900.0), {"p99": 250.0})  # 300 requests: its "p99" is its 3 slowest
    assert slow["verdict"] == "UNSUPPORTED" and slow["unsupported"] == ["p99"]
    assert slow["samples"] == 300 and slow["samples_needed"] == 2000
    overloaded = judge(fake_run(cfg, 900.0, served=5.0), {"p99": 250.0})  # not keeping up fails on any count
    assert overloaded["verdict"] == "FAIL"
    enough = RunConfig(target="http://127.0.0.1:1", rate=100.0, duration=30.0)
    assert judge(fake_run(enough, 900.0), {"p99": 250.0})["verdict"] == "FAIL"
    assert judge(fake_run(enough, 90.0), {"p99": 250.0})["verdict"] == "PASS"


def test_unsupported_steps_are_marked_in_the_result_and_never_give_the_answer():
    server = ModelServer(lambda cfg, _nth: fake_run(cfg, 20.0))
    lines: list[str] = []
    base = RunConfig(target="http://127.0.0.1:1", slo={"p99": 250.0})
    result = capacity_search(base, WORKLOAD, 5.0, 1.3, 8.0, 4, 0, 5.0, printer=lines.append, pause=0,
                             max_step_duration=20.0, run_step=server, settle_target=lambda: 0.0)
    assert [s["verdict"] for s in result["steps"]] == ["UNSUPPORTED"] * 3  # 5, 6.5, 8/s: at most 160 requests
    assert not any(s["passed"] for s in result["steps"])
    assert all("UNSUPPORTED" in line and "p99 unsupported" in line for line in lines if "step" in line)
    assert result["capacity_rps"] == 0.0 and result["answer"] is None and result["limit"] == "unsupported"
    assert "No verdict" in result["verdict"] and "2000 requests" in result["verdict"]


def test_a_failure_above_rates_too_short_to_judge_is_no_verdict_not_an_overload():
    # the cluster's 1-replica point: steps below the knee held < 2,000 requests in --max-step-duration 10 s
    from loadgen.report import capacity_caption
    result = search(ModelServer(knee_at(230.0)), start_rate=117.3, max_step_duration=10.0)
    assert [s["verdict"] for s in result["steps"]] == ["UNSUPPORTED"] * 3 + ["FAIL"] * 2
    assert result["capacity_rps"] == 0.0 and result["limit"] == "unsupported"
    assert "No verdict" in result["verdict"] and "overloaded" not in result["verdict"]
    assert "117.3/s, 152.49/s, 198.24/s held at most 1982 of the 2000 requests" in result["verdict"]
    assert "257.71/s" in result["verdict"] and "raise --max-step-duration" in result["verdict"]
    caption = capacity_caption(result)
    assert "below 257.71/s" in caption and "no verdict" in caption


def test_the_search_confirms_its_failure_and_rechecks_its_answer():
    server = ModelServer(knee_at(450.0))
    result = search(server, start_rate=300.0)
    rates = [s["rate"] for s in result["steps"]]
    # 300, 390 pass; 507 fails and is run again; bisection at 444.67 passes; 444.67 is re-checked.
    assert rates == [300.0, 390.0, 507.0, 507.0, 444.67, 444.67]
    assert [s["role"] for s in result["steps"]] == ["search", "search", "search", "confirm", "search", "re-check"]
    assert result["first_failure"]["rate"] == 507.0 and result["steps"][3]["confirmed"] is True
    assert result["answer"]["rate"] == 444.67 and len(result["answer"]["runs"]) == 2
    assert result["capacity_rps"] == 444.67 and result["limit"] == "knee"


def test_a_failure_that_does_not_repeat_does_not_end_the_search():
    def stalls_once(cfg: RunConfig, nth: int) -> dict:
        if cfg.rate == 390.0 and nth == 1:  # a transient stall elsewhere
            return fake_run(cfg, 900.0)
        return knee_at(450.0)(cfg, nth)
    result = search(ModelServer(stalls_once), start_rate=300.0)
    assert result["first_failure"]["rate"] == 507.0
    assert result["answer"]["rate"] > 390.0


def test_a_rate_that_passes_once_but_not_on_its_recheck_is_not_the_answer_and_the_search_stays_below():
    def flaky_at_444(cfg: RunConfig, nth: int) -> dict:
        if cfg.rate == 444.67 and nth == 2:
            return fake_run(cfg, 400.0)
        return knee_at(450.0)(cfg, nth)
    server = ModelServer(flaky_at_444)
    result = search(server, start_rate=300.0)
    # halfway between the failed re-check and the pass below it (390/s, a whole step down), re-checked
    assert [(s["rate"], s["role"]) for s in result["steps"][-3:]] == [(444.67, "re-check"), (416.44, "narrow"),
                                                                       (416.44, "re-check")]
    assert result["answer"]["rate"] == 416.44
    assert result["first_failure"]["rate"] == 444.67
    after_failure = [c.rate for c in server.calls[server.calls.index(
        next(c for c in server.calls if c.rate == 507.0)):]]
    assert max(after_failure[2:]) < 507.0  # monotone: nothing above the confirmed failure was tried again


def test_the_answer_reports_the_spread_of_its_two_runs():
    def drifting(cfg: RunConfig, nth: int) -> dict:
        if cfg.rate > 500:
            return fake_run(cfg, 2000.0, served=500.0)
        return fake_run(cfg, 100.0 if nth == 1 else 150.0, served=cfg.rate if nth == 1 else 0.95 * cfg.rate)
    result = search(ModelServer(drifting), start_rate=300.0)
    spread = result["answer"]["spread"]
    assert spread["p99_ms"]["values"] == [100.0, 150.0]
    assert spread["p99_ms"]["range_pct"] == 40.0  # 50 ms of a 125 ms mean
    low, high = sorted(spread["throughput_rps"]["values"])
    assert math.isclose(spread["throughput_rps"]["range_pct"], round(100 * (high - low) / ((high + low) / 2), 1))
    assert result["capacity_rps"] == low  # the capacity is what both runs served
    assert "twice" in result["verdict"] and f"range {spread['throughput_rps']['range_pct']}%" in result["verdict"]


def test_a_knee_is_named_only_where_served_stops_following_offered():
    knee = search(ModelServer(knee_at(450.0)), start_rate=300.0)
    assert knee["limit"] == "knee" and "The knee" in knee["verdict"]
    assert "served 450.0/s: it stopped following" in knee["verdict"]

    def errors_beyond_500(cfg: RunConfig, _nth: int) -> dict:
        run = fake_run(cfg, 20.0)
        if cfg.rate > 500:
            run["error_rate"] = 0.05
            run["slo"] = {"met": False, "violations": ["error rate 5.00% > 1%"]}
        return run
    limit = search(ModelServer(errors_beyond_500), start_rate=300.0)
    assert limit["limit"] == "limit" and "not at a knee" in limit["verdict"] and "The knee" not in limit["verdict"]

    # latency grows with the rate but every request offered is served: the SLO breaks before saturation
    slower = search(ModelServer(lambda cfg, _nth: fake_run(cfg, 20.0 if cfg.rate <= 450 else 480.0)), start_rate=300.0)
    assert slower["limit"] == "limit" and "The knee" not in slower["verdict"]
    assert "served 507.0/s (it followed the offered rate)" in slower["verdict"]


def test_when_halfway_fails_too_the_answer_is_the_pass_below_re_checked():
    def flaky_above_400(cfg: RunConfig, nth: int) -> dict:
        if 400 < cfg.rate <= 450 and (nth == 2 or cfg.rate < 420):
            return fake_run(cfg, 400.0)
        return knee_at(450.0)(cfg, nth)
    result = search(ModelServer(flaky_above_400), start_rate=300.0)
    roles = [(s["rate"], s["role"], s["verdict"]) for s in result["steps"][-4:]]
    assert roles == [(444.67, "re-check", "FAIL"), (416.44, "narrow", "FAIL"), (416.44, "confirm", "FAIL"),
                     (390.0, "re-check", "PASS")]
    assert result["answer"]["rate"] == 390.0 and result["first_failure"]["rate"] == 416.44


def test_rechecks_are_bounded_and_the_last_one_tries_the_lowest_pass():
    def passes_once_only(cfg: RunConfig, nth: int) -> dict:
        return knee_at(450.0)(cfg, nth) if nth == 1 or cfg.rate == 300.0 else fake_run(cfg, 900.0)
    server = ModelServer(passes_once_only)
    result = search(server, start_rate=300.0, refine=2)
    rechecks = [s["rate"] for s in result["steps"] if s["role"] == "re-check"]
    assert len(rechecks) <= 3 and rechecks[-1] == 300.0
    assert result["answer"]["rate"] == 300.0


def test_the_last_recheck_falls_one_step_below_the_failed_rate_not_to_the_lowest_pass():
    def unsteady_above_550(cfg: RunConfig, nth: int) -> dict:
        if 550 < cfg.rate <= 700 and nth >= 2:  # passes once, never again
            return fake_run(cfg, 400.0)
        return knee_at(700.0)(cfg, nth)
    result = search(ModelServer(unsteady_above_550), start_rate=300.0)
    rechecks = [(s["rate"], s["verdict"]) for s in result["steps"] if s["role"] in ("re-check", "narrow")]
    # 659.1 fails its re-check; halfway to 507 (578.07) passes once and fails its re-check; the last
    # re-check is the highest pass at most 578.07/1.3 = 444.7/s: 390, not the lowest pass, 300
    assert rechecks == [(659.1, "FAIL"), (578.07, "PASS"), (578.07, "FAIL"), (390.0, "PASS")]
    assert result["answer"]["rate"] == 390.0


def test_a_latency_floor_names_the_requests_that_miss_instead_of_a_capacity():
    by_request = {"GET /v1/products/{id}": {"latency_ms": {"count": 1400, "p99": 40.0}, "cache": {"hit": 1400}},
                  "GET /v1/products": {"latency_ms": {"count": 600, "p99": 700.0},
                                       "cache": {"hit": 500, "miss": 100}}}
    server = ModelServer(lambda cfg, _nth: fake_run(cfg, 420.0, by_request=by_request))
    result = search(server, start_rate=300.0, max_steps=4)
    assert result["capacity_rps"] == 0.0 and result["limit"] == "floor"
    assert "latency floor" in result["verdict"] and "Capacity" not in result["verdict"]
    assert [m["request"] for m in result["floor_misses"]] == ["GET /v1/products"]
    assert "GET /v1/products (p99 700.0 ms, n=600, X-Cache {'hit': 500, 'miss': 100})" in result["verdict"]
    assert "knee" not in result["verdict"]


def test_rates_that_pass_once_but_never_on_their_re_check_are_called_unsteady_not_a_floor():
    def passes_first_time_only(cfg: RunConfig, nth: int) -> dict:
        return fake_run(cfg, 20.0) if nth == 1 and cfg.rate <= 390.0 else fake_run(cfg, 400.0)
    result = search(ModelServer(passes_first_time_only), start_rate=300.0)
    from loadgen.report import capacity_caption
    assert result["capacity_rps"] == 0.0 and result["answer"] is None
    assert result["limit"] == "unsteady"
    assert "no rate met the SLO twice" in result["verdict"] and "floor" not in result["verdict"]
    assert "300/s" in result["verdict"] and "390/s" in result["verdict"]  # the rates that passed once
    caption = capacity_caption(result)
    assert "met the SLO once" in caption and "floor" not in caption and "beyond" not in caption


def test_the_report_caption_calls_a_knee_only_what_the_numbers_show():
    from loadgen.report import capacity_caption
    knee = search(ModelServer(knee_at(450.0)), start_rate=300.0)
    caption = capacity_caption(knee)
    assert "the knee" in caption and "gets 450.0 req/s (short of the offered rate) with p99 2.00 s" in caption
    flat = search(ModelServer(lambda cfg, n: fake_run(cfg, 20.0) if cfg.rate <= 500 else
                              {**fake_run(cfg, 20.0), "slo": {"met": False, "violations": ["error rate 5% > 1%"]}}),
                  start_rate=300.0)
    caption = capacity_caption(flat)
    assert "the knee" not in caption and "a limit, not a knee" in caption


def test_latency_is_split_by_x_cache_so_a_floor_can_name_slow_misses():
    from loadgen.stats import Merged, Recorder
    recorder = Recorder()
    for i in range(100):
        miss = i % 10 == 0
        recorder.record_response("GET /v1/products", 600_000 if miss else 2_000, 200,
                                 {"x-cache": "miss" if miss else "hit"}, ok=True, measured=True)
    merged = Merged()
    merged.add(recorder.to_wire())
    split = merged.describe()["by_request_cache"]
    assert split["GET /v1/products X-Cache: miss"]["latency_ms"]["count"] == 10
    assert split["GET /v1/products X-Cache: hit"]["latency_ms"]["p99"] == 2.0
    run = {"by_request": merged.describe()["by_request"], "by_request_cache": split}
    slow = slow_requests(run, {"p99": 250.0})
    assert [m["request"] for m in slow] == ["GET /v1/products", "GET /v1/products X-Cache: miss"]


def routes_by_rate(cfg: RunConfig, _nth: int) -> dict:
    """A knee at 450/s whose list route slows down first, with its misses slowest of all."""
    beyond = cfg.rate > 450
    lists_p99 = 900.0 if beyond else 120.0
    run = knee_at(450.0)(cfg, _nth)
    run["by_request"] = {
        "GET /v1/products/{id}": {"latency_ms": {"count": 600, "p50": 2.0, "p99": 8.0}, "cache": {"hit": 600}},
        "GET /v1/products?category=": {"latency_ms": {"count": 400, "p50": 4.0, "p99": lists_p99},
                                       "cache": {"hit": 380, "miss": 20}}}
    run["by_request_cache"] = {
        "GET /v1/products?category= X-Cache: hit": {"latency_ms": {"count": 380, "p50": 3.0, "p99": 30.0},
                                                    "cache": {"hit": 380}},
        "GET /v1/products?category= X-Cache: miss": {"latency_ms": {"count": 20, "p50": 80.0,
                                                                    "p99": lists_p99 + 100},
                                                     "cache": {"miss": 20}}}
    return run


def test_the_answer_and_the_failing_step_keep_latency_and_hit_ratio_per_route():
    result = search(ModelServer(routes_by_rate), start_rate=300.0)
    routes = {(r["route"], r["x_cache"]): r for r in result["knee"]["routes"]}
    page = routes[("GET /v1/products/{id}", None)]
    assert (page["share"], page["p99_ms"], page["hit_ratio"]) == (0.6, 8.0, 1.0)
    lists = routes[("GET /v1/products?category=", None)]
    assert (lists["p99_ms"], lists["hit_ratio"]) == (120.0, 0.95)
    assert routes[("GET /v1/products?category=", "miss")]["p99_ms"] == 220.0
    failing = {(r["route"], r["x_cache"]): r for r in result["first_failure"]["routes"]}
    assert failing[("GET /v1/products?category=", None)]["p99_ms"] == 900.0


def test_the_route_caption_is_made_of_the_numbers_in_the_route_rows(tmp_path):
    from loadgen import report
    result = search(ModelServer(routes_by_rate), start_rate=300.0)
    caption = report.route_caption(result)
    knee, fail = result["knee"], result["first_failure"]
    assert caption.startswith(f"At the answer ({knee['rate']:g}/s offered, {knee['throughput_rps']:.1f} req/s served)")
    assert "GET /v1/products/{id} 60% of requests, p50 2.0 ms, p99 8.0 ms, hits 100%" in caption
    assert "GET /v1/products?category= 40% of requests, p50 4.0 ms, p99 120.0 ms, hits 95%" in caption
    assert f"At the first confirmed failure ({fail['rate']:g}/s offered" in caption
    assert "The slowest is GET /v1/products?category= (p99 900.0 ms, its X-Cache miss requests p99 1.00 s)" in caption
    for step in result["steps"]:  # the report's per-route plot reads every step's run
        step["run"] = routes_by_rate(RunConfig(target="x", rate=step["rate"], duration=step["duration_s"]), 1)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text(__import__("json").dumps(result))
    built = report.build([tmp_path / "r"], tmp_path / "out")
    assert [p.name.split("-", 1)[1] for p in built["plots"]] == ["capacity.png", "routes.png"]
    assert "share (answer)" in built["markdown"].read_text()


def test_a_search_whose_cache_entries_expire_midway_says_those_steps_measured_misses():
    def expiring(cfg: RunConfig, nth: int) -> dict:
        run = knee_at(450.0)(cfg, nth)
        ratio = 0.77 if cfg.rate == 444.67 and nth == 2 else 1.0  # the primed entries expire at the re-check
        run["cache"] = {"hit": int(1000 * ratio), "miss": 1000 - int(1000 * ratio), "hit_ratio": ratio}
        return run
    lines: list[str] = []
    base = RunConfig(target="http://127.0.0.1:1", slo={"p99": 250.0})
    result = capacity_search(base, WORKLOAD, 300.0, 1.3, 5000, 10, 1, 5.0, printer=lines.append, pause=0,
                             run_step=ModelServer(expiring), settle_target=lambda: 0.0)
    warning = ("the X-Cache hit ratio fell from 100% to 77% during the search (worst at 444.67/s, re-check; "
               "1 step(s) below 95%)")
    assert any(w.startswith(warning) for w in result["warnings"])
    assert any("hits 77%" in line for line in lines if "re-check" in line)
    steady = capacity_search(base, WORKLOAD, 300.0, 1.3, 5000, 10, 1, 5.0, printer=lambda line: None, pause=0,
                             run_step=ModelServer(knee_at(450.0)), settle_target=lambda: 0.0)
    assert not any("hit ratio fell" in w for w in steady["warnings"])
