// One thread of the engine worker's CPU pool (app/web/src/threads.rs): the same wasm module on
// the engine worker's shared memory; says it runs, then waits for its share of rayon's pool and
// runs its worker loop until the page closes.
import { initSync, brivl_thread_run } from "./brivl-worker-mt.js";

self.onmessage = ({ data: [module, memory] }) => {
  self.onmessage = null;
  initSync({ module, memory });
  postMessage("running");
  brivl_thread_run();
};
