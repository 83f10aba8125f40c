//! The converted model file: safetensors whose metadata holds the architecture, the vocabulary,
//! a format version and a content hash. Weight matrices are f32, f16, or int8 with
//! `<name>.scale` (f32 `[rows, ceil(cols / q8_group)]`, one scale per `q8_group` values of a row,
//! see `quant.rs`); everything else is f32.
//!
//! The content hash is the model's identity: SHA-256 over the format version, the q8 group, the
//! config JSON, the vocabulary and every tensor (name, dtype, shape, bytes), each length-prefixed.
//! Two files that differ in any of these are different models. The writer is deterministic: the
//! same tensors, config and vocabulary give the same bytes.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::checkpoint::ReadAt;
use crate::quant::{q8_groups, Packed, Q8_GROUP};
use crate::{DType, Error, Result};

pub const FORMAT: &str = "brivl";
/// 3: the content hash covers the format version, config and vocabulary as well as the tensors.
/// 2: q8 scales per group of `q8_group` values of a row (1 had one scale per row).
pub const FORMAT_VERSION: u32 = 3;

/// The command that makes a current model file, for messages about older ones.
pub const RECONVERT: &str = "brivl convert CHECKPOINT --vocab VOCAB --quant q8 -o MODEL.safetensors";

/// Most dimensions a stored tensor may have (conv weights have 4).
pub const MAX_RANK: usize = 4;

/// A tensor as stored: logical shape, and the packed words the engine uploads.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub packed: Packed,
}

/// A parsed and verified model file. Tensors stay in the file (its bytes in memory, or on disk
/// with [`ModelFile::open`]) and are packed one at a time when asked for ([`ModelFile::get`]):
/// loading then never holds a second copy of the weights.
pub struct ModelFile<'a> {
    pub config_json: String,
    pub vocab: String,
    /// The model's identity: see the module documentation.
    pub content_hash: String,
    source: Source<'a>,
    tensors: BTreeMap<String, Stored>,
}

/// Where a model file's bytes are.
enum Source<'a> {
    Bytes(std::borrow::Cow<'a, [u8]>),
    Reader(Box<dyn ReadAt + 'a>),
}

impl Source<'_> {
    /// The bytes in `range` (the file's; `range` lies within it).
    fn read(&self, range: std::ops::Range<usize>) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Source::Bytes(b) => Ok(std::borrow::Cow::Borrowed(&b[range])),
            Source::Reader(r) => {
                let mut out = Vec::new();
                out.try_reserve_exact(range.len()).map_err(|_| bad("model file: a tensor does not fit in memory"))?;
                out.resize(range.len(), 0);
                r.read_exact_at(range.start as u64, &mut out)
                    .map_err(|e| bad(format!("model file could not be read: {e}")))?;
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }
}

/// A tensor as the header lists it: name, element type, shape, bytes within the file.
type Listed = (String, FileDType, Vec<usize>, std::ops::Range<usize>);

/// Where a tensor lies in the file: element type, shape, byte range (and its q8 scales').
struct Stored {
    dtype: FileDType,
    shape: Vec<usize>,
    data: std::ops::Range<usize>,
    scale: Option<std::ops::Range<usize>>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Model(msg.into())
}

/// How a tensor's elements are stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDType {
    F32,
    F16,
    I8,
}

impl FileDType {
    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::I8 => "I8",
        }
    }
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::I8 => 1,
        }
    }
    fn from_safetensors(d: Dtype) -> Option<Self> {
        match d {
            Dtype::F32 => Some(Self::F32),
            Dtype::F16 => Some(Self::F16),
            Dtype::I8 => Some(Self::I8),
            _ => None,
        }
    }
}

/// A tensor exactly as written: name, element type, shape and little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: FileDType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The content hash (see the module documentation); `tensors` in any order.
pub fn content_hash<'a>(
    version: u32,
    q8_group: usize,
    config_json: &str,
    vocab: &str,
    tensors: impl IntoIterator<Item = (&'a str, FileDType, &'a [usize], &'a [u8])>,
) -> String {
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = ContentHasher::new(version, q8_group, config_json, vocab, tensors.len());
    for (name, dtype, shape, bytes) in tensors {
        h.tensor(name, dtype, shape, bytes);
    }
    h.finish()
}

/// The content hash fed as it goes: the header fields, then each tensor in name order.
pub struct ContentHasher(Sha256);

impl ContentHasher {
    pub fn new(version: u32, q8_group: usize, config_json: &str, vocab: &str, tensors: usize) -> Self {
        let mut h = ContentHasher(Sha256::new());
        h.field(b"brivl model");
        h.0.update(u64::from(version).to_le_bytes());
        h.0.update((q8_group as u64).to_le_bytes());
        h.field(config_json.as_bytes());
        h.field(vocab.as_bytes());
        h.0.update((tensors as u64).to_le_bytes());
        h
    }

    fn field(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    /// The next tensor, in name order.
    pub fn tensor(&mut self, name: &str, dtype: FileDType, shape: &[usize], bytes: &[u8]) {
        self.tensor_head(name, dtype, shape, bytes.len());
        self.0.update(bytes);
    }

    /// The next tensor's name, type, shape and byte count; its `len` bytes must follow.
    fn tensor_head(&mut self, name: &str, dtype: FileDType, shape: &[usize], len: usize) {
        self.field(name.as_bytes());
        self.field(dtype.name().as_bytes());
        self.0.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            self.0.update((*d as u64).to_le_bytes());
        }
        self.0.update((len as u64).to_le_bytes());
    }

