//! Embedding lookup: gather rows of a `[V, D]` table (f32, f16 or q8, see `quant.rs`), with an
//! optional per-position addend (BERT's position + token-type rows, precomputed).
//! Kernel: `shaders/embedding.wgsl`.

use crate::error::ensure_shape;
use crate::pipelines::Kernel;
use crate::quant::{q8_groups, row_words, Q8_GROUP};
use crate::{DType, Pass, Result, Tensor};

crate::uniform_struct! {
    /// Shapes for `embedding.wgsl`.
    /// `groups` and `q8_group`: q8 scales per row and values per scale (unused otherwise).
    pub struct EmbeddingParams {
        pub tokens: u32, pub len: u32, pub d: u32, pub vocab: u32, pub row_words: u32, pub groups: u32, pub q8_group: u32
    }
}

const KERNEL: Kernel = crate::kernel!("embedding", "main");
const WG: usize = 256;

/// `ids [..., L]` (u32) -> `[..., L, D]` rows of `table [V, D]`, plus row `l` of `add [Lmax, D]`
/// (f32, `Lmax >= L`) at position `l`. Ids `>= V` read row `V - 1` (the kernel clamps; ids are
/// never read back to the host).
pub fn embedding(pass: &mut Pass, ids: &Tensor, table: &Tensor, add: Option<&Tensor>) -> Result<Tensor> {
    let (v, d) = match table.shape() {
        &[v, d] => (v, d),
        s => return Err(crate::Error::Shape(format!("embedding: table must be [V, D], got {s:?}"))),
    };
    ensure_shape!(v > 0 && d > 0, "embedding: empty table {:?}", table.shape());
    ensure_shape!(ids.dtype() == DType::U32, "embedding: ids must be u32, got {:?}", ids.dtype());
    let len = ids.shape().last().copied();
    ensure_shape!(len.is_some(), "embedding: ids must have a sequence axis");
    let len = len.unwrap_or(0);
    let define = match table.dtype() {
        DType::F32 => "TF32",
        DType::F16 => "TF16",
        DType::Q8 => "TQ8",
        DType::U32 => return Err(crate::Error::Shape("embedding: u32 table".into())),
    };
    if let Some(a) = add {
        ensure_shape!(
            a.dtype() == DType::F32 && a.shape().len() == 2 && a.shape()[1] == d && a.shape()[0] >= len,
            "embedding: add {:?} is not f32 [Lmax >= {len}, {d}]",
            a.shape()
        );
    }
    let tokens = ids.numel();
    let count = tokens * d;
    ensure_shape!(count <= u32::MAX as usize - WG, "embedding: {count} outputs exceed u32 indexing");
    let mut out_shape = ids.shape().to_vec();
    out_shape.push(d);
    let y = Tensor::uninit(pass.gpu(), &out_shape)?;
    if count == 0 {
        return Ok(y);
    }
    let params = EmbeddingParams {
        tokens: tokens as u32,
        len: len as u32,
        d: d as u32,
        vocab: v as u32,
        row_words: row_words(table.dtype(), d) as u32,
        groups: q8_groups(d) as u32,
        q8_group: Q8_GROUP as u32,
    };
    let grid = Pass::grid(count.div_ceil(WG) as u32);
    match add {
        Some(a) => pass.dispatch(&KERNEL, &[define, "ADD"], &params, &[ids, table, a, &y], grid),
        None => pass.dispatch(&KERNEL, &[define], &params, &[ids, table, &y], grid),
    }
    Ok(y)
}

