//! Embedding lookup: gather rows of a `[V, D]` table (f32, f16 or q8, see `quant.rs`), with an
//! optional per-position addend (BERT's position + token-type rows, precomputed).
//! Kernel: `shaders/embedding.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::quant::{q8_groups, row_words, Q8_GROUP};
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `embedding.wgsl`.
    /// `groups` and `q8_group`: q8 scales per row and values per scale (unused otherwise).
    pub struct EmbeddingParams {
        pub tokens: u32, pub len: u32, pub d: u32, pub vocab: u32, pub row_words: u32, pub groups: u32, pub q8_group: u32
    }
}

const KERNEL: Kernel = crate::pipelines::kernel!("embedding", "main");
const WG: usize = 256;

/// Checked shapes: `tokens` ids in sequences of `len`, rows of `d` from a `vocab`-row table.
#[derive(Clone, Debug)]
pub(crate) struct EmbeddingGeometry {
    pub tokens: usize,
    pub len: usize,
    pub d: usize,
    pub vocab: usize,
    /// `ids`' shape with `d` appended.
    pub out_shape: Vec<usize>,
}

/// The shape check of [`embedding`] and its CPU twin: `ids` u32 with a sequence axis L last,
/// `table` `[V, D]` (f32, f16 or q8) with V, D > 0, `add` f32 `[Lmax >= L, D]`.
pub(crate) fn check(ids: Meta, table: Meta, add: Option<Meta>) -> Result<EmbeddingGeometry> {
    let &[vocab, d] = table.shape else {
        return Err(Error::Shape(format!("embedding: table must be [V, D], got {:?}", table.shape)));
    };
    ensure_shape!(vocab > 0 && d > 0, "embedding: empty table {:?}", table.shape);
    ensure_shape!(table.dtype != DType::U32, "embedding: u32 table");
    ensure_shape!(ids.dtype == DType::U32, "embedding: ids must be u32, got {:?}", ids.dtype);
    let Some(&len) = ids.shape.last() else {
        return Err(Error::Shape("embedding: ids must have a sequence axis".into()));
    };
    if let Some(a) = add {
        ensure_shape!(
            a.dtype == DType::F32 && matches!(a.shape, &[lmax, ad] if lmax >= len && ad == d),
            "embedding: add {:?} {:?} is not f32 [Lmax >= {len}, {d}]",
            a.dtype,
            a.shape
        );
    }
    let tokens = ids.numel();
    let outputs = tokens.saturating_mul(d);
    // The kernel's last workgroup computes indices up to WG past the last output.
    ensure_u32("embedding", "outputs", outputs.saturating_add(WG))?;
    ensure_u32("embedding", "table rows", vocab)?;
    ensure_grid("embedding", outputs.div_ceil(WG))?;
    let mut out_shape = ids.shape.to_vec();
    out_shape.push(d);
    Ok(EmbeddingGeometry { tokens, len, d, vocab, out_shape })
}

/// `ids [..., L]` (u32) -> `[..., L, D]` rows of `table [V, D]`, plus row `l` of `add [Lmax, D]`
/// (f32, `Lmax >= L`) at position `l`. Ids `>= V` read row `V - 1` (the kernel clamps; ids are
/// never read back to the host).
pub fn embedding(pass: &mut Pass, ids: &Tensor, table: &Tensor, add: Option<&Tensor>) -> Result<Tensor> {
    let g = check(ids.into(), table.into(), add.map(Meta::from))?;
    let define = match table.dtype() {
        DType::F16 => "TF16",
        DType::Q8 => "TQ8",
        // F32; `check` refused u32.
        DType::F32 | DType::U32 => "TF32",
    };
    let y = Tensor::uninit(pass.gpu(), &g.out_shape)?;
    let count = g.tokens * g.d;
    if count == 0 {
        return Ok(y);
    }
    let params = EmbeddingParams {
        tokens: g.tokens as u32,
        len: g.len as u32,
        d: g.d as u32,
        vocab: g.vocab as u32,
        row_words: row_words(table.dtype(), g.d) as u32,
        groups: q8_groups(g.d) as u32,
        q8_group: Q8_GROUP as u32,
    };
    let grid = Pass::grid(count.div_ceil(WG) as u32);
    match add {
        Some(a) => pass.dispatch(&KERNEL, &[define, "ADD"], &params, &[ids, table, a, &y], grid),
        None => pass.dispatch(&KERNEL, &[define], &params, &[ids, table, &y], grid),
    }
    Ok(y)
}

