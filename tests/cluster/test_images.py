"""The images `make images` builds (k8s/images/build.sh), each run once with Docker as the chart runs it.

Every container here is started from the chart's own rendering (helm template with
k8s/values-kind.yaml and k8s/values-local-cluster.yaml, the values of this machine's cluster):
its image, command, arguments, environment, user, read-only root filesystem and volumes (a
ConfigMap becomes a read-only bind mount of its rendered files, an emptyDir or a volume claim a
tmpfs). Only what Kubernetes itself would supply is filled in here: the Secrets' values, the
pod's name, and the cluster's DNS names (as --add-host entries pointing at the containers).
Containers run on Docker's default bridge or with no network; ports are published on
127.0.0.1 only. Checks: the services answer /healthz; the loadgen Job loads its libraries on
the read-only root; nginx accepts the rendered configuration
and routes to a service container; memcached answers `version`; Kafka starts in KRaft mode and
the chart's topic Job creates the topics; the database answers pymongo; the `helm test` pod's
command passes against these containers; and no image carries this machine's apt sources.

Not part of `make test` (pytest.ini's testpaths leave tests/cluster out): `make test-images`
builds the images and runs this with dockerd started by k8s/cluster/docker.sh.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache"))
HELM = CACHE / "bin" / "helm"
DOCKER = "/usr/bin/docker"  # Debian's client (/usr/local/bin/docker may be another one)
RELEASE = NAMESPACE = "scaleshop"
VALUES = [REPO / "k8s" / "values-kind.yaml", REPO / "k8s" / "values-local-cluster.yaml"]
TEST_LABEL = "dev.scaleshop.test=images"
# What Kubernetes would take from the release's Secrets and the pod's metadata.
SECRET_ENV = {"AUTH_SECRET": "images-smoke-test-secret-0123456789", "MONGODB_URL": "mongodb://127.0.0.1:9/"}


def _docker_answers() -> bool:
    try:
        return subprocess.run([DOCKER, "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not _docker_answers(), reason="dockerd does not answer: run `make test-images`"),
]


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


# ---- the chart, rendered --------------------------------------------------------------------

def render(*sets: str) -> list[dict[str, Any]]:
    """The chart's manifests with this cluster's values (and `--set`/`--set-json` arguments)."""
    cmd = [str(HELM), "template", RELEASE, str(REPO / "charts/scaleshop"), "-n", NAMESPACE]
    for values in VALUES:
        cmd += ["-f", str(values)]
    result = subprocess.run([*cmd, *sets], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def default_manifests() -> tuple[dict[str, Any], ...]:
    return tuple(render())


def find(manifests, kind: str, name: str) -> dict[str, Any]:
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"the chart renders no {kind} {name}")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]


def configmap_env(manifests, container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update({k: str(v) for k, v in find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"].items()})
    return env


# ---- containers -----------------------------------------------------------------------------

class Containers:
    """Starts containers from the chart's pod specs; removes every one of them at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.names: list[str] = []

    def run_pod(self, manifests, kind: str, name: str, *, container: str | None = None,
                network: str = "bridge", publish: list[int] = (), add_hosts: dict[str, str] | None = None,
                env: dict[str, str] | None = None, command: list[str] | None = None,
                detach: bool = True) -> str | subprocess.CompletedProcess[str]:
        """Runs one container of a rendered workload as the chart runs it; returns its name."""
        workload = find(manifests, kind, name)
        spec = pod_spec(workload)
        spec_container = next(c for c in spec["containers"] if container in (None, c["name"]))
        context = spec_container.get("securityContext", {})
        uid, gid = context["runAsUser"], context.get("runAsGroup", context["runAsUser"])
        cname = f"scaleshop-imagetest-{name}-{uuid.uuid4().hex[:6]}"
        args = ["run", "--name", cname, "--label", TEST_LABEL, "--network", network,
                "--user", f"{uid}:{gid}", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        if context.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        args += ["--detach"] if detach else []
        for port in publish:
            args += ["--publish", f"127.0.0.1::{port}"]
        for host, address in (add_hosts or {}).items():
            args += ["--add-host", f"{host}:{address}"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in spec_container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume:
                folder = self.workdir / f"{cname}-{mount['name']}"
                folder.mkdir(parents=True)
                for key, text in find(manifests, "ConfigMap", volume["configMap"]["name"])["data"].items():
                    (folder / key).write_text(text)
                folder.chmod(0o755)
                args += ["--volume", f"{folder}:{mount['mountPath']}:ro"]
            else:  # an emptyDir, or a volume claim (fsGroup: the pod's group owns it)
                args += ["--tmpfs", f"{mount['mountPath']}:uid={uid},gid={gid},mode=0770"]
        container_env = configmap_env(manifests, spec_container)
        for item in spec_container.get("env", []):
            if "value" in item:
                container_env[item["name"]] = str(item["value"])
            elif item["name"] in SECRET_ENV:
                container_env[item["name"]] = SECRET_ENV[item["name"]]
            elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                container_env[item["name"]] = cname
        container_env.update(env or {})
        for key, value in container_env.items():
            args += ["--env", f"{key}={value}"]
        if "workingDir" in spec_container:
            args += ["--workdir", spec_container["workingDir"]]
        entrypoint, *rest = command or spec_container["command"]
        args += ["--entrypoint", entrypoint, spec_container["image"], *rest, *(
            [] if command else spec_container.get("args", []))]
        self.names.append(cname)
        if not detach:
            return docker(*args, check=False, timeout=300)
        docker(*args)
        return cname

    def address(self, cname: str) -> str:
        return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cname).stdout.strip()

    def host_port(self, cname: str, port: int) -> int:
        return int(docker("port", cname, f"{port}/tcp").stdout.splitlines()[0].rsplit(":", 1)[1])

    def logs(self, cname: str) -> str:
        result = docker("logs", cname, check=False)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "--force", "--volumes", *self.names, check=False)
        self.names.clear()


