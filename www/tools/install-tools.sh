#!/usr/bin/env bash
# Installs what building the web app needs, skipping what is there: the wasm32 target,
# wasm-bindgen-cli at Cargo.lock's version, trunk at a pinned version, and for the engine's
# threaded build (www/tools/threaded-worker.sh) a nightly toolchain with rust-src.
set -euo pipefail
cd "$(dirname "$0")/../.."

TRUNK_VERSION=0.21.14

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# The threaded build recompiles std with atomics (-Z build-std): nightly and its sources.
nightly="${BRIVL_THREADS_TOOLCHAIN:-nightly}"
rustup run "$nightly" rustc --version >/dev/null 2>&1 || rustup toolchain install "$nightly" --profile minimal
rustup component list --toolchain "$nightly" --installed | grep -qx rust-src || rustup component add rust-src --toolchain "$nightly"

want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, "", $0); print; exit}' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "install: cargo install wasm-bindgen-cli $want (had '${have}')"
  # Not --locked: its lockfile pins a webpki-roots that no longer builds.
  cargo install -q wasm-bindgen-cli --version "$want"
fi

have=$(trunk --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$TRUNK_VERSION" ]; then
  # No update check (it would call crates.io at run time); rustls instead of OpenSSL.
  echo "install: cargo install trunk $TRUNK_VERSION (had '${have}'; takes several minutes)"
  cargo install -q trunk --version "$TRUNK_VERSION" --locked --no-default-features --features rustls
fi
