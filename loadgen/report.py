"""`loadgen report`: one HTML and one Markdown report from any set of results, with PNG plots.

Every plot gets a sentence under it that says what it shows, computed from the numbers
(not a caption template), so the report reads on its own.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

from .target import UsageError

KINDS = ("run", "capacity", "scale", "cache", "async", "bench")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def load_results(paths: list[Path]) -> list[tuple[Path, dict]]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("result.json")) or sorted(p for p in path.glob("*.json"))
            if not found:
                raise UsageError(f"{path} holds no result.json")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    results = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{file} is not a readable JSON result: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise UsageError(f"{file} is not a loadgen result (no known \"kind\")")
        results.append((file, data))
    return results


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _slo_outcome(slo: dict) -> str:
    return "met" if slo["met"] else f"missed ({'; '.join(slo['violations'])})"


class Report:
    def __init__(self, out: Path):
        self.out = out
        self.sections: list[dict] = []
        self.plots: list[Path] = []
        self.counter = 0

    def section(self, title: str, intro: str = "") -> dict:
        sec = {"title": title, "intro": intro, "items": []}
        self.sections.append(sec)
        return sec

    def plot(self, sec: dict, fig, stem: str, sentence: str) -> None:
        self.counter += 1
        name = f"{self.counter:02d}-{stem}.png"
        fig.tight_layout()
        fig.savefig(self.out / name)
        _plt().close(fig)
        self.plots.append(self.out / name)
        sec["items"].append(("plot", name, sentence))

    def table(self, sec: dict, header: list[str], rows: list[list[str]]) -> None:
        sec["items"].append(("table", header, rows))

    def text(self, sec: dict, text: str) -> None:
        sec["items"].append(("text", text))

    # -- output
    def markdown(self) -> str:
        lines = ["# Scaleshop load report", "", f"Generated {dt.datetime.now().isoformat(timespec='seconds')}.", ""]
        for sec in self.sections:
            lines += [f"## {sec['title']}", ""]
            if sec["intro"]:
                lines += [sec["intro"], ""]
            for item in sec["items"]:
                if item[0] == "plot":
                    lines += [f"![{item[1][3:-4].replace('-', ' ')}]({item[1]})", "", item[2], ""]
                elif item[0] == "table":
                    header, rows = item[1], item[2]
                    lines.append("| " + " | ".join(header) + " |")
                    lines.append("|" + "---|" * len(header))
                    lines += ["| " + " | ".join(r) + " |" for r in rows]
                    lines.append("")
                else:
                    lines += [item[1], ""]
        return "\n".join(lines)

    def html(self) -> str:
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Scaleshop load report</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;"
                 "color:#222}img{max-width:100%;border:1px solid #ddd}p.caption{margin:.3em 0 1.6em;color:#333}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
                 "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}</style></head><body>",
                 "<h1>Scaleshop load report</h1>",
                 f"<p>Generated {html.escape(dt.datetime.now().isoformat(timespec='seconds'))}.</p>"]
        for sec in self.sections:
            parts.append(f"<h2>{html.escape(sec['title'])}</h2>")
            if sec["intro"]:
                parts.append(f"<p>{html.escape(sec['intro'])}</p>")
            for item in sec["items"]:
                if item[0] == "plot":
                    parts.append(f"<figure><img src='{html.escape(item[1])}' alt='{html.escape(item[1][3:-4])}'>"
                                 f"<p class='caption'>{html.escape(item[2])}</p></figure>")
                elif item[0] == "table":
                    parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in item[1]) + "</tr>")
                    for row in item[2]:
                        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
                    parts.append("</table>")
                else:
                    parts.append(f"<p>{html.escape(item[1])}</p>")
        parts.append("</body></html>")
        return "\n".join(parts)


# ------------------------------------------------------------------------------------------
# Sections per kind
# ------------------------------------------------------------------------------------------

def _run_section(rep: Report, name: str, result: dict) -> None:
    plt = _plt()
    cfg = result.get("config", {})
    shape = (f"open loop at {result['offered_rps']:g}/s" if result.get("offered_rps")
             else f"closed loop with {cfg.get('concurrency')} users")
    lat = result["latency_ms"]
    sec = rep.section(f"Run: {result.get('label') or name}",
                      f"{shape} against {result['target']} for {result['window_s']:g} s measured: "
                      f"{result['throughput_rps']:.1f} req/s, {result['requests']} requests, "
                      f"{100 * result['error_rate']:.2f}% errors; SLO "
                      f"{_slo_outcome(result['slo'])}.")
    rows = []
    for req, row in result.get("by_request", {}).items():
        row_latency = row["latency_ms"]
        cache = row.get("cache") or {}
        looked = cache.get("hit", 0) + cache.get("miss", 0)
        rows.append([req, str(row_latency.get("count", 0)), _ms(row_latency.get("p50")),
                     _ms(row_latency.get("p99")), _ms(row_latency.get("max")),
                     f"{100 * cache.get('hit', 0) / looked:.0f}%" if looked else "-",
                     str(row.get("db_round_trips_per_request", "-")),
                     ", ".join([f"{k}:{v}" for k, v in row["status"].items()]
                               + [f"{k}:{v}" for k, v in row.get("errors", {}).items()
                                  if not k.startswith("status ")])])
    rep.table(sec, ["request", "count", "p50", "p99", "max", "cache hits", "DB trips", "status"], rows)
    curve = result.get("percentile_curve") or []
    if curve:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        xs = [1 / (1 - p / 100) if p < 100 else 1 / (1 - 0.999999) for p, _ in curve]
        ax.plot(xs, [v for _, v in curve], color="tab:blue")
        ax.set_xscale("log")
        values = [v for _, v in curve if v > 0]
        if values and max(values) / max(min(values), 0.001) > 50:
            ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.set_xticks(ticks, ["p0", "p50", "p90", "p99", "p99.9", "p99.99", "p99.999"])
        ax.set_ylabel("latency (ms)")
        ax.set_title("Latency by percentile (HDR)")
        for key, value in result["slo"].items():
            if key.endswith("_ms") and key.startswith("p"):
                ax.axhline(value, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {key[:-3]} {value:g} ms")
        ax.legend(loc="upper left")
        tail = lat.get("p999", 0) / lat["p50"] if lat.get("p50") else 0
        rep.plot(sec, fig, "percentiles",
                 f"Half the requests took under {_ms(lat.get('p50'))}, 99% under {_ms(lat.get('p99'))} and the "
                 f"slowest {_ms(lat.get('max'))}; the tail (p99.9) is {tail:.1f}× the median. Latency is "
                 "measured from each request's intended start, so queueing is included.")
    timeline = [t for t in result.get("timeline", []) if t.get("done")]
    if len(timeline) >= 2:
        fig, ax1 = plt.subplots(figsize=(7, 3.4))
        ts = [t["t"] for t in timeline]
        ax1.bar(ts, [t["done"] - t["errors"] for t in timeline], color="tab:gray", alpha=0.4,
                label="answered/s")
        if any(t["errors"] for t in timeline):
            ax1.bar(ts, [t["errors"] for t in timeline], bottom=[t["done"] - t["errors"] for t in timeline],
                    color="tab:red", alpha=0.5, label="errors/s")
        ax1.set_xlabel("seconds since start")
        ax1.set_ylabel("requests per second")
        ax2 = ax1.twinx()
        ax2.plot(ts, [t["p50_ms"] for t in timeline], color="tab:green", label="p50")
        ax2.plot(ts, [t["p99_ms"] for t in timeline], color="tab:red", label="p99")
        ax2.set_ylabel("latency (ms)")
        ax2.grid(False)
        warm = cfg.get("warmup", 0)
        if warm:
            ax1.axvspan(0, warm, color="tab:orange", alpha=0.1, label="warm-up")
        lines = ax1.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
        ax1.set_title("Throughput and latency over time")
        worst = max(timeline, key=lambda t: t["p99_ms"] or 0)
        rep.plot(sec, fig, "timeline",
                 f"Each second's finished requests (bars, errors in red) and their p50/p99 (lines); the worst "
                 f"second was t={worst['t']} s with p99 {_ms(worst['p99_ms'])}.")
    for warning in result.get("warnings", []):
        rep.text(sec, f"Warning: {warning}")


def _capacity_plot(rep: Report, sec: dict, result: dict, title: str) -> None:
    plt = _plt()
    every = result["steps"]
    latest = {}
    for entry in every:  # a rate measured twice (a confirmation): the line goes through the later one
        latest[entry["rate"]] = entry
    steps = sorted(latest.values(), key=lambda s: s["rate"])
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s["throughput_rps"] for s in steps]
    for key, color in (("p50", "tab:green"), ("p90", "tab:blue"), ("p99", "tab:red"), ("p999", "tab:purple")):
        ys = [s["latency_ms"].get(key) for s in steps]
        if any(y is not None for y in ys):
            ax.plot(xs, ys, color=color, linewidth=1.2, label=key.replace("p999", "p99.9"))
            for entry in every:
                value = entry["latency_ms"].get(key)
                if value is not None:
                    marker = "o" if entry["passed"] else "^" if entry.get("verdict") == "UNSUPPORTED" else "x"
                    ax.plot(entry["throughput_rps"], value, marker=marker, color=color,
                            markersize=4 if entry["passed"] else 6, linestyle="none")
    slo = result.get("slo", {}).get("p99_ms")
    if slo:
        ax.axhline(slo, color="tab:red", linestyle="--", linewidth=1, label=f"SLO p99 {slo:g} ms")
    knee = result.get("knee")
    if knee:
        ax.scatter([knee["throughput_rps"]], [knee["latency_ms"].get("p99")], s=140, facecolors="none",
                   edgecolors="black", linewidths=1.5, zorder=5,
                   label=f"{'knee' if result.get('limit') == 'knee' else 'capacity'} "
                         f"{knee['throughput_rps']:.0f} req/s")
        ax.axvline(knee["throughput_rps"], color="black", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("throughput (successful requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(title + " (o: within the SLO, x: missed, ^: too few requests)")
    ax.legend(fontsize=8)
    sentence = capacity_caption(result)
    rep.plot(sec, fig, "capacity", sentence)


def capacity_caption(result: dict) -> str:
    """The capacity plot's caption, from the numbers of the steps it sits under (a knee only where the
    failing step served less than offered or its latency grew; older results have no `limit`)."""
    answer, fail = result.get("knee"), result.get("first_failure")
    limit = result.get("limit")
    unsupported = sum(1 for s in result["steps"] if s.get("verdict") == "UNSUPPORTED")
    note = (f" {unsupported} step(s) held too few requests to judge the percentile "
            f"({result.get('samples_needed')} needed) and are marked unsupported." if unsupported else "")
    if limit is None and answer and fail:
        limit = "knee" if not fail.get("kept_up", True) else "limit"
    if answer and fail and limit == "knee":
        short = " (short of the offered rate)" if not fail.get("kept_up", True) else ""
        return (f"The highest rate within the SLO serves {answer['throughput_rps']:.1f} req/s (p99 "
                f"{_ms(answer['latency_ms'].get('p99'))}); offering {fail['rate']:g}/s gets "
                f"{fail['throughput_rps']:.1f} req/s{short} with p99 {_ms(fail['latency_ms'].get('p99'))}: "
                "the knee." + note)
    if answer and fail:
        return (f"The highest rate within the SLO serves {answer['throughput_rps']:.1f} req/s (p99 "
                f"{_ms(answer['latency_ms'].get('p99'))}); at {fail['rate']:g}/s the server still served "
                f"{fail['throughput_rps']:.1f} req/s (p99 {_ms(fail['latency_ms'].get('p99'))}) but missed the SLO: "
                "a limit, not a knee." + note)
    if answer:
        return (f"Every step met the SLO up to {answer['throughput_rps']:.1f} req/s; the search stopped at its "
                "bound before finding a limit." + note)
    if limit == "unsteady":
        once = sorted({s["rate"] for s in result["steps"] if s.get("verdict") == "PASS"})
        return (f"Rates up to {once[-1]:g}/s met the SLO once, but none met it again when re-checked: no "
                "capacity in this run." + note)
    if limit == "floor" and fail:
        return (f"No step met the SLO, though at {fail['rate']:g}/s the server served {fail['throughput_rps']:.1f} "
                f"req/s (p99 {_ms(fail['latency_ms'].get('p99'))}): a latency floor, not a capacity." + note)
    if limit == "unsupported" and fail:
        return (f"No step below {fail['rate']:g}/s, where the SLO was missed, held enough requests to judge its "
                "percentile: no verdict." + note)
    if limit == "unsupported":
        return "No step held enough requests to judge its percentile: no verdict." + note
    return "No step met the SLO: the lowest rate tried was already beyond what the target served." + note


def _capacity_section(rep: Report, name: str, result: dict) -> None:
    sec = rep.section(f"Capacity: {result.get('label') or name}", result.get("verdict", ""))
    rep.table(sec, ["offered/s", "served/s", "p50", "p99", "p99.9", "errors", "SLO"],
              [[f"{s['rate']:g}", f"{s['throughput_rps']:.1f}", _ms(s["latency_ms"].get("p50")),
                _ms(s["latency_ms"].get("p99")), _ms(s["latency_ms"].get("p999")), f"{100 * s['error_rate']:.1f}%",
                "pass" if s["passed"] else "fail"] for s in sorted(result["steps"], key=lambda s: s["rate"])])
    _capacity_plot(rep, sec, result, "Latency percentiles against throughput")
    _routes(rep, sec, result)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%" if value < 0.995 or value == 1 else f"{100 * value:.1f}%"


def _route_label(row: dict) -> str:
    return row["route"] + (f" (X-Cache {row['x_cache']})" if row.get("x_cache") else "")


def route_caption(result: dict) -> str:
    """What the per-route table and plot show, from the answer's and the failing step's route rows."""
    answer, fail = result.get("knee"), result.get("first_failure")
    clauses = []
    for point, what in ((answer, "At the answer"), (fail, "At the first confirmed failure")):
        routes = [r for r in (point or {}).get("routes") or [] if r.get("x_cache") is None]
        if not point or not routes:
            continue
        served = f"{what} ({point['rate']:g}/s offered, {point['throughput_rps']:.1f} req/s served)"
        each = "; ".join(f"{r['route']} {_pct(r['share'])} of requests, p50 {_ms(r['p50_ms'])}, p99 "
                         f"{_ms(r['p99_ms'])}, hits {_pct(r['hit_ratio'])}" for r in routes)
        slowest = max(routes, key=lambda r: r["p99_ms"] or 0)
        splits = [r for r in point["routes"] if r.get("x_cache") and r["route"] == slowest["route"]]
        slow_split = max(splits, key=lambda r: r["p99_ms"] or 0, default=None)
        detail = (f", its X-Cache {slow_split['x_cache']} requests p99 {_ms(slow_split['p99_ms'])}"
                  if slow_split and len(splits) > 1 else "")
        clauses.append(f"{served}: {each}. The slowest is {slowest['route']} (p99 {_ms(slowest['p99_ms'])}{detail}).")
    return " ".join(clauses) or "No route was measured at the answer or at a failing step."


def _routes(rep: Report, sec: dict, result: dict) -> None:
    """Latency and hit ratio per route (request name, and name by X-Cache) at the answer and at the
    failing step, then each route's p50/p99 over every step beside the overall curve above."""
    answer, fail = result.get("knee"), result.get("first_failure")
    if not ((answer or {}).get("routes") or (fail or {}).get("routes")):
        return  # a result from before routes were recorded
    keyed: dict[tuple[str, str | None], dict] = {}
    for point, column in ((answer, 0), (fail, 1)):
        for r in (point or {}).get("routes") or []:
            keyed.setdefault((r["route"], r.get("x_cache")), {})[column] = r

    def cells(r: dict | None) -> list[str]:
        return ["-"] * 4 if r is None else [_pct(r["share"]), _ms(r["p50_ms"]), _ms(r["p99_ms"]), _pct(r["hit_ratio"])]

    rep.table(sec, ["route", "share (answer)", "p50", "p99", "hits", "share (failure)", "p50", "p99", "hits"],
              [[_route_label({"route": k[0], "x_cache": k[1]}), *cells(v.get(0)), *cells(v.get(1))]
               for k, v in keyed.items()])
    steps = sorted({s["rate"]: s for s in result["steps"]}.values(), key=lambda s: s["rate"])
    series: dict[str, list[tuple[float, dict]]] = {}
    from .experiments import route_rows
    for step in steps:
        for r in route_rows(step.get("run") or {}):
            if r["x_cache"] is None:
                series.setdefault(r["route"], []).append((step["throughput_rps"], r))
    if not series:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (route, points) in enumerate(sorted(series.items())):
        color = colors[i % len(colors)]
        xs = [x for x, _ in points]
        hits = [r["hit_ratio"] for _, r in points if r["hit_ratio"] is not None]
        label = route + (f" (hits {_pct(min(hits))}–{_pct(max(hits))})" if hits else "")
        ax.plot(xs, [r["p99_ms"] for _, r in points], color=color, marker="o", markersize=3, label=f"p99 {label}")
        ax.plot(xs, [r["p50_ms"] for _, r in points], color=color, linestyle="--", linewidth=1)
    slo = result.get("slo", {}).get("p99_ms")
    if slo:
        ax.axhline(slo, color="tab:red", linestyle=":", linewidth=1, label=f"SLO p99 {slo:g} ms")
    if answer:
        ax.axvline(answer["throughput_rps"], color="black", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("overall throughput of the step (req/s)")
    ax.set_ylabel("latency (ms, log scale; dashed: p50)")
    ax.set_title("Per route: p99 (solid) and p50 (dashed) at each step")
    ax.legend(fontsize=7)
    rep.plot(sec, fig, "routes", route_caption(result))


def _scale_section(rep: Report, name: str, result: dict) -> None:
    plt = _plt()
    points = sorted(result["points"], key=lambda p: p["replicas"])
    sec = rep.section(f"Scale: {result['service']} replicas ({result.get('platform')})", result.get("verdict", ""))
    rep.table(sec, ["replicas", "capacity req/s", "most served req/s", "ideal req/s", "efficiency (rps_n/rps_1)/n",
                    "CPU available", "CPU used", "req per CPU-s", "(rps_n/cpu_n)/(rps_1/cpu_1)", "CPU limit"],
              [[str(p["replicas"]), f"{p['capacity_rps']:.1f}",
                "-" if p.get("peak_rps") is None else f"{p['peak_rps']:.1f}", f"{p['ideal_rps']:.1f}",
                f"{100 * p['efficiency']:.0f}%" if p.get("efficiency") is not None else "-",
                *_cpu_cells(p), (p.get("cpu_limits") or ["-"])[0]] for p in points])
    base = points[0]
    if base.get("baseline"):
        rep.text(sec, f"The {base['replicas']}-replica point: {base['baseline']['text']}")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ns = [p["replicas"] for p in points]
    ax.plot(ns, [p["capacity_rps"] for p in points], marker="o", color="tab:blue", label="measured at the SLO")
    ax.plot(ns, [p["ideal_rps"] for p in points], linestyle="--", color="tab:gray", label="ideal (linear)")
    for p in points:
        if p.get("efficiency") is not None:
            ax.annotate(f"{100 * p['efficiency']:.0f}%", (p["replicas"], p["capacity_rps"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xticks(ns)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("replicas")
    ax.set_ylabel("throughput at the SLO (req/s)")
    ax.set_title(f"Scalability of {result['service']}")
    ax.legend()
    rep.plot(sec, fig, "scale", scale_caption(points))
    for p in points:
        if p.get("capacity") and p["capacity"].get("steps"):
            _capacity_plot(rep, sec, p["capacity"], f"{p['replicas']} replica(s): latency against throughput")
    for warning in result.get("warnings", []):
        rep.text(sec, f"Warning: {warning}")


def _cpu_cells(point: dict) -> list[str]:
    cpu = point.get("cpu")
    if cpu is None:
        return ["not measured", "not measured", "-", "-"]
    return [f"{cpu['available_cpus']:.2f}", f"{cpu['used_cpus']:.2f} ({100 * (cpu['share_of_available'] or 0):.0f}%)",
            "-" if point.get("rps_per_cpu") is None else f"{point['rps_per_cpu']:.0f}",
            "-" if point.get("per_cpu_efficiency") is None else f"{point['per_cpu_efficiency']:.2f}"]


def scale_caption(points: list[dict]) -> str:
    """The scale plot's caption, from its points: throughput, efficiency, the CPU available and used,
    and what the smallest point's check found."""
    base, top = points[0], points[-1]
    if not base["capacity_rps"]:
        return (f"The {base['replicas']}-replica point has no throughput within the SLO (its search's verdict is "
                f"above), so this run shows no scaling; {top['replicas']} replicas served "
                f"{top['capacity_rps']:.1f} req/s at the SLO.")
    text = (f"Throughput at the SLO goes from {base['capacity_rps']:.1f} req/s with {base['replicas']} replica(s) "
            f"to {top['capacity_rps']:.1f} with {top['replicas']}; the dashed line is perfect linear scaling and the "
            f"labels the efficiency (rps_n/rps_1)/n ({100 * (top.get('efficiency') or 0):.0f}% at {top['replicas']}).")
    if top.get("cpu") and base.get("cpu"):
        text += (f" The replicas had {base['cpu']['available_cpus']:.2f} CPU available and used "
                 f"{base['cpu']['used_cpus']:.2f} at {base['replicas']}, {top['cpu']['available_cpus']:.2f} and "
                 f"{top['cpu']['used_cpus']:.2f} at {top['replicas']}")
        if top.get("per_cpu_efficiency") is not None:
            text += f"; per CPU-second used, {top['replicas']} replicas serve {top['per_cpu_efficiency']:.2f}× as much"
        text += "."
    else:
        text += " The CPU the replicas had and used was not measured here."
    if base.get("baseline"):
        text += f" The {base['replicas']}-replica point: {base['baseline']['text']}"
    return text


def _cache_section(rep: Report, name: str, result: dict) -> None:
    plt = _plt()
    rows = result["rows"]
    shape = (f"closed loop with {result['concurrency']} users" if result["mode"] == "closed"
             else f"open loop at {result['rate']:g}/s")
    sec = rep.section("Cache patterns", f"The same load ({shape}, {result['duration_s']:g} s per setting, mix "
                                        f"{', '.join(f'{k}={v:g}' for k, v in result['mix'].items())}) with each "
                                        f"CACHE_PATTERNS setting. {result.get('verdict', '')}")
    rep.table(sec, ["setting", "req/s", "p50", "p99", "errors", "hit ratio", "DB trips/request", "all services"],
              [[r["setting"], f"{r['throughput_rps']:.1f}", _ms(r["latency_ms"].get("p50")),
                _ms(r["latency_ms"].get("p99")), f"{100 * r['error_rate']:.1f}%",
                "-" if r["hit_ratio"] is None else f"{100 * r['hit_ratio']:.0f}%",
                str(r["db_round_trips_per_request"]),
                str((r.get("server_metrics") or {}).get("db_round_trips_per_client_request", "-"))] for r in rows])
    labels = [r["setting"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    throughputs = [r["throughput_rps"] for r in rows]
    bars = axes[0].bar(labels, throughputs, color="tab:blue")
    axes[0].bar_label(bars, labels=[f"{t:.0f}" if t >= 10 else f"{t:.1f}" for t in throughputs], fontsize=7)
    axes[0].set_title("throughput (req/s)")
    if min(throughputs) > 0 and max(throughputs) / min(throughputs) > 20:
        axes[0].set_yscale("log")
        axes[0].set_title("throughput (req/s, log scale)")
    width = 0.38
    idx = list(range(len(rows)))
    axes[1].bar([i - width / 2 for i in idx], [r["latency_ms"].get("p50") or 0 for r in rows], width, label="p50",
                color="tab:green")
    axes[1].bar([i + width / 2 for i in idx], [r["latency_ms"].get("p99") or 0 for r in rows], width, label="p99",
                color="tab:red")
    axes[1].set_xticks(idx, labels)
    axes[1].set_title("latency (ms)")
    lows = [r["latency_ms"].get("p50") or 0 for r in rows]
    highs = [r["latency_ms"].get("p99") or 0 for r in rows]
    if min(lows) > 0 and max(highs) / min(lows) > 50:
        axes[1].set_yscale("log")
        axes[1].set_title("latency (ms, log scale)")
    axes[1].legend(fontsize=8)
    trips = [r["db_round_trips_per_request"] or 0 for r in rows]
    axes[2].bar(labels, trips, color="tab:orange")
    axes[2].set_title("DB round trips per request")
    for i, r in enumerate(rows):
        if r["hit_ratio"] is not None:
            axes[2].annotate(f"hits {100 * r['hit_ratio']:.0f}%", (i, trips[i]), ha="center", fontsize=7,
                             textcoords="offset points", xytext=(0, 2))
    rep.plot(sec, fig, "cache", cache_caption(rows))


NOTICEABLE = 0.05  # throughput or median latency less than 5% apart: no difference worth a claim


def cache_caption(rows: list[dict]) -> str:
    """What the cache plot shows, from the measured numbers only: each cached setting's hit ratio,
    latency, throughput and DB round trips against the cache off, and plainly whether it helped."""
    off = next((r for r in rows if r["setting"] == "off"), None)
    cached = [r for r in rows if r["setting"] != "off"]
    if off is None or not cached:
        missing = "the cache off" if off is None else "the cache on"
        measured = "; ".join(f"'{r['setting']}': {_hits(r)}, p50 {_ms(r['latency_ms'].get('p50'))}, "
                             f"{r['throughput_rps']:.1f} req/s" for r in rows)
        return f"No run with {missing} to compare against, so no effect of the cache is measured here ({measured})."
    clauses = []
    for r in cached:
        numbers = (f"'{r['setting']}' ({_hits(r)}): p50 {_ms(r['latency_ms'].get('p50'))} vs "
                   f"{_ms(off['latency_ms'].get('p50'))}, p99 {_ms(r['latency_ms'].get('p99'))} vs "
                   f"{_ms(off['latency_ms'].get('p99'))}, {r['throughput_rps']:.1f} vs {off['throughput_rps']:.1f} "
                   f"req/s, DB round trips per request {r['db_round_trips_per_request']} vs "
                   f"{off['db_round_trips_per_request']}")
        if r["error_rate"] or off["error_rate"]:
            numbers += f", errors {100 * r['error_rate']:.1f}% vs {100 * off['error_rate']:.1f}%"
        clauses.append(f"{numbers}: {_cache_effect(r, off)}")
    return "Each cached setting against the cache off: " + "; ".join(clauses) + "."


def _hits(row: dict) -> str:
    ratio = row["hit_ratio"]
    return "no cache look-ups" if ratio is None else f"hit ratio {100 * ratio:.0f}%"


def _change(value: float | None, base: float | None) -> float | None:
    """Relative change of value against base (0.1 = 10% more); None when either is unknown."""
    if value is None or base is None:
        return None
    if base == 0:
        return 0.0 if value == 0 else float("inf")
    return value / base - 1


def _cache_effect(row: dict, off: dict) -> str:
    """Whether this cached setting helped, judged on throughput and median latency."""
    throughput = _change(row["throughput_rps"], off["throughput_rps"]) or 0.0
    p50 = _change(row["latency_ms"].get("p50"), off["latency_ms"].get("p50")) or 0.0
    better = throughput >= NOTICEABLE or p50 <= -NOTICEABLE
    worse = throughput <= -NOTICEABLE or p50 >= NOTICEABLE
    reason = "" if row["hit_ratio"] else " (no request was served from the cache)"
    if better and not worse:
        gains = []
        if throughput >= NOTICEABLE:
            gains.append(f"{1 + throughput:.2f}× the throughput")
        if p50 <= -NOTICEABLE:
            gains.append(f"p50 {100 * -p50:.0f}% lower")
        return "the cache helped (" + ", ".join(gains) + ")"
    if worse and not better:
        return f"the cache did not help, it made this load slower{reason}"
    if worse and better:
        return (f"the cache did not clearly help (throughput {100 * throughput:+.0f}%, p50 {100 * p50:+.0f}%)"
                f"{reason}")
    return f"the cache did not help (throughput and p50 within {100 * NOTICEABLE:.0f}%){reason}"


def _async_section(rep: Report, name: str, result: dict) -> None:
    plt = _plt()
    rows = result["rows"]
    sec = rep.section("Asynchronous imports", result.get("verdict", ""))
    rep.table(sec, ["workers", "products", "submit (median)", "completion (median)", "products/s", "succeeded"],
              [[str(r["workers"] if r["workers"] is not None else "as is"), str(r["size"]),
                _ms(r["submit_ms_median"]),
                "-" if r["completion_s_median"] is None else f"{r['completion_s_median']:.2f} s",
                "-" if r["products_per_s"] is None else f"{r['products_per_s']:.0f}",
                f"{r['succeeded']}/{len(r['jobs'])}"] for r in rows])
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["workers"], []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for workers, items in sorted(groups.items(), key=lambda kv: kv[0] or 0):
        items = sorted(items, key=lambda r: r["size"])
        label = f"{workers} workers" if workers is not None else "workers as deployed"
        ax1.plot([r["size"] for r in items], [r["submit_ms_median"] for r in items], marker="o", label=label)
        ax2.plot([r["size"] for r in items], [r["completion_s_median"] for r in items], marker="o", label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("products per import")
        ax.legend(fontsize=8)
    ax1.set_ylabel("submit latency (ms)")
    ax1.set_title("Time to accept (202)")
    ax2.set_ylabel("seconds")
    ax2.set_title("Time until succeeded")
    ratio = result.get("submit_ratio_largest_vs_smallest")
    largest = max(result["sizes"])
    at_largest = {r["workers"]: r["completion_s_median"] for r in rows
                  if r["size"] == largest and r["completion_s_median"] is not None}
    sentence = (f"Accepting an import of {largest} products takes {ratio:.2f}× as long as one of "
                f"{min(result['sizes'])} (left); " if ratio else "")
    if len(at_largest) >= 2 and None not in at_largest:
        few, many = min(at_largest), max(at_largest)
        change = at_largest[few] / at_largest[many] if at_largest[many] else 0
        sentence += (f"with {many} workers instead of {few}, {result['jobs_per_point']} imports of {largest} finish "
                     f"in {at_largest[many]:.2f} s instead of {at_largest[few]:.2f} s (right): "
                     + ("more workers share the jobs." if change > 1.1 else
                        "more workers did not help, so something they share (the database) limits the jobs."))
    else:
        sentence += "completion time (right) grows with the job's size."
    rep.plot(sec, fig, "async", sentence)


def bench_bound(row: dict) -> tuple[str, float] | None:
    """(op, bound) of a bench row: schema 2 keeps them; an older bench.json only has the target's text."""
    if row.get("op") in ("≥", "≤") and row.get("bound") is not None:
        return row["op"], float(row["bound"])
    target = (row.get("target") or "").replace("×", "").strip()
    if target[:1] not in ("≥", "≤"):
        return None
    try:
        return target[0], float(target[1:].strip().split(" ")[0].replace(",", ""))
    except ValueError:
        return None


def bench_score(row: dict) -> float | None:
    """How far a measured value is from its target, >1 better, <1 worse, whichever way the target points;
    None for a row not measured, not judged, or at 0 where a ratio has no meaning on a log scale."""
    bound = bench_bound(row)
    value = row.get("value")
    if bound is None or value is None or value <= 0 or bound[1] <= 0:
        return None
    op, limit = bound
    return value / limit if op == "≥" else limit / value


def _bench_value(row: dict) -> str:
    from .bench.ratios import fmt_value
    return fmt_value(row.get("value"), row.get("unit", "×"))


def bench_caption(rows: list[dict]) -> str:
    """The ratio plot's caption, from the rows it shows."""
    judged = [r for r in rows if bench_bound(r) is not None]
    met = [r for r in judged if r.get("met")]
    missed = [r for r in judged if r.get("met") is False]
    absent = [r for r in judged if r.get("value") is None]
    parts = [f"{len(met)} of {len(judged)} targets met"]
    if missed:
        parts.append("missed: " + "; ".join(f"{r['name']} {_bench_value(r)} (target {r['target']})" for r in missed))
    if absent:
        parts.append(f"not measured: {', '.join(r['name'] for r in absent)}")
    return ("; ".join(parts) + ". Each bar is measured / target in the direction of the target (right of the line: "
            "met, green; left: missed, red, by the factor shown); grey rows were not measured.")


def _bench_section(rep: Report, name: str, result: dict) -> None:
    rows = result.get("ratios", [])
    sec = rep.section("Benchmarks", result.get("summary", ""))
    rep.table(sec, ["issue", "measured", "value", "target", "met"],
              [[str(r.get("issue", "-")), r["name"], _bench_value(r), r.get("target") or "-",
                {True: "yes", False: "no", None: "-"}[r.get("met")]] for r in rows])
    for r in rows:
        if r.get("note"):
            rep.text(sec, f"{r['name']}: {r['note']}")
    shown = [r for r in rows if bench_bound(r) is not None]
    if not shown:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(shown) + 1.4))
    scores = [bench_score(r) for r in shown]
    known = [s for s in scores if s is not None] + [1.0]
    low, high = min(known) / 2, max(known) * 4
    for i, (r, score) in enumerate(zip(shown, scores, strict=True)):
        label = f"{_bench_value(r)} (target {r['target']})"
        if score is None:
            ax.barh(i, high, left=low, color="tab:gray", alpha=0.15)
            ax.annotate(f"not measured (target {r['target']})" if r.get("value") is None else
                        f"{label}: not on a log scale", (1.0, i), textcoords="offset points", xytext=(4, -3),
                        fontsize=7, color="dimgray")
            continue
        met = score >= 1
        ax.barh(i, score - low, left=low, color="tab:green" if met else "tab:red")
        ax.annotate(f"{'met' if met else 'MISSED'}: {label}", (score, i), textcoords="offset points",
                    xytext=(4, -3), fontsize=7)
    import textwrap

    from matplotlib.ticker import FuncFormatter, NullFormatter
    ax.set_yticks(range(len(shown)), ["\n".join(textwrap.wrap(f"{r.get('issue', '')} {r['name']}", 48)[:2])
                                      for r in shown], fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_xticks([t for t in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32) if low <= t <= high])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("measured / target, in the direction of the target (right of the line: met)")
    ax.invert_yaxis()
    rep.plot(sec, fig, "bench", bench_caption(shown))


SECTIONS = {"run": _run_section, "capacity": _capacity_section, "scale": _scale_section, "cache": _cache_section,
            "async": _async_section, "bench": _bench_section}


def build(paths: list[Path], out: Path) -> dict:
    results = load_results([Path(p) for p in paths])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror or exc}") from None
    rep = Report(out)
    for path, result in results:
        SECTIONS[result["kind"]](rep, path.parent.name if path.name == "result.json" else path.stem, result)
    md = out / "report.md"
    page = out / "report.html"
    md.write_text(rep.markdown())
    page.write_text(rep.html())
    return {"markdown": md, "html": page, "plots": rep.plots}

