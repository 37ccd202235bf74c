"""HTTP layer for /v1/products/{id}/reviews: one review per user per product."""
from __future__ import annotations

from flask import Blueprint

from services.shared.api import operation
from services.shared.app import resources
from services.shared.auth import Principal

from . import commands, store
from .models import NewReview, Review

reviews_bp = Blueprint("reviews", __name__)


@reviews_bp.post("/v1/products/<product_id>/reviews")
@operation("Review a product (once per user)", tag="reviews", auth=True, body=NewReview,
           responses={201: Review, 409: "You have already reviewed this product"})
def create_review(product_id: str, body: NewReview, principal: Principal):
    res = resources()
    review = commands.post_review(res.db, res.cache, res.publisher, product_id.lower(),
                                  author_id=principal.user_id, rating=body.rating, text=body.text)
    return store.review_view(review, author=None), 201
