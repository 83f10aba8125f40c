// Shared helpers, prepended to every kernel.

// Workgroups beyond 65,535 are folded into y (see Pass::grid); this recovers the linear index.
fn linear_workgroup(wg: vec3<u32>, num: vec3<u32>) -> u32 {
    return wg.x + wg.y * num.x;
}

// exp only of non-positive values, so large |x| gives 0 or 1, never Inf/Inf.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn silu(x: f32) -> f32 {
    return x * sigmoid(x);
}

// WGSL has no erf. Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, the f32 noise floor here.
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(-r, r, x >= 0.0);
}

// BERT's GELU, the exact erf form.
fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
}

// `act` is `Activation as u32` (engine/src/ops/activation.rs): 0 none, 1 ReLU, 2 GELU, 3 SiLU,
// 4 sigmoid.
fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return max(x, 0.0); }
        case 2u: { return gelu(x); }
        case 3u: { return silu(x); }
        case 4u: { return sigmoid(x); }
        default: { return x; }
    }
}
