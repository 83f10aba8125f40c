//! brivl-core: what the web app and the desktop program do the same way, written once.
//!
//! - [`translate`]: query preparation. BriVL reads Chinese; English queries are translated offline.
//! - [`ranking`]: the one dot product, exact ranking with a minimum score and top-k, and the int8
//!   scan that finds candidates over large indexes.
//! - [`compact_index`]: the web app's in-memory index (int8 rows in blocks, scanned, the best
//!   candidates rescored exactly).
//! - [`encoding`]: how embeddings are stored (f16 bytes, int8 codes with a per-row scale).
//! - [`model_id`]: which model an index belongs to, and the check that refuses another one.
//!
//! Platform-free: no engine, no I/O, no threads on wasm; built natively and for wasm32.

pub mod compact_index;
pub mod encoding;
pub mod model_id;
pub mod ranking;
pub mod translate;
