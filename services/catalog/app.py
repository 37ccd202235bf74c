"""Application factory of the catalog service.

`clients`: the servers' clients (services/shared/clients.py), built from the settings if not given.
"""
from __future__ import annotations

from flask import Flask
from pymongo.database import Database

from services.shared import jobs, outbox
from services.shared.app import create_service_app
from services.shared.clients import Clients
from services.shared.config import Settings, load_settings

from . import store
from .categories import categories_bp
from .imports import imports_bp
from .products import products_bp
from .reviews import reviews_bp


def create_indexes(db: Database) -> None:
    store.create_indexes(db)
    jobs.create_indexes(db)
    outbox.create_indexes(db)


def create_app(settings: Settings | None = None, clients: Clients | None = None) -> Flask:
    return create_service_app("catalog", settings or load_settings(),
                              blueprints=(products_bp, reviews_bp, categories_bp, imports_bp),
                              create_indexes=create_indexes, clients=clients)
