"""CPU limits for replicas, like a pod's resources.limits.cpu, through Linux cgroups.

Uses cgroup v2 (`cpu.max`) where the unified hierarchy has the cpu controller, else
cgroup v1 (`cpu.cfs_quota_us`). Where neither is writable the limit is reported as
not applied, with the reason, and the replica runs unlimited.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000
ROOT = Path(os.environ.get("SCALESHOP_CGROUP_ROOT", "/sys/fs/cgroup"))


@dataclass
class CpuLimit:
    cpus: float | None
    path: str | None = None
    applied: bool = False
    reason: str = ""

    def describe(self) -> str:
        if self.cpus is None:
            return "none"
        if self.applied:
            return f"{self.cpus:g} CPU (applied, {self.reason})"
        return f"{self.cpus:g} CPU (NOT applied: {self.reason})"

    def to_json(self) -> dict:
        return {"cpus": self.cpus, "path": self.path, "applied": self.applied, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict | None) -> CpuLimit:
        return cls(**data) if data else cls(None)


def _v2_base() -> Path | None:
    for candidate in (ROOT, ROOT / "unified"):
        controllers = candidate / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return candidate
    return None


def _v1_base() -> Path | None:
    for name in ("cpu", "cpu,cpuacct"):
        candidate = ROOT / name
        if (candidate / "cpu.cfs_quota_us").exists():
            return candidate
    return None


def create(group: str, cpus: float | None) -> CpuLimit:
    """Make the cgroup `scaleshop/<group>` limited to `cpus` CPUs; report whether it worked."""
    if cpus is None:
        return CpuLimit(None)
    quota = max(1000, int(cpus * PERIOD_US))
    try:
        base = _v2_base()
        if base is not None:
            parent = base / "scaleshop"
            parent.mkdir(exist_ok=True)
            (base / "cgroup.subtree_control").write_text("+cpu")
            (parent / "cgroup.subtree_control").write_text("+cpu")
            path = parent / group.replace("/", "_")
            path.mkdir(exist_ok=True)
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            return CpuLimit(cpus, str(path), True, "cgroup v2")
        base = _v1_base()
        if base is not None:
            path = base / "scaleshop" / group.replace("/", "_")
            path.mkdir(parents=True, exist_ok=True)
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
            return CpuLimit(cpus, str(path), True, "cgroup v1")
    except OSError as exc:
        return CpuLimit(cpus, None, False, f"cgroup not writable ({exc.strerror or exc})")
    return CpuLimit(cpus, None, False, "no cgroup cpu controller found")


def wrap_command(limit: CpuLimit, argv: list[str]) -> list[str]:
    """The command, entering the cgroup before exec so every child process is limited too."""
    if not limit.applied or not limit.path:
        return argv
    return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', limit.path, *argv]


def remove(limit: CpuLimit) -> None:
    if limit.applied and limit.path:
        try:
            os.rmdir(limit.path)
        except OSError:
            pass  # still has processes, or already gone
