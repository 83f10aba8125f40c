//! Crafted hostile inputs, built here: checkpoints that are bombs (memoised dicts and strings,
//! a stride-0 tensor claiming a TiB), views repeating one storage, and model files with valid
//! hashes but bad configs or weights of the wrong rank. Each must be refused with a message
//! naming the problem, in memory proportional to the file (measured by a counting allocator).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::path::PathBuf;
use std::time::Instant;

use brivl_engine::embedder::Embedder;
use brivl_engine::model_file::{self, ModelFile, RawTensor};
use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::{checkpoint, convert, DType};
use support::{checkpoint_of, peak_while, raw_tensors, torch_archive, Pickle, Tracking};

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The refusal of `read_checkpoint`, the peak memory it took and the time.
fn refusal(bytes: &[u8]) -> (String, usize, f64) {
    let t = Instant::now();
    let (r, peak) = peak_while(|| checkpoint::read_checkpoint(bytes).map(|c| c.len()));
    match r {
        Ok(n) => panic!("read {n} tensors from a hostile checkpoint"),
        Err(e) => (e.to_string(), peak, t.elapsed().as_secs_f64()),
    }
}

fn check_bomb(what: &str, bytes: &[u8], want: &str) {
    let (e, peak, secs) = refusal(bytes);
    eprintln!("{what}: {} byte file refused in {secs:.2} s, peak {:.1} MB: {e}", bytes.len(), peak as f64 / 1e6);
    assert!(e.contains(want), "{what}: want {want:?} in {e}");
    // The file, the pickle's values and names at most 16 times the pickle, and some slack.
    assert!(peak < 40 * bytes.len() + (4 << 20), "{what}: {peak} bytes live at once");
    assert!(secs < 20.0, "{what}: {secs} s");
}

#[test]
fn a_stride_zero_tebibyte_is_refused_without_allocating_it() {
    let bytes = checkpoint_of(&[("w", 0, &[1 << 20, 1 << 20], &[0, 0])], &[1.0]);
    assert!(bytes.len() < 1000, "{}", bytes.len());
    check_bomb("stride 0", &bytes, "has 1099511627776 elements but its storage \"0\" holds only 1 float32");
}

#[test]
fn a_memoised_dict_bomb_is_refused() {
    // The root dict refers 60,000 times to one memoised dict of 60,000 entries, each one memoised
    // tensor: 3.6e9 names from a file of about 1 MB.
    let n = 60_000;
    let mut p = Pickle::new().op(b'}').op(b'(').str("t").tensor("0", 0, &[1], &[1]).put(1);
    p = p.str("d").op(b'}').put(0).op(b'(');
    for i in 0..n {
        p = p.op(0x8c).raw(&[5]).raw(format!("{i:05}").as_bytes()).get(1);
    }
    p = p.op(b'u');
    for i in 1..n {
        p = p.op(0x8c).raw(&[5]).raw(format!("{i:05}").as_bytes()).get(0);
    }
    let bytes = torch_archive(&p.op(b'u').stop(), &[("0", &1f32.to_le_bytes())]);
    check_bomb("dict bomb", &bytes, "a pickle bomb?");
}

#[test]
fn a_memoised_string_bomb_is_refused() {
    // 4,000 keys that are one memoised 1 MiB string, each naming a tensor: 4 GiB of names.
    let mut p = Pickle::new().op(b'}').op(b'(').str(&"k".repeat(1 << 20)).put(0);
    p = p.tensor("0", 0, &[1], &[1]).put(1);
    for _ in 1..4000 {
        p = p.get(0).get(1);
    }
    let bytes = torch_archive(&p.op(b'u').stop(), &[("0", &1f32.to_le_bytes())]);
    check_bomb("string bomb", &bytes, "a pickle bomb?");
}

