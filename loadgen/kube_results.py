"""Copies a loadgen Job's results out of the cluster (the end of `make kube-load`).

The Job writes its report to `/results/<job name>` (`--out /results/$(LOADGEN_RUN)`) on the
release's results volume (`loadgen.persistence.enabled`, which `make kube-load` turns on). A
finished Job's pod cannot be exec'd into, so this starts a short-lived reader pod with the
Job's own image, security context and volume (read-only, no network use), `kubectl cp`s the
folder out and deletes the pod again, even on failure. Only `kubectl` is used, with the
caller's context.

    python -m loadgen.kube_results --context C --namespace N --job scaleshop-loadgen-r7 --out reports/kube
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

READER_SECONDS = 600


class ResultsError(Exception):
    """The results cannot be copied (no volume, no folder, the reader pod did not start)."""


def kubectl(base: list[str], *args: str, input_text: str | None = None, timeout: float = 180) -> str:
    done = subprocess.run([*base, *args], input=input_text, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ResultsError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def reader_pod(job: dict[str, Any]) -> dict[str, Any]:
    """A pod that mounts the Job's results volume read-only and sleeps, with the Job's image and security."""
    name = job["metadata"]["name"]
    spec = job["spec"]["template"]["spec"]
    volume = next((v for v in spec.get("volumes", []) if v["name"] == "results"), None)
    if volume is None or "persistentVolumeClaim" not in volume:
        raise ResultsError(f"Job {name} keeps its results in the pod (emptyDir), gone with it: run it with "
                           "--set loadgen.persistence.enabled=true (make kube-load does)")
    container = spec["containers"][0]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-results", "labels": {"app.kubernetes.io/component": "loadgen-results"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": spec.get("securityContext", {}),
            "containers": [{
                "name": "reader", "image": container["image"],
                "imagePullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
                "command": ["sleep", str(READER_SECONDS)],
                "securityContext": container.get("securityContext", {}),
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "100m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "results", "mountPath": "/results", "readOnly": True}],
            }],
            "volumes": [{"name": "results", "persistentVolumeClaim": {
                "claimName": volume["persistentVolumeClaim"]["claimName"], "readOnly": True}}],
        },
    }


def writes_results(job: dict[str, Any]) -> bool:
    """Whether the Job's arguments send its report to its own folder (`--out /results/$(LOADGEN_RUN)`)."""
    return any("$(LOADGEN_RUN)" in arg for arg in job["spec"]["template"]["spec"]["containers"][0].get("args", []))


def copy_from(base: list[str], job: dict[str, Any], out: Path) -> Path:
    """Copy `/results/<job name>` of the Job's volume to `out/<job name>`; returns that folder."""
    job_name = job["metadata"]["name"]
    pod = reader_pod(job)
    pod_name = pod["metadata"]["name"]
    kubectl(base, "delete", "pod", pod_name, "--ignore-not-found", "--wait=true")
    kubectl(base, "apply", "-f", "-", input_text=json.dumps(pod))
    try:
        kubectl(base, "wait", "--for=condition=Ready", f"pod/{pod_name}", "--timeout=120s", timeout=150)
        present = kubectl(base, "exec", pod_name, "--", "ls", "/results").split()
        if job_name not in present:
            holds = ", ".join(present) or "nothing"
            raise ResultsError(f"no folder /results/{job_name} on the volume (it holds: {holds}); did the run fail "
                               "before writing its report?")
        destination = out / job_name
        destination.parent.mkdir(parents=True, exist_ok=True)
        kubectl(base, "cp", f"{pod_name}:/results/{job_name}", str(destination), timeout=300)
        return destination
    finally:
        kubectl(base, "delete", "pod", pod_name, "--ignore-not-found", "--wait=false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.kube_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", default=None, help="kubectl context (default: the current one)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--job", required=True, help="the loadgen Job's name (its results folder has the same)")
    parser.add_argument("--out", type=Path, default=Path("reports/kube"), help="local folder (default reports/kube)")
    args = parser.parse_args(argv)
    base = ["kubectl", *(["--context", args.context] if args.context else []), "-n", args.namespace]
    try:
        job = json.loads(kubectl(base, "get", "job", args.job, "-o", "json"))
        if not writes_results(job):
            print(f"{args.job} writes no report of its own (its args have no --out /results/$(LOADGEN_RUN)): "
                  "nothing to copy")
            return 0
        destination = copy_from(base, job, args.out)
    except (ResultsError, subprocess.TimeoutExpired) as exc:
        print(f"kube_results: {exc}", file=sys.stderr)
        return 1
    files = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file())
    print(f"results of {args.job}: {destination}/ ({', '.join(files)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
