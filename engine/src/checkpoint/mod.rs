//! Reading PyTorch checkpoints (`torch.save`, zip format, torch >= 1.6) in pure Rust.
//!
//! The archive is a stored zip holding `<archive>/data.pkl` (a pickle of the saved object, whose
//! tensors point at storages by key) and `<archive>/data/<key>` (raw little-endian elements).
//! [`read_checkpoint`] runs the pickle, flattens nested dicts of tensors into `.`-joined names
//! and returns [`TensorView`]s that point at the storages in the input: nothing is copied until
//! a tensor is converted, and from bytes in memory contiguous little-endian f32 tensors are not
//! copied even then. [`read_checkpoint_from`] reads a file in slices instead ([`ReadAt`]: a
//! browser `File`, a native file): the end records, the central directory and `data.pkl` when
//! opened, then each tensor's bytes when it is converted, so memory holds one tensor at a time.
//!
//! ```no_run
//! # use brivl_engine::checkpoint::read_checkpoint_with;
//! let bytes = std::fs::read("brivl-with-roberta-base.pth")?;
//! let ck = read_checkpoint_with(&bytes, |name| !name.contains("_mom."))?;
//! let weights = ck.subtree("learnable");
//! let w = weights.tensor("imgencoder.learnable.imgFC.fc1.weight")?.to_f32()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod pickle;
mod zip;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use pickle::Value;

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64)
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F64 => "float64",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
        }
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a PyTorch checkpoint: {0}")]
    NotZip(String),
    #[error("legacy PyTorch format: re-save with torch.save(obj, path) from torch >= 1.6")]
    Legacy,
    #[error("corrupt checkpoint zip: {0}")]
    Zip(String),
    #[error("zip entry {name:?} is compressed (method {method}); torch.save writes uncompressed entries: re-save it with torch.save")]
    Compressed { name: String, method: u16 },
    #[error("no */data.pkl in the zip: not a PyTorch checkpoint")]
    MissingDataPkl,
    #[error("unsupported pickle opcode {name} (0x{opcode:02x}) at byte {offset} of data.pkl")]
    UnsupportedOpcode { opcode: u8, name: &'static str, offset: usize },
    #[error("unsupported global {0} in data.pkl: only tensors, storages and dicts can be loaded")]
    UnsupportedGlobal(String),
    #[error("malformed data.pkl at byte {offset}: {msg}")]
    Pickle { offset: usize, msg: String },
    #[error("checkpoint holds no tensors in a form we read: {0}")]
    Structure(String),
    /// Refused before building what it describes: more than a multiple of its own size.
    #[error("data.pkl is refused: {0}")]
    TooLarge(String),
    #[error("tensor {tensor:?}: its storage {key:?} is missing from the archive")]
    MissingStorage { tensor: String, key: String },
    #[error("tensor {tensor:?}: {msg}")]
    OutOfBounds { tensor: String, msg: String },
    #[error("tensor {tensor:?} is {dtype}, not {wanted}")]
    WrongDType { tensor: String, dtype: StoredDType, wanted: &'static str },
    #[error("no tensor named {0:?} in the checkpoint")]
    NotFound(String),
    /// The input could not be read (a file that changed or went away while being read).
    #[error("reading the checkpoint failed: {0}")]
    Read(String),
}

/// Random access to a checkpoint file that is not held in memory.
pub trait ReadAt {
    /// The file's length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the file's bytes from `offset` (callers stay within [`size`](Self::size)).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
}

/// A native file, read at offsets (`brivl convert` and the tests read checkpoints this way).
#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).map_err(|e| e.to_string())
    }
}

/// Bytes in memory, read at offsets (tests and fuzzing read model files this way).
impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let at = usize::try_from(offset).map_err(|_| "offset past the end")?;
        let src = at.checked_add(buf.len()).and_then(|end| self.get(at..end)).ok_or("read past the end")?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A native file, read at offsets (as above, on Windows).
