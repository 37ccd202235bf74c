"""HTTP layer for /v1/categories: every category with its product count (a cached query)."""
from __future__ import annotations

from flask import Blueprint

from services.shared.api import operation
from services.shared.app import resources

from . import listing, projections
from .models import CategoryList, CategoryStatsList

categories_bp = Blueprint("categories", __name__)


@categories_bp.get("/v1/categories")
@operation("Categories with their product counts", tag="categories", responses={200: CategoryList})
def list_categories():
    res = resources()
    return listing.read_categories(res.db, res.cache, res.settings.cache_patterns).response()


@categories_bp.get("/v1/categories/stats")
@operation("Per-category statistics derived from catalog.events by the workers (eventually consistent)",
           tag="categories", responses={200: CategoryStatsList})
def category_statistics():
    return {"items": projections.category_stats(resources().db)}
