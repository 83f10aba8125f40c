#![no_main]
//! `ModelFile::parse` on any bytes: `Ok` or `Err`, never a panic.

use brivl_engine::model_file::ModelFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = ModelFile::parse(data) {
        // Every tensor packs (on demand) consistently with its shape.
        for name in file.names() {
            let t = file.get(name).expect("a parsed file's tensors pack");
            assert_eq!(t.packed.rows * t.packed.cols, t.shape.iter().product::<usize>());
        }
    }
});
