//! The UI's entry point (trunk builds it from www/index.html).

fn main() {
    #[cfg(target_arch = "wasm32")]
    brivl_web::ui::mount();
}
