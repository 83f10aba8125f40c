//! Bilinear sampling on affine grids (the BriVL image tower pools its boxes with it): PyTorch's
//! `F.grid_sample(x, F.affine_grid(theta, (N, C, G, G), align_corners=False), mode='bilinear',
//! padding_mode='zeros', align_corners=False)` on a channels-last map. Kernel: `shaders/grid_sample.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `grid_sample.wgsl`.
    pub struct GridSampleParams { pub h: u32, pub w: u32, pub c: u32, pub boxes: u32, pub grid: u32, pub total: u32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("grid_sample", "main");
const WORKGROUP: usize = 256;

/// Checked shapes: `x [b, h, w, c]`, `boxes` thetas, a `grid x grid` sample grid per box.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GridSampleGeometry {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub boxes: usize,
    pub grid: usize,
}

impl GridSampleGeometry {
    pub(crate) fn out_shape(&self) -> [usize; 4] {
        [self.b, self.boxes, self.grid * self.grid, self.c]
    }
}

/// The shape check of [`grid_sample`] and its CPU twin: `x` f32 `[B, H, W, C]` with H, W > 0,
/// `thetas` f32 `[NB, 6]`, `grid` at least 1.
pub(crate) fn check(x: Meta, thetas: Meta, grid: usize) -> Result<GridSampleGeometry> {
    let &[b, h, w, c] = x.shape else {
        return Err(Error::Shape(format!("grid_sample: x must be [B, H, W, C], got {:?}", x.shape)));
    };
    let &[boxes, 6] = thetas.shape else {
        return Err(Error::Shape(format!("grid_sample: thetas must be [NB, 6], got {:?}", thetas.shape)));
    };
    ensure_shape!(
        x.dtype == DType::F32 && thetas.dtype == DType::F32,
        "grid_sample: x and thetas must be f32, got {:?} and {:?}",
        x.dtype,
        thetas.dtype
    );
    ensure_shape!(h > 0 && w > 0, "grid_sample: empty feature map {:?}", x.shape);
    ensure_shape!(grid > 0, "grid_sample: grid must be at least 1");
    let total = [boxes, grid, grid, c].iter().fold(b, |n, &d| n.saturating_mul(d));
    ensure_u32("grid_sample", "outputs", total)?;
    ensure_u32("grid_sample", "elements of x", x.numel())?;
    ensure_grid("grid_sample", total.div_ceil(WORKGROUP))?;
    Ok(GridSampleGeometry { b, h, w, c, boxes, grid })
}

/// Samples a `grid x grid` bilinear grid per box from `x [B, H, W, C]`; `thetas` is f32
/// `[NB, 6]`, each row a row-major 2x3 affine `theta`. Returns `[B, NB, grid*grid, C]`, the
/// points ordered row (y) major, then x.
pub fn grid_sample(pass: &mut Pass, x: &Tensor, thetas: &Tensor, grid: usize) -> Result<Tensor> {
    let g = check(x.into(), thetas.into(), grid)?;
    let total: usize = g.out_shape().iter().product();
    let y = Tensor::uninit(pass.gpu(), &g.out_shape())?;
    let params = GridSampleParams {
        h: g.h as u32,
        w: g.w as u32,
        c: g.c as u32,
        boxes: g.boxes as u32,
        grid: g.grid as u32,
        total: total as u32,
    };
    let groups = Pass::grid(total.div_ceil(WORKGROUP) as u32);
    pass.dispatch(&KERNEL, &[], &params, &[x, thetas, &y], groups);
    Ok(y)
}

