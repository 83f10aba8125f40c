#!/usr/bin/env bash
# The main command: installs what is missing, builds the web app into dist/ and serves it on
# http://localhost:${PORT:-8080}/. dist/ is a plain static folder: any static file server can host it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"
target="${CARGO_TARGET_DIR:-target}"

bash www/tools/install-tools.sh
(cd www && trunk build --release)

if ! compgen -G "dist/models/*.safetensors" >/dev/null; then
  # No demo model in www/models yet: serve the tiny test model so the app runs end to end.
  echo "serve: www/models has no model; using the tiny test model (random weights: rankings mean nothing)"
  brivl="$target/release/brivl"
  [ -x "$brivl" ] || brivl="$target/debug/brivl"
  [ -x "$brivl" ] || cargo build -p brivl-desktop --bin brivl
  "$brivl" convert tests/fixtures/tiny/brivl-tiny.pth --vocab tests/fixtures/tokenizer/vocab.txt \
    --quant q8 --image-size 200 --img-heads 2 --text-heads 2 --bert-heads 2 -o dist/models/brivl-tiny-q8.safetensors
  bash www/tools/models-manifest.sh dist
fi

if command -v node >/dev/null; then
  exec node www/tools/static-server.mjs dist "$PORT" 127.0.0.1
else
  echo "brivl is served at http://127.0.0.1:$PORT/  (Ctrl+C stops it)"
  exec python3 -m http.server "$PORT" --bind 127.0.0.1 --directory dist
fi
