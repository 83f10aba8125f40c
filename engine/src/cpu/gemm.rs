//! The CPU path's matrix multiply: `y[M, N] = act(x[M, K] · w[N, K]ᵀ + bias)`.
//!
//! f16 and q8 weights stay in their format in memory, rearranged at load into panels of
//! [`PANEL`] output channels (f16 `[K][PANEL]` per panel; q8 `[K / 4][PANEL][4]`, four inputs of
//! a channel in one 32-bit lane as VNNI's `vpdpbusd` reads them, scales `[K / Q8_GROUP][PANEL]`),
//! so a panel's values for one input are adjacent. For each tile of `NR` output channels, a task
//! turns its panels into an f32 buffer (`KC x NR`, 32 KiB at AVX-512's NR: it stays in L1) and
//! runs the level's register-tiled micro-kernel (`MR x NR` accumulators) over its block of rows
//! against it, then the fused bias + activation (+ residual) on the tile while it is in L1. f32 weights (f32 models,
//! the stem) are read from their row-major `[N, K]` the same way.
//!
//! Levels (`cpu::Level`): AVX-512 8 x 32 (8 x 16 for a last tile of at most 16 channels), AVX2 + FMA 6 x 16, NEON 6 x 16, wasm simd128 4 x 16,
//! portable 4 x 16;
//! at the VNNI levels and simd128, q8 weights go to `cpu::int8` instead (int8 products, no f32
//! tile).
//! The work is split over rows (blocks sized to L2) and, when there are few rows, over tiles of
//! output channels, on the persistent pool.

use std::cell::RefCell;

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
use crate::cpu::int8;
#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
use crate::cpu::lanes::Lanes;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
use crate::cpu::lanes::NeonLanes;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use crate::cpu::lanes::Simd128Lanes;
use crate::cpu::vector;
use crate::cpu::Level;
use crate::ops::Activation;
use crate::parallel::{self, SharedOut};
use crate::quant::{q8_groups, Packed, Q8_GROUP};
use crate::DType;

/// Output channels per stored panel; every kernel's NR is a multiple of it.
pub(crate) const PANEL: usize = 16;

/// An f16 or q8 `[N, K]` weight in panels (see the module doc). N is padded to whole panels with
/// zero weights.
#[derive(Debug)]
pub(crate) struct PanelMatrix {
    pub n: usize,
    pub k: usize,
    pub(super) data: PanelData,
}

#[derive(Debug)]
pub(super) enum PanelData {
    F16(Vec<u16>),
    /// Panels of `q8_panel_len(k)` bytes.
    Q8 {
        q: Vec<i8>,
        scales: Vec<f32>,
    },
}

/// Bytes of one q8 panel: K padded to whole 4-input lanes (the padding is zero weights).
pub(super) fn q8_panel_len(k: usize) -> usize {
    k.div_ceil(4) * 4 * PANEL
}

/// Index of weight (input `c`, channel `j` of the panel) within a q8 panel.
#[inline(always)]
fn q8_index(c: usize, j: usize) -> usize {
    ((c / 4 * PANEL + j) * 4) + c % 4
}

impl PanelMatrix {
    /// Rearranges an f16 or q8 [`Packed`] matrix; `None` for other formats.
    pub(crate) fn from_packed(p: &Packed) -> Option<Self> {
        let (n, k) = (p.rows, p.cols);
        let panels = n.div_ceil(PANEL);
        let rw = p.row_words();
        let data = match p.dtype {
            DType::F16 => {
                let mut v = vec![0u16; panels * k * PANEL];
                for r in 0..n {
                    let row = &p.words[r * rw..(r + 1) * rw];
                    let base = (r / PANEL) * k * PANEL + r % PANEL;
                    for c in 0..k {
                        v[base + c * PANEL] = (row[c / 2] >> (16 * (c % 2))) as u16;
                    }
                }
                PanelData::F16(v)
            }
            DType::Q8 => {
                let groups = q8_groups(k);
                let len = q8_panel_len(k);
                let mut q = vec![0i8; panels * len];
                let mut scales = vec![0f32; panels * groups * PANEL];
                for r in 0..n {
                    let row = &p.words[r * rw..(r + 1) * rw];
                    let panel = &mut q[(r / PANEL) * len..][..len];
                    for c in 0..k {
                        panel[q8_index(c, r % PANEL)] = (row[c / 4] >> (8 * (c % 4))) as u8 as i8;
                    }
                    let sbase = (r / PANEL) * groups * PANEL + r % PANEL;
                    for g in 0..groups {
                        scales[sbase + g * PANEL] = f32::from_bits(p.words[n * rw + r * groups + g]);
                    }
                }
                PanelData::Q8 { q, scales }
            }
            DType::F32 | DType::U32 => return None,
        };
        Some(Self { n, k, data })
    }