@pytest.fixture(scope="module")
def containers(tmp_path_factory) -> Iterator[Containers]:
    the_containers = Containers(tmp_path_factory.mktemp("images"))
    try:
        yield the_containers
    finally:
        the_containers.remove_all()


def wait_for(check: Callable[[], Any], what: str, logs: Callable[[], str], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return check()
        except Exception as error:  # noqa: BLE001 - retried until the deadline, then reported
            last = error
            time.sleep(1)
    raise AssertionError(f"{what} within {timeout:.0f}s (last: {last!r}); container logs:\n{logs()[-3000:]}")


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


# ---- the images -----------------------------------------------------------------------------

def chart_images() -> set[str]:
    images = set()
    for doc in default_manifests():
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "Pod"):
            images |= {c["image"] for c in pod_spec(doc)["containers"] + pod_spec(doc).get("initContainers", [])}
    return images


def test_every_image_the_chart_runs_here_is_built_and_runs_as_the_charts_user():
    expected_users = {}
    for doc in default_manifests():
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "Pod"):
            for c in pod_spec(doc)["containers"]:
                expected_users[c["image"]] = str(c["securityContext"]["runAsUser"])
    # Nothing is pulled: the chart runs exactly the images `make images` builds.
    built = subprocess.run(["bash", str(REPO / "k8s/images/build.sh"), "list"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert set(expected_users) == set(built)
    for image, uid in sorted(expected_users.items()):
        result = docker("image", "inspect", "-f", "{{.Config.User}}", image, check=False)
        assert result.returncode == 0, f"{image} is missing: run `make images`"
        user = result.stdout.strip()
        assert user.split(":")[0] == uid, f"{image} runs as {user!r}, the chart as {uid}"


def test_no_image_carries_this_machines_package_sources():
    for image in sorted(chart_images() | {"scaleshop/debian:bookworm"}):
        result = docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
                        "cat /etc/apt/sources.list /etc/apt/sources.list.d/* /etc/pip.conf 2>/dev/null;"
                        " ls /var/lib/apt/lists | grep -v -x -e partial -e lock; true")
        assert result.stdout.strip() == "", f"{image} has package sources or lists: {result.stdout!r}"


def test_the_services_answer_healthz_as_the_chart_runs_them(containers):
    manifests = default_manifests()
    started = {name: containers.run_pod(manifests, "Deployment", f"{RELEASE}-{name}", publish=[8080])
               for name in ("user", "catalog", "worker")}
    for name, cname in started.items():
        port = containers.host_port(cname, 8080)

        def healthz(port=port):
            status, headers, body = http_get(f"http://127.0.0.1:{port}/healthz")
            return status, headers, json.loads(body)

        status, headers, body = wait_for(healthz, f"{name} answering /healthz", lambda c=cname: containers.logs(c))
        assert status == 200 and body.get("status") == "ok", body
        if name != "worker":
            assert headers.get("X-Served-By") == cname  # REPLICA_ID, the pod's name


def test_the_loadgen_job_loads_its_libraries_on_the_read_only_root(containers):
    manifests = render("--set", "loadgen.enabled=true")
    job = next(doc["metadata"]["name"] for doc in manifests if doc["kind"] == "Job"
               and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "loadgen")
    imports = "import kubernetes, matplotlib.pyplot, loadgen.cli, loadgen.report, loadgen.rollout"
    result = containers.run_pod(manifests, "Job", job, network="none", detach=False,
                                command=["python", "-c", f"{imports}; print('ok')"])
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
    assert "Read-only file system" not in result.stderr, result.stderr


def test_the_gateway_image_accepts_the_charts_cluster_configuration():
    """The configuration the chart renders for this cluster, checked with `nginx -t`: the headless
    Services resolved per request (gateway.dnsBalancing "request"), since Debian 12's nginx (1.22) has
    no `resolve` on upstream servers (1.27.3 and newer have)."""
    manifests = render("--set", "gateway.resolver=127.0.0.1")  # an address: no DNS with --network none
    result = _nginx_test(manifests)
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr


def _nginx_test(manifests) -> subprocess.CompletedProcess[str]:
    containers = Containers(Path(os.environ.get("TMPDIR", "/tmp")) / f"nginx-test-{uuid.uuid4().hex[:6]}")
    try:
        return containers.run_pod(manifests, "Deployment", f"{RELEASE}-gateway", network="none", detach=False,
                                  command=["nginx", "-t", "-c", "/etc/scaleshop/nginx.conf"])
    finally:
        containers.remove_all()


def test_the_gateway_image_runs_the_rendered_configuration_and_routes_to_the_services(containers):
    manifests = default_manifests()
    services = {name: containers.run_pod(manifests, "Deployment", f"{RELEASE}-{name}") for name in ("user", "catalog")}
    upstreams = {name: [f"{containers.address(cname)}:8080"] for name, cname in services.items()}
    # Fixed replica addresses (the local stack's way) instead of re-resolved headless Services;
    # port 80, the Service's, so that the `helm test` pod's URL works unchanged.
    gateway_manifests = render("--set", "gateway.resolver=127.0.0.1", "--set-string", "gateway.listen=80",
                               "--set-json", f"gateway.upstreamServers={json.dumps(upstreams)}")
    check = _nginx_test(gateway_manifests)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr
    gateway = containers.run_pod(gateway_manifests, "Deployment", f"{RELEASE}-gateway", publish=[80])
    port = containers.host_port(gateway, 80)
    status, headers, body = wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz"), "the gateway answering",
                                     lambda: containers.logs(gateway))
    assert status == 200 and json.loads(body)["service"] == "gateway"
    status, headers, body = wait_for(lambda: http_get(f"http://127.0.0.1:{port}/openapi/user.json"),
                                     "the gateway routing to the user service", lambda: containers.logs(gateway))
    assert status == 200 and "paths" in json.loads(body)
    assert headers.get("X-Served-By") == services["user"]

    # The `helm test` pod's own command, in the curl image, against this gateway.
    host = f"{RELEASE}-gateway.{NAMESPACE}.svc.cluster.local"
    result = containers.run_pod(default_manifests(), "Pod", f"{RELEASE}-test-gateway", detach=False,
                                add_hosts={host: containers.address(gateway)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gateway -> catalog: ok" in result.stdout


def test_memcached_answers_version(containers):
    cname = containers.run_pod(default_manifests(), "Deployment", f"{RELEASE}-memcached", publish=[11211])
    port = containers.host_port(cname, 11211)

    def version() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"version\r\n")
            reply = conn.recv(100).decode()
            assert reply.startswith("VERSION "), reply
            return reply

    assert wait_for(version, "memcached answering", lambda: containers.logs(cname)).startswith("VERSION 1.6")


def test_kafka_starts_in_kraft_mode_and_the_charts_job_creates_the_topics(containers):
    manifests = default_manifests()
    broker_host = f"{RELEASE}-kafka-0.{RELEASE}-kafka-headless.{NAMESPACE}.svc.cluster.local"
    kafka = containers.run_pod(manifests, "StatefulSet", f"{RELEASE}-kafka", add_hosts={broker_host: "127.0.0.1"})

    def listening() -> None:
        result = docker("exec", kafka, "/opt/kafka/bin/kafka-topics.sh", "--bootstrap-server", "localhost:9092",
                        "--list", check=False, timeout=60)
        assert result.returncode == 0, result.stderr[-500:]

    wait_for(listening, "Kafka accepting admin requests", lambda: containers.logs(kafka), timeout=120)
    assert "formatting the KRaft log directory" in containers.logs(kafka)
    address = containers.address(kafka)
    bootstrap_host = f"{RELEASE}-kafka.{NAMESPACE}.svc.cluster.local"
    job = containers.run_pod(manifests, "Job", f"{RELEASE}-kafka-topics", detach=False,
                             add_hosts={bootstrap_host: address, broker_host: address})
    assert job.returncode == 0, job.stdout + job.stderr
    topics = yaml.safe_load((REPO / "charts/scaleshop/files/topics.yaml").read_text())
    names = set(topics) if isinstance(topics, dict) else {t["name"] for t in topics}
    for topic in names:
        assert f"Topic: {topic}\t" in job.stdout, job.stdout


def test_the_database_answers_pymongo_on_a_published_port(containers):
    cname = containers.run_pod(default_manifests(), "StatefulSet", f"{RELEASE}-mongodb", publish=[27017])
    port = containers.host_port(cname, 27017)
    client: MongoClient = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=2000)
    try:
        wait_for(lambda: client.admin.command("ping"), "the database answering ping", lambda: containers.logs(cname))
        products = client["images_smoke_test"]["products"]
        products.insert_one({"_id": "p1", "name": "lamp"})
        assert products.find_one({"_id": "p1"}) == {"_id": "p1", "name": "lamp"}
    finally:
        client.close()