#[cfg(windows)]
impl ReadAt for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> Result<(), String> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.seek_read(buf, offset) {
                Ok(0) => return Err("the file ended early".into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// Where a checkpoint's bytes are: in memory (views borrow them), or behind a [`ReadAt`].
#[derive(Clone, Copy)]
pub(crate) enum Input<'a> {
    Bytes(&'a [u8]),
    Reader(&'a dyn ReadAt),
}

impl fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Input::Reader(r) => write!(f, "Reader({})", r.size()),
        }
    }
}

impl<'a> Input<'a> {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Input::Bytes(b) => b.len() as u64,
            Input::Reader(r) => r.size(),
        }
    }

    /// Refuses a range that runs past the end of the file.
    pub(crate) fn check(&self, at: u64, len: u64, what: &str) -> Result<(), CheckpointError> {
        match at.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(CheckpointError::Zip(format!(
                "{what} at byte {at} (+{len}) runs past the end of the file ({} bytes); is it truncated?",
                self.len()
            ))),
        }
    }

    /// `len` bytes at `at`: borrowed from memory, or read (at most the file's size: what the
    /// input justifies).
    pub(crate) fn read(&self, at: u64, len: u64, what: &str) -> Result<Cow<'a, [u8]>, CheckpointError> {
        self.check(at, len, what)?;
        match *self {
            Input::Bytes(b) => Ok(Cow::Borrowed(&b[at as usize..(at + len) as usize])),
            Input::Reader(r) => {
                let len = usize::try_from(len)
                    .map_err(|_| CheckpointError::TooLarge(format!("{what} of {len} bytes does not fit in memory")))?;
                let mut buf = vec![0u8; len];
                r.read_exact_at(at, &mut buf).map_err(CheckpointError::Read)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    pub(crate) fn starts_with(&self, prefix: &[u8]) -> bool {
        let n = prefix.len() as u64;
        n <= self.len() && self.read(0, n, "file").is_ok_and(|b| *b == *prefix)
    }
}

/// A tensor of the checkpoint: where its storage lies in the input, and how it views it.
/// Its size, stride and offset were checked against the storage when it was read.
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    name: String,
    shape: Vec<usize>,
    strides: Vec<usize>,
    /// In elements, into the storage.
    offset: usize,
    /// Elements from `offset` to the farthest one any index reaches (0 when empty).
    span: usize,
    dtype: StoredDType,
    input: Input<'a>,
    /// File offset of the storage's first byte.
    storage_at: u64,
    storage_key: String,
    big_endian: bool,
}

