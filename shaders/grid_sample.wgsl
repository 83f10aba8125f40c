// y[b, n, p, c] = bilinear sample of x[b, :, :, c] (channels-last [B, H, W, C]) at point p of box
// n's G x G grid, like PyTorch affine_grid + grid_sample (bilinear, zero padding,
// align_corners=False). One thread per output element: consecutive threads take consecutive
// channels, so the four neighbour reads and the write are contiguous across the workgroup.

@group(0) @binding(0) var<uniform> params: GridSampleParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> thetas: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// x[b, iy, ix, c], or 0 where (ix, iy) lies outside the map (written so NaN also counts as outside).
fn tap(b: u32, ix: f32, iy: f32, c: u32) -> f32 {
    if (!(ix >= 0.0 && ix < f32(params.w) && iy >= 0.0 && iy < f32(params.h))) {
        return 0.0;
    }
    return x[((b * params.h + u32(iy)) * params.w + u32(ix)) * params.c + c];
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= params.total) {
        return;
    }
    let c = i % params.c;
    let points = params.grid * params.grid;
    let p = (i / params.c) % points;
    let n = (i / (params.c * points)) % params.boxes;
    let b = i / (params.c * points * params.boxes);

    // affine_grid base coordinates (pixel centres of a G x G image in [-1, 1]).
    let bx = f32(2u * (p % params.grid) + 1u) / f32(params.grid) - 1.0;
    let by = f32(2u * (p / params.grid) + 1u) / f32(params.grid) - 1.0;
    let t = n * 6u;
    let gx = thetas[t] * bx + thetas[t + 1u] * by + thetas[t + 2u];
    let gy = thetas[t + 3u] * bx + thetas[t + 4u] * by + thetas[t + 5u];

    // grid_sample's unnormalisation for align_corners=False.
    let ix = ((gx + 1.0) * f32(params.w) - 1.0) * 0.5;
    let iy = ((gy + 1.0) * f32(params.h) - 1.0) * 0.5;
    let x0 = floor(ix);
    let y0 = floor(iy);
    let wx1 = ix - x0;
    let wx0 = (x0 + 1.0) - ix;
    let wy1 = iy - y0;
    let wy0 = (y0 + 1.0) - iy;
    // Same corner order as PyTorch: nw, ne, sw, se.
    y[i] = tap(b, x0, y0, c) * (wx0 * wy0)
        + tap(b, x0 + 1.0, y0, c) * (wx1 * wy0)
        + tap(b, x0, y0 + 1.0, c) * (wx0 * wy1)
        + tap(b, x0 + 1.0, y0 + 1.0, c) * (wx1 * wy1);
}