    /// Row `r` (< n) as f32, into `out` (length k): what an embedding gather reads.
    pub(crate) fn row(&self, r: usize, out: &mut [f32]) {
        let base = (r / PANEL) * self.k * PANEL + r % PANEL;
        match &self.data {
            PanelData::F16(v) => {
                for (c, o) in out.iter_mut().enumerate() {
                    *o = f16_to_f32(v[base + c * PANEL]);
                }
            }
            PanelData::Q8 { q, scales } => {
                let panel = &q[(r / PANEL) * q8_panel_len(self.k)..];
                let sbase = (r / PANEL) * q8_groups(self.k) * PANEL + r % PANEL;
                for (c, o) in out.iter_mut().enumerate() {
                    *o = panel[q8_index(c, r % PANEL)] as f32 * scales[sbase + c / Q8_GROUP * PANEL];
                }
            }
        }
    }

    /// Bytes held (the weights stay the size they have in the model file).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            PanelData::F16(v) => v.len() * 2,
            PanelData::Q8 { q, scales } => q.len() + scales.len() * 4,
        }
    }
}

/// The right-hand side of a GEMM: `[N, K]` weights.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    /// Row-major f32 `[N, K]`.
    F32(&'a [f32]),
    Panels(&'a PanelMatrix),
}

impl Rhs<'_> {
    /// N, for inputs of `k` values.
    pub(crate) fn n(&self, k: usize) -> usize {
        match self {
            Rhs::F32(w) => w.len().checked_div(k).unwrap_or(0),
            Rhs::Panels(m) => m.n,
        }
    }
}

/// f16 bits -> f32 without branches (vectorises): normal and subnormal halves by rescaling the
/// exponent with one multiply, inf and NaN by a select.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits((127 + 112) << 23); // x 2^112
    let v = if em >= 0x7c00 { f32::from_bits((em << 13) | 0x7f80_0000) } else { scaled };
    f32::from_bits(v.to_bits() | ((h & 0x8000) << 16))
}

/// One input's 16 f16 weights of a panel to f32, per level.
trait Halves {
    /// # Safety
    /// The level's CPU features present.
    unsafe fn convert(src: &[u16; PANEL], dst: &mut [f32; PANEL]);
}

/// Any CPU: [`f16_to_f32`]'s bit operations, which the compiler vectorises.
struct HalfBits;
impl Halves for HalfBits {
    #[inline(always)]
    unsafe fn convert(src: &[u16; PANEL], dst: &mut [f32; PANEL]) {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = f16_to_f32(*s));
    }
}

/// AVX2 + F16C (which AVX-512 CPUs have too): `vcvtph2ps`, exact for every f16 value, 8 at a
/// time (the bit operations' code was 5-8% of an image, more where the compiler left it scalar).
#[cfg(target_arch = "x86_64")]
struct HalfF16c;
#[cfg(target_arch = "x86_64")]
impl Halves for HalfF16c {
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    unsafe fn convert(src: &[u16; PANEL], dst: &mut [f32; PANEL]) {
        use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
        for h in 0..PANEL / 8 {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(8 * h) as *const __m128i));
            _mm256_storeu_ps(dst.as_mut_ptr().add(8 * h), v);
        }
    }
}

