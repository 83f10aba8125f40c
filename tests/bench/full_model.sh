#!/usr/bin/env bash
# What both peer benchmarks (cpu_vs_ort.sh, browser_vs_ort_web.sh) start from, made in OUT only
# where missing: the full-size random checkpoint (as tests/reference/full_size.sh makes it), the
# release `brivl` and its q8 conversion OUT/brivl-q8.safetensors, and the same towers exported to
# ONNX in f32 by the PyTorch reference (OUT/onnx/{image,text}.onnx, tests/bench/ort_peer.py).
# Benchmark only, never in CI.
#
# Env: OUT (/tmp/brivl-full), PY (python with torch/timm/transformers/onnx/onnxruntime),
#      CARGO_TARGET_DIR (target).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/brivl-full}"
PY="${PY:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release/brivl"

if [ -f "${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt" ]; then
  VOCAB="${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt"
else
  VOCAB="$ROOT/tests/fixtures/tokenizer/vocab.txt"
fi

# 1. The full-size random checkpoint.
if [ ! -f "$OUT/brivl-full.pth" ] || [ ! -f "$OUT/config.json" ]; then
  echo "== reference: making $OUT"
  "$PY" tests/reference/brivl_ref.py full --out "$OUT"
fi

# 2. brivl, and the q8 model file.
echo "== build"
cargo build --release -p brivl-desktop --bin brivl
model="$OUT/brivl-q8.safetensors"
if [ ! -f "$model" ]; then
  cfg() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/config.json" "$1"; }
  "$BIN" convert "$OUT/brivl-full.pth" --vocab "$VOCAB" --quant q8 -o "$model" \
    --image-size "$(cfg image_size)" --box-grid "$(cfg box_grid)" --pool-grid "$(cfg pool_grid)" \
    --img-heads "$(cfg img_att_heads)" --text-heads "$(cfg text_att_heads)" --bert-heads "$(cfg bert_heads)" \
    --max-text-len "$(cfg max_text_len)"
fi

# 3. The same towers in ONNX (f32), exported by the PyTorch reference and checked against it.
if [ ! -f "$OUT/onnx/image.onnx" ] || [ ! -f "$OUT/onnx/text.onnx" ]; then
  echo "== export ONNX"
  "$PY" tests/bench/ort_peer.py export --dir "$OUT"
fi
