// Row-wise L2 normalisation: out[r, :] = x[r, :] / max(||x[r, :]||, 1e-12), as
// torch.nn.functional.normalize does it.
//
// One workgroup per row (rows past 65,535 folded into y by Pass::grid). Each of 256 threads sums
// the squares of a strided slice of the row, a tree in workgroup memory (1 KB) adds the 256
// partial sums, then every thread scales its slice.

@group(0) @binding(0) var<uniform> params: L2NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_workgroup(wid, nwg);
    // Uniform per workgroup, so the early return cannot split a barrier.
    if (row >= params.rows) {
        return;
    }
    let base = row * params.d;
    var acc = 0.0;
    for (var i = lid; i < params.d; i += WG) {
        let v = x[base + i];
        acc = fma(v, v, acc);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    let norm = max(sqrt(partial[0]), 1e-12);
    for (var i = lid; i < params.d; i += WG) {
        out[base + i] = x[base + i] / norm;
    }
}
