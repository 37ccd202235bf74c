"""The single-node Kubernetes of `make cluster-up` / `make cluster-down`, checked as a user would.

Brings the real cluster up (k8s/cluster/cluster.sh, built by k8s/cluster/install.sh), checks that a
second `up` changes nothing, that the node is Ready, that a pod resolves a Service's name through
the cluster DNS, that a NodePort answers on 127.0.0.1, that a StatefulSet's volume claim binds (local-path
provisioner), that `kubectl top` has metrics (metrics-server) and that a NetworkPolicy is enforced
(kube-router's firewall); then brings it down and checks that no process, mount, interface,
iptables rule or ipset of the cluster is left.

Not part of `make test` (pytest.ini's testpaths leave tests/cluster out): run it with
`make test-cluster-infra`. It needs root, the built parts (`make cluster-install`) and a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "k8s" / "cluster" / "cluster.sh"
CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")) / "cluster"
KUBECTL = CACHE / "bin" / "kubectl"
KUBECONFIG = CACHE / "config" / "admin.kubeconfig"
BUSYBOX_IMAGE = "scaleshop.local/busybox:1"
NAMESPACE = "cluster-check"
# what the cluster's pods run as their first process: none may outlive `down`
# the Docker engine's own mounts (an image build may run meanwhile, with docker.sh): not the cluster's
DOCKER_PATHS = ("/var/lib/docker", "/run/docker")
COUNTERS = re.compile(r" \[\d+:\d+\]$")
POD_PROGRAMS = ("/pause", "/coredns", "/local-path-provisioner", "/metrics-server", "/bin/busybox")

pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.geteuid() != 0, reason="the cluster runs as root"),
    pytest.mark.skipif(not KUBECTL.exists(), reason="not built: make cluster-install"),
]


def cluster(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run([str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args], input=stdin,
                            capture_output=True, text=True, timeout=180, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class HostState:
    """What the cluster could leave behind on the machine."""

    processes: frozenset[str]
    mounts: frozenset[str]
    links: frozenset[str]
    iptables: frozenset[str]
    ipsets: frozenset[str]


def _lines(cmd: list[str]) -> list[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()


def _cluster_processes() -> frozenset[str]:
    """Processes started from the cluster's cache folder, its containerd shims and its pods' programs."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if str(CACHE) in cmdline or cmdline.split(" ", 1)[0] in POD_PROGRAMS:
            found.add(f"{proc.name} {cmdline}")
    return frozenset(found)


def _iptables_rules() -> frozenset[str]:
    """IPv4 and IPv6 rules and chains, without counters; Docker's own (an image build may run) left out."""
    rules = set()
    for tool in ("iptables-save", "ip6tables-save"):
        for line in _lines([tool]):
            if line.startswith(("#", "*", "COMMIT")) or "DOCKER" in line or "docker0" in line:
                continue
            rules.add(tool + ": " + COUNTERS.sub("", line))
    return frozenset(rules)


def host_state() -> HostState:
    links = set()
    for line in _lines(["ip", "-o", "link", "show"]):
        name = line.split(": ")[1].split("@")[0]
        if "master docker0" not in line and name != "docker0":
            links.add(name)
    mounts = {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if not line.split()[1].startswith(DOCKER_PATHS)}
    ipsets = frozenset(_lines(["ipset", "list", "-n"]))
    return HostState(_cluster_processes(), frozenset(mounts), frozenset(links), _iptables_rules(), ipsets)


def pod_veths() -> frozenset[str]:
    """The host ends of the pods' veths, on the cluster's pod bridge."""
    return frozenset(line.split(": ")[1].split("@")[0]
                     for line in _lines(["ip", "-o", "link", "show", "master", "ssk-cni0"]))


def docker_engine_running() -> bool:
    return any(_command_name(proc) == "dockerd" for proc in Path("/proc").iterdir() if proc.name.isdigit())


