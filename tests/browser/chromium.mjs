// The headless Debian Chromium the browser tests and benchmarks launch: its path and flags.
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const FLAGS = [
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// WebGPU on SwiftShader (the machine has no GPU).
export const GPU_FLAGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"];
// The CPU variant: navigator.gpu does not exist, in the page and in its workers.
export const CPU_FLAGS = ["--disable-blink-features=WebGPU"];
