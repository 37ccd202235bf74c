# Scaleshop: `make up` runs the local stack, `make test` runs the tests. See README.md.
SHELL := /bin/bash
PY := .cache/venv/bin/python
SERVICE ?=
N ?=

.PHONY: help install up down status scale logs test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## install every server and the Python env into .cache (idempotent)
	@bash stack/install.sh

up: install  ## start the local stack and print the gateway URL
	@$(PY) -m stack up

down:  ## stop the local stack (data is kept)
	@if [ -x $(PY) ]; then $(PY) -m stack down; fi

status:  ## every process: port, pid, state, health, CPU limit
	@$(PY) -m stack status

scale:  ## make scale SERVICE=user N=4
	@test -n "$(SERVICE)" -a -n "$(N)" || { echo "usage: make scale SERVICE=user|catalog|worker N=<replicas>"; exit 2; }
	@$(PY) -m stack scale $(SERVICE)=$(N)

logs:  ## make logs [SERVICE=user|user-1|kafka|gateway|...]
	@$(PY) -m stack logs $(SERVICE)

test: install  ## ruff, mypy, then the tests: unit first, then functional (starts its own stack on other ports)
	@$(PY) -m ruff check . && $(PY) -m mypy && $(PY) -m pytest

clean: down  ## stop the stack and delete its data
	rm -rf .stack

# ---- Load generator (README "Load generator and experiments") -----------------------------
ARGS ?=
LOCUST_VENV := .cache/locust-venv

.PHONY: seed load capacity bench

seed: install  ## loadgen seed against the local stack [ARGS='--users 100 --products 2000']
	@$(PY) -m loadgen seed $(ARGS)

load: install  ## loadgen run against the local stack [ARGS='--rate 50 --duration 30']
	@$(PY) -m loadgen run $(ARGS)

capacity: install  ## loadgen experiment capacity against the local stack, with a report [ARGS=...]
	@$(PY) -m loadgen experiment capacity $(ARGS)

$(LOCUST_VENV)/.stamp: loadgen/bench/requirements-locust.txt
	@echo "[bench] installing Locust into $(LOCUST_VENV) (only make bench uses it)"
	@python3 -m venv $(LOCUST_VENV) && $(LOCUST_VENV)/bin/pip install --quiet -r $< && touch $@

bench: install $(LOCUST_VENV)/.stamp  ## database servers compared, then ratios on a stack of its own (ports + BENCH_PORT_OFFSET, stack/layout.py); JSON in bench-results/
	@bash stack/install.sh postgresql  # only the database benchmark runs PostgreSQL (FerretDB's backend)
	@$(PY) -m loadgen.bench $(ARGS)

# ---- Faults under load (issue 7): a stack of its own, the full fault sequence, a JSON summary --
CHAOS_PORT_OFFSET ?= $(shell $(PY) -c 'from stack.layout import CHAOS_PORT_OFFSET; print(CHAOS_PORT_OFFSET)')
CHAOS_RUN_DIR ?= .cache/chaos-stack
CHAOS_OUT ?= reports/chaos/summary-$(shell date +%Y%m%d-%H%M%S).json

.PHONY: chaos

chaos: install  ## faults under load on a fresh stack of its own (ports + CHAOS_PORT_OFFSET, stack/layout.py); summary in reports/chaos/
	@export SCALESHOP_PORT_OFFSET=$(CHAOS_PORT_OFFSET) SCALESHOP_RUN_DIR=$(abspath $(CHAOS_RUN_DIR)); \
	$(PY) -m stack down >/dev/null && rm -rf "$$SCALESHOP_RUN_DIR"; \
	trap '$(PY) -m stack down' EXIT; \
	$(PY) -m stack up && $(PY) -m stack.chaos --out $(CHAOS_OUT)

# ---- Images built here, offline (README "Kubernetes, verified here"; k8s/images/) --------
IMAGES ?=

.PHONY: wheelhouse images test-images

wheelhouse: install  ## the services' wheels for a plain `docker build .` (pip wheel into .cache/wheelhouse)
	@bash k8s/images/build.sh wheelhouse