#[test]
fn views_repeating_one_storage_do_not_multiply_the_conversion() {
    // 40 imgAtt layers whose [1536, 512] projections all view one 3 MB storage: each is a valid
    // view, but reading all of them would take 40 times the file.
    let (d, layers) = (512i64, 40);
    let names: Vec<String> =
        (0..layers).map(|l| format!("imgencoder.learnable.imgAtt.layers.{l}.self_attn.in_proj_weight")).collect();
    let (size, stride) = ([3 * d, d], [d, 1]);
    let tensors: Vec<(&str, i64, &[i64], &[i64])> =
        names.iter().map(|n| (n.as_str(), 0, &size[..], &stride[..])).collect();
    let bytes = checkpoint_of(&tensors, &vec![0.25; (3 * d * d) as usize]);
    let ck = checkpoint::read_checkpoint(&bytes).unwrap();
    let (r, peak) =
        peak_while(|| convert::convert(&ck, "[PAD]", &BrivlConfig::default(), DType::F32).map(|c| c.bytes.len()));
    let e = r.unwrap_err().to_string();
    eprintln!("aliased views: {} byte file refused, peak {:.1} MB: {e}", bytes.len(), peak as f64 / 1e6);
    assert!(e.contains("the checkpoint's tensors repeat their storage"), "{e}");
    assert!(peak < 8 * bytes.len(), "{peak}");
}

// ---------- model files ----------

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn tiny_config() -> BrivlConfig {
    BrivlConfig {
        image_size: 200,
        box_grid: 6,
        pool_grid: 4,
        img_heads: 2,
        text_heads: 2,
        bert_heads: 2,
        max_text_len: 32,
        stage_strides: vec![1, 2, 2, 2, 1, 2, 1],
    }
}

fn vocab() -> String {
    std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap()
}

/// The tiny fixture converted (f32 unless said), and its raw tensors.
fn tiny(quant: DType) -> (Vec<u8>, Vec<RawTensor>) {
    let bytes = std::fs::read(fixture("tiny/brivl-tiny.pth")).unwrap();
    let ck = checkpoint::read_checkpoint(&bytes).unwrap();
    let out = convert::convert(&convert::state_dict(&ck), &vocab(), &tiny_config(), quant).unwrap();
    let raw = raw_tensors(&out.bytes).0;
    (out.bytes, raw)
}

/// Loading on the CPU path: the error, or None.
fn load_error(bytes: &[u8]) -> Option<String> {
    match ModelFile::parse(bytes) {
        Err(e) => Some(e.to_string()),
        Ok(file) => Embedder::load(&file, None).err().map(|e| e.to_string()),
    }
}

#[test]
fn two_conversions_give_the_same_bytes() {
    for quant in [DType::F32, DType::Q8] {
        let (a, _) = tiny(quant);
        let (b, _) = tiny(quant);
        assert!(a == b, "{quant:?}: two conversions of brivl-tiny.pth differ");
    }
}

#[test]
fn bad_config_values_are_refused_before_anything_is_sized_by_them() {
    let (good, raw) = tiny(DType::F32);
    assert_eq!(load_error(&good), None);
    let base = tiny_config();
    let cases: Vec<(BrivlConfig, &str)> = vec![
        (BrivlConfig { box_grid: 100_000, ..base.clone() }, "box_grid 100000 is outside 1..=16"),
        (BrivlConfig { pool_grid: 100_000, ..base.clone() }, "pool_grid 100000 is outside 1..=16"),
        (BrivlConfig { box_grid: 0, ..base.clone() }, "box_grid 0 is outside"),
        (BrivlConfig { img_heads: 0, ..base.clone() }, "img_heads 0 is outside 1..=64"),
        (BrivlConfig { bert_heads: 1 << 40, ..base.clone() }, "bert_heads 1099511627776 is outside"),
        (BrivlConfig { image_size: 1 << 30, ..base.clone() }, "image_size 1073741824 is outside 32..=2048"),
        (BrivlConfig { image_size: 32, ..base.clone() }, "image_size 32 leaves a 1x1 feature map"),
        (BrivlConfig { max_text_len: 1_000_000, ..base.clone() }, "max_text_len 1000000 is outside 2..=512"),
        (BrivlConfig { max_text_len: 200, ..base.clone() }, "does not fit hidden"),
        (BrivlConfig { stage_strides: vec![], ..base.clone() }, "the number of stage_strides 0 is outside"),
        (BrivlConfig { stage_strides: vec![1, 2, 2, 2, 1, 2, 0], ..base.clone() }, "stage stride 0 is not 1 or 2"),
        (BrivlConfig { stage_strides: vec![1, 2, 2, 2, 1, 2], ..base.clone() }, "more stages than the 6 strides"),
        (BrivlConfig { img_heads: 7, ..base.clone() }, "divisible by 7 heads"),
    ];
    for (config, want) in cases {
        let (bytes, _) = model_file::write_raw(raw.clone(), &config.to_json(), &vocab()).unwrap();
        let (e, peak) = peak_while(|| load_error(&bytes));
        let e = e.unwrap_or_else(|| panic!("{config:?} loaded"));
        assert!(e.contains(want), "want {want:?} in {e}");
        assert!(peak < 64 << 20, "{want}: {peak} bytes");
    }
    for json in ["{}", "[]", "{\"image_size\":-1}", "not json"] {
        let (bytes, _) = model_file::write_raw(raw.clone(), json, &vocab()).unwrap();
        let e = load_error(&bytes).unwrap();
        assert!(e.contains("bad model config"), "{json}: {e}");
    }
}

