//! Deterministic mutation test of the parsers that read untrusted bytes: the model file
//! (`ModelFile::parse`, then loading onto the CPU path), the checkpoint reader (then every
//! tensor loaded and the converter run) and `photo::decode` (headers and EXIF). A few thousand
//! seeded mutations each (bit flips, interesting values, truncation, splices, insertions); every
//! one must give `Ok` or `Err`, never a panic, in memory bounded by the input. Runs in seconds.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use brivl_engine::embedder::Embedder;
use brivl_engine::model_file::{self, content_hash, ModelFile, WriteTensor, FORMAT_VERSION};
use brivl_engine::models::brivl::BrivlConfig;
use brivl_engine::photo::{self, PhotoLimits};
use brivl_engine::Q8_GROUP;
use brivl_engine::{checkpoint, convert, DType};
use support::{peak_while, serialize_unchecked, torch_archive, try_raw_tensors, Pickle, Tracking};

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// xorshift64*: the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `base`; positions fall in `focus` (e.g. the header) half the time.
fn mutate(rng: &mut Rng, base: &[u8], focus: usize) -> Vec<u8> {
    const BYTES: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
    const WORDS: [u64; 10] =
        [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x7fff_ffff_ffff_ffff, u64::MAX];
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let span = if rng.below(2) == 0 { focus.min(b.len()) } else { b.len() };
        let at = rng.below(span);
        match rng.below(9) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = BYTES[rng.below(BYTES.len())],
            2 => b[at] = rng.below(256) as u8,
            3 | 4 => {
                let w = WORDS[rng.below(WORDS.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)];
                for (i, &x) in w[..n].iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = x;
                    }
                }
            }
            5 => b.truncate(at),
            6 => {
                // Splice: a chunk of the input copied over another place.
                let from = rng.below(b.len());
                let n = 1 + rng.below(64);
                let chunk: Vec<u8> = b[from..(from + n).min(b.len())].to_vec();
                for (i, x) in chunk.into_iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = x;
                    }
                }
            }
            7 => {
                let from = rng.below(b.len());
                let chunk: Vec<u8> = b[from..(from + 1 + rng.below(16)).min(b.len())].to_vec();
                b.splice(at..at, chunk);
            }
            _ => {
                let n = (1 + rng.below(16)).min(b.len() - at);
                b.drain(at..at + n);
            }
        }
    }
    b
}

thread_local! {
    /// Where the last panic happened, recorded by the hook (also for panics caught inside a
    /// parser, as `photo::decode` does around the image decoders).
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map_or("?".into(), |l| format!("{}:{}", l.file(), l.line()));
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("panicked at {at}: {msg}");
        let _ = PANICKED_AT.try_with(|p| *p.borrow_mut() = Some(format!("{at}: {msg}")));
    }));
}

