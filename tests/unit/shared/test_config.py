"""Settings as the one source of every setting, and the files derived from it (stack/derived.py).

The derivation checks compare each checked-in derived file with what the code derives now: a
setting added to Settings (or a topic to events.py) without running `python -m stack.derived`
fails here, in seconds, before any chart or stack test runs.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from services.shared.config import ConfigError, Settings, load_settings, tunable_settings
from services.shared.events import TOPIC_PARTITIONS
from stack import derived
from stack.layout import PASSTHROUGH_SETTINGS, STACK_DEFAULT_SETTINGS

SECRET = "a-test-secret-of-32-characters!!"


def test_the_derived_files_are_what_the_code_derives_now():
    stale = [str(path.relative_to(derived.REPO)) for path in derived.stale_files()]
    assert not stale, f"run `python -m stack.derived`: {stale} differ from what the code derives"


def test_every_setting_says_what_it_means():
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert not missing, f"Settings fields without a description (the README and chart show it): {missing}"


def test_wired_settings_are_left_to_the_deployment():
    tunable = set(tunable_settings())
    wired = {"MONGODB_URL", "MEMCACHED_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "USER_SERVICE_URL",
             "AUTH_SECRET", "REPLICA_ID", "BIND_HOST", "PORT"}
    assert not tunable & wired
    assert tunable | wired == {name.upper() for name in Settings.model_fields}


def test_the_chart_values_list_every_tunable_setting_with_its_default():
    config = yaml.safe_load(derived.derive_values("nameOverride: \"\"\nconfig: {}\n\nauth: {}\n"))["config"]
    assert list(config) == list(tunable_settings())
    settings = load_settings(auth_secret=SECRET, **{name.lower(): str(value) for name, value in config.items()})
    for name, info in tunable_settings().items():
        assert getattr(settings, name.lower()) == info.default, name


def test_values_derivation_replaces_only_the_config_block():
    text = "a: 1\n\n# old comment\nconfig:\n  OLD: 1\n  # note\n  OTHER: 2\n\nb: 2\n"
    out = derived.derive_values(text)
    assert out.startswith("a: 1\n\n# Settings of user, catalog and worker") and out.endswith("\n\nb: 2\n")
    assert "OLD" not in out and derived.derive_values(out) == out
    with pytest.raises(derived.DerivationError):
        derived.derive_values("a: 1\n")


def schema_accepts(prop: dict, value) -> bool:
    """The few JSON Schema keywords the settings definition uses."""
    if "enum" in prop:
        return value in prop["enum"]
    if prop["type"] == "integer":
        return isinstance(value, int) and prop.get("minimum", value) <= value <= prop.get("maximum", value)
    return isinstance(value, str) and re.search(prop.get("pattern", ""), value) is not None


def settings_accept(name: str, value) -> bool:
    try:
        load_settings(auth_secret=SECRET, **{name.lower(): str(value)})
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("name,value", [
    ("GUNICORN_WORKERS", 0), ("GUNICORN_WORKERS", 1), ("GUNICORN_WORKERS", 64), ("GUNICORN_WORKERS", 65),
    ("RATE_LIMIT_PER_MINUTE", 0), ("RATE_LIMIT_PER_MINUTE", -1), ("MONGODB_TIMEOUT_MS", 49),
    ("CACHE_PATTERNS", ""), ("CACHE_PATTERNS", "objects"), ("CACHE_PATTERNS", "queries,objects"),
    ("LOG_LEVEL", "WARNING"), ("LOG_LEVEL", "LOUD"),
    ("MONGODB_DATABASE", "shop_2"), ("MONGODB_DATABASE", "no spaces"),
])
def test_the_chart_schema_accepts_what_settings_accept(name, value):
    prop = derived.settings_definition()["properties"][name]
    assert schema_accepts(prop, value) == settings_accept(name, value)


def test_the_chart_schema_refuses_what_settings_do_not_know():
    definition = json.loads(derived.SCHEMA.read_text())["definitions"]["settings"]
    assert definition["additionalProperties"] is False
    assert list(definition["properties"]) == list(tunable_settings())


def test_readme_table_names_every_setting_once():
    table = derived.readme_table()
    names = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M)
    assert names == [name.upper() for name in Settings.model_fields]
    assert "| `AUTH_SECRET` | (required) |" in table


def test_the_chart_topics_are_the_topics_of_the_code():
    assert yaml.safe_load(derived.topics_file()) == TOPIC_PARTITIONS


def test_the_local_stack_passes_every_tunable_setting_but_its_database_name():
    assert set(PASSTHROUGH_SETTINGS) == set(tunable_settings()) - {"MONGODB_DATABASE"}
    assert "MAX_IMPORT_BYTES" in PASSTHROUGH_SETTINGS and "KAFKA_TIMEOUT_MS" in PASSTHROUGH_SETTINGS
    rate_limits = {name for name in tunable_settings() if name.startswith("RATE_LIMIT_")}
    assert len(rate_limits) >= 3 and STACK_DEFAULT_SETTINGS == dict.fromkeys(rate_limits, "0")


def test_a_bad_value_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("GUNICORN_WORKERS", "0")
    with pytest.raises(ConfigError, match="GUNICORN_WORKERS"):
        load_settings(auth_secret=SECRET)
