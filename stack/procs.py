"""Starting and stopping the stack's processes by pid, and waiting for them to serve."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class StackError(Exception):
    """Something the user must act on; the CLI prints the message without a traceback."""


@dataclass
class Proc:
    """A process the stack started: pid plus its start time, so a recycled pid is never signalled."""

    pid: int
    started: int

    def to_json(self) -> dict:
        return {"pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, data: dict | None) -> Proc | None:
        return cls(data["pid"], data["started"]) if data else None

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started

    def send(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> bool:
        """Send `sig`, wait up to `timeout` s, then SIGKILL. True if it ended gracefully."""
        if not self.alive():
            return True
        self.send(sig)
        if self.wait_exit(timeout):
            return True
        self.send(signal.SIGKILL)
        self.wait_exit(5)
        return False

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(self.pid)
            if not self.alive():
                return True
            time.sleep(0.05)
        return not self.alive()


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def spawn(argv: list[str], log_file: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          user: str | None = None) -> Proc:
    """Start a detached process (own session) with stdout and stderr appended to `log_file`.

    `user`: run it as that OS user and its group (needs root), e.g. a server that refuses root.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True,
            user=user, group=user, extra_groups=[] if user else None,  # user None: as ourselves
        )
    for _ in range(100):
        started = _start_time(child.pid)
        if started is not None:
            return Proc(child.pid, started)
        if child.poll() is not None:
            break
        time.sleep(0.01)
    raise StackError(f"{argv[0]} exited at once; see {log_file}")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on now (the kernel's choice), for a server started next."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on the port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_free(ports: dict[str, int]) -> None:
    busy = [f"{port} ({name})" for name, port in ports.items() if not port_free(port)]
    if busy:
        raise StackError(
            "port(s) already in use by another process: " + ", ".join(busy)
            + ". Stop what holds them (or `make down` a stack left running), "
            "or move this stack with SCALESHOP_PORT_OFFSET=<n>."
        )


def wait_port(port: int, timeout: float, proc: Proc | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise StackError(f"{what or 'process'} exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"{what or 'process'} did not listen on port {port} within {timeout:.0f}s")


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_http(url: str, timeout: float, proc: Proc | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise StackError(f"{what or url} exited while starting")
        if http_status(url) == 200:
            return
        time.sleep(0.1)
    raise StackError(f"{what or url} did not answer 200 within {timeout:.0f}s")