/// CPU twin, on what [`check`] passed: `row(r, out)` writes row `r` of the table as f32 (the
/// values `Packed::dequantize()` gives), `ids` a flat list of sequences of `g.len`, `add`
/// `[Lmax, D]`. Ids `>= V` take row `V - 1`, as on the GPU.
pub(crate) fn embedding_cpu(
    ids: &[u32],
    row: impl Fn(usize, &mut [f32]),
    g: &EmbeddingGeometry,
    add: Option<&[f32]>,
) -> Vec<f32> {
    let d = g.d;
    let mut y = vec![0f32; ids.len() * d];
    for (t, (&id, out)) in ids.iter().zip(y.chunks_exact_mut(d)).enumerate() {
        row((id as usize).min(g.vocab - 1), out);
        if let Some(a) = add {
            out.iter_mut().zip(&a[(t % g.len) * d..]).for_each(|(x, p)| *x += p);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Packed, Q8_GROUP};
    use crate::testing::{assert_close, gpu_test, random};

    /// The twin for a `[V, d]` table and sequences of `len`.
    fn twin(ids: &[u32], table: &[f32], d: usize, len: usize, add: Option<&[f32]>) -> Vec<f32> {
        let g = EmbeddingGeometry { tokens: ids.len(), len, d, vocab: table.len() / d, out_shape: vec![] };
        embedding_cpu(ids, |r, out| out.copy_from_slice(&table[r * d..(r + 1) * d]), &g, add)
    }

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
                let want = twin(&ids, &packed.dequantize(), d, l, with_add.then_some(&add[..]));
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
        assert_close(&got, &twin(&ids, &packed.dequantize(), d, l, None), 0.0, 0.0, "q8 gather");
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
        assert_close(&got, &twin(&ids, &packed.dequantize(), d, l, None), 0.0, 0.0, "f16 gather is exact");
    });

    gpu_test!(embedding_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, weight, zeros};
        let run = |ids: &[usize], table: &[usize], dtype: DType, add: Option<&[usize]>| {
            on_both!(gpu, |be| {
                let idt = ones_u32(be, ids);
                let tt = weight(be, table, dtype);
                let at = add.map(|a| weight(be, a, DType::F32));
                be.embedding(&idt, &tt, at.as_ref())
            })
        };
        let (ids, table) = (&[2, 5][..], &[4, 3][..]);
        assert_both_accept(run(ids, table, DType::Q8, Some(&[5, 3])), "good shapes");
        assert_same_refusal(run(ids, table, DType::F32, Some(&[4, 3])), "Lmax < L");
        assert_same_refusal(run(ids, table, DType::F32, Some(&[5, 4])), "add D differs");
        assert_same_refusal(run(ids, table, DType::F32, Some(&[15])), "1-d add");
        assert_same_refusal(run(ids, table, DType::U32, None), "u32 table");
        assert_same_refusal(run(ids, &[12], DType::F32, None), "1-d table");
        assert_same_refusal(run(ids, &[0, 3], DType::F32, None), "empty table");
        assert_same_refusal(run(&[], table, DType::F32, None), "0-d ids");
        let float_ids = on_both!(gpu, |be| {
            let (idt, tt) = (zeros(be, ids), weight(be, table, DType::F32));
            be.embedding(&idt, &tt, None)
        });
        assert_same_refusal(float_ids, "f32 ids");
        let f16_add = on_both!(gpu, |be| {
            let (idt, tt, at) = (ones_u32(be, ids), weight(be, table, DType::F32), weight(be, &[5, 3], DType::F16));
            be.embedding(&idt, &tt, Some(&at))
        });
        assert_same_refusal(f16_add, "f16 add");
    });
}
