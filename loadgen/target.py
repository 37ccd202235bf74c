"""The target URL: only loopback or an in-cluster service name, and it must answer.

A load generator pointed at the wrong host is a denial-of-service tool, so loadgen
refuses any host that is not 127.0.0.0/8, `localhost`, ::1 or an in-cluster service name
(a name without dots, or one ending in `.svc` / `.cluster.local`).
"""
from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from dataclasses import dataclass

_LABEL = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")


class UsageError(Exception):
    """A bad option: print the message and exit 2."""


class TargetError(Exception):
    """The target cannot be used (unreachable, not seeded, route missing): exit 3."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int

    def __str__(self) -> str:
        return self.url


def _allowed_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback if ":" not in host else ipaddress.ip_address(host) == \
            ipaddress.ip_address("::1")
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    # DNS-1035 labels (what Kubernetes service names are): a letter first, so that no
    # all-digit or hex name can be read by the resolver as an IPv4 address.
    if not all(_LABEL.match(part) for part in name.split(".")):
        return False
    return "." not in name or name.endswith(".svc") or name.endswith(".cluster.local")


def parse_target(url: str) -> Target:
    """Validate the URL (scheme http, allowed host, no path beyond /) and return the Target."""
    if not url or "://" not in url:
        raise UsageError(f"--target must be a URL like http://127.0.0.1:8080, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise UsageError(f"--target: only http:// is supported (got {parts.scheme}://)")
    if parts.username or parts.password:
        raise UsageError("--target must not contain credentials")
    host = parts.hostname or ""
    try:
        port = parts.port or 80
    except ValueError:
        raise UsageError(f"--target has an invalid port: {url!r}") from None
    if not _allowed_host(host):
        raise UsageError(
            f"--target host {host!r} is not allowed: loadgen only drives loopback (127.0.0.0/8, localhost, ::1) "
            "or an in-cluster service name (no dots, or ending in .svc or .cluster.local)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError("--target must be the gateway's base URL, without a path (e.g. http://127.0.0.1:8080)")
    shown_host = f"[{host}]" if ":" in host else host
    return Target(f"http://{shown_host}:{port}", host, port)


def check_reachable(target: Target, timeout: float = 3.0) -> None:
    """Raise TargetError with a helpful message unless the target answers HTTP on /healthz."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
    except ConnectionRefusedError:
        raise TargetError(f"cannot reach {target}: connection refused. Is the stack up? (make up)") from None
    except TimeoutError:
        raise TargetError(f"cannot reach {target}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise TargetError(f"cannot reach {target}: {exc.strerror or exc}") from None
    if not head.startswith(b"HTTP/1."):
        raise TargetError(f"{target} does not speak HTTP/1.x")
