"""How to run each real server of the local stack: memcached, the database, Kafka, nginx, Prometheus
and its nginx exporter.

Each `*_command` returns the argv for one server, built from the stack's Layout and
the binaries that stack/install.sh put in the cache folder. nginx's configuration is the
chart's gateway configuration, rendered by helm with the local stack's values. Prometheus'
configuration and its file-based discovery targets are derived from the Layout and the
running replicas.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import yaml

from .layout import REPO, SERVICES, Layout
from .procs import StackError

KAFKA_HEAP = "-Xmx384m"


def _need(path: Path, what: str) -> str:
    if not path.exists():
        raise StackError(f"{what} is not installed ({path} missing): run `make install` (or `make up`)")
    return str(path)


# ---- memcached ---------------------------------------------------------------------------

def memcached_command(layout: Layout, memory_mb: int = 128) -> list[str]:
    binary = _need(layout.cache_dir / "debian/usr/bin/memcached", "memcached")
    return [binary, "-l", "127.0.0.1", "-p", str(layout.memcached_port), "-U", "0",
            "-m", str(memory_mb), "-c", "4096", "-u", "nobody"]


# ---- database ----------------------------------------------------------------------------
# mongo-java-server on its H2 backend, chosen by the database benchmark (README "The local
# database"); a `mongod` found on PATH is used instead. FerretDB, the previous default, is only
# started to migrate a data folder it wrote (stack/migrate.py) and by the benchmark.

DATABASE_HEAP = "-Xmx1g"
MONGO_DATA_FILE = "scaleshop.mv"


def database_kind() -> str:
    return "mongod" if shutil.which("mongod") else "mongo-java-server"


def database_dir(layout: Layout) -> Path:
    return layout.data_dir / "db"


def java_binary() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError("java is not on PATH: run `make install`")
    return java


def mongo_java_server_command(cache_dir: Path, port: int, data_file: Path | None,
                              upstream_backend: bool = False) -> list[str]:
    """mongo-java-server on 127.0.0.1:`port`, on an H2 file, or in memory when `data_file` is None.

    `upstream_backend`: upstream's H2 backend as it is, without what stack/mongo adds to it (BSON
    storage, indexes kept in memory, secondary indexes, snapshot replies): the benchmark's baseline.
    """
    classes = cache_dir / "mongo/classes"
    _need(classes / "ScaleshopMongo.class", "mongo-java-server")
    storage = ["--file", str(data_file)] if data_file is not None else ["--memory"]
    return [java_binary(), "-Xms128m", DATABASE_HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", f"{classes}:{cache_dir / 'mongo/libs'}/*",
            "ScaleshopMongo", "--host", "127.0.0.1", "--port", str(port), *storage,
            *(["--upstream-backend"] if upstream_backend else [])]


def ferretdb_command(cache_dir: Path, port: int, sqlite_dir: Path) -> list[str]:
    binary = _need(cache_dir / "bin/ferretdb", "FerretDB")
    return [binary, f"--listen-addr=127.0.0.1:{port}", f"--sqlite-dir={sqlite_dir}", "--log-level=warn"]


def ferretdb_postgresql_command(cache_dir: Path, port: int, postgresql_url: str) -> list[str]:
    """FerretDB on PostgreSQL (the database benchmark only; stack/dbservers.py starts PostgreSQL)."""
    binary = _need(cache_dir / "bin/ferretdb", "FerretDB")
    return [binary, f"--listen-addr=127.0.0.1:{port}", f"--postgresql-url={postgresql_url}", "--log-level=warn"]


def mongod_command(port: int, data_dir: Path) -> list[str]:
    return [shutil.which("mongod") or "mongod", "--dbpath", str(data_dir), "--bind_ip", "127.0.0.1",
            "--port", str(port), "--quiet"]


def database_command(layout: Layout) -> list[str]:
    data = database_dir(layout)
    data.mkdir(parents=True, exist_ok=True)
    if database_kind() == "mongod":
        return mongod_command(layout.db_port, data)
    return mongo_java_server_command(layout.cache_dir, layout.db_port, data / MONGO_DATA_FILE)


# ---- Kafka (KRaft, one combined broker and controller) ----------------------------------

def _kafka_classpath(layout: Layout) -> str:
    libs = layout.cache_dir / "kafka/libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"Kafka is not installed ({libs} has no jars): run `make install`")
    return f"{libs}/*"


def _kafka_properties(layout: Layout) -> Path:
    conf = layout.run_dir / "kafka" / "server.properties"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "\n".join(
            [
                "# Written by the local stack (stack/servers.py) at each start.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{layout.kafka_controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{layout.kafka_port},CONTROLLER://127.0.0.1:{layout.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{layout.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={layout.data_dir / 'kafka'}",
                "num.partitions=6",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )
    )
    return conf


def _java_base(layout: Layout) -> list[str]:
    java = java_binary()
    logs = layout.log_dir / "kafka"
    logs.mkdir(parents=True, exist_ok=True)
    return [
        java, "-Xms128m", KAFKA_HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{REPO / 'stack/kafka/log4j.properties'}",
        f"-Dkafka.logs.dir={logs}",
        "-cp", _kafka_classpath(layout),
    ]


def kafka_format_storage(layout: Layout) -> None:
    """Format the KRaft log folder once (a later run finds it formatted and keeps the data)."""
    conf = _kafka_properties(layout)
    id_file = layout.run_dir / "kafka" / "cluster-id"
    if not id_file.exists():
        id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    # "--cluster-id=<id>", one argument: an id that starts with "-" (1 in 64) is not an option
    cmd = _java_base(layout) + ["kafka.tools.StorageTool", "format", f"--cluster-id={id_file.read_text().strip()}",
                                "-c", str(conf), "--ignore-formatted"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def kafka_command(layout: Layout) -> list[str]:
    return _java_base(layout) + ["kafka.Kafka", str(_kafka_properties(layout))]


def kafka_create_topics(layout: Layout, timeout: float = 60) -> None:
    """Create the topics of DESIGN.md (idempotent) once the broker answers."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from services.shared.events import TOPIC_PARTITIONS

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{layout.kafka_port}",
                                     client_id="scaleshop-stack", request_timeout_ms=10000)
        except KafkaError as exc:
            last = exc
            time.sleep(0.5)
            continue
        try:
            existing = set(admin.list_topics())
            missing = [NewTopic(name, partitions, 1) for name, partitions in TOPIC_PARTITIONS.items()
                       if name not in existing]
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return
        except KafkaError as exc:
            last = exc
            time.sleep(0.5)
        finally:
            admin.close()
    raise StackError(f"Kafka did not accept topic creation within {timeout:.0f}s: {last}")


