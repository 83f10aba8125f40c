//! Shared by the hostile-input tests: a small writer of `torch.save`-style checkpoints (a stored
//! zip holding `a/data.pkl` and `a/data/<key>`, the pickle written opcode by opcode), a counter
//! of the largest amount of memory live at once on the calling thread, and raw model-file access.
#![allow(dead_code)] // Each test binary uses part of it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use brivl_engine::model_file::{FileDType, RawTensor};

// ---------- peak memory of the calling thread ----------

pub struct Tracking;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = ON.try_with(|on| {
        if on.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + delta);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns its result with the most bytes it had allocated at once (on this thread).
pub fn peak_while<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}

// ---------- checkpoints ----------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A zip of stored (uncompressed) entries.
pub fn zip_stored(files: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let local = out.len() as u32;
        let crc = crc32(data);
        let head = |sig: u32, buf: &mut Vec<u8>, central: bool| {
            buf.extend_from_slice(&sig.to_le_bytes());
            if central {
                buf.extend_from_slice(&[20, 0]);
            }
            buf.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method 0, time, date
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&[0, 0]); // extra length
        };
        head(0x0403_4b50, &mut out, false);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        head(0x0201_4b50, &mut central, true);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&[0; 4]); // external attributes
        central.extend_from_slice(&local.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A checkpoint archive named `a`: the pickle and the storages by key.
pub fn torch_archive(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages.iter().map(|(k, _)| format!("a/data/{k}")).collect();
    let mut files: Vec<(&str, &[u8])> = vec![("a/data.pkl", pkl)];
    files.extend(names.iter().zip(storages).map(|(n, (_, d))| (n.as_str(), *d)));
    files.push(("a/version", b"3\n"));
    zip_stored(&files)
}

/// Pickle bytes, protocol 2, opcode by opcode.
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    pub fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    pub fn op(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(self, s: &str) -> Self {
        self.op(b'X').raw(&(s.len() as u32).to_le_bytes()).raw(s.as_bytes())
    }
    pub fn int(self, i: i32) -> Self {
        self.op(b'J').raw(&i.to_le_bytes())
    }
    pub fn put(self, i: u32) -> Self {
        self.op(b'r').raw(&i.to_le_bytes())
    }
    pub fn get(self, i: u32) -> Self {
        self.op(b'j').raw(&i.to_le_bytes())
    }
    pub fn global(self, module: &str, name: &str) -> Self {
        self.op(b'c').raw(format!("{module}\n{name}\n").as_bytes())
    }
    fn ints(mut self, v: &[i64]) -> Self {
        self = self.op(b'(');
        for &i in v {
            self = self.op(0x8a).raw(&[8]).raw(&i.to_le_bytes());
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(FloatStorage key, offset, size, stride, False, OrderedDict())`.
    pub fn tensor(self, key: &str, offset: i64, size: &[i64], stride: &[i64]) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b'(')
            .op(b'(')
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .int(0)
            .op(b't')
            .op(b'Q')
            .op(0x8a)
            .raw(&[8])
            .raw(&offset.to_le_bytes())
            .ints(size)
            .ints(stride)
            .op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }
    pub fn stop(self) -> Vec<u8> {
        self.op(b'.').0
    }
}

/// `{name: tensor, ...}`, every tensor over storage "0" with the given offset, size and stride.
pub fn checkpoint_of(tensors: &[(&str, i64, &[i64], &[i64])], storage: &[f32]) -> Vec<u8> {
    let mut p = Pickle::new().op(b'}').op(b'(');
    for (name, offset, size, stride) in tensors {
        p = p.str(name).tensor("0", *offset, size, stride);
    }
    let data: Vec<u8> = storage.iter().flat_map(|v| v.to_le_bytes()).collect();
    torch_archive(&p.op(b'u').stop(), &[("0", &data)])
}

// ---------- model files ----------

/// The tensors of a model file as stored, with its metadata (safetensors' own reader: no checks
/// of ours).
pub fn raw_tensors(bytes: &[u8]) -> (Vec<RawTensor>, std::collections::HashMap<String, String>) {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors file");
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => FileDType::F32,
                safetensors::Dtype::F16 => FileDType::F16,
                safetensors::Dtype::I8 => FileDType::I8,
                d => panic!("{name}: {d:?}"),
            };
            RawTensor { name, dtype, shape: v.shape().to_vec(), bytes: v.data().to_vec() }
        })
        .collect();
    (tensors, meta.metadata().clone().unwrap_or_default())
}

/// Like [`raw_tensors`], for files that may be anything: `None` when safetensors refuses it or
/// a dtype is not one of ours.
pub fn try_raw_tensors(bytes: &[u8]) -> Option<(Vec<RawTensor>, std::collections::HashMap<String, String>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let mut tensors = Vec::new();
    for (name, v) in st.tensors() {
        let dtype = match v.dtype() {
            safetensors::Dtype::F32 => FileDType::F32,
            safetensors::Dtype::F16 => FileDType::F16,
            safetensors::Dtype::I8 => FileDType::I8,
            _ => return None,
        };
        tensors.push(RawTensor { name, dtype, shape: v.shape().to_vec(), bytes: v.data().to_vec() });
    }
    Some((tensors, meta.metadata().clone().unwrap_or_default()))
}

/// A safetensors file of exactly these tensors and metadata, with no checks at all (shapes of
/// any rank, empty dimensions, ...): the reader's own checks are what is tested.
pub fn serialize_unchecked(tensors: &[RawTensor], meta: &[(String, String)]) -> Vec<u8> {
    let js = |s: &str| serde_json::to_string(s).unwrap();
    let meta: Vec<String> = meta.iter().map(|(k, v)| format!("{}:{}", js(k), js(v))).collect();
    let mut header = format!("{{\"__metadata__\":{{{}}}", meta.join(","));
    let mut offset = 0;
    for t in tensors {
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let end = offset + t.bytes.len();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            js(&t.name),
            t.dtype.name(),
            dims.join(",")
        ));
        offset = end;
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}
