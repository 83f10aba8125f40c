//! Linear layers and pointwise convolutions: `y = act(x · wᵀ + b)` with `w` as `[N, K]`
//! (PyTorch's `[out, in]`) in f32, f16 or q8. Kernel: `shaders/matmul.wgsl`.

use crate::cpu::gemm::{gemm, Fused, Gate, Rhs};
use crate::cpu::Level;
use crate::error::ensure_shape;
use crate::ops::{ensure_u32, Activation, Meta};
use crate::pipelines::Kernel;
use crate::quant::{q8_groups, row_words, Q8_GROUP};
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `matmul.wgsl`.
    /// `groups` and `q8_group`: q8 scales per row and values per scale (unused otherwise);
    /// `gate_rows`: rows of x per gate row (with `GATE`).
    pub struct MatmulParams {
        pub m: u32, pub n: u32, pub k: u32, pub row_words: u32, pub act: u32, pub groups: u32, pub q8_group: u32,
        pub gate_rows: u32, pub k_slice: u32, pub splits: u32,
    }
}

const KERNEL: Kernel = crate::pipelines::kernel!("matmul", "main");
const SUM_SPLITS: Kernel = crate::pipelines::kernel!("matmul", "sum_splits");
const ROWS: Kernel = crate::pipelines::kernel!("matmul", "rows");
// A q8 weight unit (four consecutive k in one packed word) takes one scale.
const _: () = assert!(Q8_GROUP.is_multiple_of(4));

/// Bigger tiles are chosen only while the grid keeps this many workgroups: fewer would leave
/// most of a GPU's compute units idle (an integrated GPU has a few dozen).
const MIN_WORKGROUPS: usize = 32;
/// K per slice of a split at least this long, so each workgroup still runs 16 steps of the
/// tile loop and the partial sums' extra traffic stays small against the weights'.
const MIN_K_SLICE: usize = 256;
/// At most this many slices of K (partial sums in memory: `MAX_SPLITS * M * N` words).
const MAX_SPLITS: usize = 8;

/// K per step of the tile loop (`TK` in the WGSL).
const TK: usize = 16;

/// Output tile of one workgroup: 32, 64 or 128 rows by 64 or 128 columns, each thread holding 4
/// or 8 of each (a 32-row tile has half the threads). Bigger tiles read each loaded value into
/// more products (8x8 per thread: 64 FMAs per 4 vec4 reads of workgroup memory, 16 per 2 at 4x4)
/// at the cost of wasted work on ragged edges and fewer workgroups to spread over the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tiles {
    pub rows: usize,
    pub cols: usize,
}

impl Tiles {
    #[cfg(test)]
    pub const ALL: [Tiles; 6] = [
        Tiles { rows: 32, cols: 64 },
        Tiles { rows: 32, cols: 128 },
        Tiles { rows: 64, cols: 64 },
        Tiles { rows: 64, cols: 128 },
        Tiles { rows: 128, cols: 64 },
        Tiles { rows: 128, cols: 128 },
    ];

    /// The tile for an `m x n` output. 32 rows where M <= 32 (text at batch 1: half the work of
    /// a 64-row tile). 128 rows (columns) where padding to whole 128s computes at most a quarter
    /// more than padding to whole 64s (M = 225: 256 either way; N = 40: 128 against 64, no) and
    /// the grid keeps at least `min_workgroups` ([`MIN_WORKGROUPS`]); columns are widened first.
    /// Measured on lavapipe (`cargo bench -p brivl-engine --bench kernels`): 32 rows at M = 32
    /// 1.7x faster than 64; 128 columns at N = 6144, 384 and 2048 1.2-1.3x; 128x128 at
    /// 12996x240 and 225x2048 1.3-1.9x.
    pub fn for_shape(m: usize, n: usize, min_workgroups: usize) -> Tiles {
        let cheap = |len: usize| len > 64 && len.div_ceil(128) * 2 * 4 <= len.div_ceil(64) * 5;
        let grid = |t: Tiles| m.div_ceil(t.rows) * n.div_ceil(t.cols);
        let mut t = Tiles { rows: if m <= 32 { 32 } else { 64 }, cols: 64 };
        if cheap(n) && grid(Tiles { cols: 128, ..t }) >= min_workgroups {
            t.cols = 128;
        }
        if t.rows == 64 && cheap(m) && grid(Tiles { rows: 128, ..t }) >= min_workgroups {
            t.rows = 128;
        }
        t
    }