# ---- nginx gateway -----------------------------------------------------------------------
# The gateway's configuration is the chart's (charts/scaleshop/files/nginx.conf): helm renders
# the chart's gateway ConfigMap with the values below, the local stack's differences only.

CHART = REPO / "charts" / "scaleshop"
GATEWAY_CONFIGMAP = "templates/gateway-configmap.yaml"
SHOP_FILES = CHART / "files" / "shop"  # the shop's static files: the local gateway serves them from the repo
RELEASE = "scaleshop"


def helm_env(cache_dir: Path) -> dict[str, str]:
    """The environment helm runs in: its cache, config and data folders inside the cache folder."""
    home = cache_dir / "helm-home"
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


def gateway_values(layout: Layout, upstreams: dict[str, list[int]]) -> dict:
    """The chart values (gateway.*) of the local gateway: loopback ports, the stack's folders, the live replicas."""
    return {"gateway": {
        "listen": f"127.0.0.1:{layout.gateway_port}",
        "userServiceListen": f"127.0.0.1:{layout.user_service_port}",
        "statusListen": f"127.0.0.1:{layout.gateway_status_port}",
        "upstreamServers": {service: [f"127.0.0.1:{port}" for port in ports] for service, ports in upstreams.items()},
        "runDir": str(layout.run_dir / "nginx"),
        "shopRoot": str(SHOP_FILES),
        "errorLog": str(layout.log_dir / "gateway.error.log"),
        "accessLog": str(layout.log_dir / "gateway.access.log"),
        "accessLogBuffer": "buffer=64k flush=1s",
        "consoleUpstream": f"127.0.0.1:{layout.console_port}",
        # Run as root, nginx's workers would be `nobody`, shut out of a clone in a folder only root may enter.
        **({"workerUser": pwd.getpwuid(0).pw_name} if os.geteuid() == 0 else {}),
    }}


def nginx_config(layout: Layout, upstreams: dict[str, list[int]]) -> str:
    """The gateway: the chart's nginx.conf, rendered by helm with `gateway_values` (written next to it)."""
    helm = _need(layout.cache_dir / "bin/helm", "helm")
    values = layout.run_dir / "nginx" / "values.json"  # JSON is YAML: helm reads it with -f
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text(json.dumps(gateway_values(layout, upstreams), indent=2))
    command = [helm, "template", RELEASE, str(CHART), "--show-only", GATEWAY_CONFIGMAP, "-f", str(values)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=helm_env(layout.cache_dir))
    if result.returncode != 0:
        raise StackError(f"helm could not render the gateway's configuration ({CHART / GATEWAY_CONFIGMAP}):\n"
                         f"{result.stderr}")
    return yaml.safe_load(result.stdout)["data"]["nginx.conf"]


def nginx_command(layout: Layout) -> list[str]:
    binary = _need(layout.cache_dir / "debian/usr/sbin/nginx", "nginx")
    run = layout.run_dir / "nginx"
    return [binary, "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(layout.log_dir / "gateway.error.log"),
            "-g", "daemon off;"]