/// `buf[i * nr + j] = w[j0 + j][k0 + i]` as f32 for `j < nr` (zeros past N), `i` over the
/// `buf.len() / nr` inputs from `k0`: the kernel's tile; times `gate[i]` where given.
///
/// # Safety
/// `H`'s CPU features present.
#[inline(always)]
unsafe fn fill_body<H: Halves>(
    rhs: Rhs,
    k: usize,
    j0: usize,
    k0: usize,
    nr: usize,
    gate: Option<&[f32]>,
    buf: &mut [f32],
) {
    let kc = buf.len() / nr;
    match rhs {
        Rhs::F32(w) => {
            let n = w.len() / k;
            for j in 0..nr {
                if j0 + j < n {
                    let row = &w[(j0 + j) * k + k0..][..kc];
                    for (i, v) in row.iter().enumerate() {
                        buf[i * nr + j] = *v;
                    }
                } else {
                    (0..kc).for_each(|i| buf[i * nr + j] = 0.0);
                }
            }
        }
        Rhs::Panels(m) => {
            let panels = m.n.div_ceil(PANEL);
            for pp in 0..nr / PANEL {
                let p = j0 / PANEL + pp;
                if p >= panels {
                    for i in 0..kc {
                        buf[i * nr + pp * PANEL..][..PANEL].fill(0.0);
                    }
                    continue;
                }
                match &m.data {
                    PanelData::F16(v) => {
                        let src = &v[(p * k + k0) * PANEL..][..kc * PANEL];
                        for (i, s) in src.chunks_exact(PANEL).enumerate() {
                            if i % 2 == 0 {
                                prefetch(s.as_ptr().wrapping_byte_add(PREFETCH_AHEAD) as *const u8);
                            }
                            let d = &mut buf[i * nr + pp * PANEL..][..PANEL];
                            H::convert(s.try_into().expect("a panel row"), d.try_into().expect("a panel row"));
                        }
                    }
                    PanelData::Q8 { q, scales } => {
                        // k0 is a multiple of 4 (of KC): each 4-input lane group is one chunk.
                        let groups = q8_groups(k);
                        let src = &q[p * q8_panel_len(k) + k0 * PANEL..][..kc.div_ceil(4) * 4 * PANEL];
                        let sc = &scales[p * groups * PANEL..(p + 1) * groups * PANEL];
                        for (i4, s) in src.chunks_exact(4 * PANEL).enumerate() {
                            prefetch(s.as_ptr().wrapping_add(PREFETCH_AHEAD) as *const u8);
                            let scale = &sc[(k0 + 4 * i4) / Q8_GROUP * PANEL..][..PANEL];
                            for t in 0..4.min(kc - 4 * i4) {
                                let d = &mut buf[(4 * i4 + t) * nr + pp * PANEL..][..PANEL];
                                for j in 0..PANEL {
                                    d[j] = s[4 * j + t] as f32 * scale[j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(gate) = gate {
        // Subnormal products become zeros (they add less than 1e-38 to any sum): a gate that
        // saturates towards 0 otherwise fills the tile with subnormals, which x86 multiplies
        // through microcode assists (2.5x slower kernels on the random model). A gate below
        // 2^-100 zeroes its row outright: saturated sigmoids are often subnormal themselves, and
        // multiplying by one is an assist per value (7% of an image on the random model).
        for (row, s) in buf.chunks_exact_mut(nr).zip(gate) {
            if s.abs() < TINY_GATE {
                row.fill(0.0);
                continue;
            }
            row.iter_mut().for_each(|v| {
                let p = *v * s;
                *v = if p.abs() < f32::MIN_POSITIVE { 0.0 } else { p };
            });
        }
    }
}

/// Gates below this zero their input channel in `fill_body` (2^-100).
const TINY_GATE: f32 = 7.888_609e-31;

/// Bytes ahead of the weights being converted that `fill` asks the cache for: weights stream from
/// memory once per call (at batch 1 the dequantisation waits on them otherwise), about one
/// memory latency of conversion work ahead.
const PREFETCH_AHEAD: usize = 2048;

/// Asks for the cache line at `p` (any address: a prefetch never faults).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching reads nothing and never faults, whatever the address; SSE is baseline
    // on x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

vector::multiversion! {
    /// The f32 tile of `nr` output channels from `j0`, inputs from `k0` (see `fill_body`), with
    /// F16C's conversion at the x86 levels.
    ///
    /// # Safety
    /// Always sound: the x86 body (F16C) runs only at the levels that have it.
    unsafe fn fill(
        rhs: Rhs,
        k: usize,
        j0: usize,
        k0: usize,
        nr: usize,
        gate: Option<&[f32]>,
        buf: &mut [f32],
    ) = fill_body::<HalfF16c>, fill_body::<HalfBits>
}

/// A register-tiled micro-kernel: `c[rows, cols] = a[rows, K] · b` (`+=` when `add`) with `b` the
/// `K x NR` tile,
/// `a` rows `lda` apart, `c` rows `ldc` apart; `rows <= MR`, `cols <= NR`.
trait Micro {
    const MR: usize;
    const NR: usize;
    /// The width of [`Micro::run_tail`], for a last tile of at most this many channels (N = 40,
    /// 144, 176, 304 in the image tower: half their last 32-wide tile would be zeros).
    const NR_TAIL: usize = Self::NR;
    /// Whether the kernel applies a [`Finish`] (others are given [`Finish::NONE`] only).
    const FINISHES: bool = false;
    /// # Safety
    /// `a` readable for `rows` rows of `k`, `b` for `k * NR`, `c` writable for `rows` rows of
    /// `cols`; the level's CPU features present.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        fin: Finish,
    );
    /// [`Micro::run`] with `b` a `K x NR_TAIL` tile and `cols <= NR_TAIL`.
    ///
    /// # Safety
    /// As [`Micro::run`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_tail(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        fin: Finish,
    ) {
        Self::run(k, a, lda, rows, b, c, ldc, cols, add, fin)
    }
}

/// What a micro-kernel that [`Micro::FINISHES`] applies to its tile on the last pass over K,
/// before storing it: `+ bias` (the tile's first column's, when not null), then SiLU.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only AVX-512's kernel reads it
struct Finish {
    bias: *const f32,
    silu: bool,
}

impl Finish {
    const NONE: Finish = Finish { bias: std::ptr::null(), silu: false };
}

/// Writes (or, when `add`, adds) the valid part of a tile computed in `tmp` (rows of `nr`) to `c`.
#[inline(always)]
pub(super) unsafe fn store_part(tmp: &[f32], nr: usize, c: *mut f32, ldc: usize, rows: usize, cols: usize, add: bool) {
    for i in 0..rows {
        let dst = std::slice::from_raw_parts_mut(c.add(i * ldc), cols);
        let src = &tmp[i * nr..i * nr + cols];
        if add {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            dst.copy_from_slice(src);
        }
    }
}

struct Portable;
impl Micro for Portable {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        _: Finish,
    ) {
        const MR: usize = Portable::MR;
        const NR: usize = Portable::NR;
        let ap: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(rows - 1) * lda));
        let mut acc = [[0f32; NR]; MR];
        for kk in 0..k {
            let bk = &*(b.add(kk * NR) as *const [f32; NR]);
            for i in 0..MR {
                let av = *ap[i].add(kk);
                for j in 0..NR {
                    acc[i][j] += av * bk[j];
                }
            }
        }
        store_part(acc.as_flattened(), NR, c, ldc, rows, cols, add);
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512;
#[cfg(target_arch = "x86_64")]
impl Micro for Avx512 {
    const MR: usize = 8;
    const NR: usize = 32;
    const NR_TAIL: usize = 16;
    const FINISHES: bool = true;
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        fin: Finish,
    ) {
        avx512_kernel::<2>(k, a, lda, rows, b, c, ldc, cols, add, fin)
    }
    unsafe fn run_tail(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        fin: Finish,
    ) {
        avx512_kernel::<1>(k, a, lda, rows, b, c, ldc, cols, add, fin)
    }
}

/// AVX-512: 8 rows x `V` vectors of 16 columns (`V` = 2, or 1 for a last tile of at most 16
/// channels); the rows and columns past `rows` and `cols` masked off when storing, with `fin`
/// applied in registers (the epilogue's pass over the tile, most of it SiLU's loads and stores,
/// saved).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_kernel<const V: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    rows: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
    fin: Finish,
) {
    use std::arch::x86_64::*;
    const MR: usize = Avx512::MR;
    let ap: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(rows - 1) * lda));
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    for kk in 0..k {
        let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add((kk * V + v) * 16)));
        for i in 0..MR {
            let av = _mm512_set1_ps(*ap[i].add(kk));
            for v in 0..V {
                acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
            }
        }
    }
    let mask: [__mmask16; V] = std::array::from_fn(|v| ((1u32 << cols.saturating_sub(16 * v).min(16)) - 1) as u16);
    let bias: [__m512; V] = std::array::from_fn(|v| match fin.bias.is_null() {
        true => _mm512_setzero_ps(),
        false => _mm512_maskz_loadu_ps(mask[v], fin.bias.add(16 * v)),
    });
    for (i, row) in acc.iter().enumerate() {
        if i >= rows {
            break;
        }
        for v in 0..V {
            let cv = c.add(i * ldc + 16 * v);
            let mut r = row[v];
            if add {
                r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], cv), r);
            }
            if !fin.bias.is_null() {
                r = _mm512_add_ps(r, bias[v]);
            }
            if fin.silu {
                r = silu_avx512(r);
            }
            _mm512_mask_storeu_ps(cv, mask[v], r);
        }
    }
}

