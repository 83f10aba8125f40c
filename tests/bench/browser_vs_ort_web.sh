#!/usr/bin/env bash
# The browser peer benchmark: the web app's engine against onnxruntime-web (npm, served from the
# same local origin) on the same full-size random BriVL, in one headless Chromium run: the CPU
# path (wasm, one thread) against the wasm EP at one thread, the threaded CPU path (wasm threads,
# as many as CPUs) against the wasm EP at as many threads, and the WebGPU path against the
# WebGPU EP (SwiftShader on a machine without a GPU). Prints ms per image and per query and the
# ratios. Benchmark only, never in CI (see tests/browser/ort-web-bench.mjs).
#
# Env: OUT (/tmp/brivl-full), PY (python with torch/timm/transformers/onnx/onnxruntime),
#      REPEATS (3 timed runs after one warm-up; the median is reported), GPU_REPEATS (REPEATS),
#      PHASES (cpu,threads,gpu), PHOTO (www/demo/album/scene-000.jpg), CARGO_TARGET_DIR (target).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/brivl-full}"
PY="${PY:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# 1. The checkpoint, its q8 file, the ONNX towers; the text input onnxruntime-web is fed.
OUT="$OUT" PY="$PY" bash tests/bench/full_model.sh
[ -f "$OUT/onnx/feeds.json" ] || "$PY" tests/bench/ort_peer.py feeds > "$OUT/onnx/feeds.json"

# 2. The web app as it ships (its engine worker), and onnxruntime-web (a dev dependency: the
#    tests install without it).
bash www/tools/install-tools.sh
(cd www && trunk build --release)
[ -f tests/browser/node_modules/onnxruntime-web/package.json ] \
  || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

# 3. Both, in one browser.
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $(date -u +%FT%TZ)"
FULL="$OUT" node tests/browser/ort-web-bench.mjs --phases "${PHASES:-cpu,threads,gpu}"