def write_nginx_config(layout: Layout, upstreams: dict[str, list[int]]) -> None:
    """Render the gateway's configuration; it replaces the running one only once `nginx -t` accepts it."""
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    conf = layout.run_dir / "nginx" / "nginx.conf"
    candidate = conf.with_name("nginx.conf.new")
    candidate.write_text(nginx_config(layout, upstreams))
    check = [arg if arg != str(conf) else str(candidate) for arg in nginx_command(layout)[:-2]]
    result = subprocess.run(check + ["-t", "-q"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise StackError(f"nginx rejected its configuration ({candidate}):\n{result.stderr}")
    candidate.replace(conf)


# ---- Prometheus and the nginx exporter -----------------------------------------------------
# Debian's packages, unpacked by stack/install.sh. Prometheus finds its targets in a file
# (file-based discovery) that the stack rewrites on `up` and on every `scale`; it reads the file
# again as soon as it changes. Its TSDB is in the data folder, kept across `down`/`up`.

PROMETHEUS_ROOT = "prometheus/usr/bin"  # under the cache folder
SCRAPE_INTERVAL_S = 2
SCRAPE_JOB = "scaleshop"
PROMETHEUS_RETENTION = "7d"
# The scrape target of the nginx exporter: the gateway's counters, labelled like a replica.
GATEWAY_TARGET_LABELS = {"service": "gateway", "replica": "gateway"}


def prometheus_dir(layout: Layout) -> Path:
    """Prometheus' configuration and its discovery targets (rewritten at every start)."""
    return layout.run_dir / "prometheus"


def prometheus_config_file(layout: Layout) -> Path:
    return prometheus_dir(layout) / "prometheus.yml"


def scrape_targets_file(layout: Layout) -> Path:
    return prometheus_dir(layout) / "targets.json"


def prometheus_data_dir(layout: Layout) -> Path:
    return layout.data_dir / "prometheus"


def prometheus_config(layout: Layout) -> dict:
    """Prometheus' configuration: every SCRAPE_INTERVAL_S, the targets of `scrape_targets_file`."""
    interval = f"{SCRAPE_INTERVAL_S}s"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": SCRAPE_JOB,
            "file_sd_configs": [{"files": [str(scrape_targets_file(layout))]}],
            # The services label their series with `service` too, the same value as the target's
            # label: Prometheus keeps the target's and would add theirs as `exported_service`.
            "metric_relabel_configs": [{"action": "labeldrop", "regex": "exported_service"}],
        }],
    }


def scrape_targets(layout: Layout, replicas: Iterable[tuple[str, int]]) -> list[dict]:
    """File-based discovery's target groups: each replica (service, index) on its port, labelled with
    its service and replica name, then the nginx exporter (the gateway)."""
    ordered = sorted(replicas, key=lambda replica: (SERVICES.index(replica[0]), replica[1]))
    groups = [{"targets": [f"127.0.0.1:{layout.replica_port(service, index)}"],
               "labels": {"service": service, "replica": f"{service}-{index}"}} for service, index in ordered]
    groups.append({"targets": [f"127.0.0.1:{layout.nginx_exporter_port}"], "labels": dict(GATEWAY_TARGET_LABELS)})
    return groups


def _write_atomically(path: Path, text: str) -> None:
    """Write a temporary file beside `path`, then rename it over `path`: a reader sees the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def write_scrape_targets(layout: Layout, replicas: Iterable[tuple[str, int]]) -> None:
    _write_atomically(scrape_targets_file(layout), json.dumps(scrape_targets(layout, replicas), indent=2) + "\n")


def write_prometheus_config(layout: Layout) -> None:
    config = yaml.safe_dump(prometheus_config(layout), sort_keys=False)
    _write_atomically(prometheus_config_file(layout), f"# Written by the local stack (stack/servers.py).\n{config}")


def prometheus_command(layout: Layout) -> list[str]:
    binary = _need(layout.cache_dir / PROMETHEUS_ROOT / "prometheus", "Prometheus")
    data = prometheus_data_dir(layout)
    data.mkdir(parents=True, exist_ok=True)
    return [binary, f"--config.file={prometheus_config_file(layout)}", f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
            f"--web.listen-address=127.0.0.1:{layout.prometheus_port}", "--log.level=warn"]


def nginx_exporter_command(layout: Layout) -> list[str]:
    """The exporter of the gateway's stub_status listener (any path answers it: gateway.statusListen)."""
    binary = _need(layout.cache_dir / PROMETHEUS_ROOT / "prometheus-nginx-exporter", "the nginx exporter")
    return [binary, f"-nginx.scrape-uri=http://127.0.0.1:{layout.gateway_status_port}/stub_status",
            f"-web.listen-address=127.0.0.1:{layout.nginx_exporter_port}", "-nginx.retries=10",
            "-nginx.retry-interval=1s"]


# ---- the lab console ----------------------------------------------------------------------

def console_command(layout: Layout) -> list[str]:
    """The console (services/console) on loopback; the gateway's /console/ reaches it."""
    return [layout.python, "-m", "services.console"]


def console_env(layout: Layout) -> dict[str, str]:
    """The console's environment: the stack it drives (run folder, port offset) and its port."""
    return {**os.environ, "SCALESHOP_RUN_DIR": str(layout.run_dir), "SCALESHOP_CACHE": str(layout.cache_dir),
            "SCALESHOP_PORT_OFFSET": str(layout.port_offset), "PORT": str(layout.console_port),
            "PYTHONUNBUFFERED": "1"}