    pub fn finish(self) -> String {
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Rank 1 to [`MAX_RANK`], no empty dimension, and an element count that fits `usize`.
fn check_shape(name: &str, shape: &[usize]) -> Result<usize> {
    if shape.is_empty() || shape.len() > MAX_RANK {
        return Err(bad(format!("tensor '{name}' has {} dimensions; model tensors have 1 to {MAX_RANK}", shape.len())));
    }
    if shape.contains(&0) {
        return Err(bad(format!("tensor '{name}' is {shape:?}: an empty dimension")));
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("tensor '{name}' is {shape:?}: too many elements")))
}

/// Refuses files of another format version, naming the command that makes a current one.
fn check_version(version: &str) -> Result<()> {
    if version == FORMAT_VERSION.to_string() {
        return Ok(());
    }
    match version.parse::<u32>() {
        Ok(v) if v < FORMAT_VERSION => Err(bad(format!(
            "model file format version {v} is older than this build's {FORMAT_VERSION} (its content hash \
             does not cover its config and vocabulary): convert the checkpoint again with `{RECONVERT}` \
             (and the same --image-size, --box-grid, ... options as before)"
        ))),
        Ok(v) => Err(bad(format!(
            "model file format version {v} is newer than this build reads ({FORMAT_VERSION}): update brivl"
        ))),
        Err(_) => Err(bad(format!("model file format version {version:?} is not a number"))),
    }
}

/// The brivl metadata of a safetensors header: checked (format, version, q8 group); the config,
/// the vocabulary and the content hash it states.
fn check_meta(meta: &Option<std::collections::HashMap<String, String>>) -> Result<(String, String, String)> {
    let get = |k: &str| {
        meta.as_ref()
            .and_then(|m| m.get(k).cloned())
            .ok_or_else(|| bad(format!("model file metadata has no '{k}' (not a brivl model?)")))
    };
    if get("format")? != FORMAT {
        return Err(bad("model file is not a brivl model (metadata 'format' differs)"));
    }
    check_version(&get("format_version")?)?;
    let group = get("q8_group")?;
    if group != Q8_GROUP.to_string() {
        return Err(bad(format!("model file has q8 scales per {group} values; this build reads {Q8_GROUP}")));
    }
    Ok((get("config")?, get("vocab")?, get("content_hash")?))
}

impl<'a> ModelFile<'a> {
    /// Parses and verifies a model file: format, version, hash, and every tensor's size.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_cow(std::borrow::Cow::Borrowed(bytes))
    }

    /// As [`parse`](Self::parse), keeping the bytes.
    pub fn parse_owned(bytes: Vec<u8>) -> Result<ModelFile<'static>> {
        ModelFile::parse_cow(std::borrow::Cow::Owned(bytes))
    }

    fn parse_cow(bytes: std::borrow::Cow<'a, [u8]>) -> Result<Self> {
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors model file: {e}")))?;
        let (config_json, vocab, stated) = check_meta(meta.metadata())?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("corrupt model file: {e}")))?;
        // Byte ranges within the file (every view is a slice of it).
        let base = bytes.as_ptr() as usize;
        let mut listed = Vec::new();
        for (name, v) in st.tensors() {
            let dtype = FileDType::from_safetensors(v.dtype())
                .ok_or_else(|| bad(format!("tensor '{name}' has unsupported dtype {:?}", v.dtype())))?;
            check_shape(&name, v.shape())?;
            let at = v.data().as_ptr() as usize - base;
            listed.push((name, dtype, v.shape().to_vec(), at..at + v.data().len()));
        }
        drop(st);
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let hash = content_hash(
            FORMAT_VERSION,
            Q8_GROUP,
            &config_json,
            &vocab,
            listed.iter().map(|(n, d, shape, r)| (n.as_str(), *d, shape.as_slice(), &bytes[r.clone()])),
        );
        if hash != stated {
            return Err(bad(
                "model file is corrupt: its content hash does not match (truncated or modified download?)",
            ));
        }
        let tensors = index(listed)?;
        Ok(Self { config_json, vocab, content_hash: hash, source: Source::Bytes(bytes), tensors })
    }

    /// A tensor packed as the engine uploads it (made now: the file holds it unpacked).
    pub fn get(&self, name: &str) -> Result<StoredTensor> {
        let t = self.stored(name)?;
        let (rows, cols) = matrix_dims(&t.shape);
        let data = self.source.read(t.data.clone())?;
        let packed = match (t.dtype, &t.scale) {
            (FileDType::F32, _) => Packed::new(&f32s(&data), rows, cols, DType::F32)?,
            (FileDType::F16, _) => pack_f16(&data, rows, cols),
            (FileDType::I8, Some(scale)) => pack_q8(&data, &f32s(&self.source.read(scale.clone())?), rows, cols),
            (FileDType::I8, None) => return Err(bad(format!("int8 tensor '{name}' has no '{name}.scale'"))),
        };
        Ok(StoredTensor { shape: t.shape.clone(), packed })
    }

    fn stored(&self, name: &str) -> Result<&Stored> {
        self.tensors.get(name).ok_or_else(|| bad(format!("model file has no tensor '{name}'")))
    }

    /// A tensor's shape, without packing it.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.stored(name)?.shape)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The engine's tensor names (a q8 matrix's scales are part of it), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// How the matrices are stored: Q8 if any is int8, else F16 if any is f16, else F32.
    pub fn weights(&self) -> DType {
        let has = |d| self.tensors.values().any(|t| t.dtype == d);
        if has(FileDType::I8) {
            DType::Q8
        } else if has(FileDType::F16) {
            DType::F16
        } else {
            DType::F32
        }
    }
}

