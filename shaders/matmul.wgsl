// y[M, N] = act(x[M, K] . w[N, K]^T + bias[N]) (+ residual[M, N]), w in f32, packed f16 or packed
// q8 (int8 times one f32 scale per q8_group values of a row, applied as the tile is loaded).
//
// 16x16 threads (16x8 in SHORT tiles), each owning RM x RN outputs (4 or 8 each way: TALL
// doubles the rows, WIDE the columns), so a tile is 32, 64 or 128 by 64 or 128; K in steps of 16
// through workgroup memory (at most 16 KB, the WebGPU minimum). Threads load the tiles in units
// of four consecutive k: one packed q8 word and its one scale, two f16 words, or a vec4. Interior
// tiles (every row, column and k in range, decided once per tile for the whole workgroup) load
// without bounds checks; edge tiles check each unit, so any M, N, K works. Defines:
// - WF32 | WF16 | WQ8: the weight format. VK (K % 4 == 0): x, the gate and f32 weights are bound
//   as vec4 arrays, so a unit is one load; without it, four scalar loads.
// - F16 (with WF16, on adapters with shader-f16): the weight tile is kept in f16.
// - TALL / WIDE: 8 rows / 8 columns per thread (large M / large N); SHORT: 8 threads down the
//   tile, 32 rows (small M). The host's rules are in matmul.rs (`Tiles::for_shape`).
// - BIAS adds a bias; GATE scales x as it is loaded by gate[M / gate_rows, K] (squeeze-excite's
//   channel gate, one row per image); RESIDUAL adds residual[M, N] after the activation (a
//   block's skip connection).
// - SPLIT (the small-M path, `Tiles::split_k` in matmul.rs): workgroup z sums only K slice z,
//   k_slice long (whole steps of TK), and stores the raw sums to y as partial[splits, M, N];
//   sum_splits (SUM_SPLITS) then adds each output's slices and applies BIAS, the activation and
//   RESIDUAL, one thread per four outputs of a row.
// - ROWS: the rows kernel (entry `rows`, below) in place of the tiles, on CPU adapters.

@group(0) @binding(0) var<uniform> params: MatmulParams;
#ifdef SUM_SPLITS
@group(0) @binding(1) var<storage, read> partial: array<f32>;
#else
#ifdef VK
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
#ifdef WF32
#ifdef VK
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
#endif
#else
@group(0) @binding(2) var<storage, read> w: array<u32>;
#endif
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef GATE
#ifndef SUM_SPLITS
#ifdef VK
@group(0) @binding(5) var<storage, read> gate: array<vec4<f32>>;
#else
@group(0) @binding(5) var<storage, read> gate: array<f32>;
#endif
#endif
#endif
#ifdef RESIDUAL
@group(0) @binding(6) var<storage, read> residual: array<f32>;
#endif

#ifdef TALL
const RM: u32 = 8u;
#else
const RM: u32 = 4u;
#endif
// Threads down the tile: 16, or 8 in SHORT tiles (32 rows, for small M).
#ifdef SHORT
const WGY: u32 = 8u;
#else
const WGY: u32 = 16u;
#endif
#ifdef WIDE
const RN: u32 = 8u;
#else
const RN: u32 = 4u;
#endif
const TM: u32 = WGY * RM;
const TN: u32 = 16u * RN;
const TK: u32 = 16u;

// Tiles hold four rows (x) or columns (w) per vec4, [TK][TM / 4] and [TK][TN / 4], so the inner
// product is vec4 FMAs on registers; accumulators are named variables, not arrays, because
// indexed arrays spill to memory on some compilers (lavapipe).
#ifndef ROWS
var<workgroup> xs: array<vec4<f32>, TK * TM / 4u>;
#ifdef F16
var<workgroup> ws: array<vec4<f16>, TK * TN / 4u>;
#else
var<workgroup> ws: array<vec4<f32>, TK * TN / 4u>;
#endif
#endif

