//! Element-wise maths of the CPU path written so the compiler vectorises it (no calls, no
//! branches per value), compiled once per SIMD level by [`multiversion!`]: the fused epilogue of
//! the GEMM and the convolutions (bias + activation) and its `exp`.

use crate::ops::Activation;

/// `pub(crate) fn $name(level: Level, args..)` running `$body(args..)` compiled with the level's
/// target features (AVX-512 or AVX2 + FMA + F16C on x86-64); on other levels, or a level the
/// CPU lacks, the plain build (which is `simd128` on a wasm build with it enabled). As
/// `unsafe fn`, for a body that is one (its callers keep its safety contract), optionally with
/// another body for the plain build (`= x86_body, plain_body`: one that needs x86 features).
macro_rules! multiversion {
    ($(#[$m:meta])* unsafe fn $name:ident($($a:ident: $t:ty),* $(,)?) = $body:path) => {
        $crate::cpu::vector::multiversion! { $(#[$m])* unsafe fn $name($($a: $t),*) = $body, $body }
    };
    ($(#[$m:meta])* unsafe fn $name:ident($($a:ident: $t:ty),* $(,)?) = $x86:path, $plain:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name(level: $crate::cpu::Level, $($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                unsafe fn avx512($($a: $t),*) { unsafe { $x86($($a),*) } }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2($($a: $t),*) { unsafe { $x86($($a),*) } }
                match level.f32_kernels() {
                    // SAFETY: `supported` checked the CPU has these features; the rest is the
                    // caller's.
                    $crate::cpu::Level::Avx512 if level.supported() => return unsafe { avx512($($a),*) },
                    $crate::cpu::Level::Avx2 if level.supported() => return unsafe { avx2($($a),*) },
                    _ => {}
                }
            }
            let _ = level;
            // SAFETY: the caller's.
            unsafe { $plain($($a),*) }
        }
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body:path) => {
        $crate::cpu::vector::multiversion! { $(#[$m])* fn $name($($a: $t),*) $(-> $r)? = $body, $body }
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $x86:path, $plain:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name(level: $crate::cpu::Level, $($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                fn avx512($($a: $t),*) $(-> $r)? { $x86($($a),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2($($a: $t),*) $(-> $r)? { $x86($($a),*) }
                match level.f32_kernels() {
                    // SAFETY: `supported` checked the CPU has these features.
                    $crate::cpu::Level::Avx512 if level.supported() => return unsafe { avx512($($a),*) },
                    $crate::cpu::Level::Avx2 if level.supported() => return unsafe { avx2($($a),*) },
                    _ => {}
                }
            }
            let _ = level;
            $plain($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// `a * b + c` in [`exp`]: one rounding with FMA (a SiLU 16-20% cheaper at AVX-512), two
/// without (where `f32::mul_add` would be a call into a software fma: x86-64's portable level,
/// wasm).
pub(crate) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// The levels with FMA: AVX2, AVX-512, NEON.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
pub(crate) struct Fma;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
impl MulAdd for Fma {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// The others: a multiply, then an add.
#[cfg(any(not(target_arch = "aarch64"), test))]
pub(crate) struct NoFma;
#[cfg(any(not(target_arch = "aarch64"), test))]
impl MulAdd for NoFma {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// What a level's plain build (outside the x86 levels' `multiversion!` bodies) multiplies and
/// adds with: aarch64 always has FMA.
#[cfg(target_arch = "aarch64")]
pub(crate) type Plain = Fma;
#[cfg(not(target_arch = "aarch64"))]
pub(crate) type Plain = NoFma;

/// e^x for x in f32's range, Cephes' `expf` polynomial with the power of two built from the
/// bits: within 2 ulp of `f32::exp` on [-87, 88]; inputs beyond are clamped there (e^-87 =
/// 1.6e-38, e^88 = 1.7e38), so nothing turns into inf or NaN.
#[inline(always)]
pub(crate) fn exp<M: MulAdd>(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = M::mul_add(x, std::f32::consts::LOG2_E, MAGIC);
    let n = shifted - MAGIC;
    let r = M::mul_add(n, 2.121_944_4e-4, M::mul_add(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5); // Cephes' 5.0000001201e-1, which is 0.5 in f32
    let e = M::mul_add(p * r, r, r) + 1.0;
    // The low bits of `shifted` hold n; 2^n has n + 127 as its exponent.
    let two_n = f32::from_bits((shifted.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23);
    e * two_n
}

/// `activate` of `common.wgsl` with [`exp`]: GELU with the same erf (Abramowitz & Stegun
/// 7.1.26) as the GPU kernels and [`Activation::apply`].
#[inline(always)]
#[allow(clippy::excessive_precision)] // the A&S constants as published, as in common.wgsl
pub(crate) fn activate<M: MulAdd>(act: Activation, x: f32) -> f32 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Gelu => {
            let z = x * std::f32::consts::FRAC_1_SQRT_2;
            let a = z.abs();
            let t = 1.0 / (1.0 + 0.3275911 * a);
            let poly =
                t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
            let erf = (1.0 - poly * exp::<M>(-a * a)).copysign(z);
            0.5 * x * (1.0 + erf)
        }
        Activation::Silu => x / (1.0 + exp::<M>(-x)),
        Activation::Sigmoid => 1.0 / (1.0 + exp::<M>(-x)),
    }
}

/// `y = act(y + bias)`: one loop per activation, so each vectorises. Inlined into callers that
/// are themselves compiled per level.
#[inline(always)]
pub(crate) fn bias_act_body<M: MulAdd>(y: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    macro_rules! each {
        ($act:expr) => {
            match bias {
                Some(b) => y.iter_mut().zip(b).for_each(|(v, b)| *v = activate::<M>($act, *v + b)),
                None => y.iter_mut().for_each(|v| *v = activate::<M>($act, *v)),
            }
        };
    }
    match act {
        Activation::None => {
            if let Some(b) = bias {
                y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Activation::Relu => each!(Activation::Relu),
        Activation::Gelu => each!(Activation::Gelu),
        Activation::Silu => each!(Activation::Silu),
        Activation::Sigmoid => each!(Activation::Sigmoid),
    }
}

multiversion! {
    /// `y = act(y + bias)`, `bias` as long as `y` when given: [`bias_act_body`] per level, which
    /// the GEMM's epilogue and the depthwise conv inline into their own per-level code.
    #[cfg(test)]
    fn bias_act(y: &mut [f32], bias: Option<&[f32]>, act: Activation) = bias_act_body::<Fma>, bias_act_body::<Plain>
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Level;
    use crate::testing::cpu_test;

    cpu_test!(exp_is_within_two_ulp_and_saturates, {
        for i in -86_990..=87_990 {
            let x = i as f32 * 1e-3;
            let want = x.exp();
            for got in [exp::<NoFma>(x), exp::<Fma>(x)] {
                assert!((got - want).abs() <= 2.0 * f32::EPSILON * want, "exp({x}) = {got}, want {want}");
            }
        }
        assert_eq!(exp::<NoFma>(-1e30), (-87f32).exp());
        assert_eq!(exp::<Fma>(-1e30), (-87f32).exp());
        assert!(exp::<NoFma>(1e30).is_finite() && exp::<Fma>(f32::INFINITY).is_finite());
    });

    cpu_test!(activations_match_the_scalar_twin_on_every_level, {
        // GELU: A&S 7.1.26 (1.5e-7) in both, this one with `exp` above; others: exp's 2 ulp.
        let x: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 7e-3).chain([-1e4, 1e4, -1e30, 1e30]).collect();
        let bias: Vec<f32> = (0..x.len()).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        for level in Level::available() {
            for act in Activation::ALL {
                let mut y = x.clone();
                bias_act(level, &mut y, Some(&bias), act);
                for ((got, v), b) in y.iter().zip(&x).zip(&bias) {
                    let want = act.apply(v + b);
                    assert!(
                        (got - want).abs() <= 1e-6 + 1e-6 * want.abs(),
                        "{level:?} {act:?}({v} + {b}) = {got}, want {want}"
                    );
                }
            }
        }
    });
}
