"""The users' CI recipe, .github/workflows/cluster.yml (kind + helm + `make test-cluster`).

No GitHub runner and no container registry are reachable here, so it cannot run here; what is
checked instead, as a user's CI would first find it broken:

- actionlint (built from its Go module by stack/install.sh) accepts it, with shellcheck on
  every `run:` script, and the same linter refuses a broken copy (the check is live);
- it does what README says, with the project's files: pinned kind, kubectl and helm, the
  cluster from k8s/kind-config.yaml, the image built and loaded into the node, the chart
  installed with k8s/values-kind.yaml, `helm test`, then `make test-cluster` on that context,
  the cluster deleted whatever happened; and the Kubernetes it runs is the minor version of
  the cluster verified here.

Needs actionlint and shellcheck (`make install`, part actionlint). Starts no server.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()
ACTIONLINT = CACHE / "bin" / "actionlint"
WORKFLOW = REPO / ".github" / "workflows" / "cluster.yml"
KIND_CONFIG = REPO / "k8s" / "kind-config.yaml"


def actionlint(*paths: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT} is missing: run `make install` (or `bash stack/install.sh actionlint`)")
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.fail("shellcheck is missing: run `make install` (or `bash stack/install.sh actionlint`)")
    return subprocess.run([str(ACTIONLINT), "-no-color", "-shellcheck", shellcheck, *map(str, paths)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps() -> list[dict]:
    (job,) = workflow()["jobs"].values()
    return job["steps"]


def scripts() -> str:
    return "\n".join(step.get("run", "") for step in steps())


def step_running(pattern: str) -> dict:
    found = [s for s in steps() if re.search(pattern, s.get("run", ""), re.M)]
    assert found, f"no step of {WORKFLOW.name} runs {pattern!r}"
    return found[0]


def test_actionlint_accepts_the_workflow():
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_refuses_a_broken_copy(tmp_path):
    """The same check finds a mistyped expression and an unquoted variable in a script."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    text = WORKFLOW.read_text()
    broken = text.replace("${{ github.ref }}", "${{ github.reff }}", 1)
    broken = broken.replace('--name "$KIND_CLUSTER" || true', "--name $KIND_CLUSTER || true", 1)
    assert broken.count("github.reff") == 1 and "--name $KIND_CLUSTER ||" in broken
    (folder / "cluster.yml").write_text(broken)
    result = actionlint(folder / "cluster.yml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'property "reff" is not defined' in result.stdout, result.stdout
    assert "SC2086" in result.stdout, result.stdout  # shellcheck ran on the script


def test_the_workflow_builds_a_kind_cluster_installs_the_chart_and_runs_the_cluster_suite():
    env = workflow()["env"]
    uses = [s["uses"].split("@")[0] for s in steps() if "uses" in s]
    assert uses[:3] == ["actions/checkout", "actions/setup-python", "actions/setup-go"]
    python = next(s for s in steps() if s.get("uses", "").startswith("actions/setup-python"))["with"]["python-version"]
    assert python == tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["python_version"]
    # Pinned tools: kind and kubectl by exact version (kubectl checked against its published
    # checksum), helm by stack/install.sh's pin.
    for tool in ("KIND_VERSION", "KUBECTL_VERSION"):
        assert re.fullmatch(r"v\d+\.\d+\.\d+", env[tool]), (tool, env[tool])
    assert 'go install "sigs.k8s.io/kind@${KIND_VERSION}"' in scripts()
    assert "sha256sum --check" in step_running(r"kubectl\.sha256")["run"]
    assert "bash stack/install.sh helm" in scripts()
    # The cluster of k8s/kind-config.yaml, and its kubectl context.
    cluster = yaml.safe_load(KIND_CONFIG.read_text())["name"]
    assert env["KIND_CLUSTER"] == cluster and env["KUBE_CONTEXT"] == f"kind-{cluster}"
    assert "--config k8s/kind-config.yaml" in step_running(r"kind create cluster")["run"]
    # The image built from the project and loaded into the node (values-kind.yaml never pulls it).
    kind_values = yaml.safe_load((REPO / "k8s" / "values-kind.yaml").read_text())["image"]
    assert env["IMAGE"] == f"{kind_values['repository']}:{kind_values['tag']}" and kind_values["pullPolicy"] == "Never"
    build = step_running(r"^docker build")["run"]
    assert 'docker build -t "$IMAGE" .' in build and 'kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"' in build
    # The Dockerfile needs the wheelhouse in its context: made first, by the project's script.
    assert build.index("bash k8s/images/build.sh wheelhouse") < build.index("docker build")
    assert "COPY .cache/wheelhouse/" in (REPO / "Dockerfile").read_text()
    # The chart as users install it, its own test, then the suite on that context, in that order.
    order = [steps().index(step_running(p)) for p in
             (r"kind create cluster", r"^docker build", r"helm upgrade --install", r"helm test", r"make test-cluster")]
    assert order == sorted(order), order
    install = step_running(r"helm upgrade --install")["run"]
    assert "-f k8s/values-kind.yaml" in install and "--wait" in install and "charts/scaleshop" in install
    assert "make test-cluster KUBE_CONTEXT=kind-scaleshop" in step_running(r"make test-cluster")["run"]
    delete = step_running(r"kind delete cluster")
    assert delete["if"] == "always()" and steps()[-1] == delete


def test_the_workflow_runs_the_kubernetes_minor_version_verified_here_and_existing_make_targets():
    go_mod = (REPO / "k8s" / "cluster" / "kubernetes" / "go.mod").read_text()
    (here,) = re.findall(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\d+\.\d+)\.\d+", go_mod, re.M)
    assert workflow()["env"]["KUBECTL_VERSION"].startswith(here + "."), here
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"\bmake ([a-z][a-z-]*)", scripts()))
    missing = {t for t in targets if not re.search(rf"^{t}:", makefile, re.M)}
    assert not missing, f"the workflow runs make targets that do not exist: {missing}"