impl<'a> ModelFile<'a> {
    /// Opens a model file on disk: see [`from_reader`](Self::from_reader).
    #[cfg(any(unix, windows))]
    pub fn open(path: &std::path::Path) -> Result<ModelFile<'static>> {
        let f = std::fs::File::open(path).map_err(|e| bad(format!("model file could not be read: {e}")))?;
        ModelFile::from_reader(f)
    }

    /// Verifies and indexes a model file read at offsets (a file on disk, an OPFS file in the
    /// browser) without holding it in memory: the hash is computed reading one piece at a time,
    /// and [`get`](Self::get) reads a tensor when asked. Loading then holds the engine's copy of
    /// the weights and one tensor, not the whole file besides.
    pub fn from_reader(r: impl ReadAt + 'a) -> Result<Self> {
        let len = r.size();
        let read = |at: u64, buf: &mut [u8]| {
            r.read_exact_at(at, buf).map_err(|e| bad(format!("model file could not be read: {e}")))
        };
        let mut n = [0u8; 8];
        if len < 8 {
            return Err(bad(format!("not a safetensors model file: {len} bytes, too short for a header")));
        }
        read(0, &mut n)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || 8 + n > len {
            return Err(bad(format!("not a safetensors model file: its header would be {n} bytes")));
        }
        let mut head = vec![0u8; n as usize];
        read(8, &mut head)?;
        let meta: safetensors::tensor::Metadata =
            serde_json::from_slice(&head).map_err(|e| bad(format!("not a safetensors model file: {e}")))?;
        let (config_json, vocab, stated) = check_meta(meta.metadata())?;
        let start = 8 + n as usize;
        let want = start as u64 + meta.data_len() as u64;
        if want != len {
            return Err(bad(if want > len {
                format!("model file is truncated: {len} of the {want} bytes its header describes")
            } else {
                format!("model file is longer than the {want} bytes its header describes")
            }));
        }
        let mut listed = Vec::new();
        for (name, info) in meta.tensors() {
            let dtype = FileDType::from_safetensors(info.dtype)
                .ok_or_else(|| bad(format!("tensor '{name}' has unsupported dtype {:?}", info.dtype)))?;
            check_shape(&name, &info.shape)?;
            let (s, e) = info.data_offsets;
            listed.push((name, dtype, info.shape.clone(), start + s..start + e));
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = ContentHasher::new(FORMAT_VERSION, Q8_GROUP, &config_json, &vocab, listed.len());
        const PIECE: usize = 4 << 20;
        let mut piece = vec![0u8; PIECE.min(meta.data_len())];
        for (name, dtype, shape, range) in &listed {
            hasher.tensor_head(name, *dtype, shape, range.len());
            for at in range.clone().step_by(PIECE) {
                let buf = &mut piece[..PIECE.min(range.end - at)];
                read(at as u64, buf)?;
                hasher.0.update(&*buf);
            }
        }
        let hash = hasher.finish();
        if hash != stated {
            return Err(bad("model file is corrupt: its content hash does not match (modified or damaged?)"));
        }
        let tensors = index(listed)?;
        Ok(Self { config_json, vocab, content_hash: hash, source: Source::Reader(Box::new(r)), tensors })
    }
}

/// The engine's tensors from the header's list (sorted by name): each int8 matrix with its
/// `.scale` checked and attached.
fn index(listed: Vec<Listed>) -> Result<BTreeMap<String, Stored>> {
    let by_name: BTreeMap<&str, &Listed> = listed.iter().map(|t| (t.0.as_str(), t)).collect();
    let mut tensors = BTreeMap::new();
    for (name, dtype, shape, data) in &listed {
        if name.ends_with(".scale") && by_name.contains_key(&name[..name.len() - ".scale".len()]) {
            continue;
        }
        let (rows, cols) = matrix_dims(shape);
        let scale = match dtype {
            FileDType::I8 => {
                let (_, sd, ss, sr) = by_name
                    .get(format!("{name}.scale").as_str())
                    .ok_or_else(|| bad(format!("int8 tensor '{name}' has no '{name}.scale'")))?;
                let want = [rows, q8_groups(cols)];
                if *sd != FileDType::F32 || ss[..] != want {
                    return Err(bad(format!("'{name}.scale' is {sd:?} {ss:?}, expected F32 {want:?}")));
                }
                Some(sr.clone())
            }
            _ => None,
        };
        tensors.insert(name.clone(), Stored { dtype: *dtype, shape: shape.clone(), data: data.clone(), scale });
    }
    Ok(tensors)
}

/// Most bytes a safetensors header may have (the safetensors library's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// The start of a model file arriving in pieces (a download): a wrong file (not a brivl model,
/// another version, a header past any sensible size or describing more bytes than `max_len`) is
/// refused as soon as its header is in, before the rest comes. Only the header is kept; the whole
/// file is verified afterwards, read back at offsets ([`ModelFile::from_reader`]).
pub struct ModelHeader {
    max_len: u64,
    head: Vec<u8>,
    len: Option<u64>,
}

impl ModelHeader {
    /// `max_len`: the most bytes the file may have (its size, where known).
    pub fn new(max_len: u64) -> Self {
        ModelHeader { max_len, head: Vec::new(), len: None }
    }

    /// The next piece of the file; the file's length once its header is in and sound.
    pub fn push(&mut self, mut piece: &[u8]) -> Result<Option<u64>> {
        while self.len.is_none() && !piece.is_empty() {
            // The 8 bytes giving the header's length, then the header.
            let want = match self.head.get(..8) {
                Some(n) => 8 + u64::from_le_bytes(n.try_into().expect("8 bytes")).min(MAX_HEADER + 1) as usize,
                None => 8,
            };
            let take = piece.len().min(want - self.head.len());
            self.head.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            self.len = self.read()?;
        }
        Ok(self.len)
    }

    fn read(&self) -> Result<Option<u64>> {
        let Some(n) = self.head.get(..8) else { return Ok(None) };
        let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
        if n > MAX_HEADER || 8 + n > self.max_len {
            return Err(bad(format!("not a safetensors model file: its header would be {n} bytes")));
        }
        let Some(head) = self.head.get(8..8 + n as usize) else { return Ok(None) };
        let meta: safetensors::tensor::Metadata =
            serde_json::from_slice(head).map_err(|e| bad(format!("not a safetensors model file: {e}")))?;
        check_meta(meta.metadata())?;
        let len = 8 + n + meta.data_len() as u64;
        if len > self.max_len {
            return Err(bad("model file is truncated: its header describes more bytes than the file has"));
        }
        Ok(Some(len))
    }
}