/// Runs `parse` on `input`: a panic (caught or not) fails the test, with the input written out
/// to reproduce it. Returns whether it parsed, and the peak memory.
fn run(what: &str, i: usize, input: &[u8], parse: &dyn Fn(&[u8]) -> bool) -> (bool, usize) {
    PANICKED_AT.with(|p| p.borrow_mut().take());
    let r = catch_unwind(AssertUnwindSafe(|| peak_while(|| parse(input))));
    let panicked = PANICKED_AT.with(|p| p.borrow_mut().take());
    // Caught or not, in our code or a decoder's: on wasm a panic aborts the worker.
    if r.is_err() || panicked.is_some() {
        let path = std::env::temp_dir().join(format!("brivl-mutant-{}-{i}.bin", what.replace('/', "_")));
        let _ = std::fs::write(&path, input);
        panic!("{what} #{i} panicked at {panicked:?} (input written to {})", path.display());
    }
    r.unwrap_or((false, 0))
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

/// Mutates `base` `rounds` times; every result parsed within `bound(len)` bytes at most.
fn campaign(what: &str, seed: u64, base: &[u8], focus: usize, rounds: usize, parse: &dyn Fn(&[u8]) -> bool) {
    let mut rng = Rng(seed);
    let (mut ok, mut worst) = (0, 0usize);
    assert!(run(what, usize::MAX, base, parse).0, "{what}: the unmutated input must parse");
    for i in 0..rounds {
        let input = mutate(&mut rng, base, focus);
        let (parsed, peak) = run(what, i, &input, parse);
        ok += parsed as usize;
        worst = worst.max(peak);
        if peak >= 64 * input.len() + (32 << 20) {
            let path = std::env::temp_dir().join(format!("brivl-mutant-{}-{i}.bin", what.replace('/', "_")));
            let _ = std::fs::write(&path, &input);
            panic!("{what} #{i}: {peak} bytes live for {} input bytes (written to {})", input.len(), path.display());
        }
    }
    eprintln!("{what}: {rounds} mutants of {} bytes, {ok} parsed, worst peak {:.1} MB", base.len(), worst as f64 / 1e6);
}

// ---------- model files ----------

fn small_model() -> Vec<u8> {
    let t = |name: &str, shape: &[usize], dtype| WriteTensor {
        name: name.into(),
        shape: shape.to_vec(),
        values: (0..shape.iter().product::<usize>()).map(|i| (i as f32 * 0.37).sin()).collect(),
        dtype,
    };
    let tensors = [
        t("a.bias", &[3], DType::F32),
        t("b.weight", &[3, 5], DType::F16),
        t("c.weight", &[2, Q8_GROUP + 3], DType::Q8),
        t("d.weight", &[2, 1, 3, 3], DType::F32),
    ];
    model_file::write(&tensors, &BrivlConfig::default().to_json(), "[PAD]\n[UNK]\nx").unwrap().0
}

fn parse_model(bytes: &[u8]) -> bool {
    let parsed = ModelFile::parse(bytes);
    // The same bytes read at offsets (as the desktop and the web worker read a model): the same
    // verdict, hash and tensors; from memory, and from a file on disk.
    let read = ModelFile::from_reader(bytes);
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("brivl-mutant-{}-{n}.safetensors", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let opened = ModelFile::open(&path);
    for other in [&read, &opened] {
        match (&parsed, other) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.content_hash, b.content_hash);
                for name in a.names() {
                    assert_eq!(a.get(name).unwrap().packed, b.get(name).unwrap().packed, "{name}");
                }
            }
            (Err(_), Err(_)) => {}
            _ => {
                panic!("parse and read at offsets disagree: {:?} vs {:?}", parsed.as_ref().err(), other.as_ref().err())
            }
        }
    }
    drop(opened);
    std::fs::remove_file(&path).ok();
    match parsed {
        Ok(f) => {
            // Everything reachable from a parsed file must be consistent with its shapes.
            for name in f.names() {
                let t = f.get(name).unwrap();
                assert_eq!(t.packed.rows * t.packed.cols, t.shape.iter().product::<usize>());
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

/// The mutant with its content hash recomputed, so the reader's checks past the hash are reached.
fn rehash(bytes: &[u8]) -> Option<Vec<u8>> {
    let (tensors, meta) = try_raw_tensors(bytes)?;
    let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
    let hash = content_hash(
        FORMAT_VERSION,
        Q8_GROUP,
        &get("config"),
        &get("vocab"),
        tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
    );
    let mut meta: Vec<(String, String)> = meta.into_iter().filter(|(k, _)| k != "content_hash").collect();
    meta.sort();
    meta.push(("content_hash".into(), hash));
    Some(serialize_unchecked(&tensors, &meta))
}

#[test]
fn model_file_mutants_never_panic() {
    install_hook();
    let base = small_model();
    let header = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    campaign("model file", 1, &base, header, 3000, &parse_model);
    campaign("model file (rehashed)", 2, &base, header, 3000, &|b| rehash(b).is_some_and(|b| parse_model(&b)));
}

#[test]
fn model_config_mutants_never_panic_on_load() {
    // The tiny model with its config JSON mutated (digits, signs, truncation), loaded on the CPU.
    install_hook();
    let vocab = std::fs::read_to_string(fixture("tokenizer/vocab.txt")).unwrap();
    let ck = std::fs::read(fixture("tiny/brivl-tiny.pth")).unwrap();
    let ck = checkpoint::read_checkpoint(&ck).unwrap();
    let config = BrivlConfig { image_size: 200, img_heads: 2, text_heads: 2, bert_heads: 2, ..Default::default() };
    let out = convert::convert(&convert::state_dict(&ck), &vocab, &config, DType::Q8).unwrap();
    let (tensors, _) = try_raw_tensors(&out.bytes).unwrap();
    let json = config.to_json();
    let mut rng = Rng(3);
    let (mut loaded, rounds) = (0, 150);
    for i in 0..rounds {
        let mutant = mutate(&mut rng, json.as_bytes(), json.len());
        let Ok(mutant) = String::from_utf8(mutant) else { continue };
        let Ok((bytes, _)) = model_file::write_raw(tensors.clone(), &mutant, &vocab) else { continue };
        let (ok, peak) = run("model config", i, &bytes, &|b| {
            let file = ModelFile::parse(b).unwrap();
            Embedder::load(&file, None).is_ok()
        });
        loaded += ok as usize;
        assert!(peak < 256 << 20, "config {mutant}: {peak} bytes");
    }
    eprintln!("model config: {rounds} mutants, {loaded} loaded");
}

// ---------- checkpoints ----------

fn parse_checkpoint(bytes: &[u8]) -> bool {
    let Ok(ck) = checkpoint::read_checkpoint(bytes) else { return false };
    for (_, t) in ck.iter() {
        let _ = t.load();
    }
    let config = BrivlConfig::default();
    let _ = convert::convert(&convert::state_dict(&ck), "[PAD]", &config, DType::Q8);
    true
}

/// The storages of [`small_pickle`].
fn small_storages() -> (Vec<u8>, Vec<u8>) {
    let s0: Vec<u8> = (0..64).flat_map(|i| (i as f32 * 0.1).to_le_bytes()).collect();
    let s1: Vec<u8> = (0..4).flat_map(|i| (1.0 + i as f32).to_le_bytes()).collect();
    (s0, s1)
}

/// A checkpoint of BriVL's key layout (a few tensors), with views, memo and an OrderedDict.
fn small_checkpoint() -> Vec<u8> {
    let (s0, s1) = small_storages();
    torch_archive(&small_pickle(), &[("0", &s0), ("1", &s1)])
}

fn small_pickle() -> Vec<u8> {
    let bb = "imgencoder.backbone";
    let p = Pickle::new()
        .op(b'}')
        .op(b'(')
        .str("learnable")
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .put(0)
        .op(b'(')
        .str(&format!("{bb}.conv_stem.weight"))
        .tensor("0", 0, &[2, 3, 3, 3], &[27, 9, 3, 1])
        .str(&format!("{bb}.bn1.weight"))
        .tensor("1", 0, &[2], &[1])
        .put(1)
        .str(&format!("{bb}.bn1.bias"))
        .tensor("1", 2, &[2], &[1])
        .str(&format!("{bb}.bn1.running_mean"))
        .tensor("1", 1, &[2], &[2])
        .str(&format!("{bb}.bn1.running_var"))
        .get(1)
        .str("imgencoder.learnable.imgFC.fc1.weight")
        .tensor("0", 4, &[3, 4], &[1, 3])
        .op(b'u')
        .str("epoch")
        .op(b'K')
        .raw(&[7])
        .op(b'u')
        .stop();
    p
}

#[test]
fn checkpoint_mutants_never_panic() {
    install_hook();
    for (i, file) in ["checkpoints/nested.pt", "checkpoints/params_proto4.pt"].iter().enumerate() {
        let base = std::fs::read(fixture(file)).unwrap();
        campaign(file, 10 + i as u64, &base, base.len(), 1500, &parse_checkpoint);
    }
    let base = small_checkpoint();
    // The pickle is the first entry: mutations fall in it half the time.
    campaign("crafted checkpoint", 12, &base, 1200, 1500, &parse_checkpoint);
    // The pickle alone, zipped after mutation so that its CRC holds and the unpickler sees it.
    let (s0, s1) = small_storages();
    let pkl = small_pickle();
    campaign("crafted pickle", 13, &pkl, pkl.len(), 3000, &|p| {
        parse_checkpoint(&torch_archive(p, &[("0", &s0), ("1", &s1)]))
    });
}

// ---------- photos ----------

#[test]
fn photo_mutants_never_panic() {
    install_hook();
    let limits = PhotoLimits { max_pixels: 4_000_000, max_alloc: 64 << 20, ..PhotoLimits::default() };
    let files = [
        "orient_6.jpg",
        "progressive.jpg",
        "cmyk.jpg",
        "orient_6.png",
        "grey16.png",
        "orient_3.webp",
        "lossless_alpha.webp",
        "orient_8.tiff",
        "anim.gif",
        "palette.bmp",
    ];
    for (i, name) in files.iter().enumerate() {
        let base = std::fs::read(fixture(&format!("photos/{name}"))).unwrap();
        // Headers and EXIF sit in the first few hundred bytes.
        campaign(name, 20 + i as u64, &base, 512, 600, &|b| photo::decode_with_limits(b, &limits).is_ok());
    }
}
