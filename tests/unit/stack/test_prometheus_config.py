"""The local stack's Prometheus (stack/servers.py, stack/control.py): its configuration and the
file-based discovery targets derived from the Layout and the live replicas, rewritten on `scale`."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from stack import cgroups, servers
from stack.control import Replica, Stack
from stack.layout import REPO, SERVER_PORTS, SERVICES, Layout
from stack.procs import Proc, _start_time

OFFSET = -1234
PROMTOOL = REPO / ".cache" / servers.PROMETHEUS_ROOT / "promtool"


def layout(tmp_path: Path) -> Layout:
    return Layout(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", port_offset=OFFSET)


def test_prometheus_and_the_exporter_listen_on_loopback_ports_shifted_with_the_others(tmp_path):
    lay = layout(tmp_path)
    assert lay.prometheus_port == SERVER_PORTS["prometheus"] + OFFSET
    assert lay.prometheus_url == f"http://127.0.0.1:{SERVER_PORTS['prometheus'] + OFFSET}"
    assert lay.nginx_exporter_port == SERVER_PORTS["nginx-exporter"] + OFFSET
    assert lay.gateway_status_port == SERVER_PORTS["gateway-status"] + OFFSET
    assert {lay.prometheus_port, lay.nginx_exporter_port, lay.gateway_status_port} <= set(lay.ports().values())


def test_the_config_scrapes_every_two_seconds_the_targets_of_the_discovery_file(tmp_path):
    lay = layout(tmp_path)
    config = servers.prometheus_config(lay)
    assert config["global"]["scrape_interval"] == "2s" == f"{servers.SCRAPE_INTERVAL_S}s"
    assert config["global"]["scrape_timeout"] == config["global"]["scrape_interval"]  # Prometheus: timeout <= interval
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [str(servers.scrape_targets_file(lay))]}]
    assert job["metric_relabel_configs"] == [{"action": "labeldrop", "regex": "exported_service"}]
    folder = lay.run_dir / "prometheus"
    assert servers.scrape_targets_file(lay).parent == servers.prometheus_config_file(lay).parent == folder
    assert servers.prometheus_data_dir(lay) == lay.data_dir / "prometheus"  # kept across down/up with the other data


def test_the_command_binds_loopback_and_keeps_its_data_in_the_data_folder(tmp_path):
    lay = layout(tmp_path)
    binaries = lay.cache_dir / servers.PROMETHEUS_ROOT
    binaries.mkdir(parents=True)
    for name in ("prometheus", "prometheus-nginx-exporter"):
        (binaries / name).touch()
    command = servers.prometheus_command(lay)
    assert f"--web.listen-address=127.0.0.1:{lay.prometheus_port}" in command
    assert f"--storage.tsdb.path={lay.data_dir / 'prometheus'}" in command
    assert f"--config.file={servers.prometheus_config_file(lay)}" in command
    exporter = servers.nginx_exporter_command(lay)
    assert f"-web.listen-address=127.0.0.1:{lay.nginx_exporter_port}" in exporter
    assert f"-nginx.scrape-uri=http://127.0.0.1:{lay.gateway_status_port}/stub_status" in exporter


def test_each_replica_is_one_target_labelled_with_its_service_and_replica(tmp_path):
    lay = layout(tmp_path)
    replicas = [("worker", 2), ("catalog", 3), ("user", 1), ("catalog", 1), ("worker", 1)]
    groups = servers.scrape_targets(lay, replicas)
    by_replica = {group["labels"]["replica"]: group for group in groups}
    assert len(by_replica) == len(groups) == len(replicas) + 1
    for service, index in replicas:
        group = by_replica[f"{service}-{index}"]
        assert group == {"targets": [f"127.0.0.1:{lay.replica_port(service, index)}"],
                         "labels": {"service": service, "replica": f"{service}-{index}"}}
    assert by_replica["gateway"] == {"targets": [f"127.0.0.1:{lay.nginx_exporter_port}"],
                                     "labels": {"service": "gateway", "replica": "gateway"}}
    # In the order `status` lists them: by service, then index.
    assert [g["labels"]["replica"] for g in groups] == ["user-1", "catalog-1", "catalog-3", "worker-1",
                                                        "worker-2", "gateway"]
    assert set(SERVICES) == {"user", "catalog", "worker"}


def test_the_targets_file_is_replaced_whole(tmp_path):
    lay = layout(tmp_path)
    servers.write_scrape_targets(lay, [("user", 1), ("user", 2)])
    path = servers.scrape_targets_file(lay)
    first = path.stat().st_ino
    servers.write_scrape_targets(lay, [("user", 1)])
    assert path.stat().st_ino != first  # a new file renamed over the old one, not rewritten in place
    assert [g["labels"]["replica"] for g in json.loads(path.read_text())] == ["user-1", "gateway"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["targets.json"]  # no temporary file left


def _live_replica(lay: Layout, service: str, index: int) -> Replica:
    """A replica whose process is this test's own (alive, never signalled by these tests)."""
    pid = os.getpid()
    started = _start_time(pid)
    assert started is not None
    return Replica(service, index, lay.replica_port(service, index), Proc(pid, started), cgroups.CpuLimit(None))


def test_the_stack_lists_its_live_replicas_and_leaves_out_those_leaving(tmp_path):
    lay = layout(tmp_path)
    stack = Stack(lay, log=lambda _msg: None)
    for service, index in (("user", 1), ("catalog", 1), ("catalog", 2), ("worker", 1)):
        replica = _live_replica(lay, service, index)
        stack.replicas[replica.name] = replica
    dead = _live_replica(lay, "catalog", 3)
    stack.replicas[dead.name] = Replica(dead.service, dead.index, dead.port, Proc(dead.proc.pid, dead.proc.started + 1),
                                        dead.cpu)  # another start time: not this process, so not alive
    stack._write_scrape_targets(exclude={"catalog-2"})
    listed = [g["labels"]["replica"] for g in json.loads(servers.scrape_targets_file(lay).read_text())]
    assert listed == ["user-1", "catalog-1", "worker-1", "gateway"]


@pytest.mark.skipif(not PROMTOOL.exists(), reason="Prometheus is not installed (stack/install.sh prometheus)")
def test_promtool_accepts_the_config_as_written(tmp_path):
    lay = layout(tmp_path)
    servers.write_prometheus_config(lay)
    assert yaml.safe_load(servers.prometheus_config_file(lay).read_text()) == servers.prometheus_config(lay)
    result = subprocess.run([str(PROMTOOL), "check", "config", str(servers.prometheus_config_file(lay))],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
