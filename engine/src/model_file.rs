//! The converted model file: safetensors whose metadata holds the architecture, the vocabulary,
//! a format version and a content hash. Weight matrices are f32, f16, or int8 with
//! `<name>.scale` (f32 `[rows, ceil(cols / q8_group)]`, one scale per `q8_group` values of a row,
//! see `quant.rs`); everything else is f32.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::quant::{q8_groups, Packed, Q8_GROUP};
use crate::{DType, Error, Result};

pub const FORMAT: &str = "brivl";
/// 2: q8 scales per group of `q8_group` values of a row (1 had one scale per row).
pub const FORMAT_VERSION: u32 = 2;

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
            return Err(bad(format!(
                "model file format version {version}; this build reads version {FORMAT_VERSION} \
                 (convert the checkpoint again with this build's `brivl convert`)"
            )));
        }
        let group = get("q8_group")?;
        if group != Q8_GROUP.to_string() {
            return Err(bad(format!("model file has q8 scales per {group} values; this build reads {Q8_GROUP}")));
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
                    let want = [rows, q8_groups(cols)];
                    if scale.dtype() != Dtype::F32 || scale.shape() != want {
                        return Err(bad(format!(
                            "'{name}.scale' is {:?} {:?}, expected F32 {want:?}",
                            scale.dtype(),
                            scale.shape()
                        )));
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
                    vec![rows, q8_groups(cols)],
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
        ("q8_group".to_string(), Q8_GROUP.to_string()),
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
        let v1 = edit_header(&bytes, &format!("\"format_version\":\"{FORMAT_VERSION}\""), "\"format_version\":\"1\"");
        let err = ModelFile::parse(&v1).err().unwrap().to_string();
        assert!(err.contains("format version 1") && err.contains("convert the checkpoint again"), "{err}");
        let other = if Q8_GROUP == 32 { "64" } else { "32" };
        let g = edit_header(&bytes, &format!("\"q8_group\":\"{Q8_GROUP}\""), &format!("\"q8_group\":\"{other}\""));
        let err = ModelFile::parse(&g).err().unwrap().to_string();
        assert!(err.contains(&format!("per {other} values")), "{err}");
    }

    #[test]
    fn q8_scales_of_the_wrong_shape_are_refused() {
        // One scale per row (version 1's layout) under a version 2 header, with a valid hash.
        let (rows, cols) = (2, Q8_GROUP + 1);
        let data = vec![1u8; rows * cols];
        let scales = vec![0u8; rows * 4];
        let items = [("m", Dtype::I8, vec![rows, cols], &data), ("m.scale", Dtype::F32, vec![rows], &scales)];
        let hash = content_hash(items.iter().map(|(n, d, s, b)| (*n, dtype_name(*d), s.as_slice(), b.as_slice())));
        let meta = std::collections::HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("q8_group".to_string(), Q8_GROUP.to_string()),
            ("config".to_string(), "{}".to_string()),
            ("vocab".to_string(), "v".to_string()),
            ("content_hash".to_string(), hash),
        ]);
        let views = items
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()));
        let bytes = safetensors::serialize(views, Some(meta)).unwrap();
        let err = ModelFile::parse(&bytes).err().unwrap().to_string();
        assert!(err.contains("'m.scale' is F32 [2], expected F32 [2, 2]"), "{err}");
    }
}
