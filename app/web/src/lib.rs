//! The brivl web app: a Leptos UI on the main thread (`ui`), the engine in a dedicated Web Worker
//! (`worker`), the index and its ranking in a second worker
//! (`search_worker`), and the pieces both share or that need no browser (`protocol`, `i18n`, `watchdog`), which are
//! tested natively. Query preparation, ranking and model identity come from `brivl-core`, shared
//! with the desktop program.

pub mod i18n;
pub mod protocol;
pub mod watchdog;

#[cfg(target_arch = "wasm32")]
pub mod convert_worker;
#[cfg(target_arch = "wasm32")]
pub mod model_stream;
#[cfg(target_arch = "wasm32")]
pub mod search_worker;
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub mod threads;
#[cfg(target_arch = "wasm32")]
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;
