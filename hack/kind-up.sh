#!/usr/bin/env bash
# `make kind-up`: for users with a container engine (Docker) — build the three images, start a kind cluster,
# load the images and deploy manifests/ (CRDs, RBAC, operator). Not runnable on the development machines of this
# project (no container engine there); the local control plane (`make dev-up`, `make demo`) is what CI exercises.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-tiered}
TAG=${TIERED_IMAGE_TAG:-0.1.0}
REGISTRY=${TIERED_REGISTRY:-ghcr.io/tiered-dev}

command -v docker >/dev/null || { echo "kind-up needs docker"; exit 1; }
docker info >/dev/null 2>&1 || { echo "kind-up needs a running Docker engine (docker info failed)"; exit 1; }
if ! command -v kind >/dev/null; then
  echo "installing kind with go install (sigs.k8s.io/kind@v0.33.0)"
  GOBIN="$PWD/.venv/bin" go install sigs.k8s.io/kind@v0.33.0
  export PATH="$PWD/.venv/bin:$PATH"
fi

docker build -f operator/Dockerfile -t "$REGISTRY/tiered-operator:$TAG" .
docker build -f router_image/Dockerfile -t "$REGISTRY/tiered-router:$TAG" .
docker build -f slm_image/Dockerfile -t "$REGISTRY/tiered-slm:$TAG" .

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
for image in tiered-operator tiered-router tiered-slm; do
  kind load docker-image --name "$CLUSTER" "$REGISTRY/$image:$TAG"
done
kubectl --context "kind-$CLUSTER" apply --server-side -k manifests/
kubectl --context "kind-$CLUSTER" -n tiered-system rollout status deployment/tiered-operator --timeout=300s
echo "tiered is running in kind cluster '$CLUSTER'. Try: kubectl --context kind-$CLUSTER apply -k manifests/samples"
