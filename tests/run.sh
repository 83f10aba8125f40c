#!/usr/bin/env bash
# Runs every test: native kernel and unit tests on the machine's Vulkan adapter (lavapipe on CI),
# then the same kernel tests compiled to wasm in headless Chromium on WebGPU (SwiftShader), then the
# web app end to end in headless Chromium, on WebGPU and on the CPU path (threaded and one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh

export CARGO_TERM_COLOR=never
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export CHROMEDRIVER=/usr/bin/chromedriver
# wasm-bindgen-test stops a browser run after 20 s by default; the suite takes longer on 2 cores.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"

echo "== format and lints (native and wasm32)"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The desktop program (SQLite, terminal) is native only; everything else builds for the browser.
cargo clippy -p brivl-engine -p brivl-core -p brivl-web --target wasm32-unknown-unknown --lib --bins --tests -- -D warnings
# The threaded engine worker's build (www/tools/threaded-worker.sh: nightly, std with atomics).
RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128" \
  cargo +"${BRIVL_THREADS_TOOLCHAIN:-nightly}" clippy -Z build-std=panic_abort,std --target wasm32-unknown-unknown \
  --release -p brivl-web --lib --bins --target-dir "${CARGO_TARGET_DIR:-target}/wasm-threads" -- -D warnings

echo "== native tests (Vulkan)"
# --nocapture so the log names the adapter ("kernel tests on: ...").
cargo test --workspace -- --nocapture

echo "== CPU path at each lower SIMD level the machine has (BRIVL_CPU_SIMD caps the level)"
# The GEMM and activation tests already loop over every level; this reruns the ops' CPU twins
# (compared with the GPU kernels and each other) and the model parity tests at the lower levels.
for level in portable avx2 avx2vnni avx512; do
  BRIVL_CPU_SIMD=$level cargo test -p brivl-engine --lib -- ops::
  BRIVL_CPU_SIMD=$level cargo test -p brivl-engine --test parity
done

echo "== CPU path on aarch64 (NEON and portable), cross-compiled and run under qemu-user"
# No GPU there: the CPU kernels' own tests (GEMM on every level, activations, depthwise against
# direct sums, the gated GEMM against its parts).
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
  cargo test --release -p brivl-engine --lib --target aarch64-unknown-linux-gnu -- \
  cpu:: depthwise_cpu_ gated_linear_cpu_ linear_cpu_

echo "== kernel tests in headless Chromium (WebGPU; CPU kernels at simd128 and portable)"
cargo test -p brivl-engine --lib --target wasm32-unknown-unknown -- --nocapture

echo "== search core compiled to wasm32 (Node.js)"
cargo test -p brivl-core --lib --target wasm32-unknown-unknown

echo "== development server: bad requests answered 400/404, the server keeps serving"
node tests/browser/static-server.test.mjs

echo "== web app in headless Chromium (WebGPU on SwiftShader, then the CPU path)"
# trunk builds the static site into dist/; the test runs `brivl embed` on
# the album natively as the reference, and drives the app. Screenshots: tests/artifacts/webapp-*/.
(cd www && trunk build --release)
cargo build -p brivl-desktop --bin brivl
# The demo model and the first 30 photos of the demo album (SwiftShader embeds ~2 photos/s); the
# query's photo leads the others by a wide margin (cosine 0.44 over the next, natively).
export BRIVL_TEST_MODEL=www/models/brivl-demo-q8.safetensors BRIVL_TEST_ALBUM=www/demo/album BRIVL_TEST_LIMIT=30
export BRIVL_TEST_QUERY=两辆红色的汽车在沙滩上 BRIVL_TEST_EXPECTED=scene-022.jpg
node tests/browser/webapp.test.mjs --mode gpu
node tests/browser/webapp.test.mjs --mode cpu
node tests/browser/webapp.test.mjs --mode cpu --one-thread
# The index at an album's scale: 20,000 synthetic photos through a test hook, rankings equal to an
# exact ranking of the same vectors in Node, the v1 index migrated, a virtualised grid, memory
# within its bound, a reload (tests/browser/scale.test.mjs; --photos 100000 is the benchmark).
node tests/browser/scale.test.mjs --photos 20000 --queries 5

echo "== converting the tiny checkpoint in the page (OPFS, byte-identical to brivl convert)"
node tests/browser/convert.test.mjs --mode cpu
node tests/browser/convert.test.mjs --mode gpu
