"""The files derived from the code, and the command that writes them: `python -m stack.derived`.

Settings (services/shared/config.py) and the topics (services/shared/events.py) are each
written once, in the code the services run. From them this module derives:

- the chart's `config` values (every tunable setting with its default and meaning) and the
  schema that validates them (`definitions.settings` of values.schema.json);
- the chart's topics file (charts/scaleshop/files/topics.yaml), read by the topic Job;
- the README's table of settings, and its table of rate limits (from `POLICY`,
  services/shared/ratelimit.py, with the settings' defaults).

Each is replaced in place (the rest of its file is left as it is). `--check` writes nothing and
exits 1 when a file is not what the code derives now; the unit tests run the same check.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from pydantic_core import PydanticUndefined

from services.shared.config import Settings, env_name, tunable_settings
from services.shared.events import TOPIC_PARTITIONS
from services.shared.ratelimit import POLICY, Rule

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "scaleshop"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
TOPICS = CHART / "files" / "topics.yaml"
README = REPO / "README.md"

GENERATED = "Generated from services/shared/config.py (Settings) by `python -m stack.derived`"
README_BEGIN = f"<!-- settings table: {GENERATED}; edit Settings, not this table -->"
README_END = "<!-- end of the settings table -->"
LIMITS_BEGIN = ("<!-- rate-limit table: generated from POLICY (services/shared/ratelimit.py) by "
                "`python -m stack.derived`; edit POLICY, not this table -->")
LIMITS_END = "<!-- end of the rate-limit table -->"


class DerivationError(Exception):
    """A file has no place for the derived text, or Settings has a type the chart cannot express."""


# ---- settings -----------------------------------------------------------------------------

def _env_value(value: object) -> str | int:
    """A default as the environment spells it: comma-separated for collections."""
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(sorted(value) if isinstance(value, (frozenset, set)) else value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value)


def setting_schema(field: str) -> dict:
    """JSON Schema of one setting as a chart value (the environment's spelling of it)."""
    prop = dict(Settings.model_json_schema()["properties"][field])
    info = Settings.model_fields[field]
    out: dict = {"description": info.description}
    if prop.get("type") == "array" and "enum" in prop.get("items", {}):
        choice = "|".join(re.escape(v) for v in prop["items"]["enum"])
        out.update(type="string", pattern=f"^$|^({choice})(,({choice}))*$")
    elif "enum" in prop:
        out["enum"] = prop["enum"]
    elif prop.get("type") in ("integer", "string"):
        out["type"] = prop["type"]
        out.update({k: prop[k] for k in ("minimum", "maximum", "pattern", "minLength", "maxLength") if k in prop})
    else:
        raise DerivationError(f"Settings.{field}: type {prop.get('type')} has no chart value form yet")
    out["default"] = _env_value(info.default)
    return out


def settings_definition() -> dict:
    return {
        "description": f"Settings of the services by environment variable. {GENERATED}.",
        "type": "object",
        "additionalProperties": False,
        "properties": {name: setting_schema(info_name) for name, info_name in
                       ((name, name.lower()) for name in tunable_settings())},
    }


def _yaml_scalar(value: str | int) -> str:
    return str(value) if isinstance(value, int) else json.dumps(value)


def values_config_block() -> str:
    lines = [
        "# Settings of user, catalog and worker by environment variable (ConfigMap <release>-config);",
        "# user.config, catalog.config and worker.config override single ones for one service.",
        f"# {GENERATED}, with the",
        "# defaults of the code: set other values in your own values file (-f), not here.",
        "config:",
    ]
    for name, info in tunable_settings().items():
        lines += [f"  # {line}" for line in textwrap.wrap(info.description or "", 92)]
        lines.append(f"  {name}: {_yaml_scalar(_env_value(info.default))}")
    return "\n".join(lines) + "\n"


def derive_values(text: str) -> str:
    """values.yaml with its `config:` block (and the comment above it) derived from Settings."""
    match = re.search(r"(?m)^(?:#.*\n)*config:(?: \{\})?\n(?:  .*\n)*", text)
    if not match:
        raise DerivationError(f"{VALUES} has no top-level `config:` block")
    return text[:match.start()] + values_config_block() + text[match.end():]


def derive_schema(text: str) -> str:
    """values.schema.json with its `definitions.settings` derived from Settings (only that
    object's text is replaced: the rest keeps its hand-written layout)."""
    match = re.search(r'(?m)^    "settings": (?=\{)', text)
    if not match or "settings" not in json.loads(text).get("definitions", {}):
        raise DerivationError(f"{SCHEMA} has no definitions.settings")
    _, end = json.JSONDecoder().raw_decode(text, match.end())
    body = json.dumps(settings_definition(), indent=2).replace("\n", "\n    ")
    return text[:match.end()] + body + text[end:]


def _readme_default(field: str) -> str:
    info = Settings.model_fields[field]
    if info.is_required():
        return "(required)"
    if info.default is PydanticUndefined:
        return "(computed)"
    return f"`{_env_value(info.default)}`"


def readme_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field, info in Settings.model_fields.items():
        rows.append(f"| `{env_name(field)}` | {_readme_default(field)} | {info.description} |")
    return "\n".join([README_BEGIN, *rows, README_END])


_METHOD_ORDER = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


def _requests(rule: Rule) -> str:
    methods = sorted(rule.methods or (), key=lambda m: (_METHOD_ORDER + (m,)).index(m))
    if rule.routes is not None:
        return ", ".join(f"`{m} {route}`" for route in sorted(rule.routes) for m in methods or ["any method"])
    if methods:
        return ", ".join(f"`{m}`" for m in methods) + " on any route"
    return "every other request"


def limits_table() -> str:
    rows = ["| rule | requests | counted per | limit per minute (default) |", "| --- | --- | --- | --- |"]
    for rule in POLICY:
        limit = f"`{env_name(rule.setting)}` ({Settings.model_fields[rule.setting].default:,})"
        rows.append(f"| {rule.name} | {_requests(rule)} | {rule.key.value} | {limit} |")
    return "\n".join([LIMITS_BEGIN, *rows, LIMITS_END])


def _replace_between(text: str, begin: str, end_marker: str, table: str, what: str) -> str:
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise DerivationError(f"{README} lacks the markers of the {what}")
    return text[:start] + table + text[end + len(end_marker):]


def derive_readme(text: str) -> str:
    text = _replace_between(text, README_BEGIN, README_END, readme_table(), "settings table")
    return _replace_between(text, LIMITS_BEGIN, LIMITS_END, limits_table(), "rate-limit table")


# ---- topics -------------------------------------------------------------------------------

def topics_file() -> str:
    lines = ["# The Kafka topics and their partitions, read by templates/kafka-topics-job.yaml.",
             "# Generated from services/shared/events.py (TOPIC_PARTITIONS) by `python -m stack.derived`."]
    lines += [f"{json.dumps(name)}: {partitions}" for name, partitions in TOPIC_PARTITIONS.items()]
    return "\n".join(lines) + "\n"


# ---- all of them --------------------------------------------------------------------------

DERIVATIONS: dict[Path, Callable[[str], str]] = {
    VALUES: derive_values,
    SCHEMA: derive_schema,
    README: derive_readme,
    TOPICS: lambda _text: topics_file(),
}


def stale_files() -> list[Path]:
    """The derived files whose content is not what the code derives now."""
    return [path for path, derive in DERIVATIONS.items()
            if not path.exists() or derive(path.read_text()) != path.read_text()]


def write_all() -> list[Path]:
    written = []
    for path, derive in DERIVATIONS.items():
        before = path.read_text() if path.exists() else ""
        after = derive(before)
        if after != before:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(after)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.derived", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a derived file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run `python -m stack.derived`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
