#![no_main]
//! The checkpoint reader on any bytes, then every tensor loaded and the converter run; read in
//! slices (as the web app reads a `File`) it must come to the same outcome.

use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::{checkpoint, convert, DType};
use libfuzzer_sys::fuzz_target;

/// The bytes behind `ReadAt`, as a file read in slices.
struct Slices<'a>(&'a [u8]);

impl checkpoint::ReadAt for Slices<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let at = offset as usize;
        buf.copy_from_slice(self.0.get(at..at + buf.len()).ok_or("read past the end")?);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let sliced = checkpoint::read_checkpoint_from(&Slices(data)).map(|c| c.len()).map_err(|e| e.to_string());
    let read = checkpoint::read_checkpoint(data);
    assert_eq!(read.as_ref().map(|c| c.len()).map_err(|e| e.to_string()), sliced);
    let Ok(ck) = read else { return };
    for (_, t) in ck.iter() {
        let _ = t.load();
    }
    let _ = convert::convert(&convert::state_dict(&ck), "[PAD]", &BrivlConfig::default(), DType::Q8);
});
