"""`make bench`'s targets and its closing table (loadgen/bench/ratios.py), and the report's ratio plot
(loadgen/report.py): every target of issues 14 and 11 (items 4-7) is listed, measured or not, each
judged in its own unit, and the table and the plot say the same as the JSON."""
from __future__ import annotations

import json
from pathlib import Path

from loadgen import report
from loadgen.bench import ratios
from loadgen.bench.run import Bench


def test_every_target_of_issues_14_and_11_is_registered_once_with_its_bound():
    issues = {t.issue for t in ratios.TARGETS.values()}
    assert {"14.1", "14.2", "14.3", "14.4", "14.5", "11.4", "11.5", "11.6", "11.7"} <= issues
    by_key = ratios.TARGETS
    assert (by_key["capacity-agreement"].op, by_key["capacity-agreement"].bound) == ("≤", 15.0)
    assert (by_key["capacity-mix-vs-hits"].op, by_key["capacity-mix-vs-hits"].bound) == ("≥", 0.5)
    assert (by_key["reads-product_list_miss-10000"].bound, by_key["reads-product_list_miss-10000"].unit) == (15.0, "ms")
    assert (by_key["fold"].op, by_key["fold"].bound) == ("≥", 2000.0)
    assert (by_key["fold-lag"].op, by_key["fold-lag"].bound) == ("≤", 10.0)
    assert (by_key["import"].bound, by_key["import_workers"].bound) == (2.0, 0.6)


def test_a_value_is_judged_in_its_own_unit_in_the_direction_of_its_target():
    assert ratios.row("reads-product_page_miss-10000", 12.0, "", "", {})["met"] is True
    assert ratios.row("reads-product_page_miss-10000", 16.0, "", "", {})["met"] is False
    assert ratios.row("fold", 2500.0, "", "", {})["met"] is True
    assert ratios.row("fold", 1999.0, "", "", {})["met"] is False
    assert ratios.row("capacity-agreement", 14.9, "", "", {})["met"] is True
    assert ratios.row("capacity-agreement", 15.1, "", "", {})["met"] is False
    assert ratios.row("fold", None, "", "", {})["met"] is None
    assert ratios.row("scale-per-cpu", 3.0, "", "", {})["met"] is None  # no target: reported only
    stall = ratios.row("stall", 9.0, "", "", {}, name="p99 of a stall", unregistered=("reports it", True))
    assert (stall["target"], stall["met"], stall["name"]) == ("reports it", True, "p99 of a stall")


def test_a_part_records_through_the_registry_whatever_target_text_it_passes(tmp_path: Path):
    bench = Bench(tmp_path, 0, ["fold"], quick=True)
    bench.ratio("fold", "events folded", 1500.0, "≥ 1×", True, "cmd", note="slow round")
    (entry,) = bench.ratios
    assert entry["target"] == "≥ 2,000 events/s" and entry["met"] is False and entry["unit"] == "events/s"


def test_the_table_lists_every_target_and_says_why_one_was_not_measured():
    measured = [ratios.row("cache", 5.4, "cmd", "", {}), ratios.row("import", 2.5, "cmd", "", {})]
    rows = ratios.complete(measured, parts_run=["cache", "import", "capacity"])
    assert [r["key"] for r in rows] == list(ratios.TARGETS)
    by_key = {r["key"]: r for r in rows}
    assert by_key["fold"]["value"] is None and "part `fold` was not run" in by_key["fold"]["note"]
    assert "failed or recorded nothing" in by_key["capacity-agreement"]["note"]
    lines = ratios.table(rows)
    cache_line = next(line for line in lines if ratios.TARGETS["cache"].name in line)
    assert "5.40×" in cache_line and "≥ 5.00×" in cache_line and cache_line.rstrip().endswith("yes")
    import_line = next(line for line in lines if ratios.TARGETS["import"].name in line)
    assert "2.50×" in import_line and import_line.rstrip().endswith("NO")
    assert lines[-1].startswith("1 of 2 judged numbers meet their target")


def test_the_report_plots_every_row_with_a_target_and_its_caption_names_the_misses(tmp_path: Path):
    rows = ratios.complete([ratios.row("cache", 5.4, "", "", {}), ratios.row("fold", 1200.0, "", "", {}),
                            ratios.row("fold-lag", 4.0, "", "", {})], parts_run=["cache", "fold"])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"kind": "bench", "ratios": rows, "summary": ""}))
    built = report.build([path], tmp_path / "out")
    assert len(built["plots"]) == 1
    shown = [r for r in rows if report.bench_bound(r) is not None]
    caption = report.bench_caption(shown)
    assert caption.startswith(f"2 of {len(shown)} targets met")
    assert "missed: catalog.events folded per second by 2 workers 1,200 events/s (target ≥ 2,000 events/s)" in caption
    assert "not measured: " in caption and ratios.TARGETS["capacity-agreement"].name in caption
    assert report.bench_score(rows[[r["key"] for r in rows].index("fold-lag")]) == 2.5  # 10 s / 4 s


def test_an_older_bench_json_without_bounds_is_still_plotted_from_its_target_text():
    old = {"key": "cache", "name": "cache", "value": 4.0, "target": "≥ 5×", "met": False}
    assert report.bench_bound(old) == ("≥", 5.0)
    assert report.bench_score(old) == 0.8
