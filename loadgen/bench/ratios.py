"""Every number `make bench` is judged on: its target, the issue that set it, and the table printed
at the end.

`TARGETS` is the one place a target is written. A part records what it measured with
`Bench.ratio(key, ...)`; `complete` adds a "not measured" row for every target no part recorded (the
part was not run, or failed), so the JSON, the printed table and the report's plot always list
every target. A value is kept in its own unit (ms, s, events/s, %, ×); `met` compares it with the
bound in that unit.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import folding, reads


@dataclass(frozen=True)
class Target:
    key: str
    issue: str  # "14.1": issue 14, item 1
    part: str  # the bench part that measures it
    name: str  # what is compared, short enough for a table row
    op: str | None  # "≥" or "≤"; None: reported without a target
    bound: float | None
    unit: str  # "×", "%", "ms", "s", "events/s"

    @property
    def text(self) -> str:
        if self.op is None or self.bound is None:
            return "-"
        return f"{self.op} {fmt_value(self.bound, self.unit)}"

    def met(self, value: float | None) -> bool | None:
        if value is None or self.op is None or self.bound is None:
            return None
        return value >= self.bound if self.op == "≥" else value <= self.bound


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "events/s":
        return f"{value:,.0f} events/s"
    return f"{value:,.1f} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}"


_READS = [Target(f"reads-product_{shape}_miss-{size}", "11.4", "reads",
                 f"product-{shape} cache miss p50 at {size:,} products", "≤", reads.P50_TARGET_MS, "ms")
          for size in reads.SIZES for shape in ("list", "page")]

TARGETS: dict[str, Target] = {t.key: t for t in [
    Target("capacity-agreement", "14.1", "capacity",
           "two capacity runs of the default read mix: |a-b| / max(a,b)", "≤", 15.0, "%"),
    Target("capacity-mix-vs-hits", "14.2", "capacity",
           "capacity of the default read mix / of cached product-page hits alone", "≥", 0.5, "×"),
    Target("bare", "14.3", "bare", "cached product page / bare Flask route (same gunicorn, 0.25 CPU)", "≥", 0.8, "×"),
    Target("cache", "14.4", "cache", "product page with / without the cache (gateway, 0.25 CPU)", "≥", 5.0, "×"),
    Target("scale", "14.5", "scale", "throughput at the SLO, 4 catalog replicas / 1 (0.25 CPU each)", "≥", 3.5, "×"),
    Target("scale-per-cpu", "14.5", "scale",
           "requests per CPU-second used, 4 replicas / 1 (no target: read beside the line above)", None, None, "×"),
    *_READS,
    Target("import_workers", "11.5", "import", "one 10,000-product import, time on 2 workers / on 1", "≤", 0.6, "×"),
    Target("fold", "11.6", "fold", "catalog.events folded per second by 2 workers", "≥", folding.RATE_TARGET,
           "events/s"),
    Target("fold-lag", "11.6", "fold", "an import's events all folded, seconds after it ends", "≤",
           folding.LAG_TARGET, "s"),
    Target("import", "11.7", "import", "submit latency, 10,000 products / 1", "≤", 2.0, "×"),
    Target("locust", "6", "locust", "loadgen / Locust, requests per CPU-second", "≥", 1.5, "×"),
]}


def row(key: str, value: float | None, command: str, note: str, numbers: dict, name: str | None = None,
        unregistered: tuple[str, bool | None] = ("-", None), void: str = "") -> dict:
    """One measured number as bench.json keeps it: the value in its unit, the target and whether it is met.

    A key without a registered target (the stall check) keeps the target text and verdict its part
    gives in `unregistered`; it is not plotted against a bound. `void` says why a measured value must
    not be judged (its premise failed): `met` is then None and the note starts with it."""
    target = TARGETS.get(key)
    text, met = (target.text, target.met(value)) if target else unregistered
    if void:
        met, note = None, f"NOT JUDGED: {void}. {note}"
    if target is None:
        target = Target(key, "6", "-", name or key, None, None, "×")
    return {"key": key, "issue": target.issue, "part": target.part, "name": name or target.name,
            "value": None if value is None else round(value, 3), "unit": target.unit, "op": target.op,
            "bound": target.bound, "target": text, "met": met, "command": command,
            "note": note, "numbers": numbers}


def complete(rows: list[dict], parts_run: list[str]) -> list[dict]:
    """`rows` plus a "not measured" row for every registered target none of them holds, in TARGETS order."""
    have = {r["key"] for r in rows}
    missing = []
    for key, target in TARGETS.items():
        if key in have:
            continue
        why = ("the part failed or recorded nothing; see the log" if target.part in parts_run
               else f"part `{target.part}` was not run (--only)")
        missing.append(row(key, None, "", f"not measured: {why}", {}))
    order = {key: i for i, key in enumerate(TARGETS)}
    return sorted([*rows, *missing], key=lambda r: order.get(r["key"], len(order)))


def table(rows: list[dict]) -> list[str]:
    """The table `make bench` prints at the end, from bench.json's rows."""
    width = max((len(r["name"]) for r in rows), default=20)
    lines = [f"{'issue':<6} {'measured':<{width}} {'value':>16}  {'target':<18} met"]
    for r in rows:
        verdict = {True: "yes", False: "NO", None: "-"}[r["met"]]
        lines.append(f"{r['issue']:<6} {r['name']:<{width}} {fmt_value(r['value'], r.get('unit', '×')):>16}  "
                     f"{r['target']:<18} {verdict}")
        if r.get("note"):
            lines.append(f"{'':<6}   {r['note']}")
    met = sum(1 for r in rows if r["met"])
    judged = sum(1 for r in rows if r["met"] is not None)
    lines.append(f"{met} of {judged} judged numbers meet their target; "
                 f"{sum(1 for r in rows if r['value'] is None)} of {len(rows)} not measured.")
    return lines
