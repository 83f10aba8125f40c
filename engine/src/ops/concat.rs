//! Concatenation along the first axis: the image tower joins the box features of photos that
//! went through the backbone separately (the CPU path runs it a photo at a time, see
//! `Backend::backbone_batch`). Kernel: `shaders/concat.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// One part of `concat.wgsl`: its element count and where it starts in the output.
    pub struct ConcatParams { pub n: u32, pub offset: u32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("concat", "copy");
/// Invocations per workgroup in `concat.wgsl`, one element each.
const WORKGROUP: usize = 256;

/// The shape check of [`concat`] and its CPU twin: one or more f32 parts that agree past the
/// first axis. Returns the output's shape.
pub(crate) fn check(parts: &[Meta]) -> Result<Vec<usize>> {
    let Some(first) = parts.first() else {
        return Err(Error::Shape("concat: no parts to join".into()));
    };
    ensure_shape!(!first.shape.is_empty(), "concat: parts need an axis to join along, got a scalar");
    for p in parts {
        ensure_shape!(p.dtype == DType::F32, "concat: parts must be f32, got {:?}", p.dtype);
        ensure_shape!(
            p.shape.len() == first.shape.len() && p.shape[1..] == first.shape[1..],
            "concat: part {:?} does not match {:?} past the first axis",
            p.shape,
            first.shape
        );
    }
    let mut shape = first.shape.to_vec();
    shape[0] = parts.iter().fold(0usize, |n, p| n.saturating_add(p.shape[0]));
    let numel = shape.iter().fold(1usize, |n, d| n.saturating_mul(*d));
    ensure_u32("concat", "elements", numel)?;
    ensure_grid("concat", numel.div_ceil(WORKGROUP))?;
    Ok(shape)
}

/// `parts` joined along their first axis, in order.
pub fn concat(pass: &mut Pass, parts: &[&Tensor]) -> Result<Tensor> {
    let metas: Vec<Meta> = parts.iter().map(|t| Meta::from(*t)).collect();
    let out = Tensor::uninit(pass.gpu(), &check(&metas)?)?;
    let mut offset = 0;
    for part in parts {
        let n = part.numel();
        let params = ConcatParams { n: n as u32, offset: offset as u32 };
        pass.dispatch(&KERNEL, &[], &params, &[part, &out], Pass::grid(n.div_ceil(WORKGROUP) as u32));
        offset += n;
    }
    Ok(out)
}

/// CPU twin of [`concat`], on parts [`check`] passed.
pub(crate) fn concat_cpu(parts: &[&[f32]]) -> Vec<f32> {
    let mut out = crate::cpu::buffers::for_output(parts.iter().map(|p| p.len()).sum());
    let mut offset = 0;
    for p in parts {
        out[offset..offset + p.len()].copy_from_slice(p);
        offset += p.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};

    gpu_test!(concat_joins_parts_in_order, |gpu| {
        // Parts of 1, 0 and 3 rows of 37 x 7 (259 values a row: not a workgroup multiple), and
        // a single part.
        for rows in [&[1usize, 0, 3][..], &[2]] {
            let parts: Vec<Vec<f32>> =
                rows.iter().enumerate().map(|(i, r)| random(r * 37 * 7, 60 + i as u64, 2.0)).collect();
            let tensors: Vec<Tensor> =
                rows.iter().zip(&parts).map(|(r, p)| Tensor::from_f32(gpu, &[*r, 37, 7], p).unwrap()).collect();
            let mut pass = Pass::new(gpu);
            let y = concat(&mut pass, &tensors.iter().collect::<Vec<_>>()).unwrap();
            pass.submit().unwrap();
            let total: usize = rows.iter().sum();
            assert_eq!(y.shape(), [total, 37, 7]);
            let want: Vec<f32> = parts.concat();
            let slices: Vec<&[f32]> = parts.iter().map(|p| &p[..]).collect();
            assert_eq!(concat_cpu(&slices), want, "CPU twin, rows {rows:?}");
            assert_close(&y.read_f32(gpu).await.unwrap(), &want, 0.0, 0.0, &format!("concat rows {rows:?}"));
        }
    });

    gpu_test!(concat_refuses_bad_parts_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, zeros};
        let run = |shapes: &[&[usize]]| {
            on_both!(gpu, |be| {
                let parts: Vec<_> = shapes.iter().map(|s| zeros(be, s)).collect();
                be.concat(&parts)
            })
        };
        assert_both_accept(run(&[&[2, 3, 4], &[5, 3, 4]]), "good parts");
        assert_same_refusal(run(&[]), "no parts");
        assert_same_refusal(run(&[&[2, 3, 4], &[2, 4, 3]]), "trailing shapes differ");
        assert_same_refusal(run(&[&[2, 12], &[2, 3, 4]]), "ranks differ");
        let ids = on_both!(gpu, |be| {
            let parts = [zeros(be, &[2, 3]), ones_u32(be, &[2, 3])];
            be.concat(&parts)
        });
        assert_same_refusal(ids, "a u32 part");
    });
}
