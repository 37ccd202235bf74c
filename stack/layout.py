"""Where the local stack keeps its files and which loopback ports it uses."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.shared.config import tunable_settings

REPO = Path(__file__).resolve().parent.parent
# The Python services, and those the gateway routes HTTP to: the chart's `components` map.
_COMPONENTS = yaml.safe_load((REPO / "charts" / "scaleshop" / "values.yaml").read_text())["components"]
SERVICES = tuple(name for name, part in _COMPONENTS.items() if part.get("service"))
HTTP_SERVICES = tuple(name for name, part in _COMPONENTS.items() if part.get("http"))
DEFAULT_REPLICAS = {"user": 2, "catalog": 2, "worker": 2}
MAX_REPLICAS = 50

# The ports of a stack at offset 0: its servers', and each service's replica i on base + i.
# gateway-status: the gateway's stub_status listener, read only by the nginx exporter.
SERVER_PORTS = {"gateway": 8080, "user-service": 8081, "gateway-status": 8082, "console": 8083, "prometheus": 9090,
                "nginx-exporter": 9091, "kafka": 9092, "kafka-controller": 9093, "memcached": 11211,
                "database": 27017}
REPLICA_BASE_PORTS = {"user": 8100, "catalog": 8200, "worker": 8300}
# A MongoDB-wire server started beside a stack's own, + the stack's offset (the storage tests' FerretDB).
SIDE_DB_PORT = 27018

# The port offsets of the project's stacks, each written only here. Every port of each stack lies
# below the kernel's ephemeral port range (Linux: 32768-60999), where any outgoing connection may
# hold it as its source port just when a server binds it ("address in use"), and off the ports of
# a local Kubernetes cluster; no two stacks share a port, so all can run at once
# (tests/unit/stack/test_port_offsets.py checks it all).
DEFAULT_PORT_OFFSET = 0  # `make up`; SCALESHOP_PORT_OFFSET moves it
TEST_PORT_OFFSET = -4000  # the functional test session; SCALESHOP_TEST_PORT_OFFSET moves it
TEST_SECOND_STACK_SHIFT = 2500  # + the session's offset: a second stack's, which the tests never start
CHAOS_PORT_OFFSET = -2000  # `make chaos`; CHAOS_PORT_OFFSET moves it
BENCH_PORT_OFFSET = -6500  # `make bench`; BENCH_PORT_OFFSET (or --port-offset) moves it
BENCH_READS_STACK_SHIFT = 1000  # + the bench's offset: the stack of its reads part

# Settings the stack passes through from the caller's environment to every replica: every
# tunable setting of Settings but the database name, which the stack's own tools read.
PASSTHROUGH_SETTINGS = tuple(name for name in tunable_settings() if name != "MONGODB_DATABASE")
# Locally every request comes from one address (this machine): rate limits would only
# throttle the load generator, so the stack turns them all off unless the caller sets them.
STACK_DEFAULT_SETTINGS = {name: "0" for name in PASSTHROUGH_SETTINGS if name.startswith("RATE_LIMIT_")}


@dataclass(frozen=True)
class Layout:
    """Folders and ports of one stack. `port_offset` shifts every port (tests use their own)."""

    run_dir: Path
    cache_dir: Path
    port_offset: int = 0

    @classmethod
    def from_env(cls) -> Layout:
        return cls(
            run_dir=Path(os.environ.get("SCALESHOP_RUN_DIR", REPO / ".stack")).resolve(),
            cache_dir=Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve(),
            port_offset=int(os.environ.get("SCALESHOP_PORT_OFFSET", DEFAULT_PORT_OFFSET)),
        )

    def check(self) -> None:
        """Raise ValueError unless every port of this layout is a valid TCP port."""
        lowest, highest = min(self.ports().values()), max(self.ports().values())
        if lowest < 1024 or highest > 65535:
            raise ValueError(
                f"SCALESHOP_PORT_OFFSET={self.port_offset} puts ports outside 1024-65535 "
                f"(they span {lowest}-{highest}); use an offset between "
                f"{1024 - lowest + self.port_offset} and {65535 - highest + self.port_offset}"
            )

    # ports
    def ports(self, replicas: int = MAX_REPLICAS) -> dict[str, int]:
        """Every port this stack may listen on, by name, with up to `replicas` replicas of each service."""
        servers = {name: port + self.port_offset for name, port in SERVER_PORTS.items()}
        return servers | {f"{service}-{index}": self.replica_port(service, index)
                          for service in REPLICA_BASE_PORTS for index in range(1, replicas + 1)}

    @property
    def gateway_port(self) -> int:
        return SERVER_PORTS["gateway"] + self.port_offset

    @property
    def user_service_port(self) -> int:
        """The user service's internal address: the gateway's listener that proxies only to the user replicas."""
        return SERVER_PORTS["user-service"] + self.port_offset

    @property
    def gateway_status_port(self) -> int:
        """The gateway's stub_status listener (nginx's connection counters), for the nginx exporter only."""
        return SERVER_PORTS["gateway-status"] + self.port_offset

    @property
    def prometheus_port(self) -> int:
        return SERVER_PORTS["prometheus"] + self.port_offset

    @property
    def console_port(self) -> int:
        """The lab console (services/console), reached through the gateway's /console/."""
        return SERVER_PORTS["console"] + self.port_offset

    @property
    def nginx_exporter_port(self) -> int:
        return SERVER_PORTS["nginx-exporter"] + self.port_offset

    @property
    def db_port(self) -> int:
        return SERVER_PORTS["database"] + self.port_offset

    @property
    def memcached_port(self) -> int:
        return SERVER_PORTS["memcached"] + self.port_offset

    @property
    def kafka_port(self) -> int:
        return SERVER_PORTS["kafka"] + self.port_offset

    @property
    def kafka_controller_port(self) -> int:
        return SERVER_PORTS["kafka-controller"] + self.port_offset

    def replica_port(self, service: str, index: int) -> int:
        return REPLICA_BASE_PORTS[service] + index + self.port_offset

    # folders and files
    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def python(self) -> str:
        venv_python = self.cache_dir / "venv" / "bin" / "python"
        return str(venv_python) if venv_python.exists() else sys.executable

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def console_url(self) -> str:
        return f"{self.gateway_url}/console/"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def user_service_url(self) -> str:
        """USER_SERVICE_URL of the replicas: the user service, not through the public gateway."""
        return f"http://127.0.0.1:{self.user_service_port}"
