//! The converted model file: safetensors whose metadata holds the architecture, the vocabulary,
//! a format version and a content hash. Weight matrices are f32, f16, or int8 with a per-row
//! `<name>.scale` (f32); everything else is f32.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::quant::Packed;
use crate::{DType, Error, Result};

pub const FORMAT: &str = "brivl";
pub const FORMAT_VERSION: u32 = 1;

/// A tensor as stored: logical shape, and the packed words the engine uploads.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub packed: Packed,
}

/// A parsed model file.
pub struct ModelFile {
    pub config_json: String,
    pub vocab: String,
    pub content_hash: String,
    pub tensors: BTreeMap<String, StoredTensor>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Model(msg.into())
}

/// SHA-256 over every tensor's name, dtype, shape and bytes, in name order.
fn content_hash<'a>(items: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape, bytes) in items {
        h.update(name.as_bytes());
        h.update(dtype.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl ModelFile {
    /// Parses and verifies a model file: format, version, hash, and every tensor's size.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors model file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).cloned().ok_or_else(|| bad(format!("model file metadata has no '{k}' (not a brivl model?)")))
        };
        if get("format")? != FORMAT {
            return Err(bad("model file is not a brivl model (metadata 'format' differs)"));
        }
        let version = get("format_version")?;
        if version != FORMAT_VERSION.to_string() {
            return Err(bad(format!("model file format version {version}; this build reads version {FORMAT_VERSION}")));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("corrupt model file: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let views: Vec<_> = names.iter().map(|n| (n, st.tensor(n).expect("listed name"))).collect();
        let hash = content_hash(views.iter().map(|(n, v)| (n.as_str(), dtype_name(v.dtype()), v.shape(), v.data())));
        let want = get("content_hash")?;
        if hash != want {
            return Err(bad(
                "model file is corrupt: its content hash does not match (truncated or modified download?)",
            ));
        }
        let mut tensors = BTreeMap::new();
        for (name, v) in &views {
            if name.ends_with(".scale") {
                continue;
            }
            let shape = v.shape().to_vec();
            let (rows, cols) = matrix_dims(&shape);
            let data = v.data();
            let packed = match v.dtype() {
                Dtype::F32 => {
                    let vals: Vec<f32> =
                        data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    Packed::new(&vals, rows, cols, DType::F32)?
                }
                Dtype::F16 => pack_f16(data, rows, cols),
                Dtype::I8 => {
                    let scale = st
                        .tensor(&format!("{name}.scale"))
                        .map_err(|_| bad(format!("int8 tensor '{name}' has no '{name}.scale'")))?;
                    let scales: Vec<f32> =
                        scale.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    if scales.len() != rows {
                        return Err(bad(format!("'{name}.scale' has {} values for {rows} rows", scales.len())));
                    }
                    pack_q8(data, &scales, rows, cols)
                }
                other => return Err(bad(format!("tensor '{name}' has unsupported dtype {other:?}"))),
            };
            tensors.insert(name.to_string(), StoredTensor { shape, packed });
        }
        Ok(Self { config_json: get("config")?, vocab: get("vocab")?, content_hash: hash, tensors })
    }

    pub fn get(&self, name: &str) -> Result<&StoredTensor> {
        self.tensors.get(name).ok_or_else(|| bad(format!("model file has no tensor '{name}'")))
    }
}

/// Matrices are `[rows, everything else]`; vectors and scalars are one row.
fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::I8 => "I8",
        _ => "other",
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

fn pack_q8(data: &[u8], scales: &[f32], rows: usize, cols: usize) -> Packed {
    let rw = cols.div_ceil(4);
    let mut words = vec![0u32; rows * rw + rows];
    for r in 0..rows {
        for c in 0..cols {
            words[r * rw + c / 4] |= (data[r * cols + c] as u32) << (8 * (c % 4));
        }
        words[rows * rw + r] = scales[r].to_bits();
    }
    Packed { dtype: DType::Q8, rows, cols, words }
}

/// One tensor to write: f32 values with a logical shape, stored as `dtype`.
pub struct WriteTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// F32 for everything; F16 or Q8 only for matrices (`[rows, ...]` quantised per row).
    pub dtype: DType,
}

/// Serialises a model file; returns the bytes and the content hash.
pub fn write(tensors: &[WriteTensor], config_json: &str, vocab: &str) -> Result<(Vec<u8>, String)> {
    // (name, safetensors dtype, shape, bytes)
    let mut items: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in tensors {
        let (rows, cols) = matrix_dims(&t.shape);
        match t.dtype {
            DType::F32 | DType::U32 => {
                items.push((t.name.clone(), Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.values).to_vec()))
            }
            DType::F16 => {
                let bytes = t.values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
                items.push((t.name.clone(), Dtype::F16, t.shape.clone(), bytes));
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
                let scales: Vec<f32> = p.words[rows * rw..].iter().map(|w| f32::from_bits(*w)).collect();
                items.push((t.name.clone(), Dtype::I8, t.shape.clone(), bytes));
                items.push((
                    format!("{}.scale", t.name),
                    Dtype::F32,
                    vec![rows],
                    bytemuck::cast_slice(&scales).to_vec(),
                ));
            }
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let hash = content_hash(items.iter().map(|(n, d, s, b)| (n.as_str(), dtype_name(*d), s.as_slice(), b.as_slice())));
    let meta = std::collections::HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("config".to_string(), config_json.to_string()),
        ("vocab".to_string(), vocab.to_string()),
        ("content_hash".to_string(), hash.clone()),
    ]);
    let views: Vec<(String, safetensors::tensor::TensorView)> = items
        .iter()
        .map(|(n, d, s, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).map_err(|e| bad(e.to_string()))?))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
    Ok((bytes, hash))
}
