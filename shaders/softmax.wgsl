// y = softmax(x) over each row of D values.
//
// One 256-thread workgroup per row (rows folded into y by Pass::grid). The row maximum is
// subtracted before exp, so every exponent is <= 0 and the sum lies in [1, D]: inputs like
// +-1e4 give exact 0s and 1s, never Inf/Inf.

@group(0) @binding(0) var<uniform> params: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

#include workgroup_reduce

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let d = params.d;
    let base = row * d;

    var m = -3.0e38;
    for (var c = tid; c < d; c += WG) {
        m = max(m, x[base + c]);
    }
    let mx = workgroup_reduce(tid, m, true);

    var s = 0.0;
    for (var c = tid; c < d; c += WG) {
        s += exp(x[base + c] - mx);
    }
    // The max element contributes exp(0) = 1, so the sum is never 0.
    let inv = 1.0 / workgroup_reduce(tid, s, false);

    for (var c = tid; c < d; c += WG) {
        y[base + c] = exp(x[base + c] - mx) * inv;
    }
}
