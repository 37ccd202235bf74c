"""The cache plot's caption (loadgen/report.py): stated from the measured numbers, and saying
plainly when the cache did not help. Needs no server: the rows are what `experiment cache` writes."""
from __future__ import annotations

from loadgen.report import cache_caption


def row(setting: str, rps: float, p50: float, p99: float, hit_ratio: float | None, trips: float,
        error_rate: float = 0.0) -> dict:
    return {"setting": setting, "throughput_rps": rps, "latency_ms": {"p50": p50, "p99": p99},
            "hit_ratio": hit_ratio, "db_round_trips_per_request": trips, "error_rate": error_rate}


OFF = row("off", 100.0, 40.0, 120.0, None, 3.0)


def test_a_cache_that_helped_is_credited_with_its_measured_numbers():
    caption = cache_caption([OFF, row("both", 400.0, 8.0, 30.0, 0.93, 0.2)])
    assert "'both' (hit ratio 93%)" in caption
    assert "p50 8.0 ms vs 40.0 ms" in caption and "p99 30.0 ms vs 120.0 ms" in caption
    assert "400.0 vs 100.0 req/s" in caption and "DB round trips per request 0.2 vs 3.0" in caption
    assert "the cache helped (4.00× the throughput, p50 80% lower)" in caption
    assert "did not help" not in caption


def test_a_cache_that_made_no_difference_is_said_not_to_help():
    caption = cache_caption([OFF, row("queries", 101.0, 39.5, 119.0, 0.12, 2.9)])
    assert "hit ratio 12%" in caption
    assert "the cache did not help (throughput and p50 within 5%)" in caption
    assert "helped" not in caption


def test_a_cache_that_made_the_load_slower_says_so():
    caption = cache_caption([OFF, row("objects", 80.0, 55.0, 200.0, 0.0, 3.1)])
    assert "hit ratio 0%" in caption
    assert "the cache did not help, it made this load slower (no request was served from the cache)" in caption


def test_mixed_results_are_not_called_a_help():
    caption = cache_caption([OFF, row("both", 130.0, 48.0, 150.0, 0.5, 1.5)])
    assert "did not clearly help (throughput +30%, p50 +20%)" in caption


def test_each_cached_setting_gets_its_own_verdict_and_errors_are_shown_when_there_are_any():
    caption = cache_caption([OFF, row("queries", 100.0, 40.0, 120.0, 0.3, 2.5),
                             row("both", 300.0, 10.0, 40.0, 0.9, 0.3, error_rate=0.02)])
    queries, both = caption.split("; ")
    assert "'queries'" in queries and "did not help" in queries
    assert "'both'" in both and "the cache helped" in both and "errors 2.0% vs 0.0%" in both


def test_without_a_run_with_the_cache_off_no_effect_is_claimed():
    caption = cache_caption([row("both", 400.0, 8.0, 30.0, 0.93, 0.2)])
    assert caption.startswith("No run with the cache off to compare against")
    assert "helped" not in caption and "hit ratio 93%" in caption