#ifndef SUM_SPLITS
// x[r, k..k + 4] (times the gate), k a multiple of 4; zero outside x unless `inside`.
fn x_unit(r: u32, k: u32, inside: bool) -> vec4<f32> {
    let kk = params.k;
#ifdef VK
    if (!inside && (r >= params.m || k >= kk)) {
        return vec4<f32>();
    }
    var v = x[(r * kk + k) / 4u];
#ifdef GATE
    v *= gate[((r / params.gate_rows) * kk + k) / 4u];
#endif
    return v;
#else
    var v = vec4<f32>();
    if (inside) {
        let i = r * kk + k;
        v = vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
    } else if (r < params.m) {
        for (var j = 0u; j < 4u && k + j < kk; j++) {
            v[j] = x[r * kk + k + j];
        }
    }
#ifdef GATE
    let g = (r / params.gate_rows) * kk + k;
    for (var j = 0u; j < 4u && k + j < kk; j++) {
        v[j] *= gate[g + j];
    }
#endif
    return v;
#endif
}

// w[n, k..k + 4], k a multiple of 4; zero outside w unless `inside`. Packed rows are padded to
// whole words with zeros, so a unit only needs its first k in range.
fn w_unit(n: u32, k: u32, inside: bool) -> vec4<f32> {
    if (!inside && (n >= params.n || k >= params.k)) {
        return vec4<f32>();
    }
#ifdef WQ8
    // The four signed bytes of one word, low byte first; the scales follow the last row.
    let word = vec4<i32>(bitcast<i32>(w[n * params.row_words + k / 4u]));
    let q = (word << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(q) * bitcast<f32>(w[params.n * params.row_words + n * params.groups + k / params.q8_group]);
#endif
#ifdef WF16
    let i = n * params.row_words + k / 2u;
    var hi = vec2<f32>();
    // The second word of a unit that starts on the row's last two values is past the row.
    if (inside || k + 2u < params.k) {
        hi = unpack2x16float(w[i + 1u]);
    }
    return vec4<f32>(unpack2x16float(w[i]), hi);
#endif
#ifdef WF32
#ifdef VK
    return w[(n * params.k + k) / 4u];
#else
    var v = vec4<f32>();
    for (var j = 0u; j < 4u && (inside || k + j < params.k); j++) {
        v[j] = w[n * params.k + k + j];
    }
    return v;
#endif
#endif
}

#endif

#ifdef SPLIT
// Where this workgroup's slice of partial sums starts in y: slice * M * N.
var<private> slice_base: u32;
#endif

// Adds the bias, applies the activation, adds the residual and stores outputs (r, c..c + 4);
// with SPLIT, stores the raw sums to this workgroup's slice instead.
fn store(r: u32, c: u32, v: vec4<f32>) {
    if (r >= params.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let cj = c + j;
        if (cj < params.n) {
#ifdef SPLIT
            y[slice_base + r * params.n + cj] = v[j];
#else
            var o = v[j];
#ifdef BIAS
            o += bias[cj];
#endif
            o = activate(o, params.act);
#ifdef RESIDUAL
            o += residual[r * params.n + cj];
#endif
            y[r * params.n + cj] = o;
#endif
        }
    }
}

#ifndef SUM_SPLITS
#ifndef ROWS
@compute @workgroup_size(16, WGY)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let t = lid.y * 16u + lid.x;
    // Loader role: unit u covers k = 4 * (u % 4) .. + 4 of tile row (or column) u / 4; thread t
    // loads units t, t + 16 * WGY, ... (rows / columns 4 * WGY apart) until the tile is covered.
    let uk = 4u * (t % 4u);
    let ur = t / 4u;
    let rows_in = row0 + TM <= params.m;
    let cols_in = col0 + TN <= params.n;
    var c00 = vec4<f32>();
    var c01 = vec4<f32>();
    var c02 = vec4<f32>();
    var c03 = vec4<f32>();
#ifdef TALL
    var c10 = vec4<f32>();
    var c11 = vec4<f32>();
    var c12 = vec4<f32>();
    var c13 = vec4<f32>();
#endif
#ifdef WIDE
    var d00 = vec4<f32>();
    var d01 = vec4<f32>();
    var d02 = vec4<f32>();
    var d03 = vec4<f32>();
#ifdef TALL
    var d10 = vec4<f32>();
    var d11 = vec4<f32>();
    var d12 = vec4<f32>();
    var d13 = vec4<f32>();
#endif
#endif
#ifdef SPLIT
    let k_begin = wid.z * params.k_slice;
    let k_end = min(k_begin + params.k_slice, params.k);
    slice_base = wid.z * params.m * params.n;
#else
    let k_begin = 0u;
    let k_end = params.k;
#endif
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        let k_in = k0 + TK <= k_end;
        let k = k0 + uk;
        for (var r = ur; r < TM; r += 4u * WGY) {
            let v = x_unit(row0 + r, k, rows_in && k_in);
            for (var j = 0u; j < 4u; j++) {
                xs[(uk + j) * (TM / 4u) + r / 4u][r % 4u] = v[j];
            }
        }
        for (var c = ur; c < TN; c += 4u * WGY) {
#ifdef F16
            let v = vec4<f16>(w_unit(col0 + c, k, cols_in && k_in));
#else
            let v = w_unit(col0 + c, k, cols_in && k_in);
#endif
            for (var j = 0u; j < 4u; j++) {
                ws[(uk + j) * (TN / 4u) + c / 4u][c % 4u] = v[j];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = xs[kk * (TM / 4u) + lid.y];
            let b0 = vec4<f32>(ws[kk * (TN / 4u) + lid.x]);
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.y), b0, c01);
            c02 = fma(vec4<f32>(a0.z), b0, c02);
            c03 = fma(vec4<f32>(a0.w), b0, c03);
#ifdef TALL
            let a1 = xs[kk * (TM / 4u) + WGY + lid.y];
            c10 = fma(vec4<f32>(a1.x), b0, c10);
            c11 = fma(vec4<f32>(a1.y), b0, c11);
            c12 = fma(vec4<f32>(a1.z), b0, c12);
            c13 = fma(vec4<f32>(a1.w), b0, c13);
#endif
#ifdef WIDE
            let b1 = vec4<f32>(ws[kk * (TN / 4u) + 16u + lid.x]);
            d00 = fma(vec4<f32>(a0.x), b1, d00);
            d01 = fma(vec4<f32>(a0.y), b1, d01);
            d02 = fma(vec4<f32>(a0.z), b1, d02);
            d03 = fma(vec4<f32>(a0.w), b1, d03);
#ifdef TALL
            d10 = fma(vec4<f32>(a1.x), b1, d10);
            d11 = fma(vec4<f32>(a1.y), b1, d11);
            d12 = fma(vec4<f32>(a1.z), b1, d12);
            d13 = fma(vec4<f32>(a1.w), b1, d13);
#endif
#endif
        }
        workgroupBarrier();
    }
    // Computer role: thread (x, y) owns rows 4y..4y+3 (and 4 * WGY + 4y.. with TALL) and
    // columns 4x..4x+3 (and 64 + 4x.. with WIDE) of the tile.
    let r0 = row0 + 4u * lid.y;
    let cl = col0 + 4u * lid.x;
    store(r0, cl, c00);
    store(r0 + 1u, cl, c01);
    store(r0 + 2u, cl, c02);
    store(r0 + 3u, cl, c03);
