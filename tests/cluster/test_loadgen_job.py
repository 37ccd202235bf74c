"""The load generator as a Job in the cluster (`make kube-load`), as a user runs it.

Two Jobs through the Kubernetes API, each started by `make kube-load` (a `helm upgrade` with
loadgen.enabled): `loadgen seed` fills the release, then `experiment scale` measures catalog at
1 and 2 replicas, scaling its Deployment through the API from inside the cluster. The report
is copied out by `make kube-load` itself (reports/kube/<job>/) and read here as a user would:
one measured point per replica count, each with a throughput found at the SLO, and catalog
back at its replica count afterwards. The release's normal settings come back at the end, pass
or fail (loadgen.enabled=false: the services roll back to the chart's rate limits).

The scale experiment changes catalog's replicas and puts them back before it ends.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import KUBE_CONTEXT, NAMESPACE, RELEASE, ROLLOUT_TIMEOUT, Cluster
from tests.cluster.test_release_faults import CHART, helm, report

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 900  # one `make kube-load`: the services' rollout, then the Job
SCALE_ARGS = ("experiment scale --service catalog --replicas 1,2 --platform k8s "
              "--deployment-prefix $(DEPLOYMENT_PREFIX) --step-duration 4s --max-steps 10 "
              "--refine 1 --out /results/$(LOADGEN_RUN)")


def kube_load(args: str) -> tuple[str, str]:
    """`make kube-load LOADGEN_ARGS=args` on this release; returns (the Job's name, make's output)."""
    command = ["make", "--no-print-directory", "kube-load", f"KUBE_CONTEXT={KUBE_CONTEXT}", f"NAMESPACE={NAMESPACE}",
               f"RELEASE={RELEASE}", f"LOADGEN_ARGS={args}"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT, env=os.environ)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}:\n{output[-6000:]}"
    job = next(line.split()[0] for line in output.splitlines() if line.endswith("started; its output follows"))
    report(f"make kube-load {args.split(' --')[0]}: {job} done in {time.monotonic() - started:.0f} s")
    return job.removeprefix("job.batch/"), output


@pytest.fixture
def loadgen_release() -> Iterator[None]:
    """The release back on its own settings after the Jobs (loadgen.enabled=false rolls the normal limits back)."""
    yield
    helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "loadgen.enabled=false", "--wait",
         f"--timeout={ROLLOUT_TIMEOUT}s")


@pytest.mark.timeout(2 * JOB_TIMEOUT + 3 * ROLLOUT_TIMEOUT)  # two Jobs, then the upgrade back (its own rollout)
def test_the_loadgen_job_seeds_then_measures_catalog_scaling_and_its_report_comes_out(
        cluster: Cluster, loadgen_release: None):
    catalog = cluster.deployment_name("catalog")
    replicas_before = cluster.replicas(catalog)
    cpu_limit = cluster.deployment(catalog).spec.template.spec.containers[0].resources.limits["cpu"]

    _, seeded = kube_load("seed --users 20 --products 300 --reviews 100")
    assert "nothing to copy" in seeded

    job, measured = kube_load(SCALE_ARGS)
    folder = REPO / "reports" / "kube" / job
    assert f"results of {job}: {folder.relative_to(REPO)}/" in measured, measured[-3000:]
    result = json.loads((folder / "result.json").read_text())
    assert result["kind"] == "scale" and result["platform"] == "k8s" and result["service"] == "catalog"
    points = {point["replicas"]: point for point in result["points"]}
    assert sorted(points) == [1, 2]
    assert all(point["capacity_rps"] > 0 for point in points.values()), "\n".join(
        f"{n} replica(s): {p['capacity']['verdict']} Steps: " + "; ".join(
            f"{s['rate']:g}/s {s['role']} -> {s['throughput_rps']:.1f}/s p99 {s['latency_ms'].get('p99')} ms "
            f"n={s['samples']} errors {100 * s['error_rate']:.1f}% {s['verdict']}" for s in p["capacity"]["steps"])
        for n, p in sorted(points.items()))
    assert [limit.split()[0] for limit in points[2]["cpu_limits"]] == [cpu_limit, cpu_limit]
    assert (folder / "report.html").is_file() and any(folder.glob("*.png")), sorted(p.name for p in folder.iterdir())
    assert cluster.replicas(catalog) == replicas_before
    report(f"experiment scale in the cluster ({job}): " + ", ".join(
        f"{n} replica(s) {p['capacity_rps']:.1f} req/s (efficiency {100 * (p['efficiency'] or 0):.0f}%)"
        for n, p in sorted(points.items())), f"verdict: {result['verdict']}")