/// An owned tensor: floats as f32, integers and bools as i64.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    /// The type it was stored as.
    pub dtype: StoredDType,
    pub values: Values,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl<'a> TensorView<'a> {
    /// Full name in the checkpoint (before any [`Checkpoint::subtree`] stripping).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// In elements, as torch reports them.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn dtype(&self) -> StoredDType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        // Cannot overflow: checked when the view was made.
        self.shape.iter().product()
    }
    /// The archive's storage key: views sharing a key share memory.
    pub fn storage_key(&self) -> &str {
        &self.storage_key
    }
    pub fn storage_offset(&self) -> usize {
        self.offset
    }
    /// Row-major with no gaps (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut want = 1usize;
        for (&s, &st) in self.shape.iter().zip(&self.strides).rev() {
            if s == 0 {
                return true;
            }
            if s != 1 && st != want {
                return false;
            }
            want = want.saturating_mul(s);
        }
        true
    }

    /// Bytes of the stored elements this view reads (a single read of the input).
    pub fn read_bytes(&self) -> usize {
        self.span * self.dtype.size()
    }

    /// The elements in row-major order as f32 (f16, bf16 and f64 are converted). Borrowed from
    /// the input when it is in memory and the tensor is contiguous little-endian f32 with
    /// 4-aligned bytes; read straight into the result from a [`ReadAt`].
    pub fn to_f32(&self) -> Result<Cow<'a, [f32]>, CheckpointError> {
        let le = !self.big_endian;
        match self.dtype {
            StoredDType::F32 => {
                if le && cfg!(target_endian = "little") && self.is_contiguous() {
                    let n = self.numel();
                    let at = self.storage_at + (self.offset * 4) as u64;
                    match self.input {
                        Input::Bytes(b) => {
                            let bytes = &b[at as usize..at as usize + n * 4];
                            if let Ok(s) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
                                return Ok(Cow::Borrowed(s));
                            }
                        }
                        Input::Reader(r) => {
                            let mut out = vec![0f32; n];
                            r.read_exact_at(at, bytemuck::cast_slice_mut(&mut out)).map_err(CheckpointError::Read)?;
                            return Ok(Cow::Owned(out));
                        }
                    }
                }
                Ok(Cow::Owned(self.gather(|b| f32::from_bits(word32(b, le)))?))
            }
            StoredDType::F16 => Ok(Cow::Owned(self.gather(|b| half::f16::from_bits(word16(b, le)).to_f32())?)),
            StoredDType::BF16 => Ok(Cow::Owned(self.gather(|b| half::bf16::from_bits(word16(b, le)).to_f32())?)),
            StoredDType::F64 => Ok(Cow::Owned(self.gather(|b| f64::from_bits(word64(b, le)) as f32)?)),
            d => Err(CheckpointError::WrongDType { tensor: self.name.clone(), dtype: d, wanted: "a float type" }),
        }
    }

    /// The elements in row-major order as i64, for integer and bool tensors.
    pub fn to_i64(&self) -> Result<Vec<i64>, CheckpointError> {
        let le = !self.big_endian;
        match self.dtype {
            StoredDType::I64 => self.gather(|b| word64(b, le) as i64),
            StoredDType::I32 => self.gather(|b| word32(b, le) as i32 as i64),
            StoredDType::I16 => self.gather(|b| word16(b, le) as i16 as i64),
            StoredDType::I8 => self.gather(|b| b[0] as i8 as i64),
            StoredDType::U8 => self.gather(|b| b[0] as i64),
            StoredDType::Bool => self.gather(|b| (b[0] != 0) as i64),
            d => Err(CheckpointError::WrongDType { tensor: self.name.clone(), dtype: d, wanted: "an integer type" }),
        }
    }

    /// An owned copy: f32 values for float tensors, i64 values for the rest.
    pub fn load(&self) -> Result<TensorData, CheckpointError> {
        let values =
            if self.dtype.is_float() { Values::F32(self.to_f32()?.into_owned()) } else { Values::I64(self.to_i64()?) };
        Ok(TensorData { shape: self.shape.clone(), dtype: self.dtype, values })
    }

    /// Reads every element in row-major order, following the strides: one read of the
    /// elements the view spans (no more than its storage holds).
    fn gather<T>(&self, read: impl Fn(&[u8]) -> T) -> Result<Vec<T>, CheckpointError> {
        let es = self.dtype.size();
        let n = self.numel();
        let at = self.storage_at + (self.offset * es) as u64;
        let span = self.input.read(at, (self.span * es) as u64, &format!("tensor {:?}", self.name))?;
        if self.is_contiguous() {
            return Ok(span[..n * es].chunks_exact(es).map(read).collect());
        }
        let mut out = Vec::with_capacity(n);
        let nd = self.shape.len();
        let mut idx = vec![0usize; nd];
        // Wrapping: a size-1 dim may carry any stride, so the running position may step past
        // the span before stepping back; the final positions were bounds-checked.
        let mut pos = 0usize;
        for _ in 0..n {
            out.push(read(&span[pos * es..pos * es + es]));
            for d in (0..nd).rev() {
                idx[d] += 1;
                pos = pos.wrapping_add(self.strides[d]);
                if idx[d] < self.shape[d] {
                    break;
                }
                pos = pos.wrapping_sub(self.strides[d].wrapping_mul(self.shape[d]));
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

fn word16(b: &[u8], le: bool) -> u16 {
    let a = [b[0], b[1]];
    if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    }
}
fn word32(b: &[u8], le: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}
fn word64(b: &[u8], le: bool) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    if le {
        u64::from_le_bytes(a)
    } else {
        u64::from_be_bytes(a)
    }
}

/// The tensors of a checkpoint by flattened name (`outer.inner.param`), in the order torch saved them.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint<'a> {
    tensors: Vec<(String, TensorView<'a>)>,
    index: HashMap<String, usize>,
    /// Length of the file the tensors were read from.
    file_bytes: usize,
}

impl<'a> Checkpoint<'a> {
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TensorView<'a>)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }
    pub fn get(&self, name: &str) -> Option<&TensorView<'a>> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }
    /// Like [`get`](Self::get), with an error naming the missing tensor.
    pub fn tensor(&self, name: &str) -> Result<&TensorView<'a>, CheckpointError> {
        self.get(name).ok_or_else(|| CheckpointError::NotFound(name.to_string()))
    }
    /// The tensors named `prefix.*`, with `prefix.` stripped from their names.
    pub fn tensors_under<'s>(&'s self, prefix: &'s str) -> impl Iterator<Item = (&'s str, &'s TensorView<'a>)> + 's {
        self.iter().filter_map(move |(n, t)| n.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')).map(|r| (r, t)))
    }
    /// Length of the checkpoint file. Views may share storage, but no view holds more elements
    /// than its storage, and a reader of many views can bound its work by this.
    pub fn file_bytes(&self) -> usize {
        self.file_bytes
    }

    /// A checkpoint of the tensors under `prefix` (e.g. `"learnable"`), named without it.
    pub fn subtree(&self, prefix: &str) -> Checkpoint<'a> {
        let mut out = Checkpoint { file_bytes: self.file_bytes, ..Checkpoint::default() };
        for (n, t) in self.tensors_under(prefix) {
            out.insert(n.to_string(), t.clone());
        }
        out
    }

    /// Python dict semantics: a repeated name replaces the value in the first one's place.
    fn insert(&mut self, name: String, view: TensorView<'a>) {
        if let Some(&i) = self.index.get(&name) {
            self.tensors[i].1 = view;
        } else {
            self.index.insert(name.clone(), self.tensors.len());
            self.tensors.push((name, view));
        }
    }
}

