"""Application factory of the catalog service."""
from __future__ import annotations

from flask import Flask

from services.shared.app import create_service_app
from services.shared.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    return create_service_app("catalog", settings or load_settings())