    /// Slices of K for the small-M path: where M <= 64 (the transformers at batch 1) and the
    /// tiles leave fewer than `min_workgroups` workgroups (BERT's 768-wide layers at M = 32:
    /// 12), K is cut into slices of whole tile steps, at least [`MIN_K_SLICE`] long, that run as
    /// workgroups of their own; a second dispatch adds the partial sums and applies the
    /// epilogue. Returns (slices, k per slice); one slice is no split.
    pub fn split_k(self, m: usize, n: usize, k: usize, min_workgroups: usize) -> (usize, usize) {
        let grid = m.div_ceil(self.rows) * n.div_ceil(self.cols);
        let want = min_workgroups.div_ceil(grid.max(1)).min(k / MIN_K_SLICE).min(MAX_SPLITS);
        if m == 0 || m > 64 || want < 2 {
            return (1, k);
        }
        let slice = k.div_ceil(want).div_ceil(TK) * TK;
        (k.div_ceil(slice), slice)
    }
}

/// Checked shapes of `x [..., K] · w[N, K]ᵀ`: `m` rows of `x`, output `[..., N]`.
#[derive(Clone, Debug)]
pub(crate) struct LinearGeometry {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub out_shape: Vec<usize>,
}

/// The shape check of [`linear`] and its CPU twin: `w` is `[N, K]` (f32, f16 or q8) with K > 0,
/// `x` f32 ending in K, `bias` f32 `[N]`.
pub(crate) fn check(x: Meta, w: Meta, bias: Option<Meta>) -> Result<LinearGeometry> {
    let &[n, k] = w.shape else {
        return Err(Error::Shape(format!("linear: weight must be [N, K], got {:?}", w.shape)));
    };
    ensure_shape!(w.dtype != DType::U32, "linear: u32 weights");
    ensure_shape!(k > 0, "linear: weight {:?} has no inputs (K = 0)", w.shape);
    ensure_shape!(x.shape.last() == Some(&k), "linear: x {:?} does not end in K = {k}", x.shape);
    ensure_shape!(x.dtype == DType::F32, "linear: x must be f32, got {:?}", x.dtype);
    if let Some(b) = bias {
        ensure_shape!(
            b.shape == [n] && b.dtype == DType::F32,
            "linear: bias {:?} {:?} is not f32 [{n}]",
            b.dtype,
            b.shape
        );
    }
    let m = x.numel() / k;
    ensure_u32("linear", "elements of x", x.numel())?;
    ensure_u32("linear", "outputs", m.saturating_mul(n))?;
    // Whichever tile the device gets (32 rows by 64 columns at the least).
    let max = crate::pass::MAX_WORKGROUPS_PER_DIM as usize;
    ensure_shape!(m.div_ceil(32) <= max && n.div_ceil(64) <= max, "linear: {m}x{n} outputs exceed one dispatch");
    let mut out_shape = x.shape.to_vec();
    if let Some(last) = out_shape.last_mut() {
        *last = n;
    }
    Ok(LinearGeometry { m, n, k, out_shape })
}

/// `x [..., K] · w[N, K]ᵀ (+ bias[N]) -> act -> [..., N]`.
pub fn linear(pass: &mut Pass, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    let g = check(x.into(), w.into(), bias.map(Meta::from))?;
    let plan = Plan::for_device(&g, pass.gpu());
    record(pass, &g, plan, x, w, bias, act, None, None)
}

/// The shape check of [`gated_linear`] and its CPU twin: [`check`]'s, plus `x` `[B, ..., K]` with
/// `gate` f32 `[B, K]` and `residual` f32 shaped as the output. Returns the rows of `x` per image.
pub(crate) fn check_gated(
    x: Meta,
    gate: Meta,
    w: Meta,
    bias: Option<Meta>,
    residual: Option<Meta>,
) -> Result<(LinearGeometry, usize)> {
    let g = check(x, w, bias)?;
    let b = x.shape.first().copied().unwrap_or(0);
    ensure_shape!(
        x.shape.len() >= 2 && gate.shape == [b, g.k] && gate.dtype == DType::F32,
        "gated_linear: gate {:?} {:?} is not f32 [{b}, {}] for x {:?}",
        gate.dtype,
        gate.shape,
        g.k,
        x.shape
    );
    if let Some(r) = residual {
        ensure_shape!(
            r.shape == g.out_shape && r.dtype == DType::F32,
            "gated_linear: residual {:?} {:?} is not f32 {:?}",
            r.dtype,
            r.shape,
            g.out_shape
        );
    }
    let rows_per_image = g.m.checked_div(b).unwrap_or(0);
    Ok((g, rows_per_image))
}

