"""loadgen/rollout.py: the loadgen Job's wait for the release's rollout. A Deployment counts as
rolled out only when every replica runs its last revision and no old one is left; the wait
polls until then and gives up after its timeout. Deployments are plain objects shaped like
the Kubernetes client's (no cluster)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from loadgen.rollout import pending, rolled_out, wait


def deployment(name: str = "scaleshop-catalog", replicas: int = 2, generation: int = 3, observed: int = 3,
               updated: int = 2, available: int = 2, total: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, generation=generation),
        spec=SimpleNamespace(replicas=replicas),
        status=SimpleNamespace(observed_generation=observed, updated_replicas=updated,
                               available_replicas=available, replicas=total))


def test_a_deployment_is_rolled_out_when_every_replica_runs_the_last_revision():
    assert rolled_out(deployment())


@pytest.mark.parametrize("state", [
    {"observed": 2},                 # the controller has not seen the last change yet
    {"updated": 1},                  # one replica still runs the old revision
    {"available": 1},                # a new replica is not ready yet
    {"total": 3, "available": 3},    # surge: an old replica is still there beside two new ones
])
def test_a_deployment_mid_rollout_is_pending(state):
    assert not rolled_out(deployment(**state))


def test_pending_names_only_the_deployments_still_rolling():
    deployments = [deployment("scaleshop-user", updated=1), deployment("scaleshop-gateway"),
                   deployment("scaleshop-catalog", observed=2)]
    assert pending(deployments) == ["scaleshop-catalog", "scaleshop-user"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_returns_once_the_rollout_is_done_and_says_what_it_waited_for():
    clock, logged = FakeClock(), []
    states = iter([[deployment(updated=1)], [deployment(updated=1)], [deployment()]])
    wait(lambda: next(states), timeout=60, log=logged.append, clock=clock, sleep=clock.sleep)
    assert logged == ["waiting for the rollout of scaleshop-catalog", "1 Deployments rolled out"]
    assert clock.now == 4.0


def test_wait_gives_up_after_its_timeout_naming_what_is_still_rolling():
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="scaleshop-catalog"):
        wait(lambda: [deployment(available=1)], timeout=10, log=lambda _m: None, clock=clock, sleep=clock.sleep)
    assert 10 <= clock.now <= 12


def test_wait_refuses_a_selector_that_matches_nothing():
    with pytest.raises(LookupError):
        wait(lambda: [], timeout=10, log=lambda _m: None)