images: install  ## every image the chart runs, built here from Debian's packages [IMAGES='gateway kafka']
	@IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) bash k8s/cluster/docker.sh run bash k8s/images/build.sh $(IMAGES)

test-images: images  ## run each image once with docker: the smoke checks of tests/cluster/test_images.py
	@bash k8s/cluster/docker.sh run $(PY) -m pytest tests/cluster/test_images.py -q -p no:cacheprovider

# ---- Kubernetes: kind or minikube, with the Helm chart (README "Kubernetes (Helm)") -------
# Need docker (kind-up), kind or minikube, and kubectl on PATH; helm comes from .cache/bin.
HELM := .cache/bin/helm
RELEASE ?= scaleshop
NAMESPACE ?= scaleshop
IMAGE_REPO ?= scaleshop
IMAGE_TAG ?= dev
KIND_CLUSTER ?= scaleshop
KIND_NODE_IMAGE ?=
MINIKUBE_PROFILE ?= scaleshop
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER)
LOADGEN_ARGS ?=
# Left for Kubernetes to expand in the loadgen Job (see charts/scaleshop/values.yaml, loadgen):
# make kube-load LOADGEN_ARGS='experiment scale --deployment-prefix $(DEPLOYMENT_PREFIX) --out /results/$(LOADGEN_RUN)'
DEPLOYMENT_PREFIX = $$(DEPLOYMENT_PREFIX)
LOADGEN_RUN = $$(LOADGEN_RUN)
KUBECTL = kubectl --context $(KUBE_CONTEXT) -n $(NAMESPACE)
# kube-scale and kube-load against this machine's own cluster (KUBE_CONTEXT=scaleshop-local): its kubeconfig and kubectl
KUBE_ENV = $(if $(filter $(CLUSTER_CONTEXT),$(KUBE_CONTEXT)),export KUBECONFIG=$${KUBECONFIG:-$(abspath $(CLUSTER_KUBECONFIG))} PATH=$(abspath .cache/cluster/bin):$$PATH;)
HELM_INSTALL = $(HELM) upgrade --install $(RELEASE) charts/scaleshop -n $(NAMESPACE) --create-namespace \
	--set image.repository=$(IMAGE_REPO) --set image.tag=$(IMAGE_TAG) --wait --timeout 10m

.PHONY: helm kind-up minikube-up kube-scale kube-load kind-down

helm:  ## install helm into .cache/bin (go install, pinned)
	@bash stack/install.sh helm

kind-up: helm wheelhouse  ## kind cluster + image + helm install; gateway on 127.0.0.1:8090
	@for tool in docker kind kubectl; do command -v $$tool >/dev/null || { echo "kind-up needs $$tool on PATH"; exit 2; }; done
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
	  || kind create cluster --name $(KIND_CLUSTER) --config k8s/kind-config.yaml $(if $(KIND_NODE_IMAGE),--image $(KIND_NODE_IMAGE))
	docker build -t $(IMAGE_REPO):$(IMAGE_TAG) .
	kind load docker-image $(IMAGE_REPO):$(IMAGE_TAG) --name $(KIND_CLUSTER)
	$(HELM_INSTALL) --kube-context kind-$(KIND_CLUSTER) -f k8s/values-kind.yaml
	$(HELM) test $(RELEASE) --kube-context kind-$(KIND_CLUSTER) -n $(NAMESPACE)
	@echo "gateway: http://127.0.0.1:8090  (try: curl http://127.0.0.1:8090/healthz)"

minikube-up: helm wheelhouse  ## minikube (2 CPUs, 4 GiB) + image + helm install
	@for tool in minikube kubectl; do command -v $$tool >/dev/null || { echo "minikube-up needs $$tool on PATH"; exit 2; }; done
	@minikube -p $(MINIKUBE_PROFILE) status >/dev/null 2>&1 || minikube start -p $(MINIKUBE_PROFILE) --cpus 2 --memory 4g
	minikube -p $(MINIKUBE_PROFILE) image build -t $(IMAGE_REPO):$(IMAGE_TAG) .
	$(HELM_INSTALL) --kube-context $(MINIKUBE_PROFILE) -f k8s/values-minikube.yaml
	$(HELM) test $(RELEASE) --kube-context $(MINIKUBE_PROFILE) -n $(NAMESPACE)
	@echo "gateway: http://$$(minikube -p $(MINIKUBE_PROFILE) ip):30080  (or: minikube -p $(MINIKUBE_PROFILE) service $(RELEASE)-gateway -n $(NAMESPACE) --url)"

