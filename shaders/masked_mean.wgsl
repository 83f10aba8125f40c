// out[b, d] = mean of x[b, s, d] over the positions s with mask[b, s] != 0 (all of them without
// MASK); 0 when no position is kept.
//
// One invocation per output (b, d), looping over S: S is short here (37 boxes, <= 80 tokens,
// 16 samples), and neighbouring invocations read neighbouring d, so every step is coalesced.
// Workgroups past 65,535 are folded into y by Pass::grid.

@group(0) @binding(0) var<uniform> params: MaskedMeanParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#ifdef MASK
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
#endif

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= params.b * params.d) {
        return;
    }
    let b = i / params.d;
    let d = i % params.d;
    var sum = 0.0;
    var kept = 0u;
    for (var s = 0u; s < params.s; s++) {
#ifdef MASK
        if (mask[b * params.s + s] == 0u) {
            continue;
        }
#endif
        sum += x[(b * params.s + s) * params.d + d];
        kept += 1u;
    }
    // With nothing kept sum is 0, so dividing by 1 gives the 0 we want instead of NaN.
    out[i] = sum / f32(max(kept, 1u));
}
