#![no_main]
//! `photo::decode` on any bytes. Natively it catches a decoder's panic and reports it as a
//! corrupt file; on wasm that panic would abort the worker, so here it is a crash.

use brivl_engine::photo::{self, PhotoError, PhotoLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = PhotoLimits { max_pixels: 4_000_000, max_alloc: 64 << 20, ..PhotoLimits::default() };
    match photo::decode_with_limits(data, &limits) {
        Err(PhotoError::Corrupt { detail, .. }) if detail.starts_with("decoder failed") => {
            panic!("a decoder panicked: {detail}")
        }
        Ok(img) => assert_eq!(img.pixels.len(), 3 * img.width as usize * img.height as usize),
        Err(_) => {}
    }
});
