"""`python -m loadgen.rollout`: wait until every Deployment of a release has rolled out.

The chart's loadgen Job runs this first, as an init container. A release with a loadgen Job
runs its services with the load-test rate limits (values.yaml `loadgen.rateLimits`), so
enabling the Job rolls user, catalog and worker; the load starts only once every replica
runs the new settings. Without the wait a run would measure a rolling update, and the 429s
of replicas still on the edge's normal limits.

Usage: python -m loadgen.rollout --namespace NS --selector LABELS [--timeout SECONDS]
(in a pod: the ServiceAccount's token; elsewhere: the user's kubeconfig).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

POLL_SECONDS = 2.0


def rolled_out(deployment: Any) -> bool:
    """True when the controller has seen the Deployment's last change and every one of its
    replicas runs that revision and is available (no old replica is left)."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    return ((deployment.metadata.generation or 0) <= (status.observed_generation or 0)
            and (status.updated_replicas or 0) == spec_replicas
            and (status.available_replicas or 0) == spec_replicas
            and (status.replicas or 0) == spec_replicas)


def pending(deployments: Sequence[Any]) -> list[str]:
    """Names of the Deployments still rolling out, sorted."""
    return sorted(d.metadata.name for d in deployments if not rolled_out(d))


def wait(list_deployments: Callable[[], Sequence[Any]], timeout: float, log: Callable[[str], None],
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll until every listed Deployment has rolled out; TimeoutError after `timeout` seconds."""
    deadline = clock() + timeout
    last: list[str] | None = None
    while True:
        deployments = list_deployments()
        if not deployments:
            raise LookupError("no Deployment matches the selector")
        waiting = pending(deployments)
        if not waiting:
            log(f"{len(deployments)} Deployments rolled out")
            return
        if waiting != last:
            log("waiting for the rollout of " + ", ".join(waiting))
            last = waiting
        if clock() >= deadline:
            raise TimeoutError(f"not rolled out after {timeout:g} s: {', '.join(waiting)}")
        sleep(POLL_SECONDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadgen.rollout", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", required=True, help="label selector of the release's Deployments")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except config.ConfigException as exc:
            print(f"[rollout] no Kubernetes configuration (in a pod or a kubeconfig): {exc}", file=sys.stderr)
            return 2
    apps = client.AppsV1Api()

    def list_deployments() -> Sequence[Any]:
        return apps.list_namespaced_deployment(args.namespace, label_selector=args.selector).items

    def log(message: str) -> None:
        print(f"[rollout] {message}", flush=True)

    try:
        wait(list_deployments, args.timeout, log)
    except (TimeoutError, LookupError) as exc:
        print(f"[rollout] {exc}", file=sys.stderr, flush=True)
        return 1
    except ApiException as exc:
        print(f"[rollout] cannot list the Deployments of {args.namespace} ({args.selector}): {exc.status} {exc.reason}",
              file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