/// `x / (1 + e^-x)` on 16 lanes, the operations of `vector::exp::<Fma>` and `vector::activate`
/// (the same results but for NaN inputs).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn silu_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let s = _mm512_set1_ps;
    const MAGIC: f32 = 12_582_912.0;
    let nx = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), x), s(-87.0)), s(88.0));
    let shifted = _mm512_fmadd_ps(nx, s(std::f32::consts::LOG2_E), s(MAGIC));
    let n = _mm512_sub_ps(shifted, s(MAGIC));
    let r = _mm512_fmadd_ps(n, s(2.121_944_4e-4), _mm512_fmadd_ps(n, s(-0.693_359_4), nx));
    let mut p = s(1.987_569_1e-4);
    for coef in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm512_fmadd_ps(p, r, s(coef));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), s(1.0));
    let bits = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_castps_si512(s(MAGIC)));
    let two_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(bits, _mm512_set1_epi32(127))));
    _mm512_div_ps(x, _mm512_add_ps(s(1.0), _mm512_mul_ps(e, two_n)))
}

#[cfg(target_arch = "x86_64")]
struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Micro for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        _: Finish,
    ) {
        avx2_kernel(k, a, lda, rows, b, c, ldc, cols, add)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2_kernel(
    k: usize,
    a: *const f32,
    lda: usize,
    rows: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    const MR: usize = Avx2::MR;
    let ap: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(rows - 1) * lda));
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for kk in 0..k {
        let b0 = _mm256_loadu_ps(b.add(kk * 16));
        let b1 = _mm256_loadu_ps(b.add(kk * 16 + 8));
        for i in 0..MR {
            let av = _mm256_set1_ps(*ap[i].add(kk));
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    if rows == MR && cols == 16 {
        for (i, row) in acc.iter().enumerate() {
            let (c0, c1) = (c.add(i * ldc), c.add(i * ldc + 8));
            if add {
                _mm256_storeu_ps(c0, _mm256_add_ps(_mm256_loadu_ps(c0), row[0]));
                _mm256_storeu_ps(c1, _mm256_add_ps(_mm256_loadu_ps(c1), row[1]));
            } else {
                _mm256_storeu_ps(c0, row[0]);
                _mm256_storeu_ps(c1, row[1]);
            }
        }
    } else {
        let mut tmp = [0f32; MR * 16];
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(tmp.as_mut_ptr().add(i * 16), row[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(i * 16 + 8), row[1]);
        }
        store_part(&tmp, 16, c, ldc, rows, cols, add);
    }
}

/// The micro-kernel of the 4-lane levels: `MR` rows x 16 columns (4 vectors), each input
/// broadcast and multiplied in.
///
/// # Safety
/// As [`Micro::run`], with `L`'s level present.
#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn lanes4_kernel<L: Lanes, const MR: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    rows: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
) {
    let ap: [*const f32; MR] = std::array::from_fn(|i| a.add(i.min(rows - 1) * lda));
    let mut acc = [[L::zero(); 4]; MR];
    for kk in 0..k {
        let bp = b.add(kk * 16);
        let bv = [L::load(bp), L::load(bp.add(4)), L::load(bp.add(8)), L::load(bp.add(12))];
        for i in 0..MR {
            let av = L::splat(*ap[i].add(kk));
            for j in 0..4 {
                acc[i][j] = L::fma(av, bv[j], acc[i][j]);
            }
        }
    }
    let mut tmp = [[0f32; 16]; MR];
    for (row, a) in tmp.iter_mut().zip(&acc) {
        for (j, v) in a.iter().enumerate() {
            L::store(row.as_mut_ptr().add(j * 4), *v);
        }
    }
    store_part(tmp.as_flattened(), 16, c, ldc, rows, cols, add);
}

