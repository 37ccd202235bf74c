"""stack/layout.py's port offsets: every port the project's own stacks, and the database servers
started beside them, listen on lies below the kernel's ephemeral port range (an outgoing
connection may hold any port in that range as its source port just when a server binds it: a CI
run once lost the storage tests' FerretDB port that way), is an unprivileged TCP port, belongs to
one stack only (all can run at once) and is none of a local Kubernetes cluster's ports."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from loadgen.bench.database import PORT_BASE as BENCH_DB_PORT_BASE
from stack.dbservers import SERVERS as DB_SERVERS
from stack.layout import (
    BENCH_PORT_OFFSET,
    BENCH_READS_STACK_SHIFT,
    CHAOS_PORT_OFFSET,
    DEFAULT_PORT_OFFSET,
    MAX_REPLICAS,
    REPO,
    SIDE_DB_PORT,
    TEST_PORT_OFFSET,
    TEST_SECOND_STACK_SHIFT,
    Layout,
)

GENEROUS_REPLICAS = 99  # each service's whole block of 100 replica ports, twice what `scale` allows
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)


def ephemeral_range() -> tuple[int, int]:
    """This machine's ephemeral port range (Linux's default where it cannot be read)."""
    try:
        low, high = (int(word) for word in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL
    return low, high


def kind_gateway_port() -> int:
    config = yaml.safe_load((REPO / "k8s" / "kind-config.yaml").read_text())
    return config["nodes"][0]["extraPortMappings"][0]["hostPort"]


# The fixed ports of a local Kubernetes cluster on this machine (kind, minikube, a kubeadm node).
CLUSTER_PORTS = {
    "etcd (client, peer, metrics)": {2379, 2380, 2381},
    "kube-apiserver": {6443},
    "kubelet, kube-proxy, controller manager, scheduler": set(range(10248, 10260)),
    "CoreDNS metrics": {9153},
    "NodePorts": set(range(30000, 32768)),
    "the kind gateway (k8s/kind-config.yaml)": {kind_gateway_port()},
}


def stack_ports(offset: int) -> set[int]:
    layout = Layout(run_dir=Path("/nonexistent"), cache_dir=Path("/nonexistent"), port_offset=offset)
    return set(layout.ports(GENEROUS_REPLICAS).values())


STACKS = {
    "make up": stack_ports(DEFAULT_PORT_OFFSET),
    "the test session": stack_ports(TEST_PORT_OFFSET) | {SIDE_DB_PORT + TEST_PORT_OFFSET},
    "the test session's second stack": stack_ports(TEST_PORT_OFFSET + TEST_SECOND_STACK_SHIFT),
    "make chaos": stack_ports(CHAOS_PORT_OFFSET),
    "make bench": stack_ports(BENCH_PORT_OFFSET)
    | set(range(BENCH_DB_PORT_BASE + BENCH_PORT_OFFSET, BENCH_DB_PORT_BASE + BENCH_PORT_OFFSET + 10 * len(DB_SERVERS))),
    "make bench's reads part": stack_ports(BENCH_PORT_OFFSET + BENCH_READS_STACK_SHIFT),
}


def test_the_generous_replica_count_covers_every_replica_a_stack_may_run():
    assert GENEROUS_REPLICAS >= MAX_REPLICAS


@pytest.mark.parametrize("name", STACKS)
def test_every_port_of_a_stack_is_unprivileged_and_below_the_ephemeral_range(name):
    low, high = ephemeral_range()
    ports = STACKS[name]
    in_range = sorted(port for port in ports if low <= port <= high)
    assert not in_range, f"{name}: ports {in_range[:5]}... lie in this machine's ephemeral range {low}-{high}"
    assert 1024 <= min(ports) and max(ports) <= 65535, f"{name}: ports span {min(ports)}-{max(ports)}"


@pytest.mark.parametrize(("one", "other"), list(itertools.combinations(STACKS, 2)))
def test_no_two_stacks_share_a_port(one, other):
    shared = sorted(STACKS[one] & STACKS[other])
    assert not shared, f"{one} and {other} both use ports {shared[:5]}"


@pytest.mark.parametrize("name", STACKS)
def test_no_stack_uses_a_port_of_a_local_kubernetes_cluster(name):
    taken = {what: sorted(STACKS[name] & ports)[:5] for what, ports in CLUSTER_PORTS.items() if STACKS[name] & ports}
    assert not taken, f"{name} uses ports of a local cluster (the first of each): {taken}"


def test_a_bad_offset_is_refused_with_the_offsets_that_would_do():
    layout = Layout(run_dir=Path("/nonexistent"), cache_dir=Path("/nonexistent"), port_offset=60000)
    with pytest.raises(ValueError, match=r"SCALESHOP_PORT_OFFSET=60000 puts ports outside 1024-65535") as refused:
        layout.check()
    advice = re.search(r"use an offset between (-?\d+) and (-?\d+)", str(refused.value))
    assert advice, refused.value
    lowest, highest = int(advice[1]), int(advice[2])
    for offset in (lowest, highest):
        Layout(run_dir=Path("/nonexistent"), cache_dir=Path("/nonexistent"), port_offset=offset).check()
    for offset in (lowest - 1, highest + 1):
        with pytest.raises(ValueError):
            Layout(run_dir=Path("/nonexistent"), cache_dir=Path("/nonexistent"), port_offset=offset).check()