fn f32s(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Matrices are `[rows, everything else]`; vectors are one row. Shapes were checked (no
/// overflow) before this is called.
fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

fn pack_f16(data: &[u8], rows: usize, cols: usize) -> Packed {
    let rw = cols.div_ceil(2);
    let mut words = vec![0u32; rows * rw];
    for r in 0..rows {
        for c in 0..cols {
            let i = (r * cols + c) * 2;
            words[r * rw + c / 2] |= (u16::from_le_bytes([data[i], data[i + 1]]) as u32) << (16 * (c % 2));
        }
    }
    Packed { dtype: DType::F16, rows, cols, words }
}

/// `data`: int8 `[rows, cols]`; `scales`: `[rows, q8_groups(cols)]`.
fn pack_q8(data: &[u8], scales: &[f32], rows: usize, cols: usize) -> Packed {
    let rw = cols.div_ceil(4);
    let mut words = vec![0u32; rows * rw];
    for r in 0..rows {
        for c in 0..cols {
            words[r * rw + c / 4] |= (data[r * cols + c] as u32) << (8 * (c % 4));
        }
    }
    words.extend(scales.iter().map(|s| s.to_bits()));
    Packed { dtype: DType::Q8, rows, cols, words }
}

/// One tensor to write: f32 values with a logical shape, stored as `dtype`.
pub struct WriteTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// F32 for everything; F16 or Q8 only for matrices (`[rows, ...]`, q8 scaled per group of a row).
    pub dtype: DType,
}

/// The name, element type and shape of a tensor as the file stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: FileDType,
    pub shape: Vec<usize>,
}

/// What a tensor of `shape` stored as `dtype` becomes in the file: itself, and for q8 its
/// `.scale` too (in name order).
pub fn stored_specs(name: &str, shape: &[usize], dtype: DType) -> Vec<TensorSpec> {
    let spec = |name: String, dtype, shape: Vec<usize>| TensorSpec { name, dtype, shape };
    match dtype {
        DType::F32 | DType::U32 => vec![spec(name.to_string(), FileDType::F32, shape.to_vec())],
        DType::F16 => vec![spec(name.to_string(), FileDType::F16, shape.to_vec())],
        DType::Q8 => {
            let (rows, cols) = matrix_dims(shape);
            vec![
                spec(name.to_string(), FileDType::I8, shape.to_vec()),
                spec(format!("{name}.scale"), FileDType::F32, vec![rows, q8_groups(cols)]),
            ]
        }
    }
}

/// A tensor's stored form: the raw tensors of [`stored_specs`], in the same order.
pub fn encode(t: &WriteTensor) -> Result<Vec<RawTensor>> {
    let numel = check_shape(&t.name, &t.shape)?;
    if numel != t.values.len() {
        return Err(bad(format!("tensor '{}' is {:?} but has {} values", t.name, t.shape, t.values.len())));
    }
    let (rows, cols) = matrix_dims(&t.shape);
    let (name, shape) = (t.name.clone(), t.shape.clone());
    Ok(match t.dtype {
        DType::F32 | DType::U32 => {
            vec![RawTensor { name, dtype: FileDType::F32, shape, bytes: bytemuck::cast_slice(&t.values).to_vec() }]
        }
        DType::F16 => {
            let bytes = t.values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            vec![RawTensor { name, dtype: FileDType::F16, shape, bytes }]
        }
        DType::Q8 => {
            let p = Packed::new(&t.values, rows, cols, DType::Q8)?;
            let rw = p.row_words();
            let mut bytes = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                for c in 0..cols {
                    bytes.push((p.words[r * rw + c / 4] >> (8 * (c % 4))) as u8);
                }
            }
            let scales: Vec<u8> = p.words[rows * rw..].iter().flat_map(|w| w.to_le_bytes()).collect();
            vec![
                RawTensor { name: name.clone(), dtype: FileDType::I8, shape, bytes },
                RawTensor {
                    name: format!("{name}.scale"),
                    dtype: FileDType::F32,
                    shape: vec![rows, q8_groups(cols)],
                    bytes: scales,
                },
            ]
        }
    })
}

/// Serialises a model file; returns the bytes and the content hash.
pub fn write(tensors: &[WriteTensor], config_json: &str, vocab: &str) -> Result<(Vec<u8>, String)> {
    let mut raw = Vec::new();
    for t in tensors {
        raw.extend(encode(t)?);
    }
    write_raw(raw, config_json, vocab)
}

/// Serialises tensors already in their stored form (e.g. those of an older model file, so
/// that they keep their exact bytes). Deterministic: the header is written here, metadata keys
/// in a fixed order and tensors in name order. Returns the bytes and the hash.
pub fn write_raw(mut tensors: Vec<RawTensor>, config_json: &str, vocab: &str) -> Result<(Vec<u8>, String)> {
    // In name order, so each is hashed as it is written.
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let specs =
        tensors.iter().map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() }).collect();
    let mut w = StreamWriter::new(Vec::new(), specs, config_json, vocab)?;
    for t in tensors {
        w.put(&t.name, &t.bytes)?;
    }
    w.finish()
}

/// Where a streamed model file goes: positioned writes (an OPFS file, a native file, memory).
pub trait WriteAt {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()>;
}

impl WriteAt for Vec<u8> {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let at = usize::try_from(offset).map_err(|_| bad("model file offset past this machine's memory"))?;
        let end = at + bytes.len();
        if self.len() < end {
            self.resize(end, 0);
        }
        self[at..end].copy_from_slice(bytes);
        Ok(())
    }
}

/// A native file, written at offsets (`brivl convert` streams its output this way).
#[cfg(unix)]
impl WriteAt for &std::fs::File {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        std::os::unix::fs::FileExt::write_all_at(*self, bytes, offset)
            .map_err(|e| bad(format!("writing the model file: {e}")))
    }
}