/// CPU twin, on what [`check`] passed: `x` is `[B, H, W, C]` row-major, `thetas` `[NB, 6]`;
/// returns `[B, NB, grid*grid, C]`.
pub(crate) fn grid_sample_cpu(x: &[f32], g: &GridSampleGeometry, thetas: &[f32]) -> Vec<f32> {
    let GridSampleGeometry { b, h, w, c, grid, .. } = *g;
    let mut y = Vec::with_capacity(g.out_shape().iter().product());
    let tap = |bi: usize, ix: f32, iy: f32, ci: usize| -> f32 {
        if ix >= 0.0 && ix < w as f32 && iy >= 0.0 && iy < h as f32 {
            x[((bi * h + iy as usize) * w + ix as usize) * c + ci]
        } else {
            0.0
        }
    };
    for bi in 0..b {
        for t in thetas.chunks_exact(6) {
            for p in 0..grid * grid {
                // affine_grid(align_corners=False) base point, then theta . (bx, by, 1).
                let bx = (2 * (p % grid) + 1) as f32 / grid as f32 - 1.0;
                let by = (2 * (p / grid) + 1) as f32 / grid as f32 - 1.0;
                let gx = t[0] * bx + t[1] * by + t[2];
                let gy = t[3] * bx + t[4] * by + t[5];
                // grid_sample(align_corners=False) unnormalisation.
                let ix = ((gx + 1.0) * w as f32 - 1.0) * 0.5;
                let iy = ((gy + 1.0) * h as f32 - 1.0) * 0.5;
                let (x0, y0) = (ix.floor(), iy.floor());
                let (wx1, wx0) = (ix - x0, (x0 + 1.0) - ix);
                let (wy1, wy0) = (iy - y0, (y0 + 1.0) - iy);
                for ci in 0..c {
                    y.push(
                        tap(bi, x0, y0, ci) * (wx0 * wy0)
                            + tap(bi, x0 + 1.0, y0, ci) * (wx1 * wy0)
                            + tap(bi, x0, y0 + 1.0, ci) * (wx0 * wy1)
                            + tap(bi, x0 + 1.0, y0 + 1.0, ci) * (wx1 * wy1),
                    );
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    /// The twin on a plain shape and thetas.
    fn twin(x: &[f32], shape: [usize; 4], thetas: &[[f32; 6]], grid: usize) -> Vec<f32> {
        let [b, h, w, c] = shape;
        let g = GridSampleGeometry { b, h, w, c, boxes: thetas.len(), grid };
        grid_sample_cpu(x, &g, thetas.as_flattened())
    }

    async fn run(gpu: &Gpu, x: &[f32], shape: [usize; 4], thetas: &[[f32; 6]], grid: usize) -> Vec<f32> {
        let xt = Tensor::from_f32(gpu, &shape, x).unwrap();
        let tt = Tensor::from_f32(gpu, &[thetas.len(), 6], thetas.as_flattened()).unwrap();
        let mut pass = Pass::new(gpu);
        let y = grid_sample(&mut pass, &xt, &tt, grid).unwrap();
        assert_eq!(y.shape(), [shape[0], thetas.len(), grid * grid, shape[3]]);
        pass.submit().unwrap();
        y.read_f32(gpu).await.unwrap()
    }

    async fn check(gpu: &Gpu, shape: [usize; 4], thetas: &[[f32; 6]], grid: usize, what: &str) {
        let x = random(shape.iter().product(), 7 + shape[3] as u64, 1.0);
        let got = run(gpu, &x, shape, thetas, grid).await;
        let want = twin(&x, shape, thetas, grid);
        // Same formulas in f32; the GPU may fuse multiply-adds and round the base-point division
        // differently, moving sample points by ~1e-6 pixels. Bilinear sampling is continuous
        // (zero padding included), so outputs of |x| <= 1 move by a few 1e-6 at most.
        assert_close(&got, &want, 1e-5, 1e-5, what);
    }

    /// Identity, zooms, shifts and boxes reaching partly or wholly past the map's border.
    fn assorted_thetas() -> Vec<[f32; 6]> {
        vec![
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            [0.3, 0.0, -0.5, 0.0, 0.45, 0.2],
            [0.5, 0.0, 0.9, 0.0, 0.5, -0.8],  // half outside, right and top
            [1.3, 0.0, 0.1, 0.0, 1.2, -0.05], // larger than the map
            [0.2, 0.0, 1.5, 0.0, 0.2, 1.5],   // wholly outside: zeros
            [0.8, 0.3, 0.0, -0.2, 0.7, 0.1],  // rotation/shear
        ]
    }

    gpu_test!(grid_sample_matches_twin_ragged_shapes, |gpu| {
        // 15*15*37 and 7*9*37 are not multiples of the 256-thread workgroup.
        let thetas = assorted_thetas();
        check(gpu, [1, 15, 15, 37], &thetas, 4, "15x15x37 G=4").await;
        check(gpu, [2, 7, 9, 37], &thetas, 3, "2x7x9x37 G=3").await;
        check(gpu, [1, 7, 9, 5], &thetas, 5, "7x9x5 G=5").await;
        check(gpu, [1, 1, 1, 1], &thetas, 1, "1x1x1 G=1").await;
    });

    #[test]
    fn twin_by_hand() {
        // 8 x 8 map, one channel, x = 10*row + col. Powers of two keep every coordinate exact.
        let x: Vec<f32> = (0..64).map(|i| (10 * (i / 8) + i % 8) as f32).collect();
        let shape = [1, 8, 8, 1];
        // Identity at G = H = W samples every pixel centre: the input, bit for bit.
        assert_eq!(twin(&x, shape, &[[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], 8), x);
        // A shift of 2/W is one pixel right: column 7 reads column 8, which is padding.
        let shifted = twin(&x, shape, &[[1.0, 0.0, 0.25, 0.0, 1.0, 0.0]], 8);
        for (i, v) in shifted.iter().enumerate() {
            let (r, c) = (i / 8, i % 8);
            assert_eq!(*v, if c < 7 { (10 * r + c + 1) as f32 } else { 0.0 }, "shift at {r},{c}");
        }
        // Half a pixel down: the mean of rows r and r + 1; the last row is half of row 7.
        let half = twin(&x, shape, &[[1.0, 0.0, 0.0, 0.0, 1.0, 0.125]], 8);
        for (i, v) in half.iter().enumerate() {
            let (r, c) = ((i / 8) as f32, (i % 8) as f32);
            let want = if r < 7.0 { 10.0 * r + 5.0 + c } else { 0.5 * (70.0 + c) };
            assert_eq!(*v, want, "half shift at {r},{c}");
        }
        // A zero-size box at the map centre (3.5, 3.5): the mean of the 4 middle pixels.
        let centre = twin(&x, shape, &[[0.0; 6]], 2);
        assert_eq!(centre, vec![38.5; 4]);
    }

    gpu_test!(grid_sample_identity_reproduces_input, |gpu| {
        let shape = [2, 8, 8, 37];
        let x = random(shape.iter().product(), 3, 1.0);
        let got = run(gpu, &x, shape, &[[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], 8).await;
        let want: Vec<f32> = x.clone(); // [B, 1, 64, C] is [B, 8, 8, C] in the same order.
                                        // Exact in f32 arithmetic; 1e-6 only allows the division in the base point to be
                                        // rounded differently by the GPU (a weight of ~1e-7 on a neighbour).
        assert_close(&got, &want, 1e-6, 0.0, "identity");
        let got = run(gpu, &x, [2, 8, 8, 37], &[[1.0, 0.0, 0.25, 0.0, 1.0, 0.0]], 8).await;
        assert_close(&got, &twin(&x, shape, &[[1.0, 0.0, 0.25, 0.0, 1.0, 0.0]], 8), 1e-6, 0.0, "shift");
    });

    gpu_test!(grid_sample_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, weight, zeros};
        let run = |x: &[usize], thetas: &[usize], dtype: DType, grid: usize| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let tt = weight(be, thetas, dtype);
                be.grid_sample(&xt, &tt, grid)
            })
        };
        let (x, t) = (&[1, 4, 4, 2][..], &[2, 6][..]);
        assert_both_accept(run(x, t, DType::F32, 4), "good shapes");
        assert_same_refusal(run(&[4, 4, 2], t, DType::F32, 4), "3-d x");
        assert_same_refusal(run(x, &[2, 5], DType::F32, 4), "thetas not [NB, 6]");
        assert_same_refusal(run(x, &[12], DType::F32, 4), "flat thetas");
        assert_same_refusal(run(x, t, DType::F16, 4), "f16 thetas");
        assert_same_refusal(run(&[1, 0, 4, 2], t, DType::F32, 4), "empty map");
        assert_same_refusal(run(x, t, DType::F32, 0), "grid 0");
        assert_same_refusal(run(x, t, DType::F32, 1 << 20), "more samples than 32 bits index");
    });
}
