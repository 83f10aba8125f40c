// y[B, Ho, Wo, Cout] = act(conv(x[B, H, W, Cin], w[Cout, Cin, KH, KW]) + bias[Cout]), groups = 1,
// TensorFlow SAME padding (pad_top / pad_left from the host; the rest of the padding falls off
// the bottom / right edge by the bounds check).
//
// Direct convolution for the few non-pointwise, non-depthwise convs (the stem: Cin = 3), where
// the work is small and an im2col matmul would only add traffic. One thread per output pixel and
// 4 consecutive output channels: neighbouring threads share a pixel, so their x loads coincide,
// and each x value feeds 4 accumulators. Defines: BIAS adds a bias.

@group(0) @binding(0) var<uniform> params: Conv2dParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * 64u + lid;
    let groups = (params.cout + 3u) / 4u;
    if (t >= params.batch * params.out_h * params.out_w * groups) {
        return;
    }
    let co0 = (t % groups) * 4u;
    let pix = t / groups;
    let ox = pix % params.out_w;
    let oy = (pix / params.out_w) % params.out_h;
    let b = pix / (params.out_w * params.out_h);

    let taps = params.kh * params.kw;
    let fan_in = params.cin * taps;
    // Lanes past Cout read the last real channel's weights (in bounds) and are never stored.
    let r0 = min(co0, params.cout - 1u) * fan_in;
    let r1 = min(co0 + 1u, params.cout - 1u) * fan_in;
    let r2 = min(co0 + 2u, params.cout - 1u) * fan_in;
    let r3 = min(co0 + 3u, params.cout - 1u) * fan_in;

    var acc = vec4<f32>(0.0);
    let iy0 = i32(oy * params.stride) - i32(params.pad_top);
    let ix0 = i32(ox * params.stride) - i32(params.pad_left);
    for (var ky = 0u; ky < params.kh; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(params.in_h)) {
            continue;
        }
        for (var kx = 0u; kx < params.kw; kx++) {
            let ix = ix0 + i32(kx);
            if (ix < 0 || ix >= i32(params.in_w)) {
                continue;
            }
            let xbase = ((b * params.in_h + u32(iy)) * params.in_w + u32(ix)) * params.cin;
            let tap = ky * params.kw + kx;
            for (var ci = 0u; ci < params.cin; ci++) {
                let o = ci * taps + tap;
                acc = fma(vec4<f32>(x[xbase + ci]), vec4<f32>(w[r0 + o], w[r1 + o], w[r2 + o], w[r3 + o]), acc);
            }
        }
    }

    for (var j = 0u; j < 4u; j++) {
        let co = co0 + j;
        if (co >= params.cout) {
            break;
        }
        var v = acc[j];
#ifdef BIAS
        v += bias[co];
#endif
        y[pix * params.cout + co] = activate(v, params.act);
    }
}