/// Writes a model file whose tensors are all known up front (names, types, shapes) but whose
/// bytes come one at a time, in any order: each is written at its place as it arrives and
/// hashed in name order (a tensor that arrives early waits, in memory, for those before it);
/// the header, holding the hash, is written last. The bytes are exactly those of
/// [`write_raw`] for the same tensors, config and vocabulary.
///
/// The file keeps its tensors in name order, the order the hash covers them in, so a reader
/// hashes it front to back ([`ModelFile::from_reader`]). (Safetensors needs no alignment: the
/// engine reads values byte by byte.)
pub struct StreamWriter<W: WriteAt> {
    out: W,
    /// File order: by name. Offsets are from the start of the data.
    specs: Vec<(TensorSpec, u64, u64)>,
    /// How many tensors (a prefix of `specs`) are hashed.
    hashed: usize,
    written: Vec<bool>,
    early: std::collections::HashMap<usize, Vec<u8>>,
    hasher: ContentHasher,
    config_json: String,
    vocab: String,
    header_len: usize,
}

/// The hash's place while the tensors are written: the same length as the real one.
const HASH_PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl<W: WriteAt> StreamWriter<W> {
    pub fn new(out: W, mut specs: Vec<TensorSpec>, config_json: &str, vocab: &str) -> Result<Self> {
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut names = std::collections::HashSet::new();
        let mut placed = Vec::with_capacity(specs.len());
        let mut offset = 0u64;
        for t in specs {
            let numel = check_shape(&t.name, &t.shape)?;
            if t.name == "__metadata__" || t.name.is_empty() {
                return Err(bad(format!("a tensor cannot be named {:?}", t.name)));
            }
            if !names.insert(t.name.clone()) {
                return Err(bad(format!("two tensors are named '{}'", t.name)));
            }
            let len = numel
                .checked_mul(t.dtype.size())
                .ok_or_else(|| bad(format!("tensor '{}' is {:?}: too many elements", t.name, t.shape)))?
                as u64;
            placed.push((t, offset, len));
            offset += len;
        }
        let hasher = ContentHasher::new(FORMAT_VERSION, Q8_GROUP, config_json, vocab, placed.len());
        let header_len = header(&placed, &meta(config_json, vocab, HASH_PLACEHOLDER)).len();
        Ok(StreamWriter {
            out,
            written: vec![false; placed.len()],
            specs: placed,
            hashed: 0,
            early: Default::default(),
            hasher,
            config_json: config_json.to_string(),
            vocab: vocab.to_string(),
            header_len,
        })
    }

    /// The file's length once finished.
    pub fn total_bytes(&self) -> u64 {
        8 + self.header_len as u64 + self.specs.last().map_or(0, |(_, o, l)| o + l)
    }

    /// The tensors to come, in file order.
    pub fn specs(&self) -> impl Iterator<Item = &TensorSpec> {
        self.specs.iter().map(|(s, _, _)| s)
    }

    /// Writes tensor `name`'s bytes at its place.
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let i = self
            .specs
            .iter()
            .position(|(s, _, _)| s.name == name)
            .ok_or_else(|| bad(format!("tensor '{name}' was not planned")))?;
        let (spec, offset, len) = &self.specs[i];
        if bytes.len() as u64 != *len {
            return Err(bad(format!(
                "tensor '{}' is {:?} {:?} but has {} bytes",
                spec.name,
                spec.dtype,
                spec.shape,
                bytes.len()
            )));
        }
        if std::mem::replace(&mut self.written[i], true) {
            return Err(bad(format!("tensor '{name}' was written twice")));
        }
        self.out.write_all_at(8 + self.header_len as u64 + offset, bytes)?;
        if self.hashed == i {
            self.hash(i, bytes);
            while let Some(b) = self.early.remove(&self.hashed) {
                self.hash(self.hashed, &b);
            }
        } else {
            self.early.insert(i, bytes.to_vec());
        }
        Ok(())
    }

    fn hash(&mut self, i: usize, bytes: &[u8]) {
        let s = &self.specs[i].0;
        self.hasher.tensor(&s.name, s.dtype, &s.shape, bytes);
        self.hashed += 1;
    }

    /// Writes the header once every tensor is in; returns the output and the content hash.
    pub fn finish(mut self) -> Result<(W, String)> {
        if let Some(i) = self.written.iter().position(|w| !w) {
            return Err(bad(format!("tensor '{}' was never written", self.specs[i].0.name)));
        }
        let hash = self.hasher.finish();
        let head = header(&self.specs, &meta(&self.config_json, &self.vocab, &hash));
        debug_assert_eq!(head.len(), self.header_len);
        if head.len() != self.header_len {
            return Err(bad("model file header changed length while writing"));
        }
        self.out.write_all_at(0, &(head.len() as u64).to_le_bytes())?;
        self.out.write_all_at(8, head.as_bytes())?;
        Ok((self.out, hash))
    }
}

