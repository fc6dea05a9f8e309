#!/usr/bin/env bash
# Runs the benchmarks against real servers: starts tansu, memcached, etcd and nginx with the
# documentation site (as tests/run.sh does), then `cargo bench`. Extra arguments go to cargo
# bench (e.g. --bench normalize, --bench crawl). The crawl benchmark's baseline is Scrapy,
# installed from PyPI when missing; the embeddings benchmark's is onnxruntime-python, from the
# Chroma virtualenv (which has onnxruntime, tokenizers and numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/services.sh
source tests/services.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
sluice_prereqs
python3 -c 'import scrapy' 2>/dev/null || python3 -m pip install --quiet scrapy
python3 -c 'import bs4' 2>/dev/null || python3 -m pip install --quiet beautifulsoup4
sluice_services_start
trap sluice_services_stop EXIT
export SLUICE_BENCH_PYTHON="${SLUICE_BENCH_PYTHON:-$SLUICE_TOOLS/chroma/bin/python}"
cargo bench --locked "$@"
