// y[B, Ho, Wo, C] = act(depthwise_conv(x[B, H, W, C], w[C, 1, KH, KW]) + bias[C]), groups = C,
// TensorFlow SAME padding (pad_top / pad_left from the host; the rest falls off the bottom /
// right edge by the bounds check). Defines: BIAS adds a bias.
//
// Both kernels compute strips of four neighbouring outputs of a row per thread (`strip_at`):
//
// main: a thread per (image, row, strip, channel), channel fastest: in channels-last memory
// neighbouring threads then load neighbouring x words for every tap and store neighbouring y
// words.
//
// pooled (POOLED): the same outputs plus the sum of each channel over each chunk of up to 64
// output pixels of a row, partial[B, chunks, C], from which squeeze-excite takes its mean without
// reading y again. Workgroup (x: block of 64 channels, y: chunk, z: image); a thread walks its
// channel through the chunk strip by strip, each step still reading and writing 64 neighbouring
// words.
//
// A version that staged each 8x8-pixel tile's input patch in workgroup memory was 1.4x slower
// than these strips on lavapipe, and a photo took 44 s instead of 31 s with it on SwiftShader
// (2026-12-07); with no real GPU to measure it on, it did not land.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#ifdef POOLED
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
#endif

// x at input column ix of the image row starting at pixel `row`, channel c; zero outside.
fn x_at(row: u32, ix: i32, c: u32) -> f32 {
    if (ix < 0 || ix >= i32(params.in_w)) {
        return 0.0;
    }
    return x[(row + u32(ix)) * params.cin + c];
}

// act(conv + bias) at outputs (b, oy, ox..ox + 4), channel c: a strip of four neighbouring
// outputs of a row, so a tap's weight is read once for the four and, at stride 1, each input
// word once per tap row (a window sliding through registers). Outputs past the row's end come
// out finite and are not stored. Taps are summed in the same order for every output.
fn strip_at(b: u32, oy: u32, ox: u32, c: u32) -> vec4<f32> {
    let wbase = c * params.kh * params.kw;
    let s = params.stride;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    let iy0 = i32(oy * s) - i32(params.pad_top);
    let ix0 = i32(ox * s) - i32(params.pad_left);
    for (var ky = 0u; ky < params.kh; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(params.in_h)) {
            continue;
        }
        let row = (b * params.in_h + u32(iy)) * params.in_w;
        let taps = wbase + ky * params.kw;
        if (s == 1u) {
            var x0 = x_at(row, ix0, c);
            var x1 = x_at(row, ix0 + 1, c);
            var x2 = x_at(row, ix0 + 2, c);
            for (var kx = 0u; kx < params.kw; kx++) {
                let wv = w[taps + kx];
                let x3 = x_at(row, ix0 + i32(kx) + 3, c);
                a0 = fma(x0, wv, a0);
                a1 = fma(x1, wv, a1);
                a2 = fma(x2, wv, a2);
                a3 = fma(x3, wv, a3);
                x0 = x1;
                x1 = x2;
                x2 = x3;
            }
        } else {
            let si = i32(s);
            for (var kx = 0u; kx < params.kw; kx++) {
                let wv = w[taps + kx];
                let ix = ix0 + i32(kx);
                a0 = fma(x_at(row, ix, c), wv, a0);
                a1 = fma(x_at(row, ix + si, c), wv, a1);
                a2 = fma(x_at(row, ix + 2 * si, c), wv, a2);
                a3 = fma(x_at(row, ix + 3 * si, c), wv, a3);
            }
        }
    }
    var v = vec4<f32>(a0, a1, a2, a3);
#ifdef BIAS
    v += bias[c];
#endif
    return vec4<f32>(activate(v.x, params.act), activate(v.y, params.act), activate(v.z, params.act),
        activate(v.w, params.act));
}

#ifndef POOLED
@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Thread per (image, row, strip of four columns, channel), channel fastest.
    let strips = (params.out_w + 3u) / 4u;
    let t = linear_workgroup(wid, nwg) * 64u + lid;
    if (t >= params.batch * params.out_h * strips * params.cin) {
        return;
    }
    let c = t % params.cin;
    let strip = t / params.cin;
    let ox = (strip % strips) * 4u;
    let row = strip / strips;
    let v = strip_at(row / params.out_h, row % params.out_h, ox, c);
    let base = (row * params.out_w + ox) * params.cin + c;
    for (var j = 0u; j < 4u && ox + j < params.out_w; j++) {
        y[base + j * params.cin] = v[j];
    }
}
#endif

#ifdef POOLED
// Chunks are runs of up to 64 pixels within one output row.
const PIXEL_CHUNK: u32 = 64u;

@compute @workgroup_size(64)
fn pooled(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * 64u + lid;
    let b = wid.z;
    if (c >= params.cin) {
        return;
    }
    let per_row = (params.out_w + PIXEL_CHUNK - 1u) / PIXEL_CHUNK;
    let oy = wid.y / per_row;
    let x0 = (wid.y % per_row) * PIXEL_CHUNK;
    let x1 = min(x0 + PIXEL_CHUNK, params.out_w);
    let chunks = params.out_h * per_row;
    var sum = 0.0;
    for (var ox = x0; ox < x1; ox += 4u) {
        let v = strip_at(b, oy, ox, c);
        let base = ((b * params.out_h + oy) * params.out_w + ox) * params.cin + c;
        for (var j = 0u; j < 4u && ox + j < x1; j++) {
            y[base + j * params.cin] = v[j];
            sum += v[j];
        }
    }
    partial[(b * chunks + wid.y) * params.cin + c] = sum;
}
#endif
