#!/usr/bin/env bash
# The native peer benchmark: `brivl bench --backend cpu` against ONNX Runtime's CPU EP on the same
# full-size random BriVL, same thread count, in one run; prints ms per item and the ratios at
# batch 1 and 8, and brivl's resident memory. Benchmark only, never in CI.
#
# Env: OUT (/tmp/brivl-full: tests/reference/full_size.sh's folder; the checkpoint is made there
#      if missing), PY (python with torch/timm/transformers/onnx/onnxruntime), THREADS (2),
#      REPEATS (3 timed runs per measurement), ROUNDS (2: brivl and ORT alternate this many
#      times; the best round of each is reported, as load from other processes only slows),
#      CARGO_TARGET_DIR (target), BRIVL_CPU_SIMD (unset: the best level).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/brivl-full}"
PY="${PY:-python3}"
THREADS="${THREADS:-2}"
REPEATS="${REPEATS:-3}"
ROUNDS="${ROUNDS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET_DIR/release/brivl"

# 1-3. The full-size random checkpoint, brivl and its q8 file, the ONNX export.
OUT="$OUT" PY="$PY" bash tests/bench/full_model.sh
model="$OUT/brivl-q8.safetensors"

# 4. Alternate brivl and ONNX Runtime; keep each one's best round.
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $THREADS threads each; $(date -u +%FT%TZ)"
best() { # best.txt new.txt: keep the lower ms per line
  if [ ! -f "$1" ]; then cp "$2" "$1"; return; fi
  "$PY" - "$1" "$2" <<'PYEOF'
import re, sys
def read(p):
    return {m.group(1): (float(m.group(2)), l) for l in open(p) for m in [re.match(r"\s*(\w+\s+batch \d+):\s+([\d.]+) ms", l)] if m}
a, b = read(sys.argv[1]), read(sys.argv[2])
keep = {k: min(a.get(k, b.get(k)), b.get(k, a.get(k))) for k in set(a) | set(b)}
open(sys.argv[1], "w").write("".join(v[1] for _, v in sorted(keep.items())))
PYEOF
}
rm -f "$OUT/bench-brivl-best.txt" "$OUT/bench-ort-best.txt"
for round in $(seq "$ROUNDS"); do
  echo "== round $round: brivl bench --backend cpu (RAYON_NUM_THREADS=$THREADS)"
  RAYON_NUM_THREADS="$THREADS" /usr/bin/time -f "brivl max resident memory: %M KB" \
    "$BIN" bench --model "$model" --backend cpu --repeats "$REPEATS" 2>&1 | tee "$OUT/bench-brivl.txt"
  best "$OUT/bench-brivl-best.txt" "$OUT/bench-brivl.txt"
  echo "== round $round: ONNX Runtime"
  "$PY" tests/bench/ort_peer.py bench --dir "$OUT" --threads "$THREADS" --repeats "$REPEATS" 2>&1 \
    | grep -v -i warning | tee "$OUT/bench-ort.txt"
  best "$OUT/bench-ort-best.txt" "$OUT/bench-ort.txt"
done

echo "== best of $ROUNDS rounds"
"$PY" tests/bench/ort_peer.py compare --brivl-bench-output "$OUT/bench-brivl-best.txt" \
  --ort-output "$OUT/bench-ort-best.txt" --threads "$THREADS"
echo "model file: $(stat -c %s "$model") bytes"
