//! Checkpoint reader tests: hand-built archives and pickles for each error and edge case, the
//! torch-written fixtures of tests/fixtures/checkpoints compared exactly against the JSON that
//! tests/reference/make_checkpoint_fixtures.py wrote beside them, and a corruption loop.
//! No filesystem access (fixtures are `include_bytes!`), so the same tests run in the browser.

use super::*;

/// A synchronous test, natively and in the browser.
macro_rules! ck_test {
    ($name:ident, $body:block) => {
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        fn $name() $body
    };
}

// ---------- building archives and pickles by hand ----------

struct ZipOpts {
    /// Pad so each entry's data starts on a 64-byte boundary, as torch does.
    align: bool,
    zip64: bool,
    method: u16,
}

const PLAIN: ZipOpts = ZipOpts { align: true, zip64: false, method: 0 };

/// A stored zip of `files`, the way torch lays one out.
fn make_zip(files: &[(&str, &[u8])], o: &ZipOpts) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let local = out.len();
        let mut extra = Vec::new();
        if o.align {
            let at = local + 30 + name.len() + 4;
            let pad = (64 - at % 64) % 64;
            extra.extend_from_slice(&0x4246u16.to_le_bytes());
            extra.extend_from_slice(&(pad as u16).to_le_bytes());
            extra.resize(4 + pad, b'Z');
        }
        let crc = zip::crc32(data);
        let (lsize, loff) = if o.zip64 { (0xFFFF_FFFFu32, 0xFFFF_FFFFu32) } else { (data.len() as u32, local as u32) };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0]);
        out.extend_from_slice(&o.method.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&extra);
        out.extend_from_slice(data);

        let mut cextra = Vec::new();
        if o.zip64 {
            cextra.extend_from_slice(&1u16.to_le_bytes());
            cextra.extend_from_slice(&24u16.to_le_bytes());
            cextra.extend_from_slice(&(data.len() as u64).to_le_bytes());
            cextra.extend_from_slice(&(data.len() as u64).to_le_bytes());
            cextra.extend_from_slice(&(local as u64).to_le_bytes());
        }
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
        central.extend_from_slice(&o.method.to_le_bytes());
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&lsize.to_le_bytes());
        central.extend_from_slice(&lsize.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&(cextra.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&[0; 4]); // external attributes
        central.extend_from_slice(&loff.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&cextra);
    }
    let cd_offset = out.len();
    out.extend_from_slice(&central);
    let n = files.len();
    if o.zip64 {
        let rec = out.len();
        out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&(central.len() as u64).to_le_bytes());
        out.extend_from_slice(&(cd_offset as u64).to_le_bytes());
        out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(rec as u64).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let (cnt, size, off) = if o.zip64 {
        (0xFFFFu16, 0xFFFF_FFFFu32, 0xFFFF_FFFFu32)
    } else {
        (n as u16, central.len() as u32, cd_offset as u32)
    };
    out.extend_from_slice(&cnt.to_le_bytes());
    out.extend_from_slice(&cnt.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Pickle bytes, written opcode by opcode (protocol 2, as torch writes them).
struct P(Vec<u8>);

impl P {
    fn new() -> P {
        P(vec![0x80, 2])
    }
    fn op(mut self, b: u8) -> P {
        self.0.push(b);
        self
    }
    fn raw(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    fn s(self, s: &str) -> P {
        self.op(b'X').raw(&(s.len() as u32).to_le_bytes()).raw(s.as_bytes())
    }
    fn int(self, i: i32) -> P {
        self.op(b'J').raw(&i.to_le_bytes())
    }
    fn global(self, module: &str, name: &str) -> P {
        self.op(b'c').raw(format!("{module}\n{name}\n").as_bytes())
    }
    fn ints(mut self, v: &[i32]) -> P {
        self = self.op(b'(');
        for &i in v {
            self = self.int(i);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(storage(class, key), offset, size, stride, False, OrderedDict())`.
    /// `class` is a name in `torch`, or a dotted path (`torch.cuda.FloatStorage`).
    fn tensor(self, class: &str, key: &str, offset: i32, size: &[i32], stride: &[i32]) -> P {
        let (module, name) = class.rsplit_once('.').unwrap_or(("torch", class));
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .s("storage")
            .global(module, name)
            .s(key)
            .s("cpu")
            .int(0)
            .op(b't')
            .op(b'Q')
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    fn stop(self) -> Vec<u8> {
        self.op(b'.').0
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An archive named `a` holding `pkl` and the given storages.
fn archive(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages.iter().map(|(k, _)| format!("a/data/{k}")).collect();
    let mut files: Vec<(&str, &[u8])> = vec![("a/data.pkl", pkl)];
    files.extend(names.iter().zip(storages).map(|(n, (_, d))| (n.as_str(), *d)));
    files.push(("a/version", b"3\n"));
    make_zip(&files, &PLAIN)
}

/// `{'w': tensor}` over storage "0".
fn one_tensor(class: &str, offset: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
    P::new().op(b'}').op(b'(').s("w").tensor(class, "0", offset, size, stride).op(b'u').stop()
}

/// `bytes` copied into 8-aligned memory.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

/// A file read in slices, as the browser reads a `File`: counts what it is asked for and refuses
/// reads past its end (the reader must never ask for them).
struct Slices {
    bytes: Vec<u8>,
    largest: std::cell::Cell<usize>,
    total: std::cell::Cell<u64>,
}

impl Slices {
    fn new(bytes: &[u8]) -> Self {
        Slices { bytes: bytes.to_vec(), largest: 0.into(), total: 0.into() }
    }
}

impl ReadAt for Slices {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let end = offset as usize + buf.len();
        assert!(end <= self.bytes.len(), "read past the end: {offset} + {}", buf.len());
        buf.copy_from_slice(&self.bytes[offset as usize..end]);
        self.largest.set(self.largest.get().max(buf.len()));
        self.total.set(self.total.get() + buf.len() as u64);
        Ok(())
    }
}

/// The error, the same whether the bytes are in memory or read in slices.
fn err_of(bytes: &[u8]) -> String {
    let from_slices = read_checkpoint_from(&Slices::new(bytes)).map(|c| c.len()).map_err(|e| e.to_string());
    match read_checkpoint(bytes) {
        Ok(ck) => panic!("expected an error, got {} tensors", ck.len()),
        Err(e) => {
            assert_eq!(from_slices, Err(e.to_string()), "read in slices");
            e.to_string()
        }
    }
}

// ---------- hand-built cases ----------

ck_test!(reads_a_hand_built_checkpoint_without_copying, {
    let vals = [1.0f32, -2.5, 3.25, 4.0, 5.0, 6.0];
    let bytes = archive(&one_tensor("FloatStorage", 0, &[2, 3], &[3, 1]), &[("0", &f32_bytes(&vals))]);
    let words = aligned(&bytes);
    let ck = read_checkpoint(&bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()]).unwrap();
    let w = ck.tensor("w").unwrap();
    assert_eq!((w.shape(), w.dtype(), w.is_contiguous()), (&[2, 3][..], StoredDType::F32, true));
    let data = w.to_f32().unwrap();
    assert!(matches!(data, Cow::Borrowed(_)), "aligned contiguous f32 should be borrowed from the input");
    assert_eq!(&*data, &vals);
});

ck_test!(unaligned_storage_is_copied, {
    let vals = [1.0f32, 2.0, 3.0];
    let pkl = one_tensor("FloatStorage", 0, &[3], &[1]);
    let bytes = make_zip(&[("a/data.pkl", &pkl), ("a/data/0", &f32_bytes(&vals))], &ZipOpts { align: false, ..PLAIN });
    // Shift by one byte so the storage cannot be 4-aligned whatever the allocator gives.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    let ck = read_checkpoint(&shifted[1..]).unwrap();
    assert_eq!(&*ck.tensor("w").unwrap().to_f32().unwrap(), &vals);
});

ck_test!(zip64_archives_read, {
    let vals = [7.0f32, 8.0];
    let pkl = one_tensor("FloatStorage", 0, &[2], &[1]);
    let bytes = make_zip(&[("a/data.pkl", &pkl), ("a/data/0", &f32_bytes(&vals))], &ZipOpts { zip64: true, ..PLAIN });
    assert_eq!(&*read_checkpoint(&bytes).unwrap().tensor("w").unwrap().to_f32().unwrap(), &vals);
});

ck_test!(big_endian_byteorder_is_honoured, {
    let be: Vec<u8> = [1.5f32, -3.0].iter().flat_map(|x| x.to_be_bytes()).collect();
    let pkl = one_tensor("FloatStorage", 0, &[2], &[1]);
    let bytes = make_zip(&[("a/data.pkl", &pkl), ("a/byteorder", b"big"), ("a/data/0", &be)], &PLAIN);
    assert_eq!(&*read_checkpoint(&bytes).unwrap().tensor("w").unwrap().to_f32().unwrap(), &[1.5, -3.0]);
});

ck_test!(strided_views_gather, {
    // A [2,3] window at offset 1 of a 4x4 storage, rows 4 apart, then its transpose.
    let vals: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let store = f32_bytes(&vals);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("win")
        .tensor("FloatStorage", "0", 1, &[2, 3], &[4, 1])
        .s("tr")
        .tensor("FloatStorage", "0", 1, &[3, 2], &[1, 4])
        .s("bcast") // size-1 dim with a huge stride, and a zero stride (expand)
        .tensor("FloatStorage", "0", 5, &[1, 3], &[i32::MAX, 0])
        .op(b'u')
        .stop();
    let bytes = archive(&pkl, &[("0", &store)]);
    let ck = read_checkpoint(&bytes).unwrap();
    assert_eq!(&*ck.tensor("win").unwrap().to_f32().unwrap(), &[1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
    assert_eq!(&*ck.tensor("tr").unwrap().to_f32().unwrap(), &[1.0, 5.0, 2.0, 6.0, 3.0, 7.0]);
    assert_eq!(&*ck.tensor("bcast").unwrap().to_f32().unwrap(), &[5.0, 5.0, 5.0]);
    assert!(!ck.tensor("tr").unwrap().is_contiguous());
    assert_eq!(ck.tensor("win").unwrap().storage_key(), ck.tensor("tr").unwrap().storage_key());
});

ck_test!(memo_shares_containers_like_python, {
    // d = {}; memo[0] = d; {'x': d, 'y': d}; d['w'] = t  -> both see d's items.
    let store = f32_bytes(&[9.0]);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("x")
        .op(b'}')
        .op(b'q')
        .raw(&[0])
        .s("w")
        .tensor("FloatStorage", "0", 0, &[1], &[1])
        .op(b's')
        .s("y")
        .op(b'h')
        .raw(&[0])
        .op(b'u')
        .stop();
    let ck = read_checkpoint(&archive(&pkl, &[("0", &store)])).unwrap().names().map(String::from).collect::<Vec<_>>();
    assert_eq!(ck, ["x.w", "y.w"]);
});

ck_test!(repeated_keys_replace_in_place, {
    let store = f32_bytes(&[1.0, 2.0]);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("a")
        .tensor("FloatStorage", "0", 0, &[1], &[1])
        .s("b")
        .tensor("FloatStorage", "0", 0, &[1], &[1])
        .s("a")
        .tensor("FloatStorage", "0", 1, &[1], &[1])
        .op(b'u')
        .stop();
    let bytes = archive(&pkl, &[("0", &store)]);
    let ck = read_checkpoint(&bytes).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(&*ck.tensor("a").unwrap().to_f32().unwrap(), &[2.0]);
});

ck_test!(skipped_tensors_are_not_resolved, {
    // "skip" points at a storage that does not exist; skipping it must not fail.
    let store = f32_bytes(&[1.0]);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("keep")
        .tensor("FloatStorage", "0", 0, &[1], &[1])
        .s("skip_mom")
        .tensor("FloatStorage", "nope", 0, &[1], &[1])
        .op(b'u')
        .stop();
    let bytes = archive(&pkl, &[("0", &store)]);
    assert!(err_of(&bytes).contains("\"nope\""));
    let ck = read_checkpoint_with(&bytes, |n| !n.ends_with("_mom")).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["keep"]);
});

ck_test!(errors_name_the_problem, {
    let four = f32_bytes(&[0.0; 4]);
    // Not a zip, empty, truncated zip.
    assert!(err_of(b"hello world, this is text").contains("not a zip"));
    assert!(err_of(b"").contains("not a zip"));
    let good = archive(&one_tensor("FloatStorage", 0, &[4], &[1]), &[("0", &four)]);
    assert!(err_of(&good[..good.len() - 30]).contains("truncated"));
    // Legacy format: the pickled magic number first.
    let legacy = [0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
    assert_eq!(err_of(&legacy), "legacy PyTorch format: re-save with torch.save(obj, path) from torch >= 1.6");
    // No data.pkl.
    let bytes = make_zip(&[("a/version", b"3\n")], &PLAIN);
    assert!(matches!(read_checkpoint(&bytes), Err(CheckpointError::MissingDataPkl)));
    // Compressed entries.
    let pkl = one_tensor("FloatStorage", 0, &[4], &[1]);
    let bytes = make_zip(&[("a/data.pkl", &pkl)], &ZipOpts { method: 8, ..PLAIN });
    assert!(err_of(&bytes).contains("compressed (method 8)"));
    // Unsupported opcode: the text-protocol INT.
    let pkl = P::new().raw(b"I42\n").stop();
    let e = err_of(&archive(&pkl, &[]));
    assert!(e.contains("opcode INT (0x49) at byte 2"), "{e}");
    let e = err_of(&archive(&P::new().op(0xF0).stop(), &[]));
    assert!(e.contains("0xf0"), "{e}");
    // Unsupported global, called.
    let pkl = P::new().global("os", "system").s("echo").op(0x85).op(b'R').stop();
    assert!(err_of(&archive(&pkl, &[])).contains("unsupported global os.system"));
    // Storage key missing.
    let e = err_of(&archive(&one_tensor("FloatStorage", 0, &[4], &[1]), &[("1", &four)]));
    assert!(e.contains("tensor \"w\": its storage \"0\" is missing"), "{e}");
    // Size, stride, offset out of the storage's bounds.
    for (off, size, stride) in
        [(0, vec![5], vec![1]), (1, vec![4], vec![1]), (0, vec![2, 2], vec![1, 3]), (9, vec![0], vec![1])]
    {
        let e = err_of(&archive(&one_tensor("FloatStorage", off, &size, &stride), &[("0", &four)]));
        assert!(e.contains("tensor \"w\"") && e.contains("storage"), "{e}");
    }
    // Element count overflowing usize.
    let e =
        err_of(&archive(&one_tensor("FloatStorage", 0, &[i32::MAX, i32::MAX, i32::MAX], &[0, 0, 0]), &[("0", &four)]));
    assert!(e.contains("too many elements"), "{e}");
    // Negative sizes.
    let e = err_of(&archive(&one_tensor("FloatStorage", 0, &[-1], &[1]), &[("0", &four)]));
    assert!(e.contains("negative"), "{e}");
    // Unknown storage class.
    let e = err_of(&archive(&one_tensor("ComplexFloatStorage", 0, &[1], &[1]), &[("0", &four)]));
    assert!(e.contains("torch.ComplexFloatStorage"), "{e}");
    // Top-level tensor-free object.
    let e = err_of(&archive(&P::new().int(3).stop(), &[]));
    assert!(e.contains("not a dict"), "{e}");
    // Missing STOP.
    let mut pkl = P::new().op(b'}').stop();
    pkl.pop();
    assert!(err_of(&archive(&pkl, &[])).contains("STOP"));
    // Stack underflow, MARK misuse, bad memo.
    for pkl in [
        P::new().op(b'R').stop(),
        P::new().op(b't').stop(),
        P::new().op(b'h').raw(&[7]).stop(),
        P::new().op(b'(').op(b'.').0,
    ] {
        let e = err_of(&archive(&pkl, &[]));
        assert!(e.contains("malformed data.pkl"), "{e}");
    }
    // Asking for the wrong type, or a name that is not there.
    let bytes = archive(&one_tensor("LongStorage", 0, &[2], &[1]), &[("0", &[0u8; 16])]);
    let ck = read_checkpoint(&bytes).unwrap();
    assert_eq!(ck.tensor("w").unwrap().to_f32().unwrap_err().to_string(), "tensor \"w\" is int64, not a float type");
    assert!(ck.tensor("v").unwrap_err().to_string().contains("\"v\""));
});

ck_test!(deep_nesting_does_not_overflow_the_stack, {
    // A million nested one-tuples, then a deep dict chain: both must fail cleanly (or read), not crash.
    let mut p = P::new().op(b'N');
    for _ in 0..1_000_000 {
        p = p.op(0x85);
    }
    let e = err_of(&archive(&p.stop(), &[]));
    assert!(e.contains("too deeply"), "{e}");
    let mut p = P::new();
    for _ in 0..200_000 {
        p = p.op(b'}').s("k");
    }
    p = p.op(b'N');
    for _ in 0..200_000 {
        p = p.op(b's');
    }
    let e = err_of(&archive(&p.stop(), &[]));
    assert!(e.contains("too deeply"), "{e}");
    // A list that contains itself.
    let p = P::new().op(b']').op(b'q').raw(&[0]).op(b'h').raw(&[0]).op(b'a').stop();
    assert!(err_of(&archive(&p, &[])).contains("refer to themselves"));
});

ck_test!(subtree_strips_the_prefix, {
    let store = f32_bytes(&[1.0, 2.0]);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("learnable")
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b'(')
        .s("enc.w")
        .tensor("FloatStorage", "0", 0, &[1], &[1])
        .s("enc_mom.w")
        .tensor("FloatStorage", "0", 1, &[1], &[1])
        .op(b'u')
        .s("learnable2.x")
        .tensor("FloatStorage", "0", 1, &[1], &[1])
        .s("epoch")
        .int(3)
        .op(b'u')
        .stop();
    let bytes = archive(&pkl, &[("0", &store)]);
    let ck = read_checkpoint(&bytes).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["learnable.enc.w", "learnable.enc_mom.w", "learnable2.x"]);
    let sub = ck.subtree("learnable");
    assert_eq!(sub.names().collect::<Vec<_>>(), ["enc.w", "enc_mom.w"]);
    assert_eq!(sub.tensor("enc.w").unwrap().name(), "learnable.enc.w");
    assert_eq!(ck.tensors_under("learnable").count(), 2);
});

// ---------- torch-written fixtures ----------

const NESTED: &[u8] = include_bytes!("../../../tests/fixtures/checkpoints/nested.pt");
const PARAMS: &[u8] = include_bytes!("../../../tests/fixtures/checkpoints/params_proto4.pt");
const LEGACY: &[u8] = include_bytes!("../../../tests/fixtures/checkpoints/legacy.pt");
const EXPECTED: &str = include_str!("../../../tests/fixtures/checkpoints/expected.json");

/// Just enough JSON for expected.json. Numbers keep their text so int64s stay exact.
enum Json {
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let (v, rest) = Self::value(text.trim_start());
        assert!(rest.trim().is_empty(), "trailing JSON");
        v
    }
    fn value(s: &str) -> (Json, &str) {
        let s = s.trim_start();
        match s.as_bytes()[0] {
            b'[' => {
                let mut items = Vec::new();
                let mut s = s[1..].trim_start();
                if let Some(r) = s.strip_prefix(']') {
                    return (Json::Arr(items), r);
                }
                loop {
                    let (v, r) = Self::value(s);
                    items.push(v);
                    let r = r.trim_start();
                    match r.as_bytes()[0] {
                        b',' => s = &r[1..],
                        b']' => return (Json::Arr(items), &r[1..]),
                        c => panic!("bad JSON array at {:?}", c as char),
                    }
                }
            }
            b'{' => {
                let mut items = Vec::new();
                let mut s = s[1..].trim_start();
                if let Some(r) = s.strip_prefix('}') {
                    return (Json::Obj(items), r);
                }
                loop {
                    let (Json::Str(k), r) = Self::value(s) else { panic!("JSON key is not a string") };
                    let r = r.trim_start().strip_prefix(':').expect("JSON ':'");
                    let (v, r) = Self::value(r);
                    items.push((k, v));
                    let r = r.trim_start();
                    match r.as_bytes()[0] {
                        b',' => s = r[1..].trim_start(),
                        b'}' => return (Json::Obj(items), &r[1..]),
                        c => panic!("bad JSON object at {:?}", c as char),
                    }
                }
            }
            b'"' => {
                // Our names have no escapes.
                let end = s[1..].find('"').expect("JSON string end") + 1;
                assert!(!s[1..end].contains('\\'));
                (Json::Str(s[1..end].to_string()), &s[end + 1..])
            }
            _ => {
                let end = s.find([',', ']', '}', ' ', '\n']).unwrap_or(s.len());
                (Json::Num(s[..end].to_string()), &s[end..])
            }
        }
    }
    fn get(&self, key: &str) -> &Json {
        let Json::Obj(items) = self else { panic!("not a JSON object") };
        &items.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key:?} in JSON")).1
    }
    fn arr(&self) -> &[Json] {
        let Json::Arr(a) = self else { panic!("not a JSON array") };
        a
    }
    fn str(&self) -> &str {
        let Json::Str(s) = self else { panic!("not a JSON string") };
        s
    }
    fn num(&self) -> &str {
        let Json::Num(s) = self else { panic!("not a JSON number") };
        s
    }
    /// Python writes float reprs (shortest round-trip f64), Infinity and NaN.
    fn f32(&self) -> f32 {
        match self.num() {
            "Infinity" => f32::INFINITY,
            "-Infinity" => f32::NEG_INFINITY,
            "NaN" => f32::NAN,
            n => n.parse::<f64>().unwrap_or_else(|_| panic!("bad JSON float {n}")) as f32,
        }
    }
}

/// Every tensor, in order, with shape, dtype, exact values and storage sharing as torch saw them.
fn check_fixture(file: &str, bytes: &[u8]) {
    let expected = Json::parse(EXPECTED);
    let want = expected.get(file).arr();
    let ck = read_checkpoint(bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    let slices = Slices::new(bytes);
    let sliced = read_checkpoint_from(&slices).unwrap_or_else(|e| panic!("{file} in slices: {e}"));
    let names: Vec<&str> = want.iter().map(|t| t.get("name").str()).collect();
    assert_eq!(sliced.names().collect::<Vec<_>>(), names, "{file} in slices: names and order");
    assert_eq!(ck.names().collect::<Vec<_>>(), names, "{file}: names and order");
    let mut keys: Vec<(usize, String)> = Vec::new();
    for t in want {
        let name = t.get("name").str();
        let view = ck.tensor(name).unwrap();
        let shape: Vec<usize> = t.get("shape").arr().iter().map(|d| d.num().parse().unwrap()).collect();
        assert_eq!(view.shape(), &shape[..], "{name}: shape");
        assert_eq!(view.dtype().name(), t.get("dtype").str(), "{name}: dtype");
        let vals = t.get("values").arr();
        let data = view.load().unwrap();
        assert_eq!(data.shape, shape);
        assert_eq!(sliced.tensor(name).unwrap().load().unwrap(), data, "{name}: read in slices");
        match &data.values {
            Values::F32(got) => {
                assert!(view.dtype().is_float(), "{name}: floats from an integer tensor");
                let want: Vec<u32> = vals.iter().map(|v| v.f32().to_bits()).collect();
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{name}: values (as f32 bits)");
            }
            Values::I64(got) => {
                assert!(!view.dtype().is_float(), "{name}: ints from a float tensor");
                let want: Vec<i64> = vals.iter().map(|v| v.num().parse().unwrap()).collect();
                assert_eq!(got, &want, "{name}: values");
            }
        }
        let group: usize = t.get("storage").num().parse().unwrap();
        keys.push((group, view.storage_key().to_string()));
    }
    for (g1, k1) in &keys {
        for (g2, k2) in &keys {
            assert_eq!(g1 == g2, k1 == k2, "{file}: storage sharing of groups {g1} and {g2}");
        }
    }
}

ck_test!(torch_nested_state_dict_matches, {
    check_fixture("nested.pt", NESTED);
    let ck = read_checkpoint(NESTED).unwrap();
    let t = ck.tensor("learnable.enc.transposed").unwrap();
    assert!(!t.is_contiguous(), "the transposed fixture should exercise the gather path");
    assert_eq!(t.strides(), &[1, 5]);
    let b = ck.tensor("learnable.shared.b").unwrap();
    assert_eq!((b.storage_offset(), b.strides()), (6, &[5, 1][..]));
    assert_eq!(ck.tensor("learnable.position_ids").unwrap().to_i64().unwrap(), [0, 1, 2, 3, 4]);
    assert!(ck.tensor("learnable.position_ids").unwrap().to_f32().is_err(), "int64 must stay distinguishable");
    // Zero-copy needs a 4-aligned input (include_bytes! promises none; allocations give it).
    let words = aligned(NESTED);
    let ck_aligned = read_checkpoint(&bytemuck::cast_slice::<u64, u8>(&words)[..NESTED.len()]).unwrap();
    assert!(matches!(ck_aligned.tensor("learnable.0.weight").unwrap().to_f32().unwrap(), Cow::Borrowed(_)));
    // The caller's view: the state dict without its momentum twins.
    let ck = read_checkpoint_with(NESTED, |n| !n.contains("_mom.")).unwrap();
    let sub = ck.subtree("learnable");
    assert!(sub.get("enc_mom.weight").is_none() && sub.get("0.weight").is_some());
    assert_eq!(sub.len() + 1, read_checkpoint(NESTED).unwrap().subtree("learnable").len());
});

ck_test!(torch_parameters_protocol4_match, {
    check_fixture("params_proto4.pt", PARAMS);
});

ck_test!(torch_legacy_format_is_named, {
    assert_eq!(err_of(LEGACY), "legacy PyTorch format: re-save with torch.save(obj, path) from torch >= 1.6");
});

/// Reads and converts everything that parses; only panics matter, and the same outcome from
/// memory and from slices.
fn exercise(bytes: &[u8]) -> bool {
    let load_all = |ck: Result<Checkpoint<'_>, CheckpointError>| {
        ck.map(|ck| ck.iter().map(|(n, t)| (n.to_string(), t.load().map_err(|e| e.to_string()))).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    };
    let slices = Slices::new(bytes);
    let (mem, sliced) = (load_all(read_checkpoint(bytes)), load_all(read_checkpoint_from(&slices)));
    assert_eq!(format!("{mem:?}"), format!("{sliced:?}"), "memory and slices differ");
    mem.is_ok()
}

ck_test!(corrupted_and_truncated_inputs_never_panic, {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for file in [NESTED, PARAMS, LEGACY] {
        for len in 0..file.len() {
            exercise(&file[..len]);
        }
        for _ in 0..1000 {
            let mut b = file.to_vec();
            for _ in 0..1 + rand(4) {
                let i = rand(b.len());
                b[i] = rand(256) as u8;
            }
            exercise(&b);
        }
    }
    // The pickle itself, re-zipped with a valid CRC so the corruption reaches the unpickler.
    for file in [NESTED, PARAMS] {
        let entries = zip::entries(Input::Bytes(file)).unwrap();
        let data = |e: &zip::Entry| &file[e.at as usize..(e.at + e.len) as usize];
        let pkl_at = entries.iter().position(|e| e.name.ends_with("/data.pkl")).unwrap();
        let rezip = |pkl: &[u8]| {
            let files: Vec<(&str, &[u8])> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.name.as_str(), if i == pkl_at { pkl } else { data(e) }))
                .collect();
            make_zip(&files, &PLAIN)
        };
        assert!(exercise(&rezip(data(&entries[pkl_at]))), "re-zipping must keep the fixture readable");
        let pkl = data(&entries[pkl_at]);
        for len in 0..pkl.len() {
            assert!(!exercise(&rezip(&pkl[..len])), "a pickle cut at {len} read as complete");
        }
        for round in 0..3000 {
            let mut p = pkl.to_vec();
            for _ in 0..1 + rand(3) {
                let i = rand(p.len());
                match round % 3 {
                    0 => p[i] = rand(256) as u8,
                    1 => p[i] ^= 1 << rand(8),
                    _ => {
                        p.remove(i);
                    }
                }
            }
            exercise(&rezip(&p));
        }
    }
});

ck_test!(other_opcodes_torch_may_emit, {
    // LONG1 (offset 1, and -2 as a plain value), BININT2 sizes, metadata of floats, bytes, lists,
    // LONG_BINPUT/LONG_BINGET, DUP/POP, and a list of tensors (flattened as name.index).
    let store = f32_bytes(&[0.0, 1.0, 2.0, 3.0]);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("meta")
        .op(b']')
        .op(b'G')
        .raw(&1.5f64.to_be_bytes())
        .op(b'a')
        .op(b'(')
        .op(b'C')
        .raw(&[2, 0xAB, 0xCD])
        .op(b'B')
        .raw(&1u32.to_le_bytes())
        .raw(b"x")
        .op(0x8a)
        .raw(&[1, 0xFE])
        .op(b'N')
        .op(b'2')
        .op(b'0')
        .op(b'e')
        .s("list")
        .op(b']')
        .op(b'r')
        .raw(&300u32.to_le_bytes())
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b'(')
        .op(b'(')
        .s("storage")
        .global("torch", "FloatStorage")
        .s("0")
        .s("cpu")
        .op(b'K')
        .raw(&[4])
        .op(b't')
        .op(b'Q')
        .op(0x8a)
        .raw(&[1, 1])
        .op(b'M')
        .raw(&3u16.to_le_bytes())
        .op(0x85)
        .op(b'K')
        .raw(&[1])
        .op(0x85)
        .op(0x88)
        .op(b'N')
        .op(b't')
        .op(b'R')
        .op(b'a')
        .op(b'u')
        .s("alias")
        .op(b'j')
        .raw(&300u32.to_le_bytes())
        .op(b's')
        .stop();
    let bytes = archive(&pkl, &[("0", &store)]);
    let ck = read_checkpoint(&bytes).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["list.0", "alias.0"]);
    assert_eq!(&*ck.tensor("alias.0").unwrap().to_f32().unwrap(), &[1.0, 2.0, 3.0]);
});

ck_test!(long1_is_little_endian_twos_complement, {
    let cases: [(&[u8], i64); 6] = [
        (&[], 0),
        (&[0xFE], -2),
        (&[0xFF, 0x00], 255),
        (&[0x00, 0x80], -32768),
        (&[0, 0, 0, 0, 0, 0, 0, 0x80], i64::MIN),
        (&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], i64::MAX),
    ];
    for (b, want) in cases {
        let pkl = P::new().op(0x8a).raw(&[b.len() as u8]).raw(b).stop();
        match pickle::unpickle(&pkl) {
            Ok(pickle::Value::Int(v)) => assert_eq!(v, want, "LONG1 {b:?}"),
            _ => panic!("LONG1 {b:?} did not give an int"),
        }
    }
    let nine = P::new().op(0x8a).raw(&[9]).raw(&[0; 9]).stop();
    assert!(pickle::unpickle(&nine).is_err());
});

ck_test!(cuda_storages_and_rebuild_v3_read, {
    // GPU-saved checkpoints name torch.cuda.FloatStorage; _rebuild_tensor_v3 types an untyped storage.
    let pkl = one_tensor("torch.cuda.FloatStorage", 0, &[2], &[1]);
    let bytes = archive(&pkl, &[("0", &f32_bytes(&[1.0, 2.0]))]);
    assert_eq!(&*read_checkpoint(&bytes).unwrap().tensor("w").unwrap().to_f32().unwrap(), &[1.0, 2.0]);
    let halves: Vec<u8> =
        [half::f16::from_f32(0.5), half::f16::from_f32(-4.0)].iter().flat_map(|h| h.to_le_bytes()).collect();
    let pkl = P::new()
        .op(b'}')
        .s("h")
        .global("torch._utils", "_rebuild_tensor_v3")
        .op(b'(')
        .op(b'(')
        .s("storage")
        .global("torch", "UntypedStorage")
        .s("0")
        .s("cpu")
        .int(4)
        .op(b't')
        .op(b'Q')
        .int(0)
        .ints(&[2])
        .ints(&[1])
        .op(0x89)
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .global("torch", "float16")
        .op(b't')
        .op(b'R')
        .op(b's')
        .stop();
    let bytes = archive(&pkl, &[("0", &halves)]);
    let ck = read_checkpoint(&bytes).unwrap();
    let h = ck.tensor("h").unwrap();
    assert_eq!((h.dtype(), &*h.to_f32().unwrap()), (StoredDType::F16, &[0.5f32, -4.0][..]));
});

// ---------- hostile checkpoints: refused quickly, in memory proportional to the file ----------

/// BINPUT / BINGET.
fn put(p: P, i: u8) -> P {
    p.op(b'q').raw(&[i])
}
fn get(p: P, i: u8) -> P {
    p.op(b'h').raw(&[i])
}
/// SHORT_BINUNICODE.
fn short(p: P, s: &str) -> P {
    p.op(0x8c).raw(&[s.len() as u8]).raw(s.as_bytes())
}

ck_test!(stride_zero_views_are_bounded_by_their_storage, {
    // 1 TiB of elements from one float: refused, not gathered.
    let bytes = archive(&one_tensor("FloatStorage", 0, &[1 << 20, 1 << 20], &[0, 0]), &[("0", &f32_bytes(&[1.0]))]);
    let e = err_of(&bytes);
    if cfg!(target_pointer_width = "64") {
        assert!(e.contains("tensor \"w\": size [1048576, 1048576] has 1099511627776 elements but its storage"), "{e}");
        assert!(e.contains("holds only 1 float32 elements"), "{e}");
    } else {
        // 2^40 elements cannot even be counted in a 32-bit usize (wasm32).
        assert!(e.contains("tensor \"w\": size [1048576, 1048576] has too many elements"), "{e}");
    }
    // A broadcast no larger than its storage still reads; one larger is refused.
    let bytes = archive(&one_tensor("FloatStorage", 0, &[2, 2], &[0, 1]), &[("0", &f32_bytes(&[1.0, 2.0, 3.0, 4.0]))]);
    assert_eq!(&*read_checkpoint(&bytes).unwrap().tensor("w").unwrap().to_f32().unwrap(), &[1.0, 2.0, 1.0, 2.0]);
    let bytes = archive(&one_tensor("FloatStorage", 0, &[2, 2], &[0, 1]), &[("0", &f32_bytes(&[1.0, 2.0]))]);
    assert!(err_of(&bytes).contains("has 4 elements but its storage \"0\" holds only 2 float32 elements"));
});

/// `{k0: d, k1: d, ...}` where `d` is one memoised dict of `inner` entries whose values are one
/// memoised tensor: `outer * inner` names from a pickle of `5 * (outer + inner)` bytes or so.
fn dict_bomb(outer: usize, inner: usize) -> Vec<u8> {
    let mut p = P::new().op(b'}').op(b'(').s("t");
    p = put(p.tensor("FloatStorage", "0", 0, &[1], &[1]), 1);
    p = p.s("d").op(b'}');
    p = put(p, 0).op(b'(');
    for i in 0..inner {
        p = get(short(p, &i.to_string()), 1);
    }
    p = p.op(b'u');
    for i in 1..outer {
        p = get(short(p, &i.to_string()), 0);
    }
    p.op(b'u').stop()
}

ck_test!(a_memoised_dict_bomb_is_refused_quickly, {
    let pkl = dict_bomb(60_000, 60_000);
    let bytes = archive(&pkl, &[("0", &f32_bytes(&[1.0]))]);
    assert!(bytes.len() < 3 << 19, "{} bytes", bytes.len());
    let e = err_of(&bytes);
    assert!(e.contains("a pickle bomb?") && e.contains("tensor names would take more than"), "{e}");
    // The same shape, small, is an honest (if odd) checkpoint.
    let small = archive(&dict_bomb(3, 2), &[("0", &f32_bytes(&[1.0]))]);
    assert_eq!(read_checkpoint(&small).unwrap().len(), 1 + 3 * 2);
});

ck_test!(a_memoised_string_bomb_is_refused_quickly, {
    // 4,000 keys that are one memoised 1 MiB string, each naming a tensor.
    let long = "k".repeat(1 << 20);
    let mut p = P::new().op(b'}').op(b'(');
    p = put(p.s(&long), 0);
    p = put(p.tensor("FloatStorage", "0", 0, &[1], &[1]), 1);
    for _ in 1..4000 {
        p = get(get(p, 0), 1);
    }
    let bytes = archive(&p.op(b'u').stop(), &[("0", &f32_bytes(&[1.0]))]);
    let e = err_of(&bytes);
    assert!(e.contains("a pickle bomb?"), "{e}");
    // Nested under memoised dicts, the long names are refused too.
    let mut p = P::new().op(b'}');
    p = put(p, 0).op(b'(');
    p = put(p.s(&long), 1);
    p = p.op(b'}').op(b'(');
    for _ in 0..100 {
        p = get(get(p, 1), 0);
    }
    let bytes = archive(&p.op(b'u').op(b'u').stop(), &[]);
    assert!(err_of(&bytes).contains("refer to themselves") || err_of(&bytes).contains("pickle bomb"));
});

ck_test!(copies_of_shared_values_are_bounded, {
    // OrderedDict(pairs) called 100,000 times on one memoised list of 100,000 pairs.
    let mut p = P::new().op(b']');
    p = put(p, 0).op(b'(');
    p = put(short(p, "k").op(b'N').op(0x86), 1);
    for _ in 1..100_000 {
        p = get(p, 1);
    }
    p = p.op(b'e').op(b'0');
    p = put(p.global("collections", "OrderedDict"), 2).op(b']');
    for _ in 0..100_000 {
        p = get(get(p, 2), 0).op(0x85).op(b'R').op(b'a');
    }
    let e = err_of(&archive(&p.stop(), &[]));
    assert!(e.contains("copies of shared values would take more than") && e.contains("a pickle bomb?"), "{e}");
    // A memoised size tuple of 64 zeros (no elements: no storage check stops it), used by
    // 20,000 tensors whose rebuilder and storage are memoised too.
    let mut p = P::new().op(b'}').op(b'(').op(b'(');
    for _ in 0..64 {
        p = p.op(b'K').raw(&[0]);
    }
    p = put(p.op(b't'), 0).op(b'0');
    p = put(p.global("torch._utils", "_rebuild_tensor_v2"), 1).op(b'0');
    p = p.op(b'(').s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(0).op(b't').op(b'Q');
    p = put(p, 2).op(b'0');
    for i in 0..20_000 {
        p = get(get(short(p, &i.to_string()), 1).op(b'('), 2).op(b'K').raw(&[0]);
        p = get(get(p, 0), 0).op(0x89).op(b'N').op(b't').op(b'R');
    }
    let bytes = archive(&p.op(b'u').stop(), &[("0", &f32_bytes(&[1.0]))]);
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    let e = err_of(&bytes);
    assert!(e.contains("a pickle bomb?"), "{e}");
    // Ranks past 64 are refused outright.
    let sizes = vec![1; 65];
    let e = err_of(&archive(&one_tensor("FloatStorage", 0, &sizes, &sizes), &[("0", &f32_bytes(&[1.0]))]));
    assert!(e.contains("size has 65 dimensions, more than 64"), "{e}");
});

ck_test!(reading_in_slices_holds_one_tensor_at_a_time, {
    // Two 256 KiB tensors: opening reads the end of the file (the end record's 64 KiB window),
    // the directory and the pickle; each tensor is then one read of its own bytes.
    let n = 256usize;
    let a: Vec<f32> = (0..n * n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n * n).map(|i| -(i as f32)).collect();
    let (ni, bytes_each) = (n as i32, n * n * 4);
    let pkl = P::new()
        .op(b'}')
        .op(b'(')
        .s("a")
        .tensor("FloatStorage", "0", 0, &[ni, ni], &[ni, 1])
        .s("b")
        .tensor("FloatStorage", "1", 0, &[ni, ni], &[1, ni])
        .op(b'u')
        .stop();
    let bytes = archive(&pkl, &[("0", &f32_bytes(&a)), ("1", &f32_bytes(&b))]);
    let file = Slices::new(&bytes);
    let ck = read_checkpoint_from(&file).unwrap();
    let opened = file.total.get();
    assert!(opened < 70_000, "opening read {opened} bytes of {}", bytes.len());
    assert_eq!(&*ck.tensor("a").unwrap().to_f32().unwrap(), &a);
    assert_eq!(file.largest.get(), bytes_each, "one read of the tensor's own bytes");
    let bt = ck.tensor("b").unwrap().to_f32().unwrap();
    let want: Vec<f32> = (0..n * n).map(|i| b[(i % n) * n + i / n]).collect();
    assert_eq!(&*bt, &want, "transposed view gathered from its span");
    assert_eq!(file.total.get(), opened + 2 * bytes_each as u64);
});