/// wasm `simd128`: 4 rows x 16 columns (a multiply and an add: no FMA).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
struct Simd128;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Micro for Simd128 {
    const MR: usize = 4;
    const NR: usize = 16;
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        _: Finish,
    ) {
        lanes4_kernel::<Simd128Lanes, 4>(k, a, lda, rows, b, c, ldc, cols, add)
    }
}

/// aarch64 NEON: 6 rows x 16 columns, 24 of its 32 vector registers as accumulators.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
struct Neon;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
impl Micro for Neon {
    const MR: usize = 6;
    const NR: usize = 16;
    unsafe fn run(
        k: usize,
        a: *const f32,
        lda: usize,
        rows: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
        _: Finish,
    ) {
        lanes4_kernel::<NeonLanes, 6>(k, a, lda, rows, b, c, ldc, cols, add)
    }
}

thread_local! {
    /// Each thread's f32 tile of weights, reused across calls (no allocation per tile).
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// What a GEMM does besides `x · wᵀ`, in the order applied.
#[derive(Clone, Copy, Default)]
pub(crate) struct Fused<'a> {
    /// Per-image scales of the inputs: `gate[b * K + c]` multiplies input `c` of the `rows` rows
    /// of image `b` (squeeze-excite's gate). Applied to the weight tile, once per image, instead
    /// of to every activation (a pass over the largest tensors saved).
    pub gate: Option<Gate<'a>>,
    /// `n` values added to every row.
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
    /// `m * n` values added after the activation (a residual connection).
    pub residual: Option<&'a [f32]>,
}

