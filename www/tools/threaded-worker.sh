#!/usr/bin/env bash
# Builds the engine worker a second time with WebAssembly threads (shared memory, atomics) into a
# built site, as brivl-worker-mt.js / _bg.wasm and brivl-worker-mt_loader.js: cross-origin
# isolated pages start it and split the CPU path's work over a pool of Web Workers
# (app/web/src/threads.rs, www/brivl-thread.js); other pages use trunk's one-thread build.
# Rust's std for wasm32 ships without atomics, so this build recompiles it (nightly's
# -Z build-std; www/tools/install-tools.sh adds rust-src).
# Usage: threaded-worker.sh [site dir] (default: trunk's staging dir when run as a trunk hook).
set -euo pipefail
site="${1:-${TRUNK_STAGING_DIR:?give the site folder}}"
site="$(cd "$site" && pwd)"
cd "$(dirname "$0")/../.."
toolchain="${BRIVL_THREADS_TOOLCHAIN:-nightly}"
profile="${TRUNK_PROFILE:-release}"
[ "$profile" = release ] || profile=dev
target="${CARGO_TARGET_DIR:-$PWD/target}/wasm-threads"
# Shared memory must declare its maximum: 4 GiB, all that wasm32 addresses.
export RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 -C link-arg=--shared-memory \
-C link-arg=--import-memory -C link-arg=--max-memory=4294967296 -C link-arg=--export=__wasm_init_tls \
-C link-arg=--export=__tls_size -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
cargo "+$toolchain" build -q --profile "$profile" --target wasm32-unknown-unknown -Z build-std=panic_abort,std \
  -p brivl-web --bin brivl-worker --target-dir "$target"
dir=$([ "$profile" = dev ] && echo debug || echo release)
wasm-bindgen --target web --out-dir "$site" --out-name brivl-worker-mt "$target/wasm32-unknown-unknown/$dir/brivl-worker.wasm"
printf 'import init from "./brivl-worker-mt.js";\nawait init();\n' > "$site/brivl-worker-mt_loader.js"
