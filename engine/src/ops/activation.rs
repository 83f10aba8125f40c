//! Activations fused into matmul and conv kernels. The WGSL side is in `shaders/common.wgsl`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Activation {
    None = 0,
    Relu = 1,
    /// GELU in its exact erf form, as BERT uses it.
    Gelu = 2,
    Silu = 3,
    Sigmoid = 4,
}

impl Activation {
    pub const ALL: [Activation; 5] = [Self::None, Self::Relu, Self::Gelu, Self::Silu, Self::Sigmoid];

    /// The CPU twin of `activate` in `common.wgsl`.
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Self::None => x,
            Self::Relu => x.max(0.0),
            Self::Gelu => (0.5 * x as f64 * (1.0 + erf(x as f64 * std::f64::consts::FRAC_1_SQRT_2))) as f32,
            Self::Silu => x * sigmoid(x),
            Self::Sigmoid => sigmoid(x),
        }
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// erf by its Maclaurin series, exact to ~1e-12 for |x| < 4; beyond, erf rounds to ±1 in f32.
pub(crate) fn erf(x: f64) -> f64 {
    if x.abs() >= 4.0 {
        return x.signum();
    }
    let (mut term, mut sum, x2) = (x, x, x * x);
    for n in 1..80 {
        term *= -x2 / n as f64;
        let t = term / (2 * n + 1) as f64;
        sum += t;
        if t.abs() < 1e-17 {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in
            [(0.0, 0.0), (0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.5, 0.999_593_047_982_555)]
        {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x})");
            assert!((erf(-x) + want).abs() < 1e-12);
        }
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid(-1e4), 0.0);
        assert_eq!(sigmoid(1e4), 1.0);
        assert_eq!(Activation::Silu.apply(-1e4), -0.0);
    }
}