/// The first bytes of a pre-1.6 checkpoint: PROTO n, then LONG1 of the 10-byte magic number
/// 0x1950a86a20f9469cfc6c.
fn is_legacy(bytes: &[u8]) -> bool {
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == MAGIC
}

/// Reads every tensor of a `torch.save` zip checkpoint. See [`read_checkpoint_with`].
pub fn read_checkpoint(bytes: &[u8]) -> Result<Checkpoint<'_>, CheckpointError> {
    read_checkpoint_with(bytes, |_| true)
}

/// Reads the tensors whose flattened name `keep` accepts. Skipped tensors are not checked
/// against their storages, and their bytes are never touched.
pub fn read_checkpoint_with(bytes: &[u8], keep: impl FnMut(&str) -> bool) -> Result<Checkpoint<'_>, CheckpointError> {
    read_input(Input::Bytes(bytes), keep)
}

/// As [`read_checkpoint`], reading `file` in slices: the tensors' bytes are read when each is
/// converted, so the checkpoint is never held whole.
pub fn read_checkpoint_from(file: &dyn ReadAt) -> Result<Checkpoint<'_>, CheckpointError> {
    read_input(Input::Reader(file), |_| true)
}

fn read_input(input: Input<'_>, mut keep: impl FnMut(&str) -> bool) -> Result<Checkpoint<'_>, CheckpointError> {
    if is_legacy(&input.read(0, input.len().min(14), "file")?) {
        return Err(CheckpointError::Legacy);
    }
    let entries = zip::entries(input)?;
    // `<archive>/data.pkl`: the archive folder is named after the file torch saved to.
    let pkl = entries
        .iter()
        .find(|e| {
            e.name.strip_suffix("data.pkl").is_some_and(|dir| dir.ends_with('/') && dir.matches('/').count() == 1)
        })
        .ok_or(CheckpointError::MissingDataPkl)?;
    let pkl_data = input.read(pkl.at, pkl.len, &pkl.name)?;
    if zip::crc32(&pkl_data) != pkl.crc32 {
        return Err(CheckpointError::Zip(format!("{} fails its CRC check: the file is corrupt", pkl.name)));
    }
    let dir = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    let big_endian = match entries.iter().find(|e| e.name.strip_prefix(dir) == Some("byteorder")) {
        Some(e) => {
            // "big" or "little"; only the first bytes of anything longer are read, to name it.
            let data = input.read(e.at, e.len.min(64), "byteorder")?;
            match (&*data, e.len) {
                (b"big", 3) => true,
                (b"little", 6) => false,
                _ => {
                    return Err(CheckpointError::Zip(format!(
                        "unknown byteorder {:?}",
                        String::from_utf8_lossy(&data)
                    )));
                }
            }
        }
        None => false, // Files before torch 2.1 have no byteorder record and are little-endian.
    };
    let storages: HashMap<&str, (u64, u64)> = entries
        .iter()
        .filter_map(|e| e.name.strip_prefix(dir).and_then(|n| n.strip_prefix("data/")).map(|k| (k, (e.at, e.len))))
        .collect();

    let root = pickle::unpickle(&pkl_data)?;
    let mut found = Vec::new();
    let mut budget = Budget::for_pickle(pkl_data.len());
    flatten(&root, String::new(), 0, &mut budget, &mut found)?;
    if found.is_empty() && !matches!(root, Value::Dict(_)) {
        return Err(CheckpointError::Structure(format!(
            "the saved object is a {}, not a dict of tensors",
            kind(&root)
        )));
    }

    let file_bytes = usize::try_from(input.len()).unwrap_or(usize::MAX);
    let mut out = Checkpoint { file_bytes, ..Checkpoint::default() };
    for (name, spec) in found {
        if !keep(&name) {
            continue;
        }
        let storage = *storages
            .get(spec.storage.key.as_str())
            .ok_or_else(|| CheckpointError::MissingStorage { tensor: name.clone(), key: spec.storage.key.clone() })?;
        let view = make_view(name.clone(), &spec, input, storage, big_endian)?;
        out.insert(name, view);
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Tensor(_) => "tensor",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        _ => "value that is not a container",
    }
}

/// What flattening may build, in bytes: every name made (whether it names a tensor or not) and
/// a fixed cost per value visited and per tensor found. A pickle can refer to one dict, or one
/// long string, any number of times for a few bytes each; an honest one writes each tensor's key
/// in its own bytes, so its names cost a small multiple of its length. Anything past that is
/// refused before it is built.
struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    /// Bytes of bookkeeping per value visited or tensor found (its place in the lists, its shape).
    const VISIT: usize = 32;

    fn for_pickle(len: usize) -> Budget {
        let limit = len.saturating_mul(16).saturating_add(1 << 16);
        Budget { left: limit, limit }
    }

    fn spend(&mut self, bytes: usize) -> Result<(), CheckpointError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(CheckpointError::TooLarge(format!(
                "it refers to the same objects so often that its tensor names would take more than {} bytes \
                 (16 times the pickle): a pickle bomb?",
                self.limit
            ))),
        }
    }
}