#ifdef TALL
    store(r0 + 4u * WGY, cl, c10);
    store(r0 + 4u * WGY + 1u, cl, c11);
    store(r0 + 4u * WGY + 2u, cl, c12);
    store(r0 + 4u * WGY + 3u, cl, c13);
#endif
#ifdef WIDE
    store(r0, cl + 64u, d00);
    store(r0 + 1u, cl + 64u, d01);
    store(r0 + 2u, cl + 64u, d02);
    store(r0 + 3u, cl + 64u, d03);
#ifdef TALL
    store(r0 + 4u * WGY, cl + 64u, d10);
    store(r0 + 4u * WGY + 1u, cl + 64u, d11);
    store(r0 + 4u * WGY + 2u, cl + 64u, d12);
    store(r0 + 4u * WGY + 3u, cl + 64u, d13);
#endif
#endif
}
#endif
#endif

#ifdef ROWS
// The rows kernel, for CPU adapters (`Plan::for_device` in matmul.rs): no workgroup memory and
// no barriers, which a CPU adapter runs by switching between groups of SIMD lanes. A workgroup
// of 8 threads computes 8 rows by 64 columns straight from x and w in units of four k; every
// thread owns all 8 rows of 8 columns (two runs of four, 32 apart), so each w unit it loads
// feeds 8 rows and each x unit, the same for the whole workgroup, 8 columns. (16 rows ran 10-40%
// faster on lavapipe but took SwiftShader three times as long to compile.)
const WGR: u32 = 8u;
const RR: u32 = 8u;
const RC: u32 = 8u * WGR;
var<private> a0: vec4<f32>;
var<private> a1: vec4<f32>;
var<private> a2: vec4<f32>;
var<private> a3: vec4<f32>;
var<private> a4: vec4<f32>;
var<private> a5: vec4<f32>;
var<private> a6: vec4<f32>;
var<private> a7: vec4<f32>;
var<private> b0: vec4<f32>;
var<private> b1: vec4<f32>;
var<private> b2: vec4<f32>;
var<private> b3: vec4<f32>;
var<private> b4: vec4<f32>;
var<private> b5: vec4<f32>;
var<private> b6: vec4<f32>;
var<private> b7: vec4<f32>;

