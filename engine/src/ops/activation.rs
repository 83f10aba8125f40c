//! Activations fused into matmul and conv kernels. The WGSL side is in `shaders/common.wgsl`.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum Activation {
    #[default]
    None = 0,
    Relu = 1,
    /// GELU in its exact erf form, as BERT uses it.
    Gelu = 2,
    Silu = 3,
    Sigmoid = 4,
}

impl Activation {
    pub const ALL: [Activation; 5] = [Self::None, Self::Relu, Self::Gelu, Self::Silu, Self::Sigmoid];

    /// `activate` in `common.wgsl`, one value at a time with `std`'s `exp`: the reference the
    /// CPU path's vectorised activations (`cpu::vector::activate`) are tested against.
    #[cfg(test)]
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Self::None => x,
            Self::Relu => x.max(0.0),
            Self::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Self::Silu => x * sigmoid(x),
            Self::Sigmoid => sigmoid(x),
        }
    }
}

#[cfg(test)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// erf as the GPU kernels compute it (`common.wgsl`): Abramowitz & Stegun 7.1.26 (|error| <=
/// 1.5e-7 in exact arithmetic; measured in f32, 4.1e-7 at worst on [-6, 6]), one `exp` and no
/// loop, so the CPU path and the GPU agree and GELU costs a few flops instead of a series.
#[cfg(test)]
#[allow(clippy::excessive_precision)] // the constants as published, the same as in common.wgsl
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * (-a * a).exp();
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

/// erf by its Maclaurin series, exact to ~1e-12 for |x| < 4 (beyond, erf rounds to ±1 in f32):
/// the reference [`erf`] is held to.
#[cfg(test)]
fn erf_series(x: f64) -> f64 {
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
            assert!((erf_series(x) - want).abs() < 1e-12, "erf_series({x})");
            assert!((erf_series(-x) + want).abs() < 1e-12);
        }
    }

    #[test]
    fn erf_approximation_error_is_as_stated() {
        // Over [-6, 6] in steps of 1e-3: within A&S 7.1.26's 1.5e-7 plus f32 rounding (4.1e-7
        // measured).
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((erf(x) as f64 - erf_series(x as f64)).abs());
        }
        assert!(worst < 5e-7, "worst |erf error| {worst:e}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(Activation::Gelu.apply(-1e30), 0.0);
        assert_eq!(Activation::Gelu.apply(1e30), 1e30);
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid(-1e4), 0.0);
        assert_eq!(sigmoid(1e4), 1.0);
        assert_eq!(Activation::Silu.apply(-1e4), -0.0);
    }
}
