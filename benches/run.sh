#!/usr/bin/env bash
# Runs the benchmarks against real servers: starts tansu and memcached (as tests/run.sh does),
# then `cargo bench`. Extra arguments go to cargo bench (e.g. --bench normalize).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/services.sh
source tests/services.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
sluice_prereqs
sluice_services_start
trap sluice_services_stop EXIT
cargo bench --locked "$@"