/// CPU twin: `table` is the dequantised `[V, D]` (`Packed::dequantize()`), `ids` a flat list of
/// sequences of `len`, `add` `[Lmax, D]`. Ids `>= V` take row `V - 1`, as on the GPU.
pub fn embedding_cpu(ids: &[u32], table: &[f32], d: usize, len: usize, add: Option<&[f32]>) -> Vec<f32> {
    let v = table.len() / d.max(1);
    let mut y = Vec::with_capacity(ids.len() * d);
    for (t, &id) in ids.iter().enumerate() {
        let r = (id as usize).min(v.saturating_sub(1));
        let row = &table[r * d..(r + 1) * d];
        match add {
            Some(a) => y.extend(row.iter().zip(&a[(t % len) * d..]).map(|(x, p)| x + p)),
            None => y.extend_from_slice(row),
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Packed, Q8_GROUP};
    use crate::testing::{assert_close, gpu_test, random};

    gpu_test!(embedding_each_dtype_matches_cpu, |gpu| {
        // D = 37: odd (f16 pads each row by a half) and not a multiple of 4 (q8 pads 3 bytes).
        let (v, d, b, l, lmax) = (50, 37, 3, 5, 7);
        let w = random(v * d, 1, 1.0);
        let add = random(lmax * d, 2, 0.5);
        // In range, the first and last row, and ids past the end (clamped to row V - 1).
        let ids: Vec<u32> = vec![0, 49, 7, 50, 1000, 3, 3, 12, u32::MAX, 48, 1, 2, 4, 8, 16];
        let idt = Tensor::from_u32(gpu, &[b, l], &ids).unwrap();
        let addt = Tensor::from_f32(gpu, &[lmax, d], &add).unwrap();
        for dtype in [DType::F32, DType::F16, DType::Q8] {
            let packed = Packed::new(&w, v, d, dtype).unwrap();
            let table = Tensor::from_packed(gpu, &packed).unwrap();
            for with_add in [false, true] {
                let want = embedding_cpu(&ids, &packed.dequantize(), d, l, with_add.then_some(&add[..]));
                let mut pass = Pass::new(gpu);
                let y = embedding(&mut pass, &idt, &table, with_add.then_some(&addt)).unwrap();
                pass.submit().unwrap();
                assert_eq!(y.shape(), [b, l, d]);
                let got = y.read_f32(gpu).await.unwrap();
                // The gather and q8's one f32 multiply by the scale are the same on both sides,
                // and the add is one f32 add: exact but for a possible fused multiply-add (1 ulp).
                assert_close(&got, &want, 0.0, 2e-7, &format!("embedding {dtype:?} add={with_add}"));
            }
        }
    });

    gpu_test!(embedding_q8_group_scales, |gpu| {
        // Rows of two whole scale groups and a short one, of different magnitudes each.
        let (v, d, l) = (9, 2 * Q8_GROUP + 5, 4);
        let mut w = random(v * d, 4, 1.0);
        w.iter_mut().enumerate().for_each(|(i, x)| *x *= [1.0, 8.0, 0.25][(i % d) / Q8_GROUP]);
        let ids: Vec<u32> = vec![8, 0, 3, 5];
        let packed = Packed::new(&w, v, d, DType::Q8).unwrap();
        let table = Tensor::from_packed(gpu, &packed).unwrap();
        let idt = Tensor::from_u32(gpu, &[1, l], &ids).unwrap();
        let mut pass = Pass::new(gpu);
        let y = embedding(&mut pass, &idt, &table, None).unwrap();
        pass.submit().unwrap();
        let got = y.read_f32(gpu).await.unwrap();
        assert_close(&got, &embedding_cpu(&ids, &packed.dequantize(), d, l, None), 0.0, 0.0, "q8 gather");
    });

    gpu_test!(embedding_large_gather, |gpu| {
        // BERT's D and a full batch: 768 x 256 outputs over 768 workgroups, ids up to V + 10.
        let (v, d, b, l) = (300, 768, 8, 32);
        let w = random(v * d, 3, 1.0);
        let ids: Vec<u32> = (0..b * l).map(|i| (i * 97 % (v + 11)) as u32).collect();
        let packed = Packed::new(&w, v, d, DType::F16).unwrap();
        let table = Tensor::from_packed(gpu, &packed).unwrap();
        let idt = Tensor::from_u32(gpu, &[b, l], &ids).unwrap();
        let mut pass = Pass::new(gpu);
        let y = embedding(&mut pass, &idt, &table, None).unwrap();
        pass.submit().unwrap();
        let got = y.read_f32(gpu).await.unwrap();
        assert_close(&got, &embedding_cpu(&ids, &packed.dequantize(), d, l, None), 0.0, 0.0, "f16 gather is exact");
    });

    gpu_test!(embedding_refuses_bad_shapes, |gpu| {
        let table = Tensor::from_f32(gpu, &[4, 3], &[0.0; 12]).unwrap();
        let ids = Tensor::from_u32(gpu, &[2, 5], &[0; 10]).unwrap();
        let float_ids = Tensor::from_f32(gpu, &[2, 5], &[0.0; 10]).unwrap();
        let short_add = Tensor::from_f32(gpu, &[4, 3], &[0.0; 12]).unwrap();
        let wide_add = Tensor::from_f32(gpu, &[5, 4], &[0.0; 20]).unwrap();
        let u32_table = Tensor::from_u32(gpu, &[4, 3], &[0; 12]).unwrap();
        let flat_table = Tensor::from_f32(gpu, &[12], &[0.0; 12]).unwrap();
        let empty_table = Tensor::from_f32(gpu, &[0, 3], &[]).unwrap();
        let mut pass = Pass::new(gpu);
        let is_shape = |r: Result<Tensor>| matches!(r, Err(crate::Error::Shape(_)));
        assert!(is_shape(embedding(&mut pass, &float_ids, &table, None)));
        assert!(is_shape(embedding(&mut pass, &ids, &table, Some(&short_add))), "Lmax < L");
        assert!(is_shape(embedding(&mut pass, &ids, &table, Some(&wide_add))), "add D differs");
        assert!(is_shape(embedding(&mut pass, &ids, &u32_table, None)));
        assert!(is_shape(embedding(&mut pass, &ids, &flat_table, None)));
        assert!(is_shape(embedding(&mut pass, &ids, &empty_table, None)));
    });
}
