#![no_main]
//! `ModelFile::parse` on any bytes: `Ok` or `Err`, never a panic; and the same bytes fed to a
//! `ModelStream` in pieces (sizes from the first byte) give the same verdict and the same hash.

use brivl_engine::model_file::{ModelFile, ModelStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = ModelFile::parse(data);
    if let Ok(file) = &parsed {
        // Every tensor packs (on demand) consistently with its shape.
        for name in file.names() {
            let t = file.get(name).expect("a parsed file's tensors pack");
            assert_eq!(t.packed.rows * t.packed.cols, t.shape.iter().product::<usize>());
        }
    }
    let piece = 1 + *data.first().unwrap_or(&0) as usize * 97;
    let mut stream = ModelStream::new(data.len() as u64);
    let streamed = data.chunks(piece).try_for_each(|p| stream.push(p)).and_then(|()| stream.finish());
    match (&parsed, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a.content_hash, b.content_hash),
        (Err(_), Err(_)) => {}
        _ => panic!("parse and stream disagree: {:?} vs {:?}", parsed.is_ok(), streamed.is_ok()),
    }
});
