//! Simple elementwise ops on f32 tensors of one shape. No tower uses them (residuals are added
//! in the epilogues of `matmul::gated_linear` and `layer_norm`); `add` is the smallest kernel,
//! which the pass, pool and profile tests and the kernel benchmarks run. Kernel:
//! `shaders/elementwise.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Element count for `elementwise.wgsl`.
    pub struct ElementwiseParams { pub n: u32 }
}

const BINARY: Kernel = crate::pipelines::kernel!("elementwise", "binary");
/// Invocations per workgroup in `elementwise.wgsl`, one element each.
const WORKGROUP: usize = 256;

/// A binary op of the kernel, named by its WGSL define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    Add,
}

impl Binary {
    fn define(self) -> &'static str {
        match self {
            Binary::Add => "ADD",
        }
    }

    /// The op's name in errors.
    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
        }
    }

    #[cfg(test)]
    fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            Binary::Add => x + y,
        }
    }
}

/// `a + b`, elementwise; both f32 of the same shape.
pub fn add(pass: &mut Pass, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(pass, a, b, Binary::Add)
}

/// CPU twin of [`add`].
#[cfg(test)]
pub(crate) fn add_cpu(a: &[f32], b: &[f32]) -> Vec<f32> {
    binary_cpu(a, b, Binary::Add)
}

fn check_binary(a: Meta, b: Meta, op: Binary) -> Result<()> {
    let name = op.name();
    ensure_shape!(a.shape == b.shape, "{name}: shapes {:?} and {:?} differ", a.shape, b.shape);
    ensure_shape!(
        a.dtype == DType::F32 && b.dtype == DType::F32,
        "{name}: inputs must be f32, got {:?} and {:?}",
        a.dtype,
        b.dtype
    );
    ensure_u32(name, "elements", a.numel())?;
    ensure_grid(name, a.numel().div_ceil(WORKGROUP))
}

fn binary(pass: &mut Pass, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    check_binary(a.into(), b.into(), op)?;
    let out = Tensor::uninit(pass.gpu(), a.shape())?;
    let groups = Pass::grid(a.numel().div_ceil(WORKGROUP) as u32);
    record(pass, a, b, &out, op, groups);
    Ok(out)
}

/// Records the kernel with an explicit grid (tests use it to fold small counts).
fn record(pass: &mut Pass, a: &Tensor, b: &Tensor, out: &Tensor, op: Binary, groups: [u32; 3]) {
    let params = ElementwiseParams { n: a.numel() as u32 };
    pass.dispatch(&BINARY, &[op.define()], &params, &[a, b, out], groups);
}

#[cfg(test)]
fn binary_cpu(a: &[f32], b: &[f32], op: Binary) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| op.apply(x, y)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn check_add(gpu: &Gpu, shape: &[usize]) {
        let n: usize = shape.iter().product();
        let a = random(n, 11 + n as u64, 3.0);
        let b = random(n, 12 + n as u64, 3.0);
        let at = Tensor::from_f32(gpu, shape, &a).unwrap();
        let bt = Tensor::from_f32(gpu, shape, &b).unwrap();
        let mut pass = Pass::new(gpu);
        let y = add(&mut pass, &at, &bt).unwrap();
        pass.submit().unwrap();
        assert_eq!(y.shape(), shape);
        // One correctly rounded f32 add on both sides: bit-identical.
        assert_close(&y.read_f32(gpu).await.unwrap(), &add_cpu(&a, &b), 0.0, 0.0, &format!("add {shape:?}"));
    }

    gpu_test!(add_ragged_shapes, |gpu| {
        // Around the 256-element workgroup: below, at, just past, and ragged.
        for shape in [&[1][..], &[255], &[256], &[257], &[2, 13, 11, 37], &[3, 1000, 3]] {
            check_add(gpu, shape).await;
        }
    });

    gpu_test!(add_folded_grid_indexing, |gpu| {
        // The fold Pass::grid does above 65,535 workgroups, reproduced at a small count: 5,000
        // elements need 20 workgroups; as a 7 x 3 grid (one spare) every element must be written
        // once, by linear_workgroup's index, and the spare must write nothing out of range.
        let n = 5_000;
        let a = random(n, 21, 1.0);
        let b = random(n, 22, 1.0);
        let at = Tensor::from_f32(gpu, &[n], &a).unwrap();
        let bt = Tensor::from_f32(gpu, &[n], &b).unwrap();
        // Poisoned output (NaN) so an element no workgroup writes is caught.
        let out = Tensor::from_f32(gpu, &[n], &vec![f32::NAN; n]).unwrap();
        let mut pass = Pass::new(gpu);
        record(&mut pass, &at, &bt, &out, Binary::Add, [7, 3, 1]);
        pass.submit().unwrap();
        assert_close(&out.read_f32(gpu).await.unwrap(), &add_cpu(&a, &b), 0.0, 0.0, "add on a folded 7x3 grid");
    });

    gpu_test!(add_needs_two_dimensional_grid, |gpu| {
        // Just over 65,535 * 256 elements (67 MB per tensor), so Pass::grid must fold into y.
        // The model's largest residual add (8 x 228 x 228 x 48) is in this range.
        let n = 65_535 * WORKGROUP + 1_000;
        assert!(Pass::grid(n.div_ceil(WORKGROUP) as u32)[1] > 1);
        check_add(gpu, &[n / 8, 8]).await;
    });

    gpu_test!(add_refuses_bad_inputs, |gpu| {
        let f = |shape: &[usize]| Tensor::from_f32(gpu, shape, &vec![0.0; shape.iter().product()]).unwrap();
        let ids = Tensor::from_u32(gpu, &[2, 3], &[1; 6]).unwrap();
        let mut pass = Pass::new(gpu);
        assert!(add(&mut pass, &f(&[2, 3]), &f(&[2, 3])).is_ok(), "one shape");
        for (a, b, what) in
            [(f(&[2, 3]), f(&[3, 2]), "transposed"), (f(&[6]), f(&[2, 3]), "other rank"), (f(&[2, 3]), ids, "u32")]
        {
            let got = add(&mut pass, &a, &b).map(|_| ());
            assert!(matches!(&got, Err(crate::Error::Shape(m)) if m.starts_with("add:")), "{what}: {got:?}");
        }
        pass.submit().unwrap();
    });
}