/// Collects (name, tensor) pairs from nested dicts, lists and tuples; other values are skipped.
fn flatten(
    v: &Value,
    name: String,
    depth: usize,
    budget: &mut Budget,
    out: &mut Vec<(String, std::rc::Rc<pickle::TensorSpec>)>,
) -> Result<(), CheckpointError> {
    const MAX_DEPTH: usize = 64;
    // The child's name, paid for before it is made.
    let child = |key: &str, budget: &mut Budget| -> Result<String, CheckpointError> {
        budget.spend(Budget::VISIT + name.len() + 1 + key.len())?;
        Ok(if name.is_empty() { key.to_string() } else { format!("{name}.{key}") })
    };
    if matches!(v, Value::Dict(_) | Value::List(_) | Value::Tuple(_)) && depth >= MAX_DEPTH {
        return Err(CheckpointError::Structure("containers nest too deeply or refer to themselves".into()));
    }
    match v {
        Value::Tensor(t) => {
            // The view made from it copies the name, the size and the stride.
            budget.spend(Budget::VISIT + name.len() + 16 * t.size.len())?;
            out.push((name, t.clone()));
        }
        Value::Dict(d) => {
            for (k, v) in d.borrow().iter() {
                let name = match k {
                    Value::Str(s) => child(s, budget)?,
                    Value::Int(i) => child(&i.to_string(), budget)?,
                    _ => continue, // Keys that cannot name a tensor (torch never writes them).
                };
                flatten(v, name, depth + 1, budget, out)?;
            }
        }
        Value::List(l) => {
            for (i, v) in l.borrow().iter().enumerate() {
                let name = child(&i.to_string(), budget)?;
                flatten(v, name, depth + 1, budget, out)?;
            }
        }
        Value::Tuple(t) => {
            for (i, v) in t.iter().enumerate() {
                let name = child(&i.to_string(), budget)?;
                flatten(v, name, depth + 1, budget, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks size, stride and offset against the storage and makes the view.
fn make_view<'a>(
    name: String,
    spec: &pickle::TensorSpec,
    input: Input<'a>,
    (storage_at, storage_len): (u64, u64),
    big_endian: bool,
) -> Result<TensorView<'a>, CheckpointError> {
    let es = spec.storage.dtype.size();
    let oob = |msg: String| CheckpointError::OutOfBounds { tensor: name.clone(), msg };
    let numel = spec
        .size
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .filter(|n| n.checked_mul(es).is_some())
        .ok_or_else(|| oob(format!("size {:?} has too many elements", spec.size)))?;
    // Within the file (checked when the zip was read), so within usize on 64-bit targets.
    let available = usize::try_from(storage_len / es as u64).unwrap_or(usize::MAX);
    if numel > available {
        // Views that repeat elements (stride 0, overlapping strides) are legal in torch, but a
        // state dict never needs more elements than it stores: this bounds what loading takes.
        return Err(oob(format!(
            "size {:?} has {numel} elements but its storage {:?} holds only {available} {} elements",
            spec.size, spec.storage.key, spec.storage.dtype
        )));
    }
    let mut span = 0;
    if numel > 0 {
        // The farthest element any index reaches.
        let last = spec
            .size
            .iter()
            .zip(&spec.stride)
            .try_fold(spec.offset, |a, (&s, &st)| (s - 1).checked_mul(st).and_then(|x| a.checked_add(x)));
        match last {
            Some(last) if last < available => span = last - spec.offset + 1,
            _ => {
                return Err(oob(format!(
                    "size {:?}, stride {:?} and offset {} reach past its storage {:?} of {available} {} elements",
                    spec.size, spec.stride, spec.offset, spec.storage.key, spec.storage.dtype
                )));
            }
        }
    } else if spec.offset > available {
        return Err(oob(format!("offset {} is past its storage of {available} elements", spec.offset)));
    }
    Ok(TensorView {
        name,
        shape: spec.size.clone(),
        strides: spec.stride.clone(),
        offset: spec.offset,
        span,
        dtype: spec.storage.dtype,
        input,
        storage_at,
        storage_key: spec.storage.key.clone(),
        big_endian,
    })
}
