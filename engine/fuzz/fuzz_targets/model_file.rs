#![no_main]
//! `ModelFile::parse` on any bytes: `Ok` or `Err`, never a panic.

use brivl_engine::model_file::ModelFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ModelFile::parse(data) {
        for t in file.tensors.values() {
            assert_eq!(t.packed.rows * t.packed.cols, t.shape.iter().product::<usize>());
        }
    }
});
