#!/usr/bin/env bash
# Remakes the demo model and album (see README.md beside this): the held-out album and its
# captions, the trained checkpoint (CPU, about 30 min on 2 free cores), the q8 model file, and the
# PyTorch recall on the album (compare with `cargo test -p brivl-desktop --test demo_recall`).
#
# Env: PY (python with torch/timm/transformers), OUT (/tmp/brivl-demo), CARGO_TARGET_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-python3}"
OUT="${OUT:-/tmp/brivl-demo}"
if [ -f "${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt" ]; then
  VOCAB="${BRIVL_SHARED:-$ROOT/../shared}/vocab/zh-bert-vocab.txt"
else
  VOCAB="$ROOT/tests/fixtures/tokenizer/vocab.txt"
fi

echo "== album (held-out split)"
"$PY" tests/reference/demo_scenes.py --album www/demo/album
echo "== train"
"$PY" tests/reference/train_demo.py --out "$OUT"
echo "== convert (q8)"
cfg() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/config.json" "$1"; }
mkdir -p www/models
cargo run --release -p brivl-desktop --bin brivl -- convert "$OUT/brivl-demo.pth" --vocab "$VOCAB" --quant q8 \
  --image-size "$(cfg image_size)" --box-grid "$(cfg box_grid)" --pool-grid "$(cfg pool_grid)" \
  --img-heads "$(cfg img_att_heads)" --text-heads "$(cfg text_att_heads)" --bert-heads "$(cfg bert_heads)" \
  --max-text-len "$(cfg max_text_len)" -o www/models/brivl-demo-q8.safetensors
ls -l www/models/brivl-demo-q8.safetensors
echo "== PyTorch recall on the album"
"$PY" tests/reference/recall_demo.py --dir "$OUT" --album www/demo/album
