"""Request and response bodies of the catalog service (validation and OpenAPI both use these)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from services.shared.api import QueryParams, RequestBody
from services.shared.validation import long_text, short_text, whole_number

MAX_PRICE_CENTS = 100_000_000_00  # one hundred million in any currency
MAX_STOCK = 1_000_000_000
MAX_PER_PAGE = 100
MAX_PAGE = 10_000
MAX_IMPORT_PRODUCTS = 10_000

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", min_length=1, max_length=40)]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", min_length=1, max_length=30)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
PriceCents = Annotated[int, BeforeValidator(whole_number), Field(ge=0, le=MAX_PRICE_CENTS)]
Stock = Annotated[int, BeforeValidator(whole_number), Field(ge=0, le=MAX_STOCK)]
ProductName = short_text(120)
Description = long_text(5000)
ReviewText = long_text(2000)
Tags = Annotated[list[Tag], Field(max_length=20)]


def _absent_means_keep() -> Any:
    """A patch field's default: None stands for "absent" (keep the value) and is not shown in the schema."""
    return Field(None, json_schema_extra=_no_default_in_schema)


def _no_default_in_schema(schema: dict) -> None:
    schema.pop("default", None)


class NewProduct(RequestBody):
    name: ProductName
    description: Description
    price_cents: PriceCents
    currency: Currency
    category: Slug
    tags: Tags = []
    stock: Stock = 0


class ProductPatch(RequestBody):
    """Fields to change; absent means keep, null is refused."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: ProductName = _absent_means_keep()
    description: Description = _absent_means_keep()
    price_cents: PriceCents = _absent_means_keep()
    currency: Currency = _absent_means_keep()
    category: Slug = _absent_means_keep()
    tags: Tags = _absent_means_keep()
    stock: Stock = _absent_means_keep()

    @model_validator(mode="after")
    def _something_to_change(self) -> ProductPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self


# An import's item is checked by its job, not at submission (see ImportBody), with NewProduct.
ImportItem = Annotated[Any, WithJsonSchema({"description": (
    "A product as for POST /v1/products (schema NewProduct). Checked by the job: an item that is not "
    "a valid product is listed in the job's result under `rejected`, and the other items are imported.")})]


class ImportBody(RootModel[Annotated[list[ImportItem], Field(min_length=1, max_length=MAX_IMPORT_PRODUCTS)]]):
    """Products to import: a JSON array of 1 to 10,000 items, each meant to be a product as for POST /v1/products.

    Submission checks only the array (well-formed JSON, 1 to 10,000 items, at most MAX_IMPORT_BYTES),
    so it answers 202 in the same time whatever the items hold. The job then checks each item: the
    valid ones are imported, and its result lists every other one under `rejected` with its index
    (0-based position in this array), the field at fault and the reason.
    """

    model_config = ConfigDict(strict=True)


class NewReview(RequestBody):
    rating: Annotated[int, BeforeValidator(whole_number), Field(ge=1, le=5)]
    text: ReviewText = ""


SortOrder = Literal["newest", "price_asc", "price_desc", "rating", "name"]


class ProductQuery(QueryParams):
    """The product list's filters. Normalized (defaults filled, case folded) it is the cache key."""

    category: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=40)] | None = None
    q: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=100)] | None = Field(
        None, description="Case-insensitive text to find in names and tags")
    min_price: Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)] | None = None
    max_price: Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)] | None = None
    sort: SortOrder = "newest"
    page: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 1
    per_page: Annotated[int, Field(ge=1, le=MAX_PER_PAGE)] = 20

    @model_validator(mode="after")
    def _normalize(self) -> ProductQuery:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price must not be greater than max_price")
        if self.category == "":
            self.category = None
        if self.q == "":
            self.q = None
        return self


# ---- responses -----------------------------------------------------------------------------

class Rating(BaseModel):
    average: float | None
    count: int


class Product(BaseModel):
    """A product"""

    id: str
    seller_id: str
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    tags: list[str]
    stock: int
    rating: Rating
    created_at: str
    updated_at: str


class ProductList(BaseModel):
    """A page of products matching the query"""

    items: list[Product]
    page: int
    per_page: int
    total: int
    pages: int


class PublicProfile(BaseModel):
    id: str
    display_name: str
    bio: str
    created_at: str


class Category(BaseModel):
    """A category"""

    slug: str
    name: str
    product_count: int


class CategoryRef(BaseModel):
    slug: str
    name: str


class CategoryList(BaseModel):
    """Every category with its number of products"""

    items: list[Category]


class CategoryStats(BaseModel):
    slug: str
    product_count: int
    average_price_cents: int | None
    last_event_lag_ms: float | None


class CategoryStatsList(BaseModel):
    """Per-category statistics, maintained asynchronously from catalog.events"""

    items: list[CategoryStats]


class Review(BaseModel):
    """A review"""

    id: str
    product_id: str
    rating: int
    text: str
    created_at: str
    author: PublicProfile | None


class ProductPage(BaseModel):
    """The product page: product, category, seller, rating and latest reviews, joined in the application"""

    product: Product
    category: CategoryRef
    seller: PublicProfile | None
    rating: Rating
    reviews: list[Review]