/// See [`Fused::gate`].
#[derive(Clone, Copy)]
pub(crate) struct Gate<'a> {
    pub scales: &'a [f32],
    pub rows: usize,
}

/// `y[M, N] = act(x[M, K] · wᵀ + bias)` (with `fused`'s gate and residual) at `level` (falls back
/// to portable where the CPU lacks it). `x` has `m * k` values, `y` `m * n`; `w` is `[n, k]`.
pub(crate) fn gemm(level: Level, x: &[f32], k: usize, w: Rhs, n: usize, fused: Fused, y: &mut [f32]) {
    let m = x.len().checked_div(k).unwrap_or(0);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        y.len() == m * n
            && fused.bias.is_none_or(|b| b.len() == n)
            && fused.residual.is_none_or(|r| r.len() == m * n)
            && fused.gate.is_none_or(|g| g.rows > 0 && g.scales.len() == m.div_ceil(g.rows) * k),
        "gemm: shapes checked by the op"
    );
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "aarch64", target_feature = "neon")
    ))]
    if let Rhs::Panels(PanelMatrix { data: PanelData::Q8 { q, scales }, .. }) = w {
        if int8::used(level) {
            return int8::gemm(level, x, k, n, q, scales, fused, y);
        }
    }
    #[cfg(target_arch = "x86_64")]
    match level.f32_kernels() {
        Level::Avx512 if level.supported() => return run::<Avx512>(level, x, m, k, w, n, fused, y),
        Level::Avx2 if level.supported() => return run::<Avx2>(level, x, m, k, w, n, fused, y),
        _ => {}
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if level == Level::Simd128 {
        return run::<Simd128>(level, x, m, k, w, n, fused, y);
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if level == Level::Neon {
        return run::<Neon>(level, x, m, k, w, n, fused, y);
    }
    run::<Portable>(Level::Portable, x, m, k, w, n, fused, y)
}

#[allow(clippy::too_many_arguments)]
fn run<K: Micro>(level: Level, x: &[f32], m: usize, k: usize, w: Rhs, n: usize, fused: Fused, y: &mut [f32]) {
    let (mr, nr) = (K::MR, K::NR);
    let tiles = n.div_ceil(nr);
    // Inputs per pass: the tile (KC x NR) stays in L1/L2 while a block of rows runs over it.
    let kc = k.min(KC);
    // Rows per block: their KC inputs about 512 KiB (in L2 with the tile), at most 256 rows.
    // A tile is dequantised once per block, so large blocks make that cost small.
    let mc = ((512 << 10) / (4 * kc) / mr * mr).clamp(mr, 256 / mr * mr);
    // With a gate, blocks never span two images (each image's tile is scaled by its own gate).
    let seg_rows = fused.gate.map_or(m, |g| g.rows.min(m));
    let per_seg = seg_rows.div_ceil(mc);
    let blocks = m.div_ceil(seg_rows) * per_seg;
    let splits = tile_splits(blocks, tiles);
    // The kernel applies bias and SiLU itself where it can (no residual, no other activation).
    let silu = fused.act == Activation::Silu;
    let finish = K::FINISHES && fused.residual.is_none() && (silu || fused.act == Activation::None);
    let out = SharedOut(y.as_mut_ptr());
    parallel::for_each(blocks * splits, |t| {
        let out = &out;
        let seg = t / splits / per_seg;
        let m0 = seg * seg_rows + (t / splits % per_seg) * mc;
        let m1 = (m0 + mc).min((seg + 1) * seg_rows).min(m);
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            for tj in share(t % splits, splits, tiles) {
                let j0 = tj * nr;
                let cols = nr.min(n - j0);
                // A last tile this narrow goes through the level's narrower kernel.
                let width = if cols <= K::NR_TAIL { K::NR_TAIL } else { nr };
                for k0 in (0..k).step_by(kc) {
                    let kn = kc.min(k - k0);
                    let fin = match finish && k0 + kn == k {
                        true => Finish { bias: fused.bias.map_or(std::ptr::null(), |b| b[j0..].as_ptr()), silu },
                        false => Finish::NONE,
                    };
                    // Grown, never shrunk: a full tile after a narrow one would zero half of it.
                    if tile.len() < kn * width {
                        tile.resize(kn * width, 0.0);
                    }
                    let gate = fused.gate.map(|g| &g.scales[seg * k + k0..][..kn]);
                    // SAFETY: `fill` runs F16C's conversion only at the levels that have it.
                    unsafe { fill(level, w, k, j0, k0, width, gate, &mut tile[..kn * width]) };
                    for i0 in (m0..m1).step_by(mr) {
                        let rows = mr.min(m1 - i0);
                        // SAFETY: rows i0..i0 + rows of x exist (i0 + rows <= m) with k0 + kn <= k
                        // inputs; the tile holds kn * width values; this task alone writes rows
                        // m0..m1 x the columns of its tiles.
                        unsafe {
                            let (a, b, c) = (x.as_ptr().add(i0 * k + k0), tile.as_ptr(), out.0.add(i0 * n + j0));
                            if width < nr {
                                K::run_tail(kn, a, k, rows, b, c, n, cols, k0 > 0, fin);
                            } else {
                                K::run(kn, a, k, rows, b, c, n, cols, k0 > 0, fin);
                            }
                        }
                    }
                }
                if !finish {
                    // SAFETY: as above; the kernels are done with these rows.
                    unsafe { epilogue(level, fused, out, n, m0..m1, j0, cols) };
                }
            }
        });
    });
}

