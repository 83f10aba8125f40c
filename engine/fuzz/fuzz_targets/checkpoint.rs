#![no_main]
//! The checkpoint reader on any bytes, then every tensor loaded and the converter run.

use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::{checkpoint, convert, DType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = checkpoint::read_checkpoint(data) else { return };
    for (_, t) in ck.iter() {
        let _ = t.load();
    }
    let _ = convert::convert(&convert::state_dict(&ck), "[PAD]", &BrivlConfig::default(), DType::Q8);
});