/// `(x ⊙ gate) · w[N, K]ᵀ (+ bias) (+ residual)`: an EfficientNet block's project convolution
/// with its squeeze-excite gate (`[B, K]`, one row per image of `x [B, ..., K]`) applied while `x`
/// is loaded and its skip connection added as the output is stored: one pass over the
/// activations instead of three.
pub fn gated_linear(
    pass: &mut Pass,
    x: &Tensor,
    gate: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (g, rows) = check_gated(x.into(), gate.into(), w.into(), bias.map(Meta::from), residual.map(Meta::from))?;
    if g.m == 0 {
        return Tensor::uninit(pass.gpu(), &g.out_shape);
    }
    let plan = Plan::for_device(&g, pass.gpu());
    record(pass, &g, plan, x, w, bias, Activation::None, Some((gate, rows)), residual)
}

/// How a matmul runs on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Tiles through workgroup memory, K whole (`splits` 1) or in slices ([`Tiles::split_k`]).
    Tiled { tiles: Tiles, splits: usize, k_slice: usize },
    /// The rows kernel (`ROWS` in the WGSL): [`ROWS_TILE`] outputs per workgroup of 8 threads
    /// straight from global memory, no barriers.
    Rows,
}

/// Rows and columns of one workgroup of the rows kernel.
const ROWS_TILE: (usize, usize) = (8, 64);

impl Plan {
    pub(crate) fn for_device(g: &LinearGeometry, gpu: &crate::Gpu) -> Plan {
        Plan::choose(g, gpu.is_cpu_adapter())
    }