/// How a GEMM of `blocks` row blocks and `tiles` column tiles is split into tasks: each row
/// block into `splits` shares of its tiles ([`share`]). Few row blocks: the output channels are
/// split too, so every thread has work.
pub(super) fn tile_splits(blocks: usize, tiles: usize) -> usize {
    let want = 4 * parallel::threads();
    if blocks >= want {
        1
    } else {
        want.div_ceil(blocks).min(tiles).max(1)
    }
}

/// Share `s` of `splits` of `tiles` tiles: shares differ by one tile at most (equal shares of
/// the rounded-up size left 5 tasks of 2 tiles for 10 tiles, 3 of them on one of 2 threads).
pub(super) fn share(s: usize, splits: usize, tiles: usize) -> std::ops::Range<usize> {
    s * tiles / splits..(s + 1) * tiles / splits
}

/// Bias, activation and residual of `fused` on columns `j0..j0 + cols` of `rows` of `out` (rows
/// of `n`), while they are in cache.
///
/// # Safety
/// Those values of `out` exist and no other thread touches them.
pub(super) unsafe fn epilogue(
    level: Level,
    fused: Fused,
    out: &SharedOut,
    n: usize,
    rows: std::ops::Range<usize>,
    j0: usize,
    cols: usize,
) {
    if fused.bias.is_none() && fused.act == Activation::None && fused.residual.is_none() {
        return;
    }
    epilogue_rows(level, fused, out, n, rows, j0, cols)
}

/// The body of [`epilogue`], compiled per level once for all its rows (a call per row of 32
/// values went through the level's dispatch each time).
#[inline(always)]
unsafe fn epilogue_body<M: vector::MulAdd>(
    fused: Fused,
    out: &SharedOut,
    n: usize,
    rows: std::ops::Range<usize>,
    j0: usize,
    cols: usize,
) {
    let bias = fused.bias.map(|b| &b[j0..j0 + cols]);
    for r in rows {
        let row = std::slice::from_raw_parts_mut(out.0.add(r * n + j0), cols);
        vector::bias_act_body::<M>(row, bias, fused.act);
        if let Some(res) = fused.residual {
            row.iter_mut().zip(&res[r * n + j0..][..cols]).for_each(|(y, r)| *y += r);
        }
    }
}

vector::multiversion! {
    unsafe fn epilogue_rows(
        fused: Fused,
        out: &SharedOut,
        n: usize,
        rows: std::ops::Range<usize>,
        j0: usize,
        cols: usize,
    ) = epilogue_body::<vector::Fma>, epilogue_body::<vector::Plain>
}

