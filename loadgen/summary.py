"""Console summaries of results."""
from __future__ import annotations


def fmt_ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def print_run(result: dict) -> None:
    lat = result["latency_ms"]
    offered = f" of {result['offered_rps']:g}/s offered" if result.get("offered_rps") else ""
    print(f"throughput {result['throughput_rps']:.1f} req/s{offered}; {result['requests']} requests, "
          f"{result['errors']} errors ({100 * result['error_rate']:.2f}%)")
    if lat.get("count"):
        print(f"latency  p50 {fmt_ms(lat['p50'])}  p90 {fmt_ms(lat['p90'])}  p99 {fmt_ms(lat['p99'])}  "
              f"p99.9 {fmt_ms(lat['p999'])}  max {fmt_ms(lat['max'])}")
    if result["errors_by_kind"]:
        print("errors   " + ", ".join(f"{k}: {v}" for k, v in result["errors_by_kind"].items()))
    cache = result.get("cache") or {}
    if cache.get("hit_ratio") is not None or cache.get("db_round_trips_per_request") is not None:
        ratio = cache.get("hit_ratio")
        print(f"cache    hit ratio {'-' if ratio is None else f'{100 * ratio:.1f}%'}; "
              f"DB round trips per request {cache.get('db_round_trips_per_request')}")
    width = max((len(n) for n in result["by_request"]), default=10)
    for name, row in result["by_request"].items():
        latency = row["latency_ms"]
        print(f"  {name:<{width}}  n={latency.get('count', 0):<6} p50 {fmt_ms(latency.get('p50')):>9}  "
              f"p99 {fmt_ms(latency.get('p99')):>9}  status {row['status']}"
              + (f"  errors {row['errors']}" if row["errors"] else ""))
    slo = result["slo"]
    print("SLO met" if slo["met"] else "SLO missed: " + "; ".join(slo["violations"]))
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
