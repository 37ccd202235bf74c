"""What tests/cluster/test_release.py needs to drive an installed release as a user's CI would.

Only the Kubernetes API (the `kubernetes` client, and `kubectl` on PATH) and HTTP through the
gateway: the release's settings from the environment, accounts made through the public API, an
open-loop read load (each request due at start + i/rate, whatever the earlier ones do) that
records every outcome, the pods of a release's Deployment, and a summary of each load printed at
the end of the run so its counts can be quoted.

Environment: KUBE_CONTEXT (default scaleshop-local), KUBECONFIG, NAMESPACE (scaleshop),
RELEASE (scaleshop), GATEWAY_URL (http://127.0.0.1:30080).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

import pytest
import requests
from kubernetes import client, config

from tests.functional.browser import browser, browser_page  # noqa: F401  (the page tests' fixtures)
from tests.functional.conftest import Account
from tests.functional.conftest import sign_up as functional_sign_up

KUBE_CONTEXT = os.environ.get("KUBE_CONTEXT", "scaleshop-local")
NAMESPACE = os.environ.get("NAMESPACE", "scaleshop")
RELEASE = os.environ.get("RELEASE", "scaleshop")
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:30080").rstrip("/")
TIMEOUT = 15
ROLLOUT_TIMEOUT = 240

LOAD_REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    """Every load's counts, whether the run passed or not (pytest -q hides a passing test's output)."""
    if LOAD_REPORTS:
        terminalreporter.section("loads against the release")
        for line in LOAD_REPORTS:
            terminalreporter.write_line(line)


# ---- the cluster --------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    core: client.CoreV1Api
    apps: client.AppsV1Api

    def deployment_name(self, component: str) -> str:
        """The Deployment of `component` in the release, found by the chart's labels."""
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        found = self.apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items
        assert len(found) == 1, f"{len(found)} Deployments match {selector} in {NAMESPACE}"
        return str(found[0].metadata.name)  # type: ignore[union-attr]

    def deployment(self, name: str) -> Any:
        """The Deployment object (the client's models are typed all-optional; a read one has its fields)."""
        return self.apps.read_namespaced_deployment(name, NAMESPACE)

    def pods(self, deployment: str) -> list[Any]:
        """Every pod the Deployment's selector matches, terminating ones included."""
        labels = self.deployment(deployment).spec.selector.match_labels
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return list(self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)

    def serving_pod_names(self, deployment: str) -> set[str]:
        """Names of the Deployment's pods that are Running, Ready and not being deleted."""
        return {str(pod.metadata.name) for pod in self.pods(deployment)
                if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])}

    def replicas(self, deployment: str) -> int:
        return int(self.deployment(deployment).spec.replicas)

    def wait_until_only(self, deployment: str, count: int, timeout: float = ROLLOUT_TIMEOUT) -> set[str]:
        """Wait until the Deployment has exactly `count` pods, all serving (terminating ones gone)."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods(deployment)
            serving = self.serving_pod_names(deployment)
            if len(pods) == count and len(serving) == count:
                return serving
            if time.monotonic() > deadline:
                states = [(p.metadata.name, p.status.phase, p.metadata.deletion_timestamp) for p in pods]
                raise AssertionError(f"{deployment}: not {count} serving pods after {timeout} s: {states}")
            time.sleep(0.5)


def kubectl(*args: str, timeout: float = ROLLOUT_TIMEOUT) -> str:
    """Run kubectl on the release's context and namespace; fail the test with its output on error."""
    command = ["kubectl", "--context", KUBE_CONTEXT, "-n", NAMESPACE, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def scale(deployment: str, replicas: int) -> None:
    """`kubectl scale`, then `kubectl rollout status` until the replicas are available."""
    kubectl("scale", f"deployment/{deployment}", f"--replicas={replicas}")
    kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={ROLLOUT_TIMEOUT}s")


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    try:
        config.load_kube_config(context=KUBE_CONTEXT)
    except Exception as error:  # noqa: BLE001 - any failure here means: no such cluster to test
        pytest.fail(f"cannot load context {KUBE_CONTEXT!r} (KUBECONFIG={os.environ.get('KUBECONFIG')}): {error}")
    found = Cluster(core=client.CoreV1Api(), apps=client.AppsV1Api())
    found.core.read_namespace(NAMESPACE)
    return found


@pytest.fixture
def restore_replicas(cluster: Cluster) -> Iterator[Callable[[str], None]]:
    """`remember(deployment)` before changing it; its replica count is put back after the test, pass or fail."""
    remembered: dict[str, int] = {}

    def remember(deployment: str) -> None:
        remembered.setdefault(deployment, cluster.replicas(deployment))

    yield remember
    for deployment, replicas in remembered.items():
        if cluster.replicas(deployment) != replicas:
            scale(deployment, replicas)
        cluster.wait_until_only(deployment, replicas)


# ---- the public API -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def gateway(cluster: Cluster) -> str:
    try:
        response = requests.get(f"{GATEWAY_URL}/healthz", timeout=TIMEOUT)
    except requests.RequestException as error:
        pytest.fail(f"the gateway does not answer at GATEWAY_URL={GATEWAY_URL}: {error}")
    assert response.status_code == 200, response.text
    return GATEWAY_URL


def sign_up(base: str, display_name: str) -> Account:
    """The functional suite's sign-up (statuses and bodies of DESIGN.md checked), with this suite's timeout."""
    return functional_sign_up(base, display_name, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def seller(gateway: str) -> Account:
    return sign_up(gateway, "Cluster Seller")


@pytest.fixture(scope="session")
def product(gateway: str, seller: Account) -> dict:
    """A product of `seller`, with a review by `seller`, whose page joins the user service's profiles."""
    body: dict[str, Any] = {"name": "Cluster Mug", "description": "A mug read under load.", "price_cents": 1450,
            "currency": "EUR", "category": f"cl{uuid.uuid4().hex[:10]}", "tags": ["mug"], "stock": 5}
    created = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    item = created.json()
    review = requests.post(f"{gateway}/v1/products/{item['id']}/reviews", json={"rating": 5, "text": "Solid."},
                           headers=seller.auth, timeout=TIMEOUT)
    assert review.status_code == 201, review.text
    return item


# ---- work in the background of a with-block -----------------------------------------------

class Periodic:
    """Calls `tick()` every `interval` s on a thread of its own while the `with` block runs."""

    def __init__(self, interval: float, name: str):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- open-loop load -----------------------------------------------------------------------

@dataclass
class Outcome:
    due: float            # monotonic time the request was due
    done: float           # monotonic time its answer (or error) came
    path: str
    status: int | None    # None: no HTTP answer
    error: str | None     # "status 502", "ConnectionError", ...
    served_by: str | None
    cache: str | None     # X-Cache: hit or miss, where the route has one


@dataclass
class OpenLoopLoad:
    """GETs of `paths` (in turn) at `rate` per second, request i due at start + i/rate.

    A late answer never delays the next request (the pool has enough threads for `rate` x the
    timeout); latency counts from the due time. Bounded: at most `rate` x `max_seconds` requests,
    and it stops at stop() or after `max_seconds`. Loopback only: it reads GATEWAY_URL.
    """
    base: str
    paths: list[str]
    rate: float = 40.0
    max_seconds: float = 150.0
    timeout: float = 10.0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=int(self.rate * 2) + 8, thread_name_prefix="load")
        self._scheduler = threading.Thread(target=self._schedule, name="load-scheduler", daemon=True)
        self.sent = 0

    def __enter__(self) -> OpenLoopLoad:
        self.started = time.monotonic()
        self._scheduler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._scheduler.join()
        self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        limit = int(self.rate * self.max_seconds)
        for index in range(limit):
            due = self.started + index / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._pool.submit(self._get, due, self.paths[index % len(self.paths)])
            self.sent += 1

    def _get(self, due: float, path: str) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        status: int | None = None
        error: str | None = None
        served_by: str | None = None
        cache: str | None = None
        try:
            response = session.get(f"{self.base}{path}", timeout=self.timeout)
            status, served_by = response.status_code, response.headers.get("X-Served-By")
            cache = response.headers.get("X-Cache")
            if status != 200:
                error = f"status {status}"
        except requests.RequestException as failure:
            error = type(failure).__name__
        with self._lock:
            self.outcomes.append(Outcome(due, time.monotonic(), path, status, error, served_by, cache))

    def served_by_since(self, since: float) -> set[str]:
        """X-Served-By of the answers that came after monotonic time `since`."""
        with self._lock:
            return {o.served_by for o in self.outcomes if o.done >= since and o.served_by}

    def wait_until_served_by(self, names: set[str], since: float, timeout: float) -> set[str]:
        """Wait until every one of `names` has answered after `since`; return the names seen."""
        deadline = time.monotonic() + timeout
        while not names <= (seen := self.served_by_since(since)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return seen

    def summary(self, label: str) -> str:
        """sent, 200s, errors by kind, p50/p99 latency and the replicas that answered; kept for the run's end."""
        with self._lock:
            outcomes = list(self.outcomes)
        errors = Counter(o.error for o in outcomes if o.error)
        latencies = sorted((o.done - o.due) * 1000 for o in outcomes)
        p50 = statistics.median(latencies) if latencies else float("nan")
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
        answered = Counter(o.served_by for o in outcomes if o.served_by)
        line = (f"[{label}] rate {self.rate:.0f}/s: sent {self.sent}, answered {len(outcomes)}, "
                f"200s {sum(o.status == 200 for o in outcomes)}, errors {dict(errors) or 0}, "
                f"latency p50 {p50:.0f} ms p99 {p99:.0f} ms, "
                f"X-Cache misses {sum(o.cache == 'miss' for o in outcomes)}; "
                f"served by {dict(sorted(answered.items()))}")
        LOAD_REPORTS.append(line)
        print(line, flush=True)
        return line

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != 200]

    def answers(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)
