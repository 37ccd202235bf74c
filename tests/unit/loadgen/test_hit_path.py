"""The profile summary of make bench's hit-path part (loadgen/bench/hit_path.py) on py-spy's raw format."""
from __future__ import annotations

from loadgen.bench.hit_path import describe, summarize

CATALOG_1 = 'process 11:"python -m services.catalog";thread (0x1);handle (gunicorn/workers/gthread.py:10);'
CATALOG_2 = 'process 12:"python -m services.catalog";thread (0x2);handle (gunicorn/workers/gthread.py:10);'
PAGE = "get_product_page (services/catalog/products.py:40);read_through (services/catalog/caching.py:90)"
RAW = "\n".join([
    f"{CATALOG_1}{PAGE};get_many (pymemcache/client/base.py:5) 6",
    f"{CATALOG_1}{PAGE} 1",
    f"{CATALOG_2}_finish (services/shared/app.py:120);info (logging/__init__.py:1) 2",
    'process 12:"python -m services.catalog";thread (0x2);handle (gunicorn/workers/gthread.py:12) 1',
    "garbage line",
])


def test_self_time_is_shared_out_by_package_and_ours_inclusively_by_function():
    summary = summarize(RAW)
    assert summary["samples"] == 10
    assert {p["package"]: p["share"] for p in summary["self_by_package"]} == {
        "pymemcache": 0.6, "logging": 0.2, "ours (services/)": 0.1, "gunicorn": 0.1}
    ours = {o["function"]: o["share"] for o in summary["ours_inclusive"]}
    assert ours["get_product_page (services/catalog/products.py)"] == 0.7
    assert ours["read_through (services/catalog/caching.py)"] == 0.7  # each frame once per stack
    assert ours["_finish (services/shared/app.py)"] == 0.2
    assert "pymemcache 60%" in describe(summary)


def test_an_empty_profile_says_so():
    assert summarize("") == {"samples": 0} and describe({"samples": 0}) == "no samples"
