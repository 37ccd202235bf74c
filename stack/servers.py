"""How to run each real server of the local stack: memcached, the database, Kafka, nginx.

Each `*_command` returns the argv for one server, built from the stack's Layout and
the binaries that stack/install.sh put in the cache folder.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from .layout import REPO, Layout
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

def _json_error(status: int, code: str, message: str) -> str:
    body = '{"error": {"code": "%s", "message": "%s", "details": []}}' % (code, message)
    return f"default_type application/json; add_header X-Request-ID $req_id always; " \
           f"add_header X-Served-By gateway always; return {status} '{body}';"


def nginx_config(layout: Layout, upstreams: dict[str, list[int]], max_body_mb: int = 16) -> str:
    """The gateway: routes by path prefix (DESIGN.md) and balances across live replicas."""
    run = layout.run_dir / "nginx"
    blocks = []
    for service in ("user", "catalog"):
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in upstreams.get(service, [])
        ) or "        server 127.0.0.1:9 down;  # no replica running"
        # keepalive_timeout below gunicorn's 5 s: nginx never reuses a connection gunicorn closed.
        blocks.append(f"    upstream {service} {{\n        least_conn;\n{servers}\n        keepalive 64;\n"
                      f"        keepalive_timeout 4s;\n    }}")
    upstream_blocks = "\n".join(blocks)
    return f"""# Written by the local stack (stack/servers.py); rewritten and reloaded on every scale.
worker_processes 1;
pid {run}/nginx.pid;
error_log {layout.log_dir}/gateway.error.log warn;
events {{ worker_connections 4096; }}

http {{
    log_format json escape=json '{{"time":"$time_iso8601","request_id":"$req_id","method":"$request_method",'
        '"uri":"$request_uri","status":$status,"upstream":"$upstream_addr","duration_s":$request_time}}';
    access_log {layout.log_dir}/gateway.access.log json buffer=64k flush=1s;

    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    client_max_body_size {max_body_mb}m;
    client_body_buffer_size {max_body_mb}m;   # bodies stay in memory: no temp files
    proxy_max_temp_file_size 0;
    server_tokens off;

    map $http_x_request_id $req_id {{
        default $http_x_request_id;
        ""      $request_id;
    }}

{upstream_blocks}

    server {{
        listen 127.0.0.1:{layout.gateway_port} backlog=4096;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $req_id;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 1s;
        proxy_read_timeout 60s;
        # A replica that refuses or drops a connection: retry idempotent requests on another.
        proxy_next_upstream error timeout http_502;
        proxy_next_upstream_tries 3;

        location ~ ^/v1/(users|sessions)(/|$) {{ proxy_pass http://user; }}
        location ~ ^/v1/(products|categories|imports|jobs)(/|$) {{ proxy_pass http://catalog; }}
        location = /openapi/user.json {{ proxy_pass http://user/openapi.json; }}
        location = /openapi/catalog.json {{ proxy_pass http://catalog/openapi.json; }}
        location = /healthz {{ default_type application/json; add_header X-Served-By gateway always; return 200 '{{"status": "ok", "service": "gateway"}}'; }}
        location / {{ {_json_error(404, "not_found", "no route for this path")} }}

        error_page 400 /__gateway_errors/400;
        error_page 413 @too_large;
        error_page 414 /__gateway_errors/414;
        error_page 494 /__gateway_errors/431;
        # No replica answered (refused, dropped or timed out): a clear JSON 503, never a bare 502/504.
        error_page 502 503 504 =503 @unavailable;
        location = /__gateway_errors/400 {{ internal; {_json_error(400, "bad_request", "the gateway could not parse this request")} }}
        location = /__gateway_errors/414 {{ internal; {_json_error(414, "uri_too_long", "the request line is too long")} }}
        location = /__gateway_errors/431 {{ internal; {_json_error(431, "request_header_fields_too_large", "a request header is too large")} }}
        location @too_large {{ {_json_error(413, "payload_too_large", "the body is larger than the gateway accepts")} }}
        location @unavailable {{ add_header Retry-After 1 always; {_json_error(503, "service_unavailable", "no replica could answer; retry later")} }}
    }}
}}
"""


def nginx_command(layout: Layout) -> list[str]:
    binary = _need(layout.cache_dir / "debian/usr/sbin/nginx", "nginx")
    run = layout.run_dir / "nginx"
    return [binary, "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(layout.log_dir / "gateway.error.log"),
            "-g", "daemon off;"]


def write_nginx_config(layout: Layout, upstreams: dict[str, list[int]]) -> None:
    run = layout.run_dir / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    conf.write_text(nginx_config(layout, upstreams))
    result = subprocess.run(nginx_command(layout)[:-2] + ["-t", "-q"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise StackError(f"nginx rejected its configuration:\n{result.stderr}")
