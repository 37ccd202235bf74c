"""Typed configuration read from the environment (names fixed by DESIGN.md), validated at start."""
from __future__ import annotations

import socket
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CachePattern = Literal["objects", "queries"]


class ConfigError(Exception):
    """The environment does not describe a valid configuration; the message says what to fix."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every setting a Scaleshop process reads. Field `foo_bar` is read from env `FOO_BAR`."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Dependencies
    mongodb_url: str = "mongodb://127.0.0.1:27017/"
    mongodb_database: str = Field("scaleshop", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    mongodb_timeout_ms: int = Field(2000, ge=50, le=60000)
    memcached_servers: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.1:11211",)
    memcached_timeout_ms: int = Field(200, ge=10, le=10000)
    kafka_bootstrap_servers: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.1:9092",)
    kafka_timeout_ms: int = Field(1000, ge=50, le=60000)
    user_service_url: str = Field("http://127.0.0.1:8080", pattern=r"^https?://[^\s/]+(/.*)?$")

    # Auth
    auth_secret: SecretStr
    token_ttl_seconds: int = Field(86400, ge=60, le=30 * 86400)

    # Cache
    cache_ttl_seconds: int = Field(300, ge=1, le=30 * 86400)
    cache_patterns: Annotated[frozenset[CachePattern], NoDecode] = frozenset({"objects", "queries"})

    # Abuse limits (0 turns a limit off)
    rate_limit_per_minute: int = Field(1200, ge=0, le=10_000_000)
    rate_limit_auth_per_minute: int = Field(60, ge=0, le=10_000_000)
    rate_limit_reads_per_minute: int = Field(6000, ge=0, le=10_000_000)

    # Process
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    replica_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253)
    bind_host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_import_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    gunicorn_workers: int = Field(2, ge=1, le=64)
    gunicorn_threads: int = Field(4, ge=1, le=256)
    gunicorn_timeout: int = Field(30, ge=1, le=3600)
    gunicorn_graceful_timeout: int = Field(20, ge=1, le=3600)
    gunicorn_keepalive: int = Field(5, ge=0, le=3600)

    @field_validator("memcached_servers", "kafka_bootstrap_servers", mode="before")
    @classmethod
    def _host_port_list(cls, value: object) -> object:
        value = _split_csv(value)
        for item in value if isinstance(value, tuple) else ():
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{item}' is not host:port")
        return value

    @field_validator("cache_patterns", mode="before")
    @classmethod
    def _patterns(cls, value: object) -> object:
        value = _split_csv(value)
        return frozenset(v.lower() for v in value) if isinstance(value, tuple) else value

    @field_validator("auth_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a random value)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def cache_enabled(self, pattern: CachePattern) -> bool:
        return pattern in self.cache_patterns


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides); raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            name = "_".join(str(p) for p in err["loc"][:1]).upper() or "?"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
