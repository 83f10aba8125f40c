// One RGBA8 image (u32 per pixel, R in the low byte; alpha ignored) -> [0, 1] floats -> bilinear
// resize exactly like PyTorch F.interpolate(mode='bilinear', align_corners=False, no antialias)
// -> per-channel (v - mean) / std, written channels-last at `offset` of the output batch.
// One thread per output pixel.

@group(0) @binding(0) var<uniform> params: PreprocessParams;
@group(0) @binding(1) var<storage, read> rgba: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Like torchvision's ToTensor: byte / 255 (a division, as the reference does).
fn rgb(r: u32, c: u32) -> vec3<f32> {
    let p = rgba[r * params.in_w + c];
    return vec3<f32>(f32(p & 0xffu), f32((p >> 8u) & 0xffu), f32((p >> 16u) & 0xffu)) / 255.0;
}

struct Taps {
    i0: u32,
    i1: u32,
    l1: f32,
}

// PyTorch's source index for align_corners=False: (dst + 0.5) * scale - 0.5, clamped at 0.
fn taps(dst: u32, scale: f32, size: u32) -> Taps {
    let src = max(scale * (f32(dst) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(src), size - 1u);
    return Taps(i0, min(i0 + 1u, size - 1u), src - f32(i0));
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
    let ty = taps(i / params.out_w, params.scale_h, params.in_h);
    let tx = taps(i % params.out_w, params.scale_w, params.in_w);
    let h1 = ty.l1;
    let h0 = 1.0 - h1;
    let w1 = tx.l1;
    let w0 = 1.0 - w1;
    let top = w0 * rgb(ty.i0, tx.i0) + w1 * rgb(ty.i0, tx.i1);
    let bottom = w0 * rgb(ty.i1, tx.i0) + w1 * rgb(ty.i1, tx.i1);
    let mean = vec3<f32>(params.mean_r, params.mean_g, params.mean_b);
    let sd = vec3<f32>(params.std_r, params.std_g, params.std_b);
    let v = (h0 * top + h1 * bottom - mean) / sd;
    let o = params.offset + i * 3u;
    y[o] = v.x;
    y[o + 1u] = v.y;
    y[o + 2u] = v.z;
}
