// One RGBA8 image (u32 per pixel, R in the low byte; alpha ignored) -> [0, 1] floats -> bilinear
// resize exactly like PyTorch F.interpolate(mode='bilinear', align_corners=False, no antialias)
// -> per-channel (v - mean) / std, written channels-last at `offset` of the output batch.
// `rgba` holds only the source rows and columns the resize reads; `taps` gives, per output row
// then per output column, the two source indices into them and the second one's weight (computed
// on the host by the CPU twin's function, so both read the same pixels with the same weights).
// One thread per output pixel.

@group(0) @binding(0) var<uniform> params: PreprocessParams;
@group(0) @binding(1) var<storage, read> rgba: array<u32>;
@group(0) @binding(2) var<storage, read> taps: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Like torchvision's ToTensor: byte / 255 (a division, as the reference does).
fn rgb(r: u32, c: u32) -> vec3<f32> {
    let p = rgba[r * params.cols + c];
    return vec3<f32>(f32(p & 0xffu), f32((p >> 8u) & 0xffu), f32((p >> 16u) & 0xffu)) / 255.0;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= params.out_h * params.out_w) {
        return;
    }
    let ty = 3u * (i / params.out_w);
    let tx = 3u * (params.out_h + i % params.out_w);
    let h1 = bitcast<f32>(taps[ty + 2u]);
    let h0 = 1.0 - h1;
    let w1 = bitcast<f32>(taps[tx + 2u]);
    let w0 = 1.0 - w1;
    let top = w0 * rgb(taps[ty], taps[tx]) + w1 * rgb(taps[ty], taps[tx + 1u]);
    let bottom = w0 * rgb(taps[ty + 1u], taps[tx]) + w1 * rgb(taps[ty + 1u], taps[tx + 1u]);
    let mean = vec3<f32>(params.mean_r, params.mean_g, params.mean_b);
    let sd = vec3<f32>(params.std_r, params.std_g, params.std_b);
    let v = (h0 * top + h1 * bottom - mean) / sd;
    let o = params.offset + i * 3u;
    y[o] = v.x;
    y[o + 1u] = v.y;
    y[o + 2u] = v.z;
}
