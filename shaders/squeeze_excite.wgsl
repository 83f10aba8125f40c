// Squeeze-excite's gate, from sums of the activation over chunks of pixels.
//
// pool (POOL): column sums of x [B, P, C] over chunks of `chunk` rows, times `scale`:
//   out[b, k, c] = scale * sum_{p in chunk k} x[b, p, c].
// Workgroup (x: channel block of 64, y: chunk, z: batch); 64 x 4 threads, so each step reads
// four whole 64-channel rows (coalesced) and each thread strides over every 4th row; the four
// lanes are then summed through workgroup memory. The fallback path adds up the depthwise
// kernel's partial sums with it (one chunk, scale = 1/pixels).
//
// main_gate (GATE, with WF32 | WF16 | WQ8 for both weights): one workgroup per image. The mean of
// each channel from its `chunk` partial sums, then hidden = silu(w1 . mean + b1) and
// gate = sigmoid(w2 . hidden + b2), both kept in workgroup memory (C <= MAX_C, Cr <= MAX_CR).

@group(0) @binding(0) var<uniform> params: SqueezeExciteParams;

const BLOCK: u32 = 64u;
const LANES: u32 = 4u;

#ifdef POOL
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>; // [LANES][BLOCK]

@compute @workgroup_size(64, 4)
fn pool(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * BLOCK + lid.x;
    let b = wid.z;
    let p0 = wid.y * params.chunk;
    let p1 = min(p0 + params.chunk, params.p);
    var acc = 0.0;
    if (c < params.c) {
        let base = b * params.p * params.c + c;
        for (var p = p0 + lid.y; p < p1; p += LANES) {
            acc += x[base + p * params.c];
        }
    }
    partial[lid.y * BLOCK + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && c < params.c) {
        let sum = partial[lid.x] + partial[BLOCK + lid.x] + partial[2u * BLOCK + lid.x] + partial[3u * BLOCK + lid.x];
        let chunks = (params.p + params.chunk - 1u) / params.chunk;
        out[(b * chunks + wid.y) * params.c + c] = sum * params.scale;
    }
}
#endif

#ifdef GATE
@group(0) @binding(1) var<storage, read> sums: array<f32>;
#ifdef WF32
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<f32>;
#else
@group(0) @binding(2) var<storage, read> w1: array<u32>;
@group(0) @binding(4) var<storage, read> w2: array<u32>;
#endif
@group(0) @binding(3) var<storage, read> b1: array<f32>;
@group(0) @binding(5) var<storage, read> b2: array<f32>;
@group(0) @binding(6) var<storage, read_write> gate: array<f32>;

#include weights as w1
#include weights as w2

const WG: u32 = 256u;
const MAX_C: u32 = 3072u;
const MAX_CR: u32 = 256u;
var<workgroup> mean: array<f32, MAX_C>;
var<workgroup> hidden: array<f32, MAX_CR>;

@compute @workgroup_size(256)
fn main_gate(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.x;
    let c_n = params.c;
    let cr = params.cr;
    for (var c = t; c < c_n; c += WG) {
        var s = 0.0;
        for (var k = 0u; k < params.chunk; k++) {
            s += sums[(b * params.chunk + k) * c_n + c];
        }
        mean[c] = s * params.scale;
    }
    workgroupBarrier();
    for (var j = t; j < cr; j += WG) {
        var acc = b1[j];
        for (var c = 0u; c < c_n; c++) {
            acc = fma(w1_at(j, c, cr, c_n, params.q8_group), mean[c], acc);
        }
        hidden[j] = silu(acc);
    }
    workgroupBarrier();
    for (var c = t; c < c_n; c += WG) {
        var acc = b2[c];
        for (var j = 0u; j < cr; j++) {
            acc = fma(w2_at(c, j, c_n, cr, params.q8_group), hidden[j], acc);
        }
        gate[b * c_n + c] = sigmoid(acc);
    }
}
#endif