fn meta(config_json: &str, vocab: &str, hash: &str) -> [(&'static str, String); 6] {
    [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("q8_group", Q8_GROUP.to_string()),
        ("config", config_json.to_string()),
        ("vocab", vocab.to_string()),
        ("content_hash", hash.to_string()),
    ]
}

/// The safetensors JSON header of tensors placed at these data offsets (in this order), with
/// `meta` (in this order), padded with spaces so the data starts 8-aligned as the safetensors
/// library does.
fn header(tensors: &[(TensorSpec, u64, u64)], meta: &[(&str, String)]) -> String {
    let js = |s: &str| serde_json::to_string(s).expect("strings serialise");
    let mut header = String::from("{\"__metadata__\":{");
    let meta: Vec<String> = meta.iter().map(|(k, v)| format!("{}:{}", js(k), js(v))).collect();
    header.push_str(&meta.join(","));
    header.push('}');
    for (t, offset, len) in tensors {
        let dims: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            js(&t.name),
            t.dtype.name(),
            dims.join(","),
            offset + len
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    header
}

/// The safetensors bytes of `tensors` (in this order) with `meta` (in this order); no checks.
#[cfg(test)]
fn serialize(tensors: &[RawTensor], meta: &[(&str, String)]) -> Vec<u8> {
    let mut placed = Vec::new();
    let mut offset = 0u64;
    for t in tensors {
        let spec = TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() };
        placed.push((spec, offset, t.bytes.len() as u64));
        offset += t.bytes.len() as u64;
    }
    let header = header(&placed, meta);
    let mut out = Vec::with_capacity(8 + header.len() + offset as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_q8_tensor(rows: usize, cols: usize) -> (Vec<f32>, Vec<u8>) {
        let values: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 29 % 31) as f32 - 15.0) * (1 + i % cols / Q8_GROUP) as f32).collect();
        let t = WriteTensor { name: "m".into(), shape: vec![rows, cols], values: values.clone(), dtype: DType::Q8 };
        (values, write(&[t], "{}", "v").unwrap().0)
    }

    /// The file with `from` replaced by `to` (same length) in its JSON header.
    fn edit_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        assert!(header.contains(from), "{from} not in {header}");
        let mut out = bytes[..8].to_vec();
        out.extend(header.replace(from, to).as_bytes());
        out.extend(&bytes[8 + header_len..]);
        out
    }

    fn raw(name: &str, dtype: FileDType, shape: &[usize], bytes: Vec<u8>) -> RawTensor {
        RawTensor { name: name.into(), dtype, shape: shape.to_vec(), bytes }
    }

    /// A file with a valid content hash whatever its tensors are: only the reader's own checks
    /// can refuse it.
    fn crafted(tensors: &[RawTensor], version: u32) -> Vec<u8> {
        let hash = content_hash(
            version,
            Q8_GROUP,
            "{}",
            "v",
            tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
        );
        let meta = [
            ("format", FORMAT.to_string()),
            ("format_version", version.to_string()),
            ("q8_group", Q8_GROUP.to_string()),
            ("config", "{}".to_string()),
            ("vocab", "v".to_string()),
            ("content_hash", hash),
        ];
        serialize(tensors, &meta)
    }

    fn parse_err(bytes: &[u8]) -> String {
        match ModelFile::parse(bytes) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn q8_round_trips_with_its_group_scales() {
        let (rows, cols) = (3, 2 * Q8_GROUP + 5);
        let (values, bytes) = one_q8_tensor(rows, cols);
        let file = ModelFile::parse(&bytes).unwrap();
        let t = file.get("m").unwrap();
        assert_eq!(t.shape, [rows, cols]);
        assert_eq!(t.packed, Packed::new(&values, rows, cols, DType::Q8).unwrap());
    }

    #[test]
    fn other_versions_and_group_sizes_are_refused_with_the_reason() {
        let (_, bytes) = one_q8_tensor(2, 7);
        let v = format!("\"format_version\":\"{FORMAT_VERSION}\"");
        for old in ["1", "2"] {
            let file = edit_header(&bytes, &v, &format!("\"format_version\":\"{old}\""));
            let err = parse_err(&file);
            assert!(err.contains(&format!("format version {old} is older")) && err.contains(RECONVERT), "{err}");
        }
        let err = parse_err(&edit_header(&bytes, &v, "\"format_version\":\"9\""));
        assert!(err.contains("newer"), "{err}");
        let err = parse_err(&edit_header(&bytes, &v, "\"format_version\":\"x\""));
        assert!(err.contains("\"x\" is not a number"), "{err}");
        let other = if Q8_GROUP == 32 { "64" } else { "32" };
        let g = edit_header(&bytes, &format!("\"q8_group\":\"{Q8_GROUP}\""), &format!("\"q8_group\":\"{other}\""));
        assert!(parse_err(&g).contains(&format!("per {other} values")));
    }

    #[test]
    fn a_version_2_file_with_its_old_hash_is_refused_with_the_command() {
        // Version 2's hash covered the tensors only; the version check comes before any hash.
        let t = [raw("m", FileDType::F32, &[2], vec![0; 8])];
        let err = parse_err(&crafted(&t, 2));
        assert!(err.contains("version 2") && err.contains("brivl convert CHECKPOINT --vocab VOCAB"), "{err}");
    }

    #[test]
    fn q8_scales_of_the_wrong_shape_are_refused() {
        // One scale per row (version 1's layout) under a current header, with a valid hash.
        let (rows, cols) = (2, Q8_GROUP + 1);
        let t = [
            raw("m", FileDType::I8, &[rows, cols], vec![1; rows * cols]),
            raw("m.scale", FileDType::F32, &[rows], vec![0; rows * 4]),
        ];
        let err = parse_err(&crafted(&t, FORMAT_VERSION));
        assert!(err.contains("'m.scale' is F32 [2], expected F32 [2, 2]"), "{err}");
        let err = parse_err(&crafted(&t[..1], FORMAT_VERSION));
        assert!(err.contains("int8 tensor 'm' has no 'm.scale'"), "{err}");
    }

    #[test]
    fn scalar_empty_and_high_rank_tensors_are_refused() {
        for (shape, want) in [
            (&[][..], "'t' has 0 dimensions"),
            (&[0, 4][..], "'t' is [0, 4]: an empty dimension"),
            (&[4, 0, usize::MAX, usize::MAX][..], "an empty dimension"),
            (&[1, 1, 1, 1, 1][..], "'t' has 5 dimensions"),
        ] {
            let n: usize = shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
            let t = [raw("t", FileDType::F32, shape, vec![0; n.min(1 << 20) * 4])];
            let err = parse_err(&crafted(&t, FORMAT_VERSION));
            assert!(err.contains(want), "{shape:?}: {err}");
        }
    }

    #[test]
    fn the_hash_covers_config_vocabulary_and_tensors() {
        let t = || vec![raw("a", FileDType::F32, &[2], vec![0; 8]), raw("b", FileDType::F16, &[1, 2], vec![1; 4])];
        let base = write_raw(t(), "{\"image_size\":456}", "[PAD]\nx").unwrap().1;
        assert_ne!(base, write_raw(t(), "{\"image_size\":457}", "[PAD]\nx").unwrap().1, "config");
        assert_ne!(base, write_raw(t(), "{\"image_size\":456}", "[PAD]\ny").unwrap().1, "vocabulary");
        let mut u = t();
        u[1].bytes[3] = 2;
        assert_ne!(base, write_raw(u, "{\"image_size\":456}", "[PAD]\nx").unwrap().1, "tensor bytes");
        let mut u = t();
        u[1].shape = vec![2, 1];
        assert_ne!(base, write_raw(u, "{\"image_size\":456}", "[PAD]\nx").unwrap().1, "shape");
        // Length prefixes: moving bytes between config and vocabulary changes the hash.
        let a = content_hash(3, 32, "ab", "c", []);
        assert_ne!(a, content_hash(3, 32, "a", "bc", []));
        assert_ne!(a, content_hash(2, 32, "ab", "c", []));
    }

    #[test]
    fn writing_is_deterministic_and_parses_back() {
        let tensors = || {
            vec![
                WriteTensor { name: "z.w".into(), shape: vec![2, 3], values: vec![0.5; 6], dtype: DType::Q8 },
                WriteTensor { name: "a.b".into(), shape: vec![3], values: vec![1.0, 2.0, 3.0], dtype: DType::F32 },
                WriteTensor { name: "m.h".into(), shape: vec![1, 3], values: vec![0.25; 3], dtype: DType::F16 },
            ]
        };
        let (one, h1) = write(&tensors(), "{\"k\":\"\\u00e9\\n\"}", "[PAD]\n\"quoted\"\n").unwrap();
        let mut rev = tensors();
        rev.reverse();
        let (two, h2) = write(&rev, "{\"k\":\"\\u00e9\\n\"}", "[PAD]\n\"quoted\"\n").unwrap();
        assert_eq!((one.clone(), h1.clone()), (two, h2));
        assert_eq!(u64::from_le_bytes(one[..8].try_into().unwrap()) % 8, 0, "data starts 8-aligned");
        let file = ModelFile::parse(&one).unwrap();
        assert_eq!((file.content_hash.as_str(), file.vocab.as_str()), (h1.as_str(), "[PAD]\n\"quoted\"\n"));
        assert_eq!(file.config_json, "{\"k\":\"\\u00e9\\n\"}");
        assert_eq!(file.names().collect::<Vec<_>>(), ["a.b", "m.h", "z.w"]);
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would() {
        let w = |name: &str, shape: Vec<usize>, n: usize| WriteTensor {
            name: name.into(),
            shape,
            values: vec![0.0; n],
            dtype: DType::F32,
        };
        for (t, want) in [
            (w("s", vec![], 1), "0 dimensions"),
            (w("e", vec![0], 0), "empty dimension"),
            (w("n", vec![3], 2), "has 2 values"),
            (w("__metadata__", vec![1], 1), "cannot be named"),
        ] {
            let err = write(&[t], "{}", "v").err().unwrap().to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = write(&[w("d", vec![1], 1), w("d", vec![1], 1)], "{}", "v").err().unwrap().to_string();
        assert!(err.contains("two tensors are named 'd'"), "{err}");
    }

    /// Tensors of every stored type whose names sort differently from the file's order.
    fn mixed() -> Vec<RawTensor> {
        let mut out = Vec::new();
        for (i, name) in ["b.w", "a", "c.x.y", "b.w.scale", "aa", "z"].iter().enumerate() {
            let dtype = [FileDType::F32, FileDType::F16, FileDType::I8][i % 3];
            let shape = vec![i + 1, 3];
            let bytes = (0..(i + 1) * 3 * dtype.size()).map(|k| (k * 7 + i) as u8).collect();
            out.push(raw(name, dtype, &shape, bytes));
        }
        out
    }

    #[test]
    fn streaming_in_any_order_gives_the_bytes_of_the_whole_file() {
        let (config, vocab) = ("{\"image_size\":456}", "[PAD]\nx");
        // The file as one serialisation of the sorted tensors, with the hash of content_hash.
        let mut sorted = mixed();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let hash = content_hash(
            FORMAT_VERSION,
            Q8_GROUP,
            config,
            vocab,
            sorted.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
        );
        let whole = serialize(&sorted, &meta(config, vocab, &hash));
        assert_eq!(write_raw(mixed(), config, vocab).unwrap(), (whole.clone(), hash.clone()));
        // Every rotation and the reverse: tensors arriving out of name order wait their turn.
        let n = mixed().len();
        let mut orders: Vec<Vec<usize>> = (0..n).map(|r| (0..n).map(|i| (i + r) % n).collect()).collect();
        orders.push((0..n).rev().collect());
        for order in orders {
            let t = mixed();
            let specs = t.iter().map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            let mut w = StreamWriter::new(Vec::new(), specs.collect(), config, vocab).unwrap();
            assert_eq!(w.total_bytes(), whole.len() as u64);
            for &i in &order {
                w.put(&t[i].name, &t[i].bytes).unwrap();
            }
            assert_eq!(w.finish().unwrap(), (whole.clone(), hash.clone()), "order {order:?}");
        }
    }

    #[test]
    fn the_stream_refuses_unplanned_short_repeated_and_missing_tensors() {
        let t = mixed();
        let specs: Vec<TensorSpec> =
            t.iter().map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() }).collect();
        let mut w = StreamWriter::new(Vec::new(), specs.clone(), "{}", "v").unwrap();
        assert!(w.put("nope", &[]).unwrap_err().to_string().contains("'nope' was not planned"));
        assert!(w.put(&t[0].name, &t[0].bytes[1..]).unwrap_err().to_string().contains("but has"));
        w.put(&t[0].name, &t[0].bytes).unwrap();
        assert!(w.put(&t[0].name, &t[0].bytes).unwrap_err().to_string().contains("written twice"));
        assert!(w.finish().err().unwrap().to_string().contains("was never written"));
    }

    /// A loadable set: int8 (odd widths, with scales), f16 and f32 tensors whose names sort
    /// differently from their element sizes.
    fn loadable() -> Vec<RawTensor> {
        let t = |name: &str, shape: Vec<usize>, dtype| {
            let n = shape.iter().product::<usize>();
            WriteTensor { name: name.into(), shape, values: (0..n).map(|i| (i as f32 * 0.3).sin()).collect(), dtype }
        };
        [
            t("b.w", vec![3, 37], DType::Q8),
            t("a", vec![5], DType::F32),
            t("c.x", vec![2, 3], DType::F16),
            t("aa.w", vec![1, 5], DType::Q8),
            t("z", vec![2, 1, 3, 3], DType::F32),
        ]
        .iter()
        .flat_map(|t| encode(t).unwrap())
        .collect()
    }

    #[test]
    fn a_file_read_at_offsets_equals_the_parsed_one_in_either_layout() {
        let (config, vocab) = ("{\"image_size\":456}", "[PAD]\nx");
        let (bytes, hash) = write_raw(loadable(), config, vocab).unwrap();
        // The older layout: tensors by element size, not by name (hashed in name order anyway).
        let mut by_size = loadable();
        by_size.sort_by(|a, b| b.dtype.size().cmp(&a.dtype.size()).then_with(|| a.name.cmp(&b.name)));
        let older = serialize(&by_size, &meta(config, vocab, &hash));
        assert_ne!(older, bytes);
        let whole = ModelFile::parse(&bytes).unwrap();
        for b in [&bytes, &older] {
            let file = ModelFile::from_reader(&b[..]).unwrap();
            assert_eq!(file.content_hash, hash);
            assert_eq!(file.names().collect::<Vec<_>>(), whole.names().collect::<Vec<_>>());
            for name in whole.names() {
                assert_eq!(file.get(name).unwrap().packed.words, whole.get(name).unwrap().packed.words, "{name}");
            }
        }
    }

    /// Feeds `bytes` to a header check in pieces of `piece` bytes; its last answer.
    fn header(bytes: &[u8], max_len: u64, piece: usize) -> Result<Option<u64>> {
        let mut h = ModelHeader::new(max_len);
        let mut len = None;
        for p in bytes.chunks(piece) {
            len = h.push(p)?;
        }
        Ok(len)
    }

    #[test]
    fn a_download_is_refused_from_its_header_and_only_the_header_is_kept() {
        let (bytes, _) = write_raw(loadable(), "{}", "v").unwrap();
        let n = bytes.len() as u64;
        let head = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for piece in [1, 7, 64, head, bytes.len()] {
            assert_eq!(header(&bytes, n, piece).unwrap(), Some(n), "piece {piece}");
            let mut h = ModelHeader::new(n);
            h.push(&bytes[..head.min(piece)]).unwrap();
            h.push(&bytes[head.min(piece)..]).unwrap();
            assert_eq!(h.head.len(), head, "piece {piece}: the header alone is kept");
        }
        assert_eq!(header(&bytes[..head - 1], n, 64).unwrap(), None, "not yet");
        // Unknown length (no Content-Length): the header says it.
        assert_eq!(header(&bytes, u64::MAX, 4096).unwrap(), Some(n));
        let err = |b: &[u8], max: u64| header(b, max, 64).expect_err("refused").to_string();
        let other = edit_header(&bytes, "\"format\":\"brivl\"", "\"format\":\"brivx\"");
        assert!(err(&other[..head], n).contains("not a brivl model"));
        let old = edit_header(&bytes, &format!("\"format_version\":\"{FORMAT_VERSION}\""), "\"format_version\":\"2\"");
        assert!(err(&old[..head], n).contains("older than this build"));
        assert!(err(&bytes[..head], n - 1).contains("truncated"), "the header describes more than may come");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(err(&huge[..8], u64::MAX).contains("not a safetensors model file"));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_opened_on_disk_reads_as_parsed_and_is_refused_for_the_same_damage() {
        let (bytes, _) = write_raw(loadable(), "{}", "v").unwrap();
        let dir = std::env::temp_dir().join(format!("brivl-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |name: &str, b: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, b).unwrap();
            ModelFile::open(&path)
        };
        let parsed = ModelFile::parse(&bytes).unwrap();
        let opened = open("good", &bytes).unwrap();
        assert_eq!(opened.content_hash, parsed.content_hash);
        assert_eq!(opened.names().collect::<Vec<_>>(), parsed.names().collect::<Vec<_>>());
        for name in parsed.names() {
            let (a, b) = (opened.get(name).unwrap(), parsed.get(name).unwrap());
            assert!(a.shape == b.shape && a.packed == b.packed, "{name}");
        }
        let err = |name: &str, b: &[u8]| open(name, b).err().expect("refused").to_string();
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(err("flipped", &flipped).contains("content hash does not match"));
        assert!(err("short", &bytes[..bytes.len() - 1]).contains("truncated"));
        assert!(err("tiny", &bytes[..5]).contains("not a safetensors model file"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(err("long", &long).contains("longer than"));
        let other = edit_header(&bytes, "\"format\":\"brivl\"", "\"format\":\"brivx\"");
        assert!(err("other", &other).contains("not a brivl model"));
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(err("huge", &huge).contains("not a safetensors model file"));
        assert!(err("empty", b"").contains("not a safetensors model file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
