"""Application factory of the user service.

`clients`: the servers' clients (services/shared/clients.py), built from the settings if not given.
"""
from __future__ import annotations

from flask import Flask
from pymongo.database import Database

from services.shared import jobs
from services.shared.app import create_service_app
from services.shared.clients import Clients
from services.shared.config import Settings, load_settings

from . import accounts
from .sessions import sessions_bp
from .users import users_bp


def create_indexes(db: Database) -> None:
    accounts.create_indexes(db)
    jobs.create_indexes(db)


def create_app(settings: Settings | None = None, clients: Clients | None = None) -> Flask:
    return create_service_app("user", settings or load_settings(), blueprints=(users_bp, sessions_bp),
                              create_indexes=create_indexes, clients=clients)