/// Inputs per pass over a tile (see `run`): 256 x 32 f32 fit a 48 KiB L1 with room for the rows'
/// lines (image tower 8% faster than 512 on an AVX-512 Xeon, text unchanged).
const KC: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cpu_test;
    use crate::testing::{assert_close, random};

    /// f64 dot products of x with the weights the kernel sees.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], k: usize, act: Activation) -> Vec<f32> {
        let (m, n) = (x.len() / k, w.len() / k);
        (0..m * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                let dot: f64 = (0..k).map(|c| x[r * k + c] as f64 * w[j * k + c] as f64).sum();
                act.apply((dot + bias[j] as f64) as f32)
            })
            .collect()
    }

    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "aarch64", target_feature = "neon")
    ))]
    use int8::{seen_inputs, used as int8_used};

    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    fn int8_used(_: Level) -> bool {
        false
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    fn seen_inputs(_: &[f32], _: usize) -> Vec<f32> {
        unreachable!()
    }

    cpu_test!(gemm_matches_f64_dot_products_on_every_level_and_format, {
        // Rows and columns not multiples of any MR (4, 6, 8) or NR (16, 32); K past a q8 group
        // and not a multiple of it; enough rows for several blocks and threads; last tiles of
        // 1-16 columns (AVX-512's narrow kernel), 16 exactly with n = 48.
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (37, 70, 33),
            (9, 70, 300),
            (13, 33, 2000),
            (300, 17, 45),
            (2, 100, 64),
            (11, 48, 19),
        ];
        for level in Level::available() {
            for (m, n, k) in shapes {
                let x = random(m * k, 5 + m as u64, 1.0);
                let wf = random(n * k, 6 + n as u64, 1.0 / (k as f32).sqrt());
                let b = random(n, 7, 0.5);
                for dtype in [DType::F32, DType::F16, DType::Q8] {
                    let packed = Packed::new(&wf, n, k, dtype).unwrap();
                    let seen = packed.dequantize();
                    let panels = PanelMatrix::from_packed(&packed);
                    let rhs = panels.as_ref().map_or(Rhs::F32(&seen), Rhs::Panels);
                    // Where q8 weights have the int8 path, they multiply the inputs quantised to u8.
                    let xs = if int8_used(level) && dtype == DType::Q8 { seen_inputs(&x, k) } else { x.clone() };
                    for act in [Activation::None, Activation::Gelu, Activation::Silu] {
                        let mut got = vec![f32::NAN; m * n];
                        let bias = (act != Activation::None).then_some(&b[..]);
                        gemm(level, &x, k, rhs, n, Fused { bias, act, ..Fused::default() }, &mut got);
                        let zeros = vec![0.0; n];
                        let want = reference(&xs, &seen, bias.unwrap_or(&zeros), k, act);
                        let what = format!("{level:?} {m}x{k} by {n}x{k} {dtype:?} {act:?}");
                        assert_close(&got, &want, 2e-6 * (k as f32).sqrt(), 1e-5, &what);
                    }
                }
            }
        }
    });

    #[test]
    fn tile_shares_cover_every_tile_once_and_differ_by_one_at_most() {
        for tiles in 1..70 {
            for blocks in [1, 2, 3, 5, 100] {
                let splits = tile_splits(blocks, tiles);
                let shares: Vec<_> = (0..splits).map(|s| share(s, splits, tiles)).collect();
                let all: Vec<usize> = shares.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(all, (0..tiles).collect::<Vec<_>>(), "{tiles} tiles, {blocks} blocks");
                let (lo, hi) = (shares.iter().map(|r| r.len()).min(), shares.iter().map(|r| r.len()).max());
                assert!(lo.is_some_and(|lo| lo >= 1 && hi.unwrap() - lo <= 1), "{tiles} tiles: {shares:?}");
            }
        }
    }

    cpu_test!(panel_rows_are_the_dequantised_rows, {
        let (n, k) = (19, 2 * Q8_GROUP + 3);
        let w = random(n * k, 3, 2.0);
        for dtype in [DType::F16, DType::Q8] {
            let packed = Packed::new(&w, n, k, dtype).unwrap();
            let panels = PanelMatrix::from_packed(&packed).unwrap();
            let want = packed.dequantize();
            let mut row = vec![0f32; k];
            for r in 0..n {
                panels.row(r, &mut row);
                assert_eq!(row, want[r * k..(r + 1) * k], "{dtype:?} row {r}");
            }
            assert!(panels.bytes() <= packed.words.len() * 4 * 2, "{dtype:?} stays compact");
        }
        assert!(PanelMatrix::from_packed(&Packed::new(&w, n, k, DType::F32).unwrap()).is_none());
    });

    cpu_test!(f16_conversion_is_exact_for_every_half, {
        for h in 0..=u16::MAX {
            let (got, want) = (f16_to_f32(h), half::f16::from_bits(h).to_f32());
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{h:#06x}: {got} vs {want}");
        }
        // F16C's conversion gives the same bits (NaN payloads included), 16 halves at a time.
        #[cfg(target_arch = "x86_64")]
        if Level::Avx2.supported() {
            for first in (0..=u16::MAX as usize).step_by(PANEL) {
                let src: [u16; PANEL] = std::array::from_fn(|i| (first + i) as u16);
                let (mut bits, mut f16c) = ([0f32; PANEL], [0f32; PANEL]);
                // SAFETY: Avx2 (which includes F16C) is supported.
                unsafe {
                    HalfBits::convert(&src, &mut bits);
                    HalfF16c::convert(&src, &mut f16c);
                }
                for i in 0..PANEL {
                    let (a, b) = (bits[i], f16c[i]);
                    assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{:#06x}", first + i);
                }
            }
        }
    });
}
