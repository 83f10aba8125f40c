#![no_main]
//! The index's metadata and its search matrix cache on any bytes: `None` or a value, never a
//! panic or an allocation past the input's size. The first byte splits the input between the
//! two parsers.

use brivl_desktop::search::parse_matrix;
use brivl_desktop::store::model_from_meta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let (hash, dim) = text.split_once('\n').unwrap_or((&text, ""));
        if let Some(m) = model_from_meta(Some(hash), Some(dim)) {
            assert!(m.hash.len() == 64 && (1..=65_536).contains(&m.dim));
            let _ = m.short();
        }
    } else if let Some(index) = parse_matrix(rest, rest.len() as u64, "id/1", 5) {
        assert_eq!(index.parts().2.len(), index.len() * 5);
    }
});
