// Elementwise binary ops on same-shape f32 tensors: out[i] = a[i] <op> b[i].
//
// One element per invocation, 256 per workgroup; workgroups past 65,535 are folded into y by
// Pass::grid, so the last row of the grid may overshoot and is bounds-checked. The op is
// picked by a define (ADD), so further simple ops are one line each.

@group(0) @binding(0) var<uniform> params: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn combine(x: f32, y: f32) -> f32 {
#ifdef ADD
    return x + y;
#endif
}

@compute @workgroup_size(256)
fn binary(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i < params.n) {
        out[i] = combine(a[i], b[i]);
    }
}
