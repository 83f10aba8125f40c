// y = LN(x (+ residual)) * gamma + beta over each row of D values.
//
// One 256-thread workgroup per row (rows folded into y by Pass::grid). The mean is reduced
// first, then the variance of (v - mean): E[v^2] - E[v]^2 would cancel catastrophically when
// |mean| >> std. The row is re-read (from cache) by each of the three sweeps rather than held
// in registers, so any D works. Defines: RESIDUAL adds a second input of the same shape.

@group(0) @binding(0) var<uniform> params: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
#ifdef RESIDUAL
@group(0) @binding(2) var<storage, read> residual: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
#else
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
#endif

const WG: u32 = 256u;

alias ReduceT = f32;
var<workgroup> partial: array<ReduceT, 256>;

fn load(i: u32) -> f32 {
#ifdef RESIDUAL
    return x[i] + residual[i];
#else
    return x[i];
#endif
}

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

    var s = 0.0;
    for (var c = tid; c < d; c += WG) {
        s += load(base + c);
    }
    let mean = workgroup_sum(tid, s) / f32(d);

    var s2 = 0.0;
    for (var c = tid; c < d; c += WG) {
        let t = load(base + c) - mean;
        s2 = fma(t, t, s2);
    }
    let rstd = inverseSqrt(workgroup_sum(tid, s2) / f32(d) + params.eps);

    for (var c = tid; c < d; c += WG) {
        y[base + c] = fma((load(base + c) - mean) * rstd, gamma[c], beta[c]);
    }
}
