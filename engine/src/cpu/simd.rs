//! SIMD levels of the CPU path, chosen at run time from the CPU's features (natively) or at
//! compile time (`simd128` on wasm32), and the variable that forces one.
//!
//! `BRIVL_CPU_SIMD=portable|simd128|neon|avx2|avx2vnni|avx512|avx512vnni` (read once, natively) caps the level the CPU
//! path uses: a level the machine lacks falls back to the best one below it, an unknown value
//! is reported once on stderr and ignored. Tests do not rely on it: kernel tests loop over
//! [`Level::available`].

use std::sync::OnceLock;

/// A kernel family. Each op's fast path names the level it needs; `Portable` runs anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain Rust, auto-vectorised for the target's baseline (SSE2 on x86-64).
    Portable,
    /// wasm32 `simd128` (compiled in with `-C target-feature=+simd128`).
    Simd128,
    /// aarch64 NEON (part of every aarch64 target's baseline).
    Neon,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// `Avx2` with AVX-VNNI: the same kernels, but q8 weights are multiplied as int8 (`cpu::int8`).
    Avx2Vnni,
    /// x86-64 AVX-512 F/BW/VL + FMA + F16C.
    Avx512,
    /// `Avx512` with VNNI: the same kernels, but q8 weights are multiplied as int8 (`cpu::int8`).
    Avx512Vnni,
}

const ALL: [Level; 7] =
    [Level::Portable, Level::Simd128, Level::Neon, Level::Avx2, Level::Avx2Vnni, Level::Avx512, Level::Avx512Vnni];

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Simd128 => "simd128",
            Self::Neon => "neon",
            Self::Avx2 => "avx2",
            Self::Avx2Vnni => "avx2vnni",
            Self::Avx512 => "avx512",
            Self::Avx512Vnni => "avx512vnni",
        }
    }

    #[cfg(any(test, not(target_arch = "wasm32")))]
    fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|l| l.name() == s)
    }

    /// Whether this machine runs `self`; kernels check it before using a level's instructions.
    pub(crate) fn supported(self) -> bool {
        static AVAILABLE: OnceLock<Vec<Level>> = OnceLock::new();
        AVAILABLE.get_or_init(Self::detect).contains(&self)
    }

    /// Every level this machine runs, portable first.
    pub fn available() -> Vec<Level> {
        ALL.into_iter().filter(|l| l.supported()).collect()
    }

    /// The level of the f32 kernels: a VNNI level differs from the one below only in the q8 GEMM.
    pub(crate) fn f32_kernels(self) -> Level {
        match self {
            Self::Avx2Vnni => Self::Avx2,
            Self::Avx512Vnni => Self::Avx512,
            l => l,
        }
    }

    fn detect() -> Vec<Level> {
        let mut v = vec![Self::Portable];
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        v.push(Self::Simd128);
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        v.push(Self::Neon);
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            if avx2 {
                v.push(Self::Avx2);
                if std::arch::is_x86_feature_detected!("avxvnni") {
                    v.push(Self::Avx2Vnni);
                }
            }
            if avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                v.push(Self::Avx512);
                if std::arch::is_x86_feature_detected!("avx512vnni") {
                    v.push(Self::Avx512Vnni);
                }
            }
        }
        v
    }

    /// The level the CPU path runs at: the best available, capped by `BRIVL_CPU_SIMD`.
    pub fn current() -> Level {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let available = Self::available();
            let best = *available.last().unwrap_or(&Self::Portable);
            #[cfg(not(target_arch = "wasm32"))]
            if let Ok(want) = std::env::var("BRIVL_CPU_SIMD") {
                match Self::parse(want.trim()) {
                    Some(cap) => return available.into_iter().filter(|l| *l <= cap).max().unwrap_or(Self::Portable),
                    None => eprintln!(
                        "BRIVL_CPU_SIMD={want:?} is not one of portable, simd128, neon, avx2, avx2vnni, avx512, avx512vnni: ignored"
                    ),
                }
            }
            best
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cpu_test;

    cpu_test!(levels_parse_and_portable_is_always_there, {
        for l in Level::available() {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::available()[0], Level::Portable);
        assert!(Level::available().contains(&Level::current()));
        assert_eq!(Level::parse("sse9"), None);
        // Every aarch64 target has NEON: its kernels are what run (and are tested) there.
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Level::current(), Level::Neon);
    });
}
