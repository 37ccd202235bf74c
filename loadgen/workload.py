"""What a run needs to know about the target before it starts: products, categories, tokens.

Found through the public API only (the same gateway URL the load goes to): the seeded
products by their tag, the categories with their sizes, and bearer tokens of seeded users
for the journeys that write (review, import).
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from . import data
from .http import Client, HttpError
from .target import TargetError


@dataclass
class Workload:
    seed: int
    products: list[str]                       # product ids, most popular first
    categories: list[tuple[str, int]]         # (slug, product count)
    users: int                                # seeded users to sign in as (indexes 0..users-1)
    tokens: list[tuple[str, str]] = field(default_factory=list)  # (user id, token)
    import_size: int = 10

    def to_json(self) -> dict:
        return {"seed": self.seed, "products": len(self.products), "categories": len(self.categories),
                "users": self.users, "tokens": len(self.tokens), "import_size": self.import_size}


async def sign_in(client: Client, seed: int, index: int, create: bool = True) -> tuple[str, str]:
    """(user id, token) of seeded user `index`; creates the account first if it does not exist."""
    email, password = data.user_email(seed, index), data.user_password(seed, index)
    for attempt in range(2):
        response = await client.request("POST", "/v1/sessions", {"email": email, "password": password})
        if response.status == 201:
            body = response.json()
            return body["user_id"], body["token"]
        if response.status == 401 and create and attempt == 0:
            created = await client.request("POST", "/v1/users", {
                "email": email, "password": password, "display_name": data.user_display_name(index)})
            if created.status not in (201, 409):
                raise TargetError(f"POST /v1/users answered {created.status}: {created.body[:200]!r}")
            continue
        raise TargetError(f"POST /v1/sessions answered {response.status}: {response.body[:200]!r}")
    raise TargetError(f"cannot sign in as {email}")


async def seeded_products(client: Client, seed: int, limit: int) -> dict[int, str]:
    """Seeded product index -> id, for the products of `seed` found on the target (at most `limit`)."""
    found: dict[int, str] = {}
    page, per_page = 1, 100
    while len(found) < limit:
        response = await client.request(
            "GET", f"/v1/products?q={data.seed_tag(seed)}&sort=name&per_page={per_page}&page={page}")
        if response.status != 200:
            raise TargetError(f"GET /v1/products answered {response.status}: {response.body[:200]!r}")
        body = response.json()
        for item in body["items"]:
            index = data.product_index(item["name"])
            if index is not None and data.seed_tag(seed) in item.get("tags", []):
                found[index] = item["id"]
        if page >= body.get("pages", 0) or not body["items"]:
            break
        page += 1
    return found


async def discover(client: Client, seed: int, users: int, max_products: int, tokens: int,
                   import_size: int = 10) -> Workload:
    try:
        found = await seeded_products(client, seed, max_products)
        if not found:
            raise TargetError(f"no products of seed {seed} on the target: run `python -m loadgen seed "
                              f"--seed {seed}` first")
        order = list(range(max(found) + 1))
        random.Random(f"popularity:{seed}").shuffle(order)  # the same popularity order `seed` used
        products = [found[i] for i in order if i in found]
        response = await client.request("GET", "/v1/categories")
        if response.status != 200:
            raise TargetError(f"GET /v1/categories answered {response.status}")
        categories = [(c["slug"], c["product_count"]) for c in response.json()["items"]]
        workload = Workload(seed, products, categories, users, import_size=import_size)
        if tokens:
            semaphore = asyncio.Semaphore(4)

            async def one(i: int) -> tuple[str, str]:
                async with semaphore:
                    return await sign_in(client, seed, i)

            workload.tokens = list(await asyncio.gather(*(one(i) for i in range(min(tokens, users)))))
        return workload
    except HttpError as exc:
        raise TargetError(f"while preparing the run: {exc}") from None


async def route_exists(client: Client, method: str, path: str, body=None, token: str | None = None) -> int:
    """The status a route answers (404 means the target does not have it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = await client.request(method, path, body, headers=headers)
    return response.status
