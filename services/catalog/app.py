"""Application factory of the catalog service."""
from __future__ import annotations

from flask import Flask

from services.shared.app import create_service_app
from services.shared.config import Settings, load_settings

from .categories import categories_bp
from .products import products_bp
from .reviews import reviews_bp
from .store import create_indexes


def create_app(settings: Settings | None = None) -> Flask:
    app = create_service_app("catalog", settings or load_settings(), create_indexes=create_indexes)
    app.register_blueprint(products_bp)
    app.register_blueprint(reviews_bp)
    app.register_blueprint(categories_bp)
    return app
