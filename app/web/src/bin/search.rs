//! The search worker's entry point (trunk builds it as a worker with a loader shim).

fn main() {
    #[cfg(target_arch = "wasm32")]
    brivl_web::search_worker::start();
}
