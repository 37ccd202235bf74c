"""Faults under load (issue 7, item 1): `make chaos`, and in a short form tests/functional/test_chaos.py.

While a bounded, steady mix of traffic runs through the gateway, inject in sequence:
SIGKILL user-1 (then restore), SIGKILL catalog-1 (then restore), scale catalog 2->4->2,
restart memcached, stop Kafka for 20 s, SIGKILL a worker mid-import (then restore workers
to 2). The short form (in `make test`) has shorter pauses between faults, fewer products
and a 5,000-product import instead of 10,000. Every request is counted by kind and
outcome, and checked:

- reads and idempotent requests: no failure at all (the gateway retries GETs), save one that
  no proxy can retry: a response cut off mid-body by the SIGKILL of the very replica sending it
  (gunicorn writes headers and body apart; once the gateway has passed the headers on it can
  only close the connection). Such a response is counted as `cut_by_sigkill` only when the
  replica named in its `X-Served-By` was killed while it was in flight; any other broken one is a
  violation. A write cut so is unconfirmed, exactly as one that answered 503 (below);
- writes: succeed, or fail with a JSON 503 and never half-done (a PATCH that answered
  503 is read back: it took effect fully or not at all; one that took effect after all, as
  a write can when the database timed out, is counted as `503_but_applied`);
- every import accepted with 202 completes exactly once (succeeded, and its category
  holds exactly as many products as the import had);
- no read that started after a confirmed write shows older data (prices only ever go
  up per product, and each product's price and description are written together).

`run_chaos(stack, short)` returns the summary (and writes it as JSON when given a path).
CLI: `python -m stack.chaos [--short] --out FILE` against the stack of the environment
(SCALESHOP_PORT_OFFSET, SCALESHOP_RUN_DIR); exit status 1 on any violation.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from .control import Stack
from .procs import listening
from .workers import wait_events_folded, wait_workers_ready, worker_readyz

TIMEOUT = 30
KAFKA_DOWN_S = 20.0
READ, WRITE = "read", "write"


class Recorder:
    """Counts every request by kind and outcome; collects violations and faults."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.violations: list[dict] = []
        self.faults: list[dict] = []
        self.killed_at: dict[str, float] = {}  # replica name -> when the chaos SIGKILLed it

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def violation(self, what: str, **details) -> None:
        with self.lock:
            self.violations.append({"at": self.now(), "what": what, **details})

    def call(self, session: requests.Session, kind: str, klass: str, method: str, url: str,
             expected: tuple[int, ...], **kwargs) -> requests.Response | None:
        """One request; returns the response when its status is expected, else None."""
        started = self.now()
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("stream", True)  # the body is read below, apart from the headers
        try:
            try:
                response = session.request(method, url, **kwargs)
            except requests.ConnectionError as exc:
                if not _closed_without_response(exc):
                    raise
                # The gateway answers every request it has read (a replica that died mid-request
                # becomes a JSON 503). A connection it closes with no response at all is an idle
                # keep-alive connection closed by an nginx reload before the request was read, so
                # the request was never applied: resend it once on a new connection, as browsers
                # do (RFC 9112, 9.3.1). Counted apart, so the summary shows how often it happened.
                self.count(kind, "resent_after_idle_close")
                session.close()
                response = session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            self.count(kind, "connection_error")
            self.violation(f"{klass} {kind}: connection error through the gateway", method=method, url=url,
                           started=started, error=repr(exc)[:300])
            return None
        try:
            response.content  # noqa: B018 - read the body now: a cut-off one is told apart from no answer
        except requests.RequestException as exc:
            served_by = response.headers.get("X-Served-By")
            if self.killed_while_in_flight(served_by, started):  # a write is then unconfirmed, as on a 503
                self.count(kind, "cut_by_sigkill")
                return None
            self.count(kind, "connection_error")
            self.violation(f"{klass} {kind}: response cut off through the gateway", method=method, url=url,
                           started=started, served_by=served_by, error=repr(exc)[:300])
            return None
        status = response.status_code
        if status in expected:
            self.count(kind, "ok")
            return response
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        if status == 503 and is_json and klass == WRITE:
            self.count(kind, "503")
            return None
        self.count(kind, f"http_{status}")
        self.violation(f"{klass} {kind}: unexpected {status}", method=method, url=url, started=started,
                       served_by=response.headers.get("X-Served-By"), body=response.text[:300])
        return None

    def mark_killed(self, replica: str) -> None:
        with self.lock:
            self.killed_at[replica] = self.now()

    def killed_while_in_flight(self, replica: str | None, started: float) -> bool:
        """Whether `replica` was SIGKILLed between the request's start and now."""
        with self.lock:
            killed = self.killed_at.get(replica or "")
        return killed is not None and started <= killed <= self.now()

    def count(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.counts[(kind, outcome)] += 1

    def fault(self, name: str, action, **details) -> None:
        entry = {"name": name, "started": self.now(), "happened": False, **details}
        print(f"[chaos] {entry['started']:7.1f}s fault: {name}", flush=True)
        with self.lock:
            self.faults.append(entry)
        try:
            result = action()
            entry["happened"] = result is not False
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is reported
            entry["error"] = repr(exc)[:500]
        entry["ended"] = self.now()
        print(f"[chaos] {entry['ended']:7.1f}s fault done: {name} happened={entry['happened']} "
              f"{entry.get('error', '')}", flush=True)

    def summary(self) -> dict:
        per_kind: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(self.counts.items()):
            per_kind.setdefault(kind, {})[outcome] = n
        return {"counts": per_kind, "total_requests": sum(self.counts.values()),
                "faults": self.faults, "violations": self.violations}


class Chaos:
    def __init__(self, stack: Stack, short: bool) -> None:
        self.stack = stack
        self.short = short
        self.base = stack.layout.gateway_url
        self.rec = Recorder()
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]
        self.category = f"chaos{self.run_id}"
        # product id -> (confirmed price, next price to write); written by one thread per seller
        self.confirmed: dict[str, int] = {}
        self.next_price: dict[str, int] = {}
        self.unconfirmed: dict[str, set[int]] = {}  # prices whose PATCH answered 503
        self.sellers: list[dict] = []
        self.reviewers: list[dict] = []
        self.imports: list[dict] = []  # {job_id, category, size, owner}
        self.imports_lock = threading.Lock()

    # ---- setup (before any fault: every request must succeed) --------------------------

    def _account(self, s: requests.Session, name: str) -> dict:
        email = f"chaos-{self.run_id}-{uuid.uuid4().hex[:8]}@example.com"
        password = "chaos monkey battery"
        r = s.post(f"{self.base}/v1/users", json={"email": email, "password": password, "display_name": name},
                   timeout=TIMEOUT)
        self._ok(r)
        t = s.post(f"{self.base}/v1/sessions", json={"email": email, "password": password}, timeout=TIMEOUT)
        self._ok(t)
        return {"id": r.json()["id"], "email": email, "password": password,
                "auth": {"Authorization": f"Bearer {t.json()['token']}"}, "products": []}

    @staticmethod
    def _ok(response: requests.Response) -> requests.Response:
        if response.status_code >= 400:
            raise RuntimeError(f"chaos setup: {response.request.method} {response.url} -> "
                               f"{response.status_code} {response.text[:300]}")
        return response

    def setup(self) -> None:
        s = requests.Session()
        per_seller = 4 if self.short else 6
        for i in range(2):
            seller = self._account(s, f"Chaos Seller {i}")
            for j in range(per_seller):
                r = s.post(f"{self.base}/v1/products", headers=seller["auth"], timeout=TIMEOUT, json={
                    "name": f"Chaos {i}-{j}", "description": "chaos rev 1000", "price_cents": 1000,
                    "currency": "EUR", "category": self.category, "tags": ["chaos"], "stock": 5})
                self._ok(r)
                pid = r.json()["id"]
                seller["products"].append(pid)
                self.confirmed[pid] = 1000
                self.next_price[pid] = 1001
                self.unconfirmed[pid] = set()
            self.sellers.append(seller)
        self.reviewers = [self._account(s, f"Chaos Reviewer {i}") for i in range(3 if self.short else 5)]

    # ---- traffic ----------------------------------------------------------------------------

    def _check_product(self, product: dict, floor: int | None, where: str, started: float,
                       response: requests.Response | None = None) -> None:
        price, description = product.get("price_cents"), product.get("description")
        if description != f"chaos rev {price}":
            self.rec.violation("half-done write: price and description disagree", where=where,
                               product=product.get("id"), price=price, description=description)
        if floor is not None and isinstance(price, int) and price < floor:
            self.rec.violation("stale read: older than a write confirmed before the read started", where=where,
                               product=product.get("id"), seen=price, confirmed=floor, started=started,
                               x_cache=response.headers.get("X-Cache") if response is not None else None,
                               served_by=response.headers.get("X-Served-By") if response is not None else None)

    def _read_product(self, s: requests.Session, kind: str, pid: str, floor: int, where: str) -> dict | None:
        """GET the product page and check what it shows against the price confirmed before the read."""
        started = self.rec.now()
        r = self.rec.call(s, kind, READ, "GET", f"{self.base}/v1/products/{pid}", (200,))
        if r is None:
            return None
        product = r.json()["product"]
        self._check_product(product, floor, where, started, r)
        return product

    def reader(self, index: int) -> None:
        s = requests.Session()
        ids = list(self.confirmed)
        users = [a["id"] for a in self.sellers + self.reviewers]
        n = index
        while not self.stop.is_set():
            n += 1
            pid = ids[n % len(ids)]
            choice = n % 5
            started = self.rec.now()
            if choice in (0, 1, 2):
                self._read_product(s, "product_page", pid, self.confirmed[pid], "product page")
            elif choice == 3:
                floors = dict(self.confirmed)
                r = self.rec.call(s, "product_list", READ, "GET", f"{self.base}/v1/products",
                                  (200,), params={"category": self.category, "per_page": 50})
                if r is not None:
                    for item in r.json()["items"]:
                        if item.get("id") in floors:
                            self._check_product(item, floors[item["id"]], "product list", started, r)
            else:
                if n % 2:
                    self.rec.call(s, "user_profile", READ, "GET", f"{self.base}/v1/users/{users[n % len(users)]}",
                                  (200,))
                else:
                    self.rec.call(s, "categories", READ, "GET", f"{self.base}/v1/categories", (200,))
            time.sleep(0.02)

    def price_writer(self, seller: dict) -> None:
        s = requests.Session()
        n = 0
        while not self.stop.is_set():
            pid = seller["products"][n % len(seller["products"])]
            n += 1
            price = self.next_price[pid]
            self.next_price[pid] = price + 1
            r = self.rec.call(s, "patch_price", WRITE, "PATCH", f"{self.base}/v1/products/{pid}", (200,),
                              headers=seller["auth"], json={"price_cents": price, "description": f"chaos rev {price}"})
            if r is not None:
                self.confirmed[pid] = max(self.confirmed[pid], price)
            else:
                self._read_back(s, pid, price)
            time.sleep(0.05)

    def _read_back(self, s: requests.Session, pid: str, price: int) -> None:
        """After a PATCH that answered 503 (or whose answer a kill cut off): the write is whole or
        absent. An earlier write that also answered 503 (a database timeout) may have landed since,
        whole, but never over a newer one (the service writes on a version compare-and-set)."""
        self.unconfirmed[pid].add(price)
        old = self.confirmed[pid]
        product = self._read_product(s, "readback", pid, old, "read back after a failed PATCH")
        if product is None:
            return
        seen = product["price_cents"]
        if seen != old and not self._landed(pid, seen):
            self.rec.violation("failed PATCH left an unexpected price", product=pid,
                               attempted=price, confirmed=old, seen=seen)

    def _landed(self, pid: str, seen: int) -> bool:
        """True (and `seen` now confirmed) if it is a write that answered 503 and took effect after all."""
        if seen not in self.unconfirmed[pid] or seen < self.confirmed[pid]:
            return False
        self.rec.count("patch_price", "503_but_applied")
        self.unconfirmed[pid].discard(seen)
        self.confirmed[pid] = seen
        return True

    def misc_writer(self) -> None:
        """Reviews (each reviewer at most once per product) and sign-ins."""
        s = requests.Session()
        pairs = [(rv, pid) for pid in self.confirmed for rv in self.reviewers]
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2 and pairs:
                reviewer, pid = pairs.pop()
                self.rec.call(s, "review", WRITE, "POST", f"{self.base}/v1/products/{pid}/reviews", (201,),
                              headers=reviewer["auth"], json={"rating": 1 + n % 5, "text": f"chaos review {n}"})
            else:
                account = self.reviewers[n % len(self.reviewers)]
                self.rec.call(s, "sign_in", WRITE, "POST", f"{self.base}/v1/sessions", (201,),
                              json={"email": account["email"], "password": account["password"]})
            time.sleep(0.1)

    def submit_import(self, s: requests.Session, size: int, label: str) -> str | None:
        owner = self.sellers[0]
        category = f"chaosimp{uuid.uuid4().hex[:10]}"
        items = [{"name": f"{label} {i:05d}", "description": f"imported {i}", "price_cents": 100 + i % 900,
                  "currency": "EUR", "category": category, "tags": ["chaos"], "stock": 1} for i in range(size)]
        r = self.rec.call(s, "import", WRITE, "POST", f"{self.base}/v1/imports", (202,), headers=owner["auth"],
                          json=items)
        if r is None:
            return None
        job_id = r.json()["job_id"]
        with self.imports_lock:
            self.imports.append({"job_id": job_id, "category": category, "size": size, "submitted": self.rec.now()})
        return job_id

    def importer(self) -> None:
        s = requests.Session()
        while not self.stop.wait(4.0 if self.short else 8.0):
            self.submit_import(s, 50, "Small")

    # ---- faults --------------------------------------------------------------------------

    def _kill(self, name: str) -> dict:
        replica = self.stack.replicas[name]
        # Like a pod's container dying: every process of the replica at once (gunicorn's master
        # and its workers; each replica runs in a process group of its own).
        self.rec.mark_killed(name)
        os.killpg(replica.proc.pid, signal.SIGKILL)
        if not replica.proc.wait_exit(10):
            raise RuntimeError(f"{name} survived SIGKILL")
        deadline = time.monotonic() + 30
        while listening(replica.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return {"pid": replica.proc.pid, "port": replica.port}

    def kill_and_restore(self, name: str, service: str) -> bool:
        self.rec.faults[-1].update(self._kill(name))
        time.sleep(1.0)  # traffic meets the dead replica, still in the gateway's list
        self.stack.scale(service, 2)
        return True

    def scale_catalog(self) -> bool:
        self.stack.scale("catalog", 4)
        time.sleep(2.0)
        self.stack.scale("catalog", 2)
        return True

    def restart_server(self, name: str, down_for: float) -> bool:
        self.stack.stop_server(name)
        time.sleep(down_for)
        self.stack.start_server(name)
        return True

    def kill_worker_mid_import(self) -> bool:
        entry = self.rec.faults[-1]
        wait_workers_ready(self.stack, 2, timeout=120)
        s = requests.Session()
        size = 5000 if self.short else 10000  # big enough to be caught running
        job_id = self.submit_import(s, size, "Big")
        if job_id is None:
            raise RuntimeError("the big import was not accepted")
        entry["job_id"] = job_id
        deadline = time.monotonic() + 120
        auth = self.sellers[0]["auth"]
        while time.monotonic() < deadline:
            holders = [n for n, st in worker_readyz(self.stack).items() if st and st.get("current_job") == job_id]
            response = self.rec.call(s, "job_status", READ, "GET", f"{self.base}/v1/jobs/{job_id}", (200,),
                                     headers=auth)
            job: dict = response.json() if response is not None else {}
            if job.get("status") in ("succeeded", "failed"):
                entry["error"] = f"the import finished before a worker could be killed: {job.get('status')}"
                return False
            if holders and job.get("status") == "running" and job["progress"]["done"] > 0:
                entry.update(self._kill(holders[0]), victim=holders[0], done_at_kill=job["progress"]["done"])
                self.stack.scale("worker", 2)
                wait_workers_ready(self.stack, 2, timeout=120)
                return True
            time.sleep(0.05)
        entry["error"] = "no worker was seen running the big import"
        return False

    # ---- final checks ------------------------------------------------------------------------

    def check_imports(self) -> None:
        from pymongo import MongoClient  # counting a 10,000-product category through the API is slow

        client: MongoClient[dict[str, Any]] = MongoClient(f"mongodb://127.0.0.1:{self.stack.layout.db_port}/",
                                                          serverSelectionTimeoutMS=10_000)
        db = client["scaleshop"]
        s = requests.Session()
        auth = self.sellers[0]["auth"]
        for item in self.imports:
            deadline = time.monotonic() + 180
            job: dict = {}
            while time.monotonic() < deadline:
                r = self.rec.call(s, "job_status", READ, "GET", f"{self.base}/v1/jobs/{item['job_id']}", (200,),
                                  headers=auth)
                job = r.json() if r is not None else {}
                if job.get("status") in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
            item["status"] = job.get("status")
            if job.get("status") != "succeeded" or job.get("progress") != {"done": item["size"], "total": item["size"]}:
                self.rec.violation("accepted import did not succeed", job=item["job_id"], state=job)
                continue
            total = db["products"].count_documents({"category": item["category"]})
            item["products"] = total
            if total != item["size"]:
                self.rec.violation("import not applied exactly once", job=item["job_id"],
                                   size=item["size"], products_in_category=total)

    def check_final_prices(self) -> None:
        s = requests.Session()
        for pid, price in self.confirmed.items():
            product = self._read_product(s, "product_page", pid, price, "final read")
            if product is None:
                continue
            if product["price_cents"] != price and not self._landed(pid, product["price_cents"]):
                self.rec.violation("final price differs from the last write known to have taken effect",
                                   product=pid, expected=price, seen=product["price_cents"])

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        self.setup()
        threads = [threading.Thread(target=self.reader, args=(i,), daemon=True) for i in range(4)]
        threads += [threading.Thread(target=self.price_writer, args=(s,), daemon=True) for s in self.sellers]
        threads += [threading.Thread(target=self.misc_writer, daemon=True),
                    threading.Thread(target=self.importer, daemon=True)]
        pause = 2.0 if self.short else 5.0
        try:
            for t in threads:
                t.start()
            time.sleep(pause)
            rec = self.rec
            rec.fault("sigkill user-1, then scale user 2", lambda: self.kill_and_restore("user-1", "user"))
            time.sleep(pause)
            rec.fault("sigkill catalog-1, then scale catalog 2", lambda: self.kill_and_restore("catalog-1", "catalog"))
            time.sleep(pause)
            rec.fault("scale catalog 2->4->2", self.scale_catalog)
            time.sleep(pause)
            rec.fault("restart memcached", lambda: self.restart_server("memcached", 1.0))
            time.sleep(pause)
            rec.fault(f"stop kafka for {KAFKA_DOWN_S:.0f}s", lambda: self.restart_server("kafka", KAFKA_DOWN_S))
            time.sleep(pause)
            rec.fault("sigkill a worker mid-import, then scale worker 2", self.kill_worker_mid_import)
            time.sleep(pause)
        finally:
            self.stop.set()
            for t in threads:
                t.join(TIMEOUT + 5)
            restore(self.stack, wait_for_events=False)
        print(f"[chaos] {self.rec.now():7.1f}s traffic stopped; checking {len(self.imports)} imports", flush=True)
        self.check_imports()
        self.check_final_prices()
        print(f"[chaos] {self.rec.now():7.1f}s checks done", flush=True)
        summary = self.rec.summary()
        summary.update(short=self.short, seconds=round(time.monotonic() - started, 1),
                       gateway=self.base, imports=self.imports)
        return summary


def restore(stack: Stack, wait_for_events: bool = True) -> None:
    """Leave the stack as the run found it: servers running, 2 replicas of each service, and
    (unless told not to) every event of the run folded: later users would wait behind them."""
    for name in ("memcached", "kafka"):
        stack.start_server(name)  # no-op when it runs
    for service in ("user", "catalog", "worker"):
        stack.scale(service, 2)
    if wait_for_events and (left := wait_events_folded(stack, timeout=180)):
        print(f"[chaos] {left} events still to fold after 180s", flush=True)


def _closed_without_response(exc: requests.ConnectionError) -> bool:
    """True when the server closed the connection before sending any byte (not: refused, timed out)."""
    text = repr(exc)
    return "RemoteDisconnected" in text or "ConnectionResetError" in text or "BrokenPipeError" in text


def run_chaos(stack: Stack, short: bool, out: str | Path | None = None) -> dict:
    summary = Chaos(stack, short).run()
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="the short form (shorter pauses, smaller imports)")
    parser.add_argument("--out", required=True, help="where to write the JSON summary")
    args = parser.parse_args(argv)
    stack = Stack(log=lambda msg: print(f"[chaos] {msg}", flush=True))
    summary = run_chaos(stack, args.short, args.out)
    print(json.dumps({k: summary[k] for k in ("counts", "total_requests", "faults", "violations", "seconds")},
                     indent=2))
    print(f"[chaos] summary written to {args.out}; {len(summary['violations'])} violation(s)")
    failed = summary["violations"] or not all(f["happened"] for f in summary["faults"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