// w units (c .. c + 4, k .. k + 4) as a matrix's columns: x_unit * it is four dot products.
fn w_mat(c: u32, k: u32, inside: bool) -> mat4x4<f32> {
    return mat4x4<f32>(w_unit(c, k, inside), w_unit(c + 1u, k, inside), w_unit(c + 2u, k, inside),
        w_unit(c + 3u, k, inside));
}

// Adds k .. k + 4 of rows r .. r + 8 times columns c .. c + 4 (a) and c + 32 .. (b) to their
// sums; `inside` (rows and columns all in range) skips the bounds checks.
fn rows_step(r: u32, c: u32, k: u32, inside: bool) {
    let wa = w_mat(c, k, inside);
    let wb = w_mat(c + 4u * WGR, k, inside);
    var v: vec4<f32>;
    v = x_unit(r, k, inside);
    a0 += v * wa;
    b0 += v * wb;
    v = x_unit(r + 1u, k, inside);
    a1 += v * wa;
    b1 += v * wb;
    v = x_unit(r + 2u, k, inside);
    a2 += v * wa;
    b2 += v * wb;
    v = x_unit(r + 3u, k, inside);
    a3 += v * wa;
    b3 += v * wb;
    v = x_unit(r + 4u, k, inside);
    a4 += v * wa;
    b4 += v * wb;
    v = x_unit(r + 5u, k, inside);
    a5 += v * wa;
    b5 += v * wb;
    v = x_unit(r + 6u, k, inside);
    a6 += v * wa;
    b6 += v * wb;
    v = x_unit(r + 7u, k, inside);
    a7 += v * wa;
    b7 += v * wb;
}

@compute @workgroup_size(WGR)
fn rows(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let r = wid.y * RR;
    let col0 = wid.x * RC;
    let c = col0 + 4u * t;
    let whole = params.k & ~3u;
    // Decided for the whole workgroup, so the checks are skipped in uniform control flow.
    if (r + RR <= params.m && col0 + RC <= params.n) {
        for (var k = 0u; k < whole; k += 4u) {
            rows_step(r, c, k, true);
        }
    } else {
        for (var k = 0u; k < whole; k += 4u) {
            rows_step(r, c, k, false);
        }
    }
    // The last unit, past a multiple of four.
    if (whole < params.k) {
        rows_step(r, c, whole, false);
    }
    store(r, c, a0);
    store(r + 1u, c, a1);
    store(r + 2u, c, a2);
    store(r + 3u, c, a3);
    store(r + 4u, c, a4);
    store(r + 5u, c, a5);
    store(r + 6u, c, a6);
    store(r + 7u, c, a7);
    store(r, c + 4u * WGR, b0);
    store(r + 1u, c + 4u * WGR, b1);
    store(r + 2u, c + 4u * WGR, b2);
    store(r + 3u, c + 4u * WGR, b3);
    store(r + 4u, c + 4u * WGR, b4);
    store(r + 5u, c + 4u * WGR, b5);
    store(r + 6u, c + 4u * WGR, b6);
    store(r + 7u, c + 4u * WGR, b7);
}
#endif

#ifdef SUM_SPLITS
@compute @workgroup_size(64)
fn sum_splits(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let quads = (params.n + 3u) / 4u;
    let t = linear_workgroup(wid, nwg) * 64u + lid;
    let r = t / quads;
    let c = 4u * (t % quads);
    if (r >= params.m) {
        return;
    }
    var v = vec4<f32>();
    let mn = params.m * params.n;
    for (var s = 0u; s < params.splits; s++) {
        for (var j = 0u; j < 4u && c + j < params.n; j++) {
            v[j] += partial[s * mn + r * params.n + c + j];
        }
    }
    store(r, c, v);
}
#endif
