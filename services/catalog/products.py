"""HTTP layer for /v1/products: create, list, the product page, change and delete."""
from __future__ import annotations

from flask import Blueprint, g

from services.shared.api import operation
from services.shared.app import resources
from services.shared.auth import Principal
from services.shared.errors import NotFound

from . import commands, listing, product_page, store
from .models import NewProduct, Product, ProductList, ProductPage, ProductPatch, ProductQuery
from .profiles import fetch_profiles

products_bp = Blueprint("products", __name__)


@products_bp.post("/v1/products")
@operation("Offer a product for sale (the caller is the seller)", tag="products", auth=True, body=NewProduct,
           responses={201: Product})
def create_product(body: NewProduct, principal: Principal):
    res = resources()
    doc = commands.create_product(res.db, res.cache, res.publisher, principal.user_id, body.model_dump())
    return store.product_view(doc), 201


@products_bp.get("/v1/products")
@operation("Find products: filter, sort and page (a cached query)", tag="products", query=ProductQuery,
           responses={200: ProductList})
def list_products(query: ProductQuery):
    res = resources()
    return listing.read_products(res.db, res.cache, query.model_dump(), res.settings.cache_patterns).response()


@products_bp.get("/v1/products/<product_id>")
@operation("The product page: product, category, seller, rating, latest reviews (a cached object)",
           tag="products", responses={200: ProductPage})
def get_product_page(product_id: str):
    res = resources()
    request_id = g.get("request_id", "")
    page = product_page.read_page(
        res.db, res.cache,
        lambda ids: fetch_profiles(res.settings.user_service_url, ids, request_id, res.auth_secret),
        product_id.lower(), res.settings.cache_patterns,
    )
    if page.body is None:
        raise NotFound("no product with this id")
    return page.response()


@products_bp.patch("/v1/products/<product_id>")
@operation("Change a product (its seller only)", tag="products", auth=True, body=ProductPatch,
           responses={200: Product, 403: "Only the seller may change the product"})
def patch_product(product_id: str, body: ProductPatch, principal: Principal):
    res = resources()
    doc = commands.change_product(res.db, res.cache, res.publisher, product_id.lower(), principal.user_id,
                                  body.model_dump(exclude_unset=True))
    return store.product_view(doc)


@products_bp.delete("/v1/products/<product_id>")
@operation("Delete a product and its reviews (its seller only)", tag="products", auth=True,
           responses={204: None, 403: "Only the seller may delete the product"})
def delete_product(product_id: str, principal: Principal):
    res = resources()
    commands.remove_product(res.db, res.cache, res.publisher, product_id.lower(), principal.user_id)
    return "", 204
