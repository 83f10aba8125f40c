// y[M, N] = act(x[M, K] . w[N, K]^T + bias[N]) (+ residual[M, N]), w in f32, packed f16 or packed
// q8 (int8 times one f32 scale per q8_group values of a row, applied as the tile is loaded).
//
// One general kernel: 64x64 output tiles, 16x16 threads with 4x4 outputs each, K in steps of
// 16 through workgroup memory (8 KB, half the WebGPU minimum). Loads are bounds-checked, so any
// M, N, K works. Defines: WF32 | WF16 | WQ8 pick the weight format; F16 (with WF16, on adapters
// with shader-f16) reads halves natively and keeps the weight tile in f16; BIAS adds a bias; GATE
// scales x as it is loaded by gate[M / gate_rows, K] (squeeze-excite's channel gate, one row per
// image); RESIDUAL adds residual[M, N] after the activation (a block's skip connection).

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#ifdef F16
@group(0) @binding(2) var<storage, read> w: array<f16>;
#else
#ifdef WF32
@group(0) @binding(2) var<storage, read> w: array<f32>;
#else
@group(0) @binding(2) var<storage, read> w: array<u32>;
#endif
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef GATE
@group(0) @binding(5) var<storage, read> gate: array<f32>;
#endif
#ifdef RESIDUAL
@group(0) @binding(6) var<storage, read> residual: array<f32>;
#endif

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// Tiles hold four consecutive rows (x) or columns (w) per vec4 so the inner product is four
// vec4 FMAs on registers; plain arrays indexed in loops spill on some compilers (lavapipe).
var<workgroup> xs: array<vec4<f32>, 256>; // [TK][TM / 4]
#ifdef F16
var<workgroup> ws: array<vec4<f16>, 256>; // [TK][TN / 4]
#else
var<workgroup> ws: array<vec4<f32>, 256>; // [TK][TN / 4]
#endif

fn weight(n: u32, k: u32) -> f32 {
#ifdef F16
    return f32(w[n * params.row_words * 2u + k]);
#endif
#ifdef WF32
    return w[n * params.k + k];
#endif
#ifdef WF16
#ifndef F16
    return unpack2x16float(w[n * params.row_words + k / 2u])[k & 1u];
#endif
#endif
#ifdef WQ8
    // extractBits on i32 sign-extends the byte; the scales follow the last row, row by row.
    let q = f32(extractBits(bitcast<i32>(w[n * params.row_words + k / 4u]), (k & 3u) * 8u, 8u));
    return q * bitcast<f32>(w[params.n * params.row_words + n * params.groups + k / params.q8_group]);
#endif
}

fn x_at(r: u32, k: u32) -> f32 {
    if (r < params.m && k < params.k) {
#ifdef GATE
        return x[r * params.k + k] * gate[(r / params.gate_rows) * params.k + k];
#else
        return x[r * params.k + k];
#endif
    }
    return 0.0;
}

fn w_at(n: u32, k: u32) -> f32 {
    if (n < params.n && k < params.k) {
        return weight(n, k);
    }
    return 0.0;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    // Loader role: thread t fetches k = t % 16 for four rows (and four columns) 4 * (t / 16)...
    let t = lid.y * 16u + lid.x;
    let lk = t % TK;
    let lq = t / TK;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        let gk = k0 + lk;
        let r = row0 + lq * 4u;
        xs[lk * 16u + lq] = vec4<f32>(x_at(r, gk), x_at(r + 1u, gk), x_at(r + 2u, gk), x_at(r + 3u, gk));
        let n = col0 + lq * 4u;
        let wv = vec4<f32>(w_at(n, gk), w_at(n + 1u, gk), w_at(n + 2u, gk), w_at(n + 3u, gk));
#ifdef F16
        ws[lk * 16u + lq] = vec4<f16>(wv);
#else
        ws[lk * 16u + lq] = wv;
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = xs[kk * 16u + lid.y];
            let b = vec4<f32>(ws[kk * 16u + lid.x]);
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    // ...and computer role: thread (x, y) owns rows 4y..4y+3 and columns 4x..4x+3 of the tile.
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var j = 0u; j < 4u; j++) {
        let c = col0 + lid.x * 4u + j;
        if (c >= params.n) {
            continue;
        }
        var b = 0.0;
#ifdef BIAS
        b = bias[c];
#endif
        for (var i = 0u; i < 4u; i++) {
            let r = row0 + lid.y * 4u + i;
            if (r < params.m) {
                var v = activate(accs[i][j] + b, params.act);
#ifdef RESIDUAL
                v += residual[r * params.n + c];
#endif
                y[r * params.n + c] = v;
            }
        }
    }
}
