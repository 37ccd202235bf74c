"""User journeys: what one simulated visitor does, step by step, through the gateway.

  browse   a product list: a category (by size), sometimes a search or the category index
  product  a product page, the product drawn by popularity (Zipf)
  signin   sign in as a seeded user (argon2: the expensive one), then read the own account
  review   open a product page, then review it (409 "already reviewed" is an expected answer)
  import   submit a small import job, then read its status once

Each journey is one arrival of the open loop. Its first request is timed from the arrival's
intended start; later steps from when they were sent (they depend on the answer before).
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable

from . import data
from .http import Client, HttpError, Response, build_request
from .stats import Recorder
from .workload import Workload

JOURNEYS = ("browse", "product", "signin", "review", "import")
DEFAULT_MIX = {"browse": 40, "product": 50, "signin": 2, "review": 5, "import": 3}
SORTS = ("newest", "newest", "newest", "price_asc", "price_desc", "rating", "name")


def parse_mix(text: str) -> dict[str, float]:
    """'browse=40,product=60' -> weights; names checked, weights >= 0, at least one positive."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, weight = item.partition("=")
        name = name.strip()
        if name not in JOURNEYS:
            raise ValueError(f"unknown journey {name!r} in --mix (known: {', '.join(JOURNEYS)})")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"--mix: weight of {name!r} is not a number: {weight!r}") from None
        if not 0 <= value <= 1e6 or value != value:
            raise ValueError(f"--mix: weight of {name!r} must be between 0 and 1e6")
        mix[name] = value
    mix = {k: v for k, v in mix.items() if v > 0}
    if not mix:
        raise ValueError("--mix needs at least one journey with a positive weight")
    return mix


class Journeys:
    """Runs journeys for one worker process: draws what to do, sends it, records it."""

    def __init__(self, client: Client, recorder: Recorder, workload: Workload, rng: random.Random,
                 window: tuple[float, float], fixed_path: str = ""):
        self.client = client
        self.rec = recorder
        self.wl = workload
        self.rng = rng
        self.window_start, self.window_end = window
        self.popularity = data.Zipf(len(workload.products), 1.0) if workload.products else None
        self.category_names = [slug for slug, _ in workload.categories] or list(data.CATEGORIES[:1])
        self.category_cum = list(_accumulate([max(1, count) for _, count in workload.categories] or [1]))
        self.host = client.pool.host_header
        self.funcs: dict[str, Callable[[float, bool], Awaitable[bool]]] = {
            "browse": self.browse, "product": self.product, "signin": self.signin,
            "review": self.review, "import": self.import_, "path": self.path,
        }
        self.fixed_path = fixed_path
        self.fixed_name = f"GET {fixed_path}"
        self.fixed_raw = build_request("GET", fixed_path, self.host) if fixed_path else b""
        self.import_counter = 0
        self.window_ok = 0

    # -- one request, timed and recorded
    async def call(self, name: str, method: str, path: str, start: float, measured: bool, body=None,
                   token: str | None = None, ok: tuple[int, ...] = (200,)) -> Response | None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        raw = build_request(method, path, self.host, payload, headers)
        try:
            response = await self.client.request(method, path, raw=raw)
        except HttpError as exc:
            now = time.monotonic()
            timed = int((now - start) * 1e6) if exc.kind == "timeout" else None
            self.rec.record_error(name, exc.kind, timed, measured)
            return None
        now = time.monotonic()
        good = response.status in ok
        self.rec.record_response(name, int((now - start) * 1e6), response.status, response.headers, good, measured)
        if good and self.window_start <= now < self.window_end:
            self.window_ok += 1
        return response if good else None

    def _product_id(self) -> str:
        if self.popularity is None:  # discover() refuses a target without products: not reached
            raise LookupError("the workload has no products to draw from")
        return self.wl.products[self.popularity.draw(self.rng)]

    def _token(self) -> str | None:
        return self.rng.choice(self.wl.tokens)[1] if self.wl.tokens else None

    # -- the journeys: each returns True when every step got an expected answer
    async def path(self, start: float, measured: bool) -> bool:
        """Not a journey: one GET of a fixed path (`run --path`), for benchmarks of one endpoint."""
        try:
            response = await self.client.request("GET", self.fixed_path, raw=self.fixed_raw)
        except HttpError as exc:
            timed = int((time.monotonic() - start) * 1e6) if exc.kind == "timeout" else None
            self.rec.record_error(self.fixed_name, exc.kind, timed, measured)
            return False
        now = time.monotonic()
        good = 200 <= response.status < 300
        self.rec.record_response(self.fixed_name, int((now - start) * 1e6), response.status, response.headers,
                                 good, measured)
        if good and self.window_start <= now < self.window_end:
            self.window_ok += 1
        return good

    async def browse(self, start: float, measured: bool) -> bool:
        roll = self.rng.random()
        if roll < 0.05:
            return await self.call("GET /v1/categories", "GET", "/v1/categories", start, measured) is not None
        if roll < 0.15:
            word = self.rng.choice(data.NOUNS)
            path = f"/v1/products?q={word}&per_page=20"
            return await self.call("GET /v1/products?q=", "GET", path, start, measured) is not None
        category = self.rng.choices(self.category_names, cum_weights=self.category_cum)[0]
        sort = self.rng.choice(SORTS)
        page = 1 if self.rng.random() < 0.7 else self.rng.randint(2, 3)
        path = f"/v1/products?category={category}&sort={sort}&page={page}&per_page=20"
        return await self.call("GET /v1/products?category=", "GET", path, start, measured) is not None

    async def product(self, start: float, measured: bool) -> bool:
        path = f"/v1/products/{self._product_id()}"
        return await self.call("GET /v1/products/{id}", "GET", path, start, measured) is not None

    async def signin(self, start: float, measured: bool) -> bool:
        index = self.rng.randrange(self.wl.users)
        body = {"email": data.user_email(self.wl.seed, index), "password": data.user_password(self.wl.seed, index)}
        response = await self.call("POST /v1/sessions", "POST", "/v1/sessions", start, measured, body, ok=(201,))
        if response is None:
            return False
        token = response.json()["token"]
        return await self.call("GET /v1/users/me", "GET", "/v1/users/me", time.monotonic(), measured,
                               token=token) is not None

    async def review(self, start: float, measured: bool) -> bool:
        product_id = self._product_id()
        if await self.call("GET /v1/products/{id}", "GET", f"/v1/products/{product_id}", start, measured) is None:
            return False
        body = {"rating": self.rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 6))[0],
                "text": self.rng.choice(data.REVIEW_TEXTS)}
        return await self.call("POST /v1/products/{id}/reviews", "POST", f"/v1/products/{product_id}/reviews",
                               time.monotonic(), measured, body, token=self._token(), ok=(201, 409)) is not None

    async def import_(self, start: float, measured: bool) -> bool:
        self.import_counter += 1
        batch = data.import_batch(self.wl.import_size, f"r{self.rng.randrange(10**9)}", self.rng)
        token = self._token()
        response = await self.call("POST /v1/imports", "POST", "/v1/imports", start, measured, batch,
                                   token=token, ok=(202,))
        if response is None:
            return False
        job = response.json()
        status_path = job.get("status_url") or f"/v1/jobs/{job['job_id']}"
        if status_path.startswith("http"):
            status_path = "/" + status_path.split("/", 3)[3]
        return await self.call("GET /v1/jobs/{id}", "GET", status_path, time.monotonic(), measured,
                               token=token) is not None


def _accumulate(values):
    total = 0
    for value in values:
        total += value
        yield total
