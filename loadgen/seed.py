"""`loadgen seed`: users, products across categories, reviews, skewed like a real shop.

Deterministic (see data.py) and idempotent: an account that exists answers 409 and is
signed in instead; products are found by their seed tag and only the missing ones are
created; a review that exists answers 409. Re-running with the same numbers changes
nothing; re-running with larger numbers adds the difference.
"""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import data
from .http import Client, HttpError
from .target import Target, TargetError
from .workload import seeded_products

LIMITS = {"users": 100_000, "products": 1_000_000, "reviews": 1_000_000, "concurrency": 256}


@dataclass
class Phase:
    name: str
    total: int
    done: int = 0
    created: int = 0
    existing: int = 0
    failures: list[str] = field(default_factory=list)


class ProgressLine:
    """One line per phase, rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def show(self, phase: Phase, started: float, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.25 if self.tty else 5.0):
            return
        self.last = now
        elapsed = max(now - started, 1e-6)
        rate = phase.done / elapsed
        eta = (phase.total - phase.done) / rate if rate > 0 else 0
        text = (f"[seed] {phase.name:<8} {phase.done:>7}/{phase.total:<7} created {phase.created}, "
                f"existing {phase.existing}, failed {len(phase.failures)}  {rate:6.0f}/s"
                + ("" if final else f"  eta {eta:4.0f}s"))
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


RATE_LIMIT_WAITS = 10  # at most this many waits for a 429's Retry-After per request


async def _send(client: Client, method: str, path: str, body, headers=None):
    """One request, sent again once after a 5xx or a dropped connection (the seed must not stop on a
    blip), and again after waiting out a 429 (the services' rate limit: sign-ups are limited per minute)."""
    retried = waits = 0
    while True:
        try:
            response = await client.request(method, path, body, headers=headers)
        except HttpError as exc:
            if retried or exc.kind in ("refused", "connect"):
                raise
            retried += 1
            await asyncio.sleep(0.2)
            continue
        if response.status == 429 and waits < RATE_LIMIT_WAITS:
            waits += 1
            retry_after = response.headers.get("retry-after", "1")
            delay = min(61.0, float(retry_after) if retry_after.isdigit() else 1.0)
            if not RATE_LIMITED:
                RATE_LIMITED.append(True)
                print(f"[seed] the target rate-limits this client (429); waiting {delay:g}s as it asks. Set "
                      "RATE_LIMIT_PER_MINUTE / RATE_LIMIT_AUTH_PER_MINUTE on the services to seed faster.",
                      file=sys.stderr, flush=True)
            await asyncio.sleep(delay)
            continue
        if response.status < 500 or retried:
            return response
        retried += 1
        await asyncio.sleep(0.2)


RATE_LIMITED: list[bool] = []


async def _pool(items: Iterable, worker: Callable[[Any], Awaitable[None]], concurrency: int,
                phase: Phase, progress: ProgressLine | None) -> None:
    iterator = iter(items)
    started = time.monotonic()
    stop: list[BaseException] = []

    async def runner() -> None:
        for item in iterator:
            if stop:
                return
            try:
                await worker(item)
            except HttpError as exc:
                if exc.kind in ("refused", "connect"):
                    stop.append(TargetError(f"the target stopped answering: {exc}"))
                    return
                phase.failures.append(str(exc))
            phase.done += 1
            if len(phase.failures) > max(20, phase.total // 10):
                stop.append(TargetError(f"too many failures while seeding {phase.name}; first: {phase.failures[0]}"))
                return
            if progress:
                progress.show(phase, started)

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    if progress:
        progress.show(phase, started, final=True)
    if stop:
        raise stop[0]


async def seed(target: Target, seed_number: int, users: int, products: int, reviews: int,
               concurrency: int = 8, progress: ProgressLine | None = None) -> dict:
    client = Client(target.host, target.port, max_connections=concurrency, timeout=30)
    started = time.monotonic()
    try:
        # 1. Accounts (every user signs in: sellers need tokens to offer products, authors to review).
        accounts = Phase("users", users)
        tokens: dict[int, tuple[str, str]] = {}

        # Hashing is the server's slow part: on a re-run, sign in first (one hash) rather than
        # create first (a hash, a 409, then another hash for the sign-in).
        rerun = {"likely": False}

        async def account(i: int) -> None:
            email, password = data.user_email(seed_number, i), data.user_password(seed_number, i)
            credentials = {"email": email, "password": password}
            if rerun["likely"]:
                session = await _send(client, "POST", "/v1/sessions", credentials)
                if session.status == 201:
                    accounts.existing += 1
                    body = session.json()
                    tokens[i] = (body["user_id"], body["token"])
                    return
                rerun["likely"] = False
            created = await _send(client, "POST", "/v1/users", {**credentials,
                                                                "display_name": data.user_display_name(i)})
            if created.status == 201:
                accounts.created += 1
            elif created.status == 409:
                accounts.existing += 1
                rerun["likely"] = True
            else:
                accounts.failures.append(f"POST /v1/users {created.status}: {created.body[:160]!r}")
                return
            session = await _send(client, "POST", "/v1/sessions", credentials)
            if session.status != 201:
                accounts.failures.append(f"POST /v1/sessions {session.status}: {session.body[:160]!r}")
                return
            body = session.json()
            tokens[i] = (body["user_id"], body["token"])

        await _pool(range(users), account, concurrency, accounts, progress)
        if not tokens:
            raise TargetError(f"no account could be created or signed in; first error: "
                              f"{accounts.failures[0] if accounts.failures else 'none'}")

        # 2. Products, the missing ones only.
        found = await seeded_products(client, seed_number, limit=10**9)
        catalog = Phase("products", products, existing=sum(1 for i in found if i < products))
        missing = [i for i in range(products) if i not in found]
        catalog.done = catalog.existing
        sellers = sorted(tokens)

        async def product(i: int) -> None:
            token = tokens[sellers[i % len(sellers)]][1]
            response = await _send(client, "POST", "/v1/products", data.product_spec(seed_number, i),
                                   headers={"Authorization": f"Bearer {token}"})
            if response.status == 201:
                catalog.created += 1
                found[i] = response.json()["id"]
            else:
                catalog.failures.append(f"POST /v1/products {response.status}: {response.body[:160]!r}")

        await _pool(missing, product, concurrency, catalog, progress)

        # 3. Reviews: popular products get most of them; 409 means it is already there.
        plan = [r for r in data.review_plan(seed_number, products, users, reviews)
                if r[0] in found and r[1] in tokens]
        opinions = Phase("reviews", len(plan))

        async def review(item) -> None:
            product_index, author, rating, text = item
            response = await _send(
                client, "POST", f"/v1/products/{found[product_index]}/reviews", {"rating": rating, "text": text},
                headers={"Authorization": f"Bearer {tokens[author][1]}"})
            if response.status == 201:
                opinions.created += 1
            elif response.status == 409:
                opinions.existing += 1
            else:
                opinions.failures.append(f"POST reviews {response.status}: {response.body[:160]!r}")

        await _pool(plan, review, concurrency, opinions, progress)
    except HttpError as exc:
        raise TargetError(f"seeding failed: {exc}") from None
    finally:
        client.close()

    phases = (accounts, catalog, opinions)
    return {
        "kind": "seed",
        "target": target.url,
        "seed": seed_number,
        "seconds": round(time.monotonic() - started, 1),
        **{p.name: {"wanted": p.total, "created": p.created, "existing": p.existing,
                    "failed": len(p.failures), "first_failure": p.failures[0] if p.failures else None}
           for p in phases},
    }