kube-scale:  ## make kube-scale SERVICE=user N=4 [KUBE_CONTEXT=...]
	@test -n "$(SERVICE)" -a -n "$(N)" || { echo "usage: make kube-scale SERVICE=user|catalog|worker|gateway N=<replicas> [KUBE_CONTEXT=$(KUBE_CONTEXT)]"; exit 2; }
	$(KUBE_ENV) $(KUBECTL) scale deployment -l app.kubernetes.io/instance=$(RELEASE),app.kubernetes.io/component=$(SERVICE) --replicas=$(N)
	$(KUBE_ENV) $(KUBECTL) rollout status deployment -l app.kubernetes.io/instance=$(RELEASE),app.kubernetes.io/component=$(SERVICE) --timeout=5m

kube-load: helm  ## loadgen as a Job in the cluster, its report copied to reports/kube/<job>/: make kube-load [LOADGEN_ARGS=...]
	@set -euo pipefail; $(KUBE_ENV) \
	extra=(); \
	if [ -n '$(LOADGEN_ARGS)' ]; then \
	  extra=(--set-json "loadgen.args=$$($(PY) -c 'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))' '$(LOADGEN_ARGS)')"); \
	fi; \
	$(HELM) upgrade $(RELEASE) charts/scaleshop --kube-context $(KUBE_CONTEXT) -n $(NAMESPACE) --reuse-values \
	  --set loadgen.enabled=true --set loadgen.persistence.enabled=true "$${extra[@]}"; \
	job=$$($(KUBECTL) get jobs -l app.kubernetes.io/instance=$(RELEASE),app.kubernetes.io/component=loadgen \
	  --sort-by=.metadata.creationTimestamp -o name | tail -n 1); \
	echo "$$job started; its output follows"; \
	until phase=$$($(KUBECTL) get pods -l job-name=$${job#*/} -o jsonpath='{.items[0].status.phase}' 2>/dev/null) \
	  && [ -n "$$phase" ] && [ "$$phase" != Pending ]; do sleep 2; done; \
	$(KUBECTL) logs -f "$$job"; \
	$(KUBECTL) wait --for=condition=complete "$$job" --timeout=60s; \
	$(PY) -m loadgen.kube_results --context $(KUBE_CONTEXT) --namespace $(NAMESPACE) --job "$${job#*/}" --out reports/kube

kind-down:  ## delete the kind cluster (and everything in it)
	kind delete cluster --name $(KIND_CLUSTER)

# ---- A real single-node Kubernetes here (README "Kubernetes, verified here"; k8s/cluster/) ---------
IMAGE ?=

CLUSTER_CONTEXT := scaleshop-local
CLUSTER_KUBECONFIG := .cache/cluster/config/admin.kubeconfig
CLUSTER_HELM = KUBECONFIG=$(CLUSTER_KUBECONFIG) $(HELM)

.PHONY: cluster-install cluster-start cluster-up cluster-down cluster-status cluster-load test-cluster-infra

cluster-install:  ## build Kubernetes 1.34, CoreDNS, pause and the add-ons into .cache/cluster (first time: 15-25 min)
	@bash k8s/cluster/install.sh

cluster-start: cluster-install  ## start the single-node cluster only (idempotent); prints KUBECONFIG and context
	@bash k8s/cluster/cluster.sh up

# As `make kind-up` does for kind: the cluster, the images, the chart installed as users install it
# (values for kind, then this cluster's images), and `helm test`.
cluster-up: cluster-start images helm  ## cluster here + images + helm install + helm test; gateway on 127.0.0.1:30080
	@bash k8s/cluster/docker.sh run bash k8s/cluster/cluster.sh load $$(bash k8s/images/build.sh list)
	$(CLUSTER_HELM) upgrade --install $(RELEASE) charts/scaleshop --kube-context $(CLUSTER_CONTEXT) -n $(NAMESPACE) \
	  --create-namespace -f k8s/values-kind.yaml -f k8s/values-local-cluster.yaml --wait --timeout 10m
	$(CLUSTER_HELM) test $(RELEASE) --kube-context $(CLUSTER_CONTEXT) -n $(NAMESPACE)
	@echo "gateway: http://127.0.0.1:30080  (try: curl http://127.0.0.1:30080/healthz)"
	@echo "kubectl: export KUBECONFIG=$(abspath $(CLUSTER_KUBECONFIG)) PATH=$(abspath .cache/cluster/bin):\$$PATH  (context $(CLUSTER_CONTEXT))"
	@echo "         kubectl -n $(NAMESPACE) get pods; kubectl -n $(NAMESPACE) scale deployment/$(RELEASE)-catalog --replicas=4"

cluster-down:  ## stop the cluster: no process, mount, interface or iptables rule is left
	@bash k8s/cluster/cluster.sh down

cluster-status:  ## the cluster's processes (pid, RSS) and node
	@bash k8s/cluster/cluster.sh status

cluster-load:  ## copy a Docker image into the cluster: make cluster-load IMAGE=scaleshop:dev
	@test -n "$(IMAGE)" || { echo "usage: make cluster-load IMAGE=name:tag"; exit 2; }
	@bash k8s/cluster/cluster.sh load $(IMAGE)

test-cluster-infra: cluster-install  ## the cluster's own lifecycle test (up, pod, DNS, down, nothing left)
	@$(PY) -m pytest tests/cluster/test_cluster_lifecycle.py -x -q -p no:cacheprovider

# The release's suite (tests/cluster/test_release.py) through the gateway, with kubectl and the Kubernetes
# API only: this cluster by default, or a user's (KUBE_CONTEXT=kind-scaleshop: gateway on 127.0.0.1:8090,
# k8s/kind-config.yaml). KUBECONFIG, NAMESPACE, RELEASE and GATEWAY_URL are passed on; not part of `make test`.
TEST_CLUSTER_CONTEXT = $(if $(filter file,$(origin KUBE_CONTEXT)),$(CLUSTER_CONTEXT),$(KUBE_CONTEXT))
GATEWAY_URL ?= $(if $(filter kind-%,$(TEST_CLUSTER_CONTEXT)),http://127.0.0.1:8090,http://127.0.0.1:30080)

.PHONY: test-cluster
test-cluster:  ## pytest against the installed release: make test-cluster [KUBE_CONTEXT=kind-scaleshop]
	@KUBE_CONTEXT=$(TEST_CLUSTER_CONTEXT) NAMESPACE=$(NAMESPACE) RELEASE=$(RELEASE) GATEWAY_URL=$(GATEWAY_URL) HELM=$(abspath $(HELM)) \
	  $(if $(filter $(CLUSTER_CONTEXT),$(TEST_CLUSTER_CONTEXT)),KUBECONFIG=$${KUBECONFIG:-$(abspath $(CLUSTER_KUBECONFIG))} \
	  PATH=$(abspath .cache/cluster/bin):$$PATH) $(PY) -m pytest tests/cluster/test_release.py tests/cluster/test_release_faults.py tests/cluster/test_network_policy.py tests/cluster/test_loadgen_job.py tests/cluster/test_prometheus.py tests/cluster/test_shop_browser.py tests/cluster/test_console.py -q -p no:cacheprovider

# ---- CI: the whole cluster suite on this machine's own cluster (what .ci/run runs after `make test`) ----
.PHONY: test-cluster-ci
test-cluster-ci:  ## test-cluster-infra, then cluster-up and test-cluster; cluster-down always, even on failure
	@status=0; \
	{ $(MAKE) --no-print-directory test-cluster-infra && $(MAKE) --no-print-directory cluster-up \
	  && $(MAKE) --no-print-directory test-cluster; } || status=$$?; \
	$(MAKE) --no-print-directory cluster-down || { [ $$status -ne 0 ] || status=1; }; \
	exit $$status
