# Entry points of the saga project. A fresh machine needs two: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PACKAGES := -e services/common -e services/order -e services/customer -e services/tools -e services/devtools
PYTEST := $(BIN)/pytest

.PHONY: help install system-packages run test test-unit test-integration test-e2e test-observability test-chart test-images test-compose \
        test-chaos test-upgrade test-fuzz test-perf test-cluster bench lint format clean chart-readme chart-topology asyncapi

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(INSTALLED): requirements-dev.txt constraints.txt services/*/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@touch $@

install: $(INSTALLED) ## create .venv with the services, the tools and the test dependencies

# The Debian packages the tiers need (PostgreSQL, RabbitMQ, Prometheus, the Docker Engine, debootstrap): installed
# with apt-get when missing (as root), else a message naming them and the command. Quick when all are there.
system-packages: ## install the system packages the tests need (apt-get, as root); says what and why
	@$(PYTHON) services/devtools/saga_dev/system_packages.py --for test

run: $(INSTALLED) ## both services in the foreground, with private PostgreSQL/RabbitMQ if none answers (Ctrl-C stops all)
	$(BIN)/saga-dev

test: system-packages $(INSTALLED) ## the whole suite, tier by tier (what CI runs)
	$(PYTEST) tests/unit -m unit
	$(PYTEST) tests/integration -m integration
	$(PYTEST) tests/e2e -m e2e
	$(PYTEST) tests/observability -m observability
	$(PYTEST) tests/chart -m chart
	$(PYTEST) tests/images -m images -s
	$(PYTEST) tests/compose -m compose -s
	$(PYTEST) tests/chaos -m chaos -s
	$(PYTEST) tests/upgrade -m upgrade -s
	$(PYTEST) tests/perf -m perf
	$(NODE_BUILD)
	$(PYTEST) tests/cluster -m cluster -s

test-unit: system-packages $(INSTALLED) ## pure functions: validation, envelope, state machine
	$(PYTEST) tests/unit -m unit

test-integration: system-packages $(INSTALLED) ## outbox, inbox, consumer against a real PostgreSQL and RabbitMQ
	$(PYTEST) tests/integration -m integration

test-e2e: system-packages $(INSTALLED) ## both services as real processes
	$(PYTEST) tests/e2e -m e2e

test-images: system-packages $(INSTALLED) ## both images built on a local Docker engine, the chart's pods run from them (root)
	$(PYTEST) tests/images -m images -s

test-compose: system-packages $(INSTALLED) ## docker/compose.yaml brought up with Compose v2 as a user does, stand-ins from tests/compose (root)
	$(PYTEST) tests/compose -m compose -s

test-chaos: system-packages $(INSTALLED) ## faults under load on a 3-node RabbitMQ cluster; prints the table of figures (root, rabbitmq-server)
	$(PYTEST) tests/chaos -m chaos -s

test-upgrade: system-packages $(INSTALLED) ## release N (git revision before order.created v2) rolled to the work tree under load, replica by replica
	$(PYTEST) tests/upgrade -m upgrade -s

test-fuzz: system-packages $(INSTALLED) ## schemathesis on both OpenAPI documents, and the bad-input list (also part of test-chaos)
	$(PYTEST) tests/chaos/test_fuzz_api.py -m chaos -s

test-observability: system-packages $(INSTALLED) ## traces through the broker, metrics, a real Prometheus, dashboards, alert rules
	$(PYTEST) tests/observability -m observability

test-perf: system-packages $(INSTALLED) ## the benchmark's smoke run (a few seconds; figures come from make bench)
	$(PYTEST) tests/perf -m perf

# SAGA_CLUSTER_CONTEXT=kind-saga runs it against a cluster of yours instead (images loaded with kind). Otherwise
# the node's parts are built first, outside the tests' time limits (cold: about half an hour; then cached).
NODE_BUILD = $(if $(SAGA_CLUSTER_CONTEXT),,$(BIN)/saga-node build)
test-cluster: system-packages $(INSTALLED) ## the chart on a real single-node Kubernetes built here (root): install, helm test, sagas through an upgrade
	$(NODE_BUILD)
	$(PYTEST) tests/cluster -m cluster -s

bench: $(INSTALLED) ## the benchmark: every scenario, the machine's limit, a 5-minute soak (about 12 minutes)
	$(BIN)/saga-bench --scenarios closed-1x,closed-prefer,open-100,open-300,closed-2x,hotspot,tracing,tracing-10%,cluster,soak

asyncapi: $(INSTALLED) ## regenerate docs/asyncapi.yaml (the message contract, AsyncAPI 3.0) from the code
	$(BIN)/python -m saga_dev.asyncapi > docs/asyncapi.yaml.tmp
	mv docs/asyncapi.yaml.tmp docs/asyncapi.yaml

chart-readme: $(INSTALLED) ## regenerate charts/saga/README.md (the table of values) from values.yaml
	$(BIN)/python -m saga_dev.chart_readme > charts/saga/README.md.tmp
	mv charts/saga/README.md.tmp charts/saga/README.md

chart-topology: $(INSTALLED) ## regenerate charts/saga/files/topology.yaml (the broker's definitions) from the code's topology
	$(BIN)/python -m saga_dev.chart_topology > charts/saga/files/topology.yaml.tmp
	mv charts/saga/files/topology.yaml.tmp charts/saga/files/topology.yaml

lint: $(INSTALLED) ## ruff
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests

format: $(INSTALLED) ## ruff format and fixes
	$(BIN)/ruff check --fix services tests
	$(BIN)/ruff format services tests

clean: ## remove the virtualenv, caches and make run's data (.saga: its private PostgreSQL and RabbitMQ)
	rm -rf $(VENV) .pytest_cache .ruff_cache .saga
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- Kubernetes: images, kind, helm, skaffold (owned by the chart) ---
# Needs Docker, kind, kubectl and helm (skaffold for skaffold-dev). See docs/deploy-kind.md.
KIND_CLUSTER ?= saga
K8S_NAMESPACE ?= saga
HELM_RELEASE ?= saga
IMAGE_TAG ?= dev
# Empty: kubectl's current context (deploy, port-forward); kind-up passes its own cluster's.
KUBE_CONTEXT ?=
KUBECTL = kubectl $(if $(KUBE_CONTEXT),--context $(KUBE_CONTEXT)) --namespace $(K8S_NAMESPACE)
SERVICE_IMAGES := saga/order-service saga/customer-service
SERVICE_COMPONENTS := app.kubernetes.io/component in (order-service,customer-service)

.PHONY: images kind-up kind-load deploy helm-test undeploy token port-forward kind-down manifests skaffold-dev \
        test-chart compose-up compose-down

# PYTHON_IMAGE: the base both Dockerfiles build on (empty: their default, the official python slim image);
# DOCKER_BUILD_FLAGS: anything else for `docker build`, e.g. `--network host` or `--platform linux/amd64`.
PYTHON_IMAGE ?=
DOCKER_BUILD_FLAGS ?=
DOCKER ?= docker
BUILD_ARGS = $(DOCKER_BUILD_FLAGS) $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE))

images: ## build both service images (IMAGE_TAG, default dev; PYTHON_IMAGE, DOCKER_BUILD_FLAGS)
	$(DOCKER) build $(BUILD_ARGS) --file docker/order-service.Dockerfile --tag saga/order-service:$(IMAGE_TAG) .
	$(DOCKER) build $(BUILD_ARGS) --file docker/customer-service.Dockerfile --tag saga/customer-service:$(IMAGE_TAG) .

kind-up: ## kind cluster from k8s/, both images built and loaded, the chart installed; waits until ready
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
	  || kind create cluster --config k8s/kind-config.yaml --name $(KIND_CLUSTER) --wait 120s
	$(MAKE) images kind-load deploy KUBE_CONTEXT=kind-$(KIND_CLUSTER)

kind-load: ## copy the two images into the kind nodes (no registry involved)
	@# `kind load docker-image` fails with Docker's containerd image store; an archive works with both stores.
	@for image in $(foreach image,$(SERVICE_IMAGES),$(image):$(IMAGE_TAG)); do \
	  kind load docker-image --name $(KIND_CLUSTER) $$image && continue; \
	  echo "kind load docker-image failed for $$image: loading it from a docker save archive instead"; \
	  archive=$$(mktemp --suffix=.tar) && $(DOCKER) save --output $$archive $$image \
	    && kind load image-archive --name $(KIND_CLUSTER) $$archive; status=$$?; rm -f $$archive; \
	  [ $$status -eq 0 ] || exit $$status; \
	done

deploy: ## helm upgrade --install the chart into the current context (or KUBE_CONTEXT) and wait until ready
	helm upgrade --install $(HELM_RELEASE) charts/saga $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT)) \
	  --namespace $(K8S_NAMESPACE) --create-namespace --set serviceDefaults.image.tag=$(IMAGE_TAG) \
	  --wait --timeout 10m
	$(KUBECTL) wait pods --for=condition=Ready --timeout=5m \
	  --selector 'app.kubernetes.io/instance=$(HELM_RELEASE),$(SERVICE_COMPONENTS)'
	@echo "Ready. Next: make port-forward (another terminal), then TOKEN=\$$(make -s token) and the curl of docs/deploy-kind.md; make helm-test"

helm-test: ## helm test: an order through the release's own test pod (fulfilled, and 401 without a token)
	helm test $(HELM_RELEASE) $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT)) --namespace $(K8S_NAMESPACE) --logs

undeploy: ## helm uninstall the release; its Secrets and PVCs stay (docs/deploy-kind.md), DELETE_NAMESPACE=1 removes them too
	@# foreground: --wait then also waits for the pods of the Deployments and StatefulSets to be gone.
	helm uninstall $(HELM_RELEASE) $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT)) --namespace $(K8S_NAMESPACE) \
	  --wait --cascade foreground
	@# Helm never deletes test hooks: the last `helm test`'s pod and ConfigMap stay for their logs until here.
	$(KUBECTL) delete pod,configmap --ignore-not-found \
	  --selector 'app.kubernetes.io/instance=$(HELM_RELEASE),app.kubernetes.io/component=test'
	$(if $(DELETE_NAMESPACE),$(KUBECTL) delete namespace $(K8S_NAMESPACE) --wait)

# The chart's development signer (no identity provider): its private key is read through kubectl into a
# directory that is removed at once; `sagactl token` signs with it. Orders need a token bound to a customer.
CUSTOMER ?= 1
SCOPE ?= orders:write orders:read orders:cancel
TOKEN_SIGNER ?= $(HELM_RELEASE)-token-signer
token: $(INSTALLED) ## print a bearer token for the cluster's APIs (CUSTOMER=1, SCOPE="orders:write orders:read orders:cancel", TOKEN_SIGNER)
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	$(KUBECTL) get secret $(TOKEN_SIGNER) -o jsonpath='{.data.signing-key\.pem}' | base64 -d >"$$dir/key.pem" && \
	SAGA_DEV_SIGNING_KEY="$$dir/key.pem" $(BIN)/sagactl token --subject make-token \
	  $(foreach scope,$(SCOPE),--scope $(scope)) $(if $(CUSTOMER),--customer $(CUSTOMER))

# port-forward: the kind cluster's context when it exists (make kind-up made it), else KUBE_CONTEXT or the current.
KIND_CONTEXT = $(shell kubectl config get-contexts --output name 2>/dev/null | grep -x 'kind-$(KIND_CLUSTER)')
FORWARD_CONTEXT = $(or $(KUBE_CONTEXT),$(KIND_CONTEXT))
FORWARD_KUBECTL = kubectl $(if $(FORWARD_CONTEXT),--context $(FORWARD_CONTEXT)) --namespace $(K8S_NAMESPACE)

port-forward: ## order API on :8001, Jaeger UI on :16686, Grafana on :3000 (Ctrl-C stops them)
	@echo "Context: $(or $(FORWARD_CONTEXT),the current one). Grafana: user admin, password: \
	$$($(FORWARD_KUBECTL) get secret $(HELM_RELEASE)-grafana -o jsonpath='{.data.admin-password}' | base64 -d)"
	@trap 'kill $$(jobs -p) 2>/dev/null' EXIT; \
	$(FORWARD_KUBECTL) port-forward svc/$(HELM_RELEASE)-order-service 8001:8001 & \
	$(FORWARD_KUBECTL) port-forward svc/$(HELM_RELEASE)-jaeger 16686:16686 & \
	$(FORWARD_KUBECTL) port-forward svc/$(HELM_RELEASE)-grafana 3000:3000 & \
	wait

kind-down: ## delete the kind cluster and everything in it
	kind delete cluster --name $(KIND_CLUSTER)

manifests: $(INSTALLED) ## regenerate k8s/saga.yaml (plain manifests) from the chart
	$(BIN)/python -m saga_dev.plain_manifests

# skaffold before 2.19.0 registers its Helm 4 post-renderer plugin with version "0.1", which Helm 4.1.4 and later
# refuse ("must be valid semver"; skaffold issue 10046, fixed in 2.19.0). Read from upstream, not run here (no
# skaffold build is served to this project's machines): docs/deploy-kind.md names the pairs.
SKAFFOLD_MIN_VERSION := 2.19.0

skaffold-dev: ## the edit loop on the kind cluster: rebuild, redeploy and forward ports on every change
	@# Helm 4.1.4+ refuses the post-renderer plugin of skaffold before 2.19.
	@version=$$(skaffold version | sed 's/^v//'); \
	if [ "$$(printf '%s\n%s\n' '$(SKAFFOLD_MIN_VERSION)' "$$version" | sort -V | head -n1)" != '$(SKAFFOLD_MIN_VERSION)' ]; then \
	  echo "skaffold $$version is too old: this project needs $(SKAFFOLD_MIN_VERSION) or later (Helm 4.1.4 and later refuse the post-renderer of older ones)" >&2; exit 1; \
	fi
	@# --cleanup=false: stopping the loop leaves the release (and its data) that make kind-up installed.
	skaffold dev --profile kind --port-forward=user --cleanup=false

test-chart: system-packages $(INSTALLED) ## the chart, images and configs checked offline (Helm engine, Kubernetes schemas, policies)
	$(PYTEST) tests/chart -m chart

compose-up: ## both services with PostgreSQL, RabbitMQ and Jaeger in Docker (Compose v2); returns once all are healthy
	docker compose --file docker/compose.yaml up --build --wait

compose-down: ## stop the compose stack and forget its data
	docker compose --file docker/compose.yaml down --volumes