def _command_name(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def builtin_policies(rules: frozenset[str]) -> frozenset[str]:
    """Chain policy lines of built-in chains (':INPUT ACCEPT'): a table that appeared empty is no rule."""
    return frozenset(r for r in rules if re.search(r": :(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ", r))


@pytest.fixture(scope="module")
def running_cluster() -> Iterator[HostState]:
    before = host_state()
    assert not before.processes, f"a cluster is already running; make cluster-down first: {before.processes}"
    started = time.monotonic()
    up = cluster("up")
    assert up.returncode == 0, up.stderr[-3000:]
    print(f"cluster up in {time.monotonic() - started:.0f}s")
    try:
        yield before
    finally:
        down = cluster("down")
        assert down.returncode == 0, down.stderr[-3000:]


def test_up_prints_how_to_use_the_cluster_and_a_second_up_is_a_no_op(running_cluster: HostState) -> None:
    again = cluster("up", timeout=60)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert f"export KUBECONFIG={KUBECONFIG}" in again.stdout
    assert "context: scaleshop-local" in again.stdout


def test_the_node_is_ready_and_runs_kubernetes_1_34(running_cluster: HostState) -> None:
    node = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(node) == 1
    ready = {c["type"]: c["status"] for c in node[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert node[0]["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.34.")


@pytest.fixture(scope="module")
def namespace(running_cluster: HostState) -> str:
    # the cluster keeps its workloads across down/up: a namespace left by an interrupted run goes first
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s")
    kubectl("create", "namespace", NAMESPACE)
    return NAMESPACE


def wait_for_pod_phase(namespace: str, pod: str, phases: set[str], seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl("-n", namespace, "get", "pod", pod, "-o", "jsonpath={.status.phase}", check=False)
        if phase in phases:
            return phase
        time.sleep(1)
    raise AssertionError(f"pod {pod} is {phase!r}, not one of {phases}: "
                         + kubectl("-n", namespace, "describe", "pod", pod, check=False)[-2000:])


def test_a_pod_resolves_a_service_name_through_cluster_dns(namespace: str) -> None:
    kubectl("-n", namespace, "create", "service", "clusterip", "named-target", "--tcp=80:80")
    service_ip = kubectl("-n", namespace, "get", "service", "named-target", "-o", "jsonpath={.spec.clusterIP}")
    kubectl("-n", namespace, "run", "resolver", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
            "--restart=Never", "--command", "--", "nslookup", f"named-target.{namespace}.svc.cluster.local")
    wait_for_pod_phase(namespace, "resolver", {"Succeeded", "Failed"})  # busybox fails on the empty AAAA answer
    answer = kubectl("-n", namespace, "logs", "resolver")
    assert f"Address: {service_ip}" in answer, answer


def test_a_node_port_answers_on_loopback(namespace: str) -> None:
    kubectl("-n", namespace, "run", "web", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
            "--labels=app=web", "--port=8080", "--command", "--", "httpd", "-f", "-p", "8080", "-h", "/bin")
    kubectl("-n", namespace, "expose", "pod", "web", "--type=NodePort", "--port=80", "--target-port=8080")
    wait_for_pod_phase(namespace, "web", {"Running"})
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/web", "--timeout=60s")
    node_port = kubectl("-n", namespace, "get", "service", "web", "-o", "jsonpath={.spec.ports[0].nodePort}")
    deadline = time.monotonic() + 30  # kube-proxy writes the Service's rules a moment after the pod is Ready
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node_port}/busybox", timeout=5) as response:
                assert response.status == 200
                assert response.read(4) == b"\x7fELF"  # busybox's httpd serving its own binary from /bin
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_statefulsets_volume_claim_binds_and_keeps_what_its_pod_writes(namespace: str) -> None:
    stateful_set = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "store"},
        "spec": {
            "serviceName": "store", "replicas": 1, "selector": {"matchLabels": {"app": "store"}},
            "template": {"metadata": {"labels": {"app": "store"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "store", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                "command": ["sh", "-c", "echo kept > /data/probe && exec sleep 3600"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            # no storageClassName: the cluster's default class must serve it, as for the chart's StatefulSets
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}],
        },
    }
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(stateful_set))
    wait_for_pod_phase(namespace, "store-0", {"Running"}, seconds=180)
    assert kubectl("-n", namespace, "get", "pvc", "data-store-0", "-o", "jsonpath={.status.phase}") == "Bound"
    volume = kubectl("-n", namespace, "get", "pvc", "data-store-0", "-o", "jsonpath={.spec.volumeName}")
    deadline = time.monotonic() + 30
    while not (written := list((CACHE / "state" / "volumes").glob(f"{volume}_*/probe"))):
        assert time.monotonic() < deadline, f"nothing written in the volume {volume}"
        time.sleep(1)
    assert [path.read_text() for path in written] == ["kept\n"]


def test_metrics_server_serves_node_metrics(running_cluster: HostState) -> None:
    deadline = time.monotonic() + 120  # the first scrape comes one resolution period (15 s) after start
    while True:
        top = subprocess.run([str(KUBECTL), "--kubeconfig", str(KUBECONFIG), "top", "node"],
                             capture_output=True, text=True, check=False)
        if top.returncode == 0:
            assert re.search(r"\d+m\s+\d+%\s+\d+Mi", top.stdout), top.stdout
            return
        if time.monotonic() > deadline:
            raise AssertionError(top.stderr)
        time.sleep(3)


def connects(namespace: str, pod: str, address: str, port: int) -> bool:
    """True when busybox's nc in `pod` connects to address:port (3 s; its wget crashes, static glibc)."""
    result = subprocess.run([str(KUBECTL), "--kubeconfig", str(KUBECONFIG), "-n", namespace, "exec", pod, "--",
                             "sh", "-c", f"echo | nc -w 3 {address} {port}"], capture_output=True, check=False)
    return result.returncode == 0


def until(expected: bool, check, seconds: float = 30) -> bool:
    """Poll `check()` until it returns `expected` (the enforcer applies a change within seconds)."""
    deadline = time.monotonic() + seconds
    while (found := check()) != expected and time.monotonic() < deadline:
        time.sleep(1)
    return found


def test_a_network_policy_is_enforced(namespace: str) -> None:
    """kube-router's firewall: a policy admitting only `app=friend` refuses another pod, then admits it as a friend."""
    kubectl("-n", namespace, "run", "guarded", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
            "--labels=app=guarded", "--command", "--", "httpd", "-f", "-p", "8080", "-h", "/bin")
    kubectl("-n", namespace, "run", "client", f"--image={BUSYBOX_IMAGE}", "--image-pull-policy=Never",
            "--labels=app=client", "--command", "--", "sleep", "600")
    for pod in ("guarded", "client"):
        kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s")
    address = kubectl("-n", namespace, "get", "pod", "guarded", "-o", "jsonpath={.status.podIP}")
    assert until(True, lambda: connects(namespace, "client", address, 8080)), "no policy yet: the client gets through"
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "friends-only"},
              "spec": {"podSelector": {"matchLabels": {"app": "guarded"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "friend"}}}]}]}}
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(policy))
    assert not until(False, lambda: connects(namespace, "client", address, 8080)), "the policy did not refuse it"
    kubectl("-n", namespace, "label", "pod", "client", "app=friend", "--overwrite")
    assert until(True, lambda: connects(namespace, "client", address, 8080)), "the policy did not admit a friend"


def test_down_leaves_nothing_behind(running_cluster: HostState) -> None:
    """Runs last in this module: the fixture's own `down` afterwards finds nothing to do."""
    before = running_cluster
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s")
    cluster_veths = pod_veths()
    assert cluster_veths, "CoreDNS and the add-ons run in pods on the bridge"
    down = cluster("down")
    assert down.returncode == 0, down.stderr[-3000:]
    after = host_state()
    assert after.processes == frozenset()
    assert after.mounts - before.mounts == frozenset()
    assert not any(link.startswith("ssk-") for link in after.links), after.links  # the cluster's bridges
    assert not cluster_veths & after.links
    new_links = after.links - before.links
    if docker_engine_running():  # an image build meanwhile: its veths may not be on docker0 yet
        new_links = frozenset(link for link in new_links if not link.startswith("veth"))
    assert new_links == frozenset()
    assert (after.iptables - before.iptables) - builtin_policies(after.iptables) == frozenset()
    assert after.ipsets - before.ipsets == frozenset()
    again = cluster("down")
    assert again.returncode == 0
