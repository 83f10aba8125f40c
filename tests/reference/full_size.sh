#!/usr/bin/env bash
# Parity and speed of the full-size random BriVL model (never committed): make it with the
# PyTorch reference, convert it to f32/f16/q8, compare every converted file with the reference's
# golden embeddings (parity_full), print file sizes and `brivl bench`. See README.md beside this.
#
# Env: OUT (/tmp/brivl-full), PY (python with torch/timm/transformers), QUANTS ("f32 f16 q8"),
#      BACKEND (cpu; gpu on a machine with a real GPU), MAX_IMAGES (3), MAX_TEXTS (all),
#      BENCH (1: run `brivl bench` on the last quant), BENCH_REPEATS (1), TORCH_BENCH (1),
#      CARGO_TARGET_DIR (target).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/brivl-full}"
PY="${PY:-python3}"
QUANTS="${QUANTS:-f32 f16 q8}"
BACKEND="${BACKEND:-cpu}"
MAX_IMAGES="${MAX_IMAGES:-3}"
BENCH="${BENCH:-1}"
BENCH_REPEATS="${BENCH_REPEATS:-1}"
TORCH_BENCH="${TORCH_BENCH:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release"

if [ -f "${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt" ]; then
  VOCAB="${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt"
else
  VOCAB="$ROOT/tests/fixtures/tokenizer/vocab.txt"
fi

# 1. The reference model and its golden embeddings (~5 min, ~4.5 GB), unless already there.
if [ -f "$OUT/brivl-full.pth" ] && [ -f "$OUT/golden.json" ]; then
  echo "== reference: $OUT/brivl-full.pth present, not regenerated"
else
  echo "== reference: making $OUT"
  "$PY" tests/reference/brivl_ref.py full --out "$OUT"
fi

# 2. Release build (the dev profile leaves the engine unoptimised).
echo "== build"
cargo build --release -p brivl-desktop --bin brivl
cargo build --release -p brivl-engine --example parity_full

# Values not in the weights come from config.json beside the checkpoint.
cfg() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/config.json" "$1"; }
CONVERT_ARGS=(--image-size "$(cfg image_size)" --box-grid "$(cfg box_grid)" --pool-grid "$(cfg pool_grid)"
  --img-heads "$(cfg img_att_heads)" --text-heads "$(cfg text_att_heads)" --bert-heads "$(cfg bert_heads)"
  --max-text-len "$(cfg max_text_len)")

# 3. Convert, size, parity per quantisation.
fail=0
for q in $QUANTS; do
  model="$OUT/brivl-$q.safetensors"
  if [ ! -f "$model" ]; then
    echo "== convert $q"
    /usr/bin/time -f "convert $q: %e s, max RSS %M KB" \
      "$BIN/brivl" convert "$OUT/brivl-full.pth" --vocab "$VOCAB" --quant "$q" -o "$model" "${CONVERT_ARGS[@]}"
  fi
  echo "== size $q: $(stat -c %s "$model") bytes"
  case $q in f32) min=0.9999 ;; *) min=0.995 ;; esac
  echo "== parity $q ($BACKEND, min cosine $min, first $MAX_IMAGES images)"
  "$BIN/examples/parity_full" --dir "$OUT" --model "$model" --backend "$BACKEND" \
    --max-images "$MAX_IMAGES" ${MAX_TEXTS:+--max-texts "$MAX_TEXTS"} --min-cosine "$min" \
    | tee "$OUT/parity-$q.txt" || fail=1
done

echo "== sizes"
ls -l "$OUT"/brivl-full.pth "$OUT"/brivl-*.safetensors

# 4. Speed: brivl bench on the last quant, then PyTorch on the same weights.
if [ "$BENCH" = 1 ]; then
  last="${QUANTS##* }"
  echo "== brivl bench ($last, $BACKEND)"
  "$BIN/brivl" bench --model "$OUT/brivl-$last.safetensors" --backend "$BACKEND" --repeats "$BENCH_REPEATS" \
    | tee "$OUT/bench-brivl-$last.txt"
  if [ "$TORCH_BENCH" = 1 ]; then
    echo "== PyTorch bench"
    "$PY" tests/reference/bench_torch.py --dir "$OUT" --repeats "$BENCH_REPEATS" \
      --brivl-bench-output "$OUT/bench-brivl-$last.txt"
  fi
fi
exit $fail
