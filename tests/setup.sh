#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine; does nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# fonts-wqy-microhei: a CJK font, so the web app's screenshots show Chinese text. qemu-user and the
# aarch64 cross linker and C library: the CPU path's NEON kernels are tested under emulation.
for pkg in mesa-vulkan-drivers chromium chromium-driver fonts-wqy-microhei \
  qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

for t in wasm32-unknown-unknown aarch64-unknown-linux-gnu; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
# tests/run.sh checks formatting and lints.
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done

# The test runner must match the wasm-bindgen version in Cargo.lock exactly.
want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, "", $0); print; exit}' Cargo.lock)
have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "setup: cargo install wasm-bindgen-cli $want (had '${have}')"
  cargo install -q wasm-bindgen-cli --version "$want"
fi

# Web app: trunk (pinned) for the build; playwright-core (tests/browser/package-lock.json) to drive
# Chromium in the browser tests, which need Node.js 20 or newer. Its dev dependencies
# (onnxruntime-web, for tests/bench/browser_vs_ort_web.sh) are left out.
bash www/tools/install-tools.sh
command -v node >/dev/null || { echo "setup: the browser tests need Node.js >= 20 (node not found)"; exit 1; }
[ -f tests/browser/node_modules/playwright-core/package.json ] || (cd tests/browser && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
