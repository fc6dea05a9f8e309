#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain: installs what is
# missing (cached in ~/.cache/sluice), starts tansu, memcached and etcd on 127.0.0.1, runs
# every test, checks formatting and lints, and stops the servers.
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

echo "== tests" >&2
cargo test --workspace --locked "$@"