    /// The rows kernel on a CPU adapter (lavapipe, SwiftShader) wherever its grid fits one
    /// dispatch: on lavapipe 3-3.9x faster than the tiles at the transformers' small M and
    /// 1.5-2.8x at the backbone's pointwise convolutions (README, "GPU path: what is
    /// measured"). Tiles on a GPU, where an 8-thread workgroup would leave most of a SIMD unit
    /// idle.
    fn choose(g: &LinearGeometry, cpu_adapter: bool) -> Plan {
        if cpu_adapter && g.m.div_ceil(ROWS_TILE.0) <= crate::pass::MAX_WORKGROUPS_PER_DIM as usize {
            return Plan::Rows;
        }
        let tiles = Tiles::for_shape(g.m, g.n, MIN_WORKGROUPS);
        let (splits, k_slice) = tiles.split_k(g.m, g.n, g.k, MIN_WORKGROUPS);
        Plan::Tiled { tiles, splits, k_slice }
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    pass: &mut Pass,
    g: &LinearGeometry,
    plan: Plan,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    gate: Option<(&Tensor, usize)>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let y = Tensor::uninit(pass.gpu(), &g.out_shape)?;
    let (tiles, splits, k_slice) = match plan {
        Plan::Tiled { tiles, splits, k_slice } => (Some(tiles), splits, k_slice),
        Plan::Rows => (None, 1, g.k),
    };
    let split = splits > 1;
    // With slices of K, the tile kernel writes each slice's sums here, [slices, M, N].
    let partial = split.then(|| Tensor::uninit(pass.gpu(), &[splits, g.m, g.n])).transpose()?;
    let mut defines = vec![match w.dtype() {
        DType::F16 => "WF16",
        DType::Q8 => "WQ8",
        // F32; `check` refused u32.
        DType::F32 | DType::U32 => "WF32",
    }];
    // With shader-f16 the weight tile is kept in halves (half the workgroup memory traffic).
    if w.dtype() == DType::F16 && pass.gpu().has_f16() && tiles.is_some() {
        defines.push("F16");
    }
    // Fast paths, each with the condition it needs: vec4 loads of x, gate and f32 weights where
    // every row starts on a 16-byte boundary; bigger register tiles where `tiles` says; the
    // bias, activation and residual go to the sum of the slices when K is split.
    for (on, name) in [
        (g.k.is_multiple_of(4), "VK"),
        (tiles.is_none(), "ROWS"),
        (tiles.is_some_and(|t| t.rows == 32), "SHORT"),
        (tiles.is_some_and(|t| t.rows == 128), "TALL"),
        (tiles.is_some_and(|t| t.cols == 128), "WIDE"),
        (split, "SPLIT"),
        (bias.is_some() && !split, "BIAS"),
        (gate.is_some(), "GATE"),
        (residual.is_some() && !split, "RESIDUAL"),
    ] {
        if on {
            defines.push(name);
        }
    }
    let params = MatmulParams {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        row_words: row_words(w.dtype(), g.k) as u32,
        act: act as u32,
        groups: q8_groups(g.k) as u32,
        q8_group: Q8_GROUP as u32,
        gate_rows: gate.map_or(0, |(_, rows)| rows) as u32,
        k_slice: k_slice as u32,
        splits: splits as u32,
    };
    let (rows, cols) = tiles.map_or(ROWS_TILE, |t| (t.rows, t.cols));
    let groups = [g.n.div_ceil(cols) as u32, g.m.div_ceil(rows) as u32, splits as u32];
    let gate = gate.map(|(t, _)| t);
    match &partial {
        Some(partial) => {
            pass.dispatch_slots(&KERNEL, &defines, &params, &[Some(x), Some(w), Some(partial), None, gate], groups);
            let defines: Vec<&str> = [(true, "SUM_SPLITS"), (bias.is_some(), "BIAS"), (residual.is_some(), "RESIDUAL")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            // One thread per four outputs of a row.
            let threads = g.m * g.n.div_ceil(4);
            let grid = Pass::grid(threads.div_ceil(64) as u32);
            pass.dispatch_slots(
                &SUM_SPLITS,
                &defines,
                &params,
                &[Some(partial), None, Some(&y), bias, None, residual],
                grid,
            );
        }
        None => {
            let kernel = if tiles.is_some() { &KERNEL } else { &ROWS };
            pass.dispatch_slots(kernel, &defines, &params, &[Some(x), Some(w), Some(&y), bias, gate, residual], groups)
        }
    }
    Ok(y)
}

/// CPU twin of [`gated_linear`]: `x` `[B * rows, K]`, `gate` `[B, K]`, as [`check_gated`] passed
/// them. The gate scales each image's weight tiles instead of the activations and the residual
/// is added in the GEMM's epilogue, so the largest tensors are read once.
pub(crate) fn gated_linear_cpu(
    x: &[f32],
    gate: &[f32],
    rows: usize,
    w: Rhs,
    bias: Option<&[f32]>,
    k: usize,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (m, n) = (x.len().checked_div(k).unwrap_or(0), w.n(k));
    let mut y = crate::cpu::buffers::for_output(m * n);
    let gate = Some(Gate { scales: gate, rows });
    gemm(Level::current(), x, k, w, n, Fused { gate, bias, residual, ..Fused::default() }, &mut y);
    y
}

/// CPU twin: `x` is `[M, K]` row-major, `w` the `[N, K]` weights, as [`check`] passed them;
/// the GEMM of `cpu::gemm` at the machine's SIMD level.
pub(crate) fn linear_cpu(x: &[f32], w: Rhs, bias: Option<&[f32]>, k: usize, act: Activation) -> Vec<f32> {
    let (m, n) = (x.len().checked_div(k).unwrap_or(0), w.n(k));
    let mut y = crate::cpu::buffers::for_output(m * n);
    gemm(Level::current(), x, k, w, n, Fused { bias, act, ..Fused::default() }, &mut y);
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::PanelMatrix;
    use crate::quant::Packed;
    use crate::testing::{assert_close, cpu_test, gpu_test, random};
    use crate::Gpu;

    async fn check(gpu: &Gpu, m: usize, n: usize, k: usize, dtype: DType, bias: bool, act: Activation) {
        let g = LinearGeometry { m, n, k, out_shape: vec![m, n] };
        check_plan(gpu, m, n, k, dtype, bias, act, Plan::for_device(&g, gpu)).await
    }

    /// A plan of one tile and no split.
    fn whole(tiles: Tiles, k: usize) -> Plan {
        Plan::Tiled { tiles, splits: 1, k_slice: k }
    }

    /// A plan that cuts K into slices of `k_slice`.
    fn sliced(tiles: Tiles, k: usize, k_slice: usize) -> Plan {
        Plan::Tiled { tiles, splits: k.div_ceil(k_slice), k_slice }
    }

    #[allow(clippy::too_many_arguments)]
    async fn check_plan(
        gpu: &Gpu,
        m: usize,
        n: usize,
        k: usize,
        dtype: DType,
        bias: bool,
        act: Activation,
        plan: Plan,
    ) {
        let x = random(m * k, 1 + m as u64, 1.0);
        // Columns of different magnitude per q8 group, so a wrongly indexed scale shows.
        let mut wf = random(n * k, 2 + n as u64, 1.0 / (k as f32).sqrt());
        wf.iter_mut().enumerate().for_each(|(i, v)| *v *= [1.0, 8.0, 0.25][(i % k) / Q8_GROUP % 3]);
        let b = random(n, 3, 0.5);
        let packed = Packed::new(&wf, n, k, dtype).unwrap();
        // The reference uses exactly the weights the kernel sees, so only arithmetic differs.
        let want = linear_cpu(&x, Rhs::F32(&packed.dequantize()), bias.then_some(&b[..]), k, act);

        let xt = Tensor::from_f32(gpu, &[m, k], &x).unwrap();
        let wt = Tensor::from_packed(gpu, &packed).unwrap();
        let bt = Tensor::from_f32(gpu, &[n], &b).unwrap();
        let mut pass = Pass::new(gpu);
        let g = super::check((&xt).into(), (&wt).into(), Some((&bt).into())).unwrap();
        let y = record(&mut pass, &g, plan, &xt, &wt, bias.then_some(&bt), act, None, None).unwrap();
        pass.submit().unwrap();
        let got = y.read_f32(gpu).await.unwrap();
        // f32 sums of K terms in a different order: error grows like sqrt(K) * eps * |terms|.
        let atol = 2e-6 * (k as f32).sqrt();
        let what = format!("linear {m}x{k} by {n}x{k} {dtype:?} bias={bias} {act:?} {plan:?}");
        assert_close(&got, &want, atol, 1e-5, &what);
    }

    gpu_test!(linear_every_tile_and_load_path, |gpu| {
        // Each tile size and the rows kernel with interior and edge workgroups (M, N past a
        // whole tile, not a multiple of it), K a multiple of 4 but not of 16 (vec4 loads, a short
        // last step) and K odd (scalar loads, a last unit past the end of a packed f16 / q8 row).
        for dtype in [DType::F32, DType::F16, DType::Q8] {
            for (m, n, k) in [(300, 270, 68), (131, 133, 45)] {
                for plan in Tiles::ALL.map(|t| whole(t, k)).into_iter().chain([Plan::Rows]) {
                    check_plan(gpu, m, n, k, dtype, true, Activation::Silu, plan).await;
                }
            }
        }
    });

    gpu_test!(linear_split_k, |gpu| {
        // Slices of K summed by a second dispatch, with the bias and activation there: K = 68 in
        // 5 slices of 16 (the last one 4 long, vec4 loads), K = 45 in 3 (scalar loads, the last
        // slice ending in a unit past a packed row's end); every tile, ragged M and N.
        for tiles in Tiles::ALL {
            for dtype in [DType::F32, DType::F16, DType::Q8] {
                for (m, n, k) in [(37, 133, 68), (70, 65, 45)] {
                    check_plan(gpu, m, n, k, dtype, true, Activation::Gelu, sliced(tiles, k, 16)).await;
                }
            }
        }
        // The plan the rules make for BERT's 768-wide layers on a GPU, at q8.
        let t = Tiles::for_shape(32, 768, MIN_WORKGROUPS);
        for k in [768, 3072] {
            let (splits, k_slice) = t.split_k(32, 768, k, MIN_WORKGROUPS);
            assert_eq!(splits, 3);
            check_plan(gpu, 32, 768, k, DType::Q8, true, Activation::None, Plan::Tiled { tiles: t, splits, k_slice })
                .await;
        }
    });

    #[test]
    fn tiles_follow_the_shape() {
        let t = |rows, cols| Tiles { rows, cols };
        let shape = |m, n| Tiles::for_shape(m, n, MIN_WORKGROUPS);
        // A photo's pointwise convs at 114x114: 128 rows; 128 columns at N = 240, not 40 or 144.
        assert_eq!(shape(114 * 114, 40), t(128, 64));
        assert_eq!(shape(114 * 114, 144), t(128, 64));
        assert_eq!(shape(114 * 114, 240), t(128, 128));
        assert_eq!(shape(57 * 57, 384), t(128, 128));
        // Text at batch 1 (32 tokens); the image transformer at batch 1 (37 boxes).
        assert_eq!(shape(32, 3072), t(32, 64));
        assert_eq!(shape(37, 6144), t(64, 128));
        // The head at 15x15: 2 x 16 workgroups of 128x128.
        assert_eq!(shape(15 * 15, 2048), t(128, 128));
        // Text at batch 8: 256 x 768 keeps 64x64 (4 x 12 workgroups; 128 columns would leave 24).
        assert_eq!(shape(256, 768), t(64, 64));
        assert_eq!(shape(256, 3072), t(128, 128));
        // K is split only at M <= 64 under the floor: BERT's 768-wide layers at batch 1 (12
        // workgroups) in 3 slices; the image's transformer (32) not at all.
        let short = t(32, 64);
        assert_eq!(short.split_k(32, 768, 768, MIN_WORKGROUPS), (3, 256));
        assert_eq!(short.split_k(32, 768, 3072, MIN_WORKGROUPS), (3, 1024));
        assert_eq!(short.split_k(32, 768, 500, MIN_WORKGROUPS), (1, 500));
        assert_eq!(short.split_k(32, 64, 8192, MIN_WORKGROUPS), (8, 1024));
        assert_eq!(t(64, 64).split_k(37, 2048, 2048, MIN_WORKGROUPS), (1, 2048));
        assert_eq!(t(64, 64).split_k(65, 64, 4096, MIN_WORKGROUPS), (1, 4096));
    }

    #[test]
    fn cpu_adapters_get_the_rows_kernel() {
        let geometry = |m, n, k| LinearGeometry { m, n, k, out_shape: vec![m, n] };
        // Every BriVL shape on a CPU adapter; a GPU keeps the tiles (and the split).
        for (m, n, k) in [(32, 768, 768), (37, 6144, 2048), (228 * 228, 24, 24), (15 * 15, 2048, 512)] {
            assert_eq!(Plan::choose(&geometry(m, n, k), true), Plan::Rows);
        }
        let tiled = Plan::Tiled { tiles: Tiles { rows: 32, cols: 64 }, splits: 3, k_slice: 256 };
        assert_eq!(Plan::choose(&geometry(32, 768, 768), false), tiled);
        // Past 65535 workgroups of 8 rows (a batch of 11 photos at 228x228), tiles.
        let max = ROWS_TILE.0 * crate::pass::MAX_WORKGROUPS_PER_DIM as usize;
        assert_eq!(Plan::choose(&geometry(max, 24, 24), true), Plan::Rows);
        assert!(matches!(Plan::choose(&geometry(max + 1, 24, 24), true), Plan::Tiled { .. }));
    }

    gpu_test!(linear_f32_ragged_shapes, |gpu| {
        // None of these is a multiple of the 64x64x16 tile.
        for (m, n, k) in [(1, 1, 1), (37, 70, 33), (65, 129, 17), (3, 5, 100)] {
            check(gpu, m, n, k, DType::F32, true, Activation::None).await;
        }
        check(gpu, 64, 64, 64, DType::F32, false, Activation::None).await;
    });

    #[test]
    fn linear_cpu_matches_plain_dot_products() {
        // Ragged rows and columns, K not a multiple of 8; every level and format is tested in
        // `cpu::gemm`, this is the op at the machine's level.
        for (m, n, k) in [(1, 1, 1), (5, 3, 7), (37, 70, 300), (9, 70, 2000)] {
            let x = random(m * k, 5, 1.0);
            let w = random(n * k, 6, 1.0);
            let b = random(n, 7, 1.0);
            let got = linear_cpu(&x, Rhs::F32(&w), Some(&b), k, Activation::Relu);
            let want: Vec<f32> = (0..m * n)
                .map(|i| {
                    let (r, j) = (i / n, i % n);
                    let dot: f64 = (0..k).map(|c| x[r * k + c] as f64 * w[j * k + c] as f64).sum();
                    (dot + b[j] as f64).max(0.0) as f32
                })
                .collect();
            assert_close(&got, &want, 1e-5 * (k as f32).sqrt(), 1e-5, &format!("linear_cpu {m}x{k} by {n}x{k}"));
        }
    }

    gpu_test!(linear_fused_activations, |gpu| {
        for act in Activation::ALL {
            check(gpu, 33, 47, 29, DType::F32, true, act).await;
        }
    });

    gpu_test!(linear_int8_group_scales, |gpu| {
        // K below one scale group, a few whole groups, and whole groups plus a short one.
        let g = Q8_GROUP;
        for (m, n, k) in [(37, 70, 33), (2, 9, 7), (70, 65, 130), (5, 67, 2 * g), (19, 3, 3 * g + 17)] {
            check(gpu, m, n, k, DType::Q8, true, Activation::Gelu).await;
        }
    });

    gpu_test!(linear_f16_weights, |gpu| {
        // Runs the shader-f16 variant where the adapter has it, the unpacking fallback otherwise.
        for (m, n, k) in [(37, 70, 33), (5, 3, 7)] {
            check(gpu, m, n, k, DType::F16, true, Activation::Relu).await;
        }
    });

    /// Inputs for the gated linear tests: 2 images of 9x15 pixels (135 rows each, not a tile
    /// multiple), K channels, N = 140; `x`, `gate`, `residual`, `bias`, the weights, and the reference:
    /// the gate applied to `x`, then a plain linear (the CPU path's where `cpu`), then the
    /// residual added.
    #[allow(clippy::type_complexity)]
    fn gated_case(
        cpu: bool,
        dtype: DType,
        k: usize,
        with_bias: bool,
        with_res: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Packed, Vec<f32>) {
        let (b, p, n) = (2, 135, 140);
        let x = random(b * p * k, 61, 1.0);
        let gate: Vec<f32> = random(b * k, 62, 0.5).iter().map(|v| v + 0.5).collect();
        let res = random(b * p * n, 63, 1.0);
        let bias = random(n, 64, 0.5);
        let wp = Packed::new(&random(n * k, 65, 0.2), n, k, dtype).unwrap();
        let gated: Vec<f32> = x.iter().enumerate().map(|(i, v)| v * gate[i / (p * k) * k + i % k]).collect();
        // The CPU path's q8 panels multiply quantised inputs at AVX-512 VNNI, gated or not: its
        // reference uses them too; the GPU's is f32.
        let (seen, panels) = (wp.dequantize(), PanelMatrix::from_packed(&wp).filter(|_| cpu));
        let rhs = panels.as_ref().map_or(Rhs::F32(&seen), Rhs::Panels);
        let mut want = linear_cpu(&gated, rhs, with_bias.then_some(&bias[..]), k, Activation::None);
        if with_res {
            want.iter_mut().zip(&res).for_each(|(w, r)| *w += r);
        }
        (x, gate, res, bias, wp, want)
    }

    const CPU: bool = true;
    const GPU: bool = false;
    const GATED_CASES: [(DType, bool, bool); 4] =
        [(DType::F32, true, true), (DType::Q8, false, true), (DType::F16, true, false), (DType::F32, false, false)];

    cpu_test!(gated_linear_cpu_matches_gate_then_linear_then_add, {
        for (dtype, with_bias, with_res) in GATED_CASES {
            let (x, gate, res, bias, wp, want) = gated_case(CPU, dtype, 45, with_bias, with_res);
            let (seen, panels) = (wp.dequantize(), PanelMatrix::from_packed(&wp));
            let rhs = panels.as_ref().map_or(Rhs::F32(&seen), Rhs::Panels);
            let (b, res) = (with_bias.then_some(&bias[..]), with_res.then_some(&res[..]));
            let got = gated_linear_cpu(&x, &gate, 135, rhs, b, 45, res);
            let what = format!("gated_linear_cpu {dtype:?} bias {with_bias} residual {with_res}");
            assert_close(&got, &want, 1e-5, 1e-5, &what);
        }
    });

    cpu_test!(gated_linear_cpu_takes_an_empty_batch, {
        // x [2, 0, 3, K]: no rows, two images' gates.
        let w = vec![1.0f32; 4 * 5];
        assert!(gated_linear_cpu(&[], &[0.5; 10], 0, Rhs::F32(&w), None, 5, Some(&[])).is_empty());
    });

    cpu_test!(gated_linear_cpu_flushes_subnormal_gated_weights, {
        // Weights of 1e-3 gated by 1e-37: every product is subnormal and counts as zero (x86
        // would otherwise run the kernel through microcode assists); a normal gate is kept.
        let (k, n, rows) = (40, 20, 3);
        let x = vec![1.0f32; rows * k];
        let w = vec![1e-3f32; n * k];
        let got = gated_linear_cpu(&x, &vec![1e-37; k], rows, Rhs::F32(&w), None, k, None);
        assert!(got.iter().all(|v| *v == 0.0), "{:?}", &got[..4]);
        let got = gated_linear_cpu(&x, &vec![1e-30; k], rows, Rhs::F32(&w), None, k, None);
        assert!(got.iter().all(|v| (v / (k as f32 * 1e-33) - 1.0).abs() < 1e-4), "{:?}", &got[..4]);
        // Below 2^-100 a gate zeroes its channel (a saturated sigmoid, often subnormal itself).
        let mut gate = vec![1.0f32; k];
        gate[..k / 2].fill(5e-31);
        gate[1] = 1e-40;
        let got = gated_linear_cpu(&x, &gate, rows, Rhs::F32(&w), None, k, None);
        assert!(got.iter().all(|v| (v / (k as f32 / 2.0 * 1e-3) - 1.0).abs() < 1e-5), "{:?}", &got[..4]);
    });

    gpu_test!(gated_linear_matches_gate_then_linear_then_add, |gpu| {
        let (b, n) = (2, 140);
        // K = 44: vec4 loads of x and the gate; K = 45: scalar loads.
        for (k, (dtype, with_bias, with_res)) in [44, 45].into_iter().flat_map(|k| GATED_CASES.map(|c| (k, c))) {
            let (x, gate, res, bias, wp, want) = gated_case(GPU, dtype, k, with_bias, with_res);
            let xt = Tensor::from_f32(gpu, &[b, 9, 15, k], &x).unwrap();
            let gt = Tensor::from_f32(gpu, &[b, k], &gate).unwrap();
            let rt = Tensor::from_f32(gpu, &[b, 9, 15, n], &res).unwrap();
            let bt = Tensor::from_f32(gpu, &[n], &bias).unwrap();
            let wt = Tensor::from_packed(gpu, &wp).unwrap();
            let (bias, res) = (with_bias.then_some(&bt), with_res.then_some(&rt));
            let mut pass = Pass::new(gpu);
            let y = gated_linear(&mut pass, &xt, &gt, &wt, bias, res).unwrap();
            pass.submit().unwrap();
            assert_eq!(y.shape(), [b, 9, 15, n]);
            let what = format!("gated_linear {dtype:?} K {k} bias {with_bias} residual {with_res}");
            assert_close(&y.read_f32(gpu).await.unwrap(), &want, 1e-5, 1e-5, &what);
            // The gate and residual in every tile.
            let (g, rows) =
                check_gated((&xt).into(), (&gt).into(), (&wt).into(), bias.map(Meta::from), res.map(Meta::from))
                    .unwrap();
            // And with K in slices of 16 (the gate on the slices, bias and residual on their sum),
            // and in the rows kernel.
            for plan in Tiles::ALL.into_iter().flat_map(|t| [whole(t, k), sliced(t, k, 16)]).chain([Plan::Rows]) {
                let mut pass = Pass::new(gpu);
                let y = record(&mut pass, &g, plan, &xt, &wt, bias, Activation::None, Some((&gt, rows)), res).unwrap();
                pass.submit().unwrap();
                assert_close(&y.read_f32(gpu).await.unwrap(), &want, 1e-5, 1e-5, &format!("{what} {plan:?}"));
            }
        }
    });

    gpu_test!(gated_linear_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, weight, zeros};
        let run = |x: &[usize], gate: &[usize], res: Option<&[usize]>| {
            on_both!(gpu, |be| {
                let (xt, gt) = (zeros(be, x), zeros(be, gate));
                let w = weight(be, &[6, 4], DType::Q8);
                let r = res.map(|r| zeros(be, r));
                be.gated_linear(&xt, &gt, &w, None, r.as_ref())
            })
        };
        assert_both_accept(run(&[2, 3, 3, 4], &[2, 4], Some(&[2, 3, 3, 6])), "good shapes");
        assert_same_refusal(run(&[2, 3, 3, 4], &[1, 4], None), "one gate row for two images");
        assert_same_refusal(run(&[2, 3, 3, 4], &[2, 5], None), "gate wider than K");
        assert_same_refusal(run(&[4], &[1, 4], None), "x without a batch axis");
        assert_same_refusal(run(&[2, 3, 3, 4], &[2, 4], Some(&[2, 3, 3, 4])), "residual not shaped as the output");
    });

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn linear_f16_fallback_without_shader_f16() {
        let gpu = pollster::block_on(Gpu::with_options(crate::gpu::GpuOptions { allow_f16: false })).unwrap();
        assert!(!gpu.has_f16());
        pollster::block_on(check(&gpu, 37, 70, 33, DType::F16, true, Activation::None));
    }