#[test]
fn weights_of_the_wrong_rank_are_refused() {
    let (_, raw) = tiny(DType::F32);
    let with = |name: &str, shape: Vec<usize>| {
        let mut raw = raw.clone();
        let t = raw.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name}"));
        let n: usize = t.shape.iter().product();
        t.bytes.truncate(4 * shape.iter().product::<usize>().min(n));
        t.shape = shape;
        model_file::write_raw(raw, &tiny_config().to_json(), &vocab())
    };
    let n = |name: &str| raw.iter().find(|t| t.name == name).unwrap().shape.iter().product::<usize>();
    for name in [
        "image.stem.weight",
        "image.blocks.0.0.dw.weight",
        "image.fc2.weight",
        "text.embeddings.word.weight",
        "text.embeddings.position_type.weight",
        "text.bert.0.in_proj.weight",
        "image.att.0.ff2.weight",
    ] {
        let (bytes, _) = with(name, vec![n(name)]).unwrap();
        let e = load_error(&bytes).unwrap_or_else(|| panic!("{name} as a vector loaded"));
        assert!(e.contains(&format!("'{name}'")), "{name}: {e}");
        // 0-d: refused by the writer, and by the reader (crafted with a valid hash in model_file's tests).
        let e = with(name, vec![]).unwrap_err().to_string();
        assert!(e.contains(&format!("tensor '{name}' has 0 dimensions")), "{e}");
    }
    // A stem of the right rank but 4 input channels, a non-square kernel.
    let stem = raw.iter().find(|t| t.name == "image.stem.weight").unwrap().shape.clone();
    for shape in [vec![stem[0], 1, stem[2], stem[3] * 3], vec![stem[0], 3, stem[2], 1, stem[3]]] {
        match with("image.stem.weight", shape.clone()) {
            Ok((bytes, _)) => assert!(load_error(&bytes).unwrap().contains("'image.stem.weight' is"), "{shape:?}"),
            Err(e) => assert!(e.to_string().contains("5 dimensions"), "{e}"),
        }
    }
}

#[test]
fn the_identity_covers_config_and_vocabulary() {
    let (good, raw) = tiny(DType::F32);
    let hash = ModelFile::parse(&good).unwrap().content_hash;
    let other_size = BrivlConfig { image_size: 232, ..tiny_config() };
    let (b, h) = model_file::write_raw(raw.clone(), &other_size.to_json(), &vocab()).unwrap();
    assert_ne!(h, hash, "image_size");
    assert_eq!(ModelFile::parse(&b).unwrap().content_hash, h);
    let swapped = vocab().replacen("\n", "\r\n", 200); // same ids for the tokenizer, other bytes
    let (_, h2) = model_file::write_raw(raw.clone(), &tiny_config().to_json(), &swapped).unwrap();
    assert_ne!(h2, hash, "vocabulary");
    // And the same inputs give the same identity.
    assert_eq!(model_file::write_raw(raw, &tiny_config().to_json(), &vocab()).unwrap().1, hash);
}
