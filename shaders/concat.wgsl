// Concatenation along the first axis, one dispatch per part: out[offset + i] = part[i].
//
// One element per invocation, 256 per workgroup; workgroups past 65,535 are folded into y by
// Pass::grid, so the last row of the grid may overshoot and is bounds-checked.

@group(0) @binding(0) var<uniform> params: ConcatParams;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn copy(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i < params.n) {
        out[params.offset + i] = part[i];
    }
}