    gpu_test!(linear_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, weight, zeros};
        let run = |x: &[usize], w: &[usize], wt: DType, b: Option<(&[usize], DType)>| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let wt = weight(be, w, wt);
                let bt = b.map(|(shape, dtype)| weight(be, shape, dtype));
                be.linear(&xt, &wt, bt.as_ref(), Activation::None)
            })
        };
        assert_both_accept(run(&[2, 3], &[4, 3], DType::Q8, Some((&[4], DType::F32))), "good shapes");
        assert_both_accept(run(&[0, 3], &[4, 3], DType::F32, None), "no rows");
        assert_same_refusal(run(&[2, 3], &[4, 5], DType::F32, None), "K mismatch");
        assert_same_refusal(run(&[], &[4, 1], DType::F32, None), "0-d x");
        assert_same_refusal(run(&[2, 0], &[4, 0], DType::F32, None), "K = 0");
        assert_same_refusal(run(&[2, 3], &[12], DType::F32, None), "1-d weight");
        assert_same_refusal(run(&[2, 3], &[4, 3], DType::U32, None), "u32 weight");
        assert_same_refusal(run(&[2, 3], &[4, 3], DType::F32, Some((&[5], DType::F32))), "bias length");
        assert_same_refusal(run(&[2, 3], &[4, 3], DType::F32, Some((&[4], DType::F16))), "f16 bias");
        let ids = on_both!(gpu, |be| {
            let x = ones_u32(be, &[2, 3]);
            let w = weight(be, &[4, 3], DType::F32);
            be.linear(&x, &w, None, Activation::None)
        });
        assert_same_refusal(ids, "u32 x");
    });
}
