//! Rewrites a model file in the current format and layout, keeping its tensors' exact bytes,
//! config and vocabulary (the demo model's PyTorch checkpoint is not in the repo, so it cannot
//! simply be converted again). A tool, run by hand:
//!
//! ```sh
//! BRIVL_UPGRADE=www/models/brivl-demo-q8.safetensors \
//!   cargo test -p brivl-engine --test upgrade_model -- --ignored
//! ```
//!
//! A version 2 file's own hash (tensors only) is checked first, a current one's content hash by
//! the parser (and kept: the layout changes, the identity does not); the new file is written in
//! place through `model_file::write_raw`, the writer `brivl convert` uses. The test that is not
//! ignored checks that the committed demo model is current.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use brivl_engine::model_file::{self, ModelFile, FORMAT_VERSION};
use sha2::{Digest, Sha256};

/// Version 2's hash: name, dtype, shape and bytes of every tensor in name order, nothing else.
fn v2_hash(tensors: &[model_file::RawTensor]) -> String {
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for t in sorted {
        h.update(t.name.as_bytes());
        h.update(t.dtype.name().as_bytes());
        for d in &t.shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(&t.bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[ignore = "a tool: BRIVL_UPGRADE=<model file> rewrites it in the current format and layout"]
fn upgrade_a_model_file() {
    let path = std::env::var("BRIVL_UPGRADE").expect("BRIVL_UPGRADE=<model file>");
    let bytes = std::fs::read(&path).unwrap();
    let (tensors, meta) = support::raw_tensors(&bytes);
    assert_eq!(meta.get("format").map(String::as_str), Some("brivl"));
    assert_eq!(meta.get("q8_group").map(String::as_str), Some("32"));
    let version = meta.get("format_version").cloned().unwrap_or_default();
    let kept = if version == "2" {
        assert_eq!(meta.get("content_hash"), Some(&v2_hash(&tensors)), "the version 2 file is corrupt");
        None
    } else {
        assert_eq!(version, FORMAT_VERSION.to_string(), "only version 2 and current files are rewritten");
        Some(ModelFile::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}")).content_hash)
    };
    let (out, hash) = model_file::write_raw(tensors.clone(), &meta["config"], &meta["vocab"]).unwrap();
    let file = ModelFile::parse(&out).unwrap();
    assert_eq!(file.content_hash, hash);
    if let Some(kept) = kept {
        assert_eq!(hash, kept, "rewriting a current file keeps its identity");
    }
    assert_eq!(support::raw_tensors(&out).0.len(), tensors.len());
    std::fs::write(&path, &out).unwrap();
    eprintln!("{path}: version {version} -> {FORMAT_VERSION}, content hash {hash}");
}

#[test]
fn the_demo_model_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../www/models/brivl-demo-q8.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let file = ModelFile::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Written by the deterministic writer: rewriting its tensors gives the same bytes.
    let (tensors, _) = support::raw_tensors(&bytes);
    let (again, hash) = model_file::write_raw(tensors, &file.config_json, &file.vocab).unwrap();
    assert_eq!(hash, file.content_hash);
    assert!(again == bytes, "the demo model is not in the writer's canonical form");
}
