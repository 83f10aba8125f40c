// y[B, Ho, Wo, C] = act(depthwise_conv(x[B, H, W, C], w[C, 1, KH, KW]) + bias[C]), groups = C,
// TensorFlow SAME padding (pad_top / pad_left from the host; the rest falls off the bottom /
// right edge by the bounds check). Defines: BIAS adds a bias.
//
// main: one thread per output element with the channel fastest: in channels-last memory
// neighbouring threads then load neighbouring x words for every tap and store neighbouring y
// words.
//
// pooled (POOLED): the same outputs, plus the sum of each channel over each chunk of 64 output
// pixels, partial[B, chunks, C], from which squeeze-excite takes its mean without reading y
// again. Workgroup (x: block of 64 channels, y: pixel chunk, z: image); a thread walks its
// channel through the chunk, so each step still reads and writes 64 neighbouring words.

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

// act(conv + bias) at output (b, oy, ox), channel c.
fn output_at(b: u32, oy: u32, ox: u32, c: u32) -> f32 {
    let wbase = c * params.kh * params.kw;
    var acc = 0.0;
    let iy0 = i32(oy * params.stride) - i32(params.pad_top);
    let ix0 = i32(ox * params.stride) - i32(params.pad_left);
    for (var ky = 0u; ky < params.kh; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(params.in_h)) {
            continue;
        }
        let row = (b * params.in_h + u32(iy)) * params.in_w;
        for (var kx = 0u; kx < params.kw; kx++) {
            let ix = ix0 + i32(kx);
            if (ix < 0 || ix >= i32(params.in_w)) {
                continue;
            }
            acc = fma(x[(row + u32(ix)) * params.cin + c], w[wbase + ky * params.kw + kx], acc);
        }
    }
#ifdef BIAS
    acc += bias[c];
#endif
    return activate(acc, params.act);
}

#ifndef POOLED
@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * 64u + lid;
    if (t >= params.batch * params.out_h * params.out_w * params.cin) {
        return;
    }
    let c = t % params.cin;
    let pix = t / params.cin;
    let ox = pix % params.out_w;
    let oy = (pix / params.out_w) % params.out_h;
    let b = pix / (params.out_w * params.out_h);
    y[t] = output_at(b, oy, ox, c);
}
#endif

#ifdef POOLED
const PIXEL_CHUNK: u32 = 64u;

@compute @workgroup_size(64)
fn pooled(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x * 64u + lid;
    let b = wid.z;
    if (c >= params.cin) {
        return;
    }
    let pixels = params.out_h * params.out_w;
    let chunks = (pixels + PIXEL_CHUNK - 1u) / PIXEL_CHUNK;
    let p0 = wid.y * PIXEL_CHUNK;
    let p1 = min(p0 + PIXEL_CHUNK, pixels);
    var sum = 0.0;
    for (var p = p0; p < p1; p++) {
        let v = output_at(b, p / params.out_w, p % params.out_w, c);
        y[(b * pixels + p) * params.cin + c] = v;
        sum += v;
    }
    partial[(b * chunks + wid.y) * params.cin + c] = sum;
}
#endif
