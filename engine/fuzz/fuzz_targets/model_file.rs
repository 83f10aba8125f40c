#![no_main]
//! `ModelFile::parse` on any bytes: `Ok` or `Err`, never a panic; the same bytes read at offsets
//! (`ModelFile::from_reader`, as the desktop and the web worker read models) give the same
//! verdict, hash and tensors; and a download's header check (`ModelHeader`, pieces sized from the
//! first byte) never accepts a file that parsing refuses for its header.

use brivl_engine::model_file::{ModelFile, ModelHeader};
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
    let read = ModelFile::from_reader(data);
    match (&parsed, &read) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.content_hash, b.content_hash);
            for name in a.names() {
                assert_eq!(a.get(name).unwrap().packed, b.get(name).unwrap().packed, "{name}");
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("parse and read at offsets disagree: {:?} vs {:?}", parsed.is_ok(), read.is_ok()),
    }
    let piece = 1 + *data.first().unwrap_or(&0) as usize * 97;
    let mut header = ModelHeader::new(data.len() as u64);
    let checked = data.chunks(piece).try_fold(None, |_, p| header.push(p));
    if parsed.is_ok() {
        assert_eq!(checked.ok().flatten(), Some(data.len() as u64), "a sound file's header passes");
    }
});
