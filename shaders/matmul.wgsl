// y[M, N] = act(x[M, K] . w[N, K]^T * scale[N] + bias[N]), w in f32, packed f16 or packed q8.
//
// One general kernel: 64x64 output tiles, 16x16 threads with 4x4 outputs each, K in steps of
// 16 through workgroup memory (8 KB, half the WebGPU minimum). Loads are bounds-checked, so any
// M, N, K works. Defines: WF32 | WF16 | WQ8 pick the weight format; F16 (with WF16, on adapters
// with shader-f16) reads halves natively and keeps the weight tile in f16; BIAS adds a bias.

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
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [TK][TM]
#ifdef F16
var<workgroup> ws: array<f16, 1024>; // [TK][TN]
#else
var<workgroup> ws: array<f32, 1024>; // [TK][TN]
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
    // extractBits on i32 sign-extends the byte.
    return f32(extractBits(bitcast<i32>(w[n * params.row_words + k / 4u]), (k & 3u) * 8u, 8u));
#endif
}

fn scale(n: u32) -> f32 {
#ifdef WQ8
    return bitcast<f32>(w[params.n * params.row_words + n]);
#else
    return 1.0;
#endif
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let tid = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let r = e / TK;
            let kk = e % TK;
            let gk = k0 + kk;
            var xv = 0.0;
            if (row0 + r < params.m && gk < params.k) {
                xv = x[(row0 + r) * params.k + gk];
            }
            xs[kk * TM + r] = xv;
            var wv = 0.0;
            if (col0 + r < params.n && gk < params.k) {
                wv = weight(col0 + r, gk);
            }
#ifdef F16
            ws[kk * TN + r] = f16(wv);
#else
            ws[kk * TN + r] = wv;
#endif
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * TM + lid.y * 4u + i];
                b[i] = f32(ws[kk * TN + lid.x * 4u + i]);
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let c = col0 + lid.x * 4u + j;
        if (c >= params.n) {
            continue;
        }
        var b = 0.0;
#ifdef BIAS
        b = bias[c];
#endif
        let s = scale(c);
        for (var i = 0u; i < 4u; i++) {
            let r = row0 + lid.y * 4u + i;
            if (r < params.m) {
                y[r * params.n + c] = activate(acc[i][j] * s + b, params.act);
            }
        }
    }
}
