"""HTTP layer for /v1/products/{id}/reviews: one review per user per product."""
from __future__ import annotations

from flask import Blueprint

from services.shared.api import operation
from services.shared.app import require_principal, resources
from services.shared.errors import Conflict, NotFound

from . import commands, store
from .models import NewReview, Review

reviews_bp = Blueprint("reviews", __name__)


@reviews_bp.post("/v1/products/<product_id>/reviews")
@operation("Review a product (once per user)", tag="reviews", auth=True, body=NewReview,
           responses={201: Review, 409: "You have already reviewed this product"})
def create_review(product_id: str, body: NewReview):
    principal = require_principal()
    res = resources()
    try:
        review = commands.post_review(res.db, res.cache, res.publisher, product_id.lower(), principal.user_id,
                                      body.rating, body.text)
    except commands.ProductNotFound:
        raise NotFound("no product with this id") from None
    except store.ReviewExists:
        raise Conflict("you have already reviewed this product") from None
    return store.review_view(review, None), 201
