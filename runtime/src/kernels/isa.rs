//! Which instruction set runs a kernel: every kernel has a portable path and vector
//! paths chosen at run time, so one binary serves boards with and without NEON and hosts
//! with and without AVX2.

/// A kernel's code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust.
    Scalar,
    /// armv7 NEON (inline assembly).
    Neon,
    /// x86-64 AVX2 + FMA (intrinsics).
    Avx2Fma,
    /// x86-64 with AVX-512F as well: the AVX2 kernels, plus AVX-512 ones where a kernel
    /// has them (the 1x1 convolution on small maps).
    Avx512,
}

impl Isa {
    /// Every path, for tests that run each one this CPU has.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Avx2Fma, Isa::Avx512];

    /// The fastest path this CPU supports.
    pub fn best() -> Isa {
        [Isa::Neon, Isa::Avx512, Isa::Avx2Fma]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// Whether this path can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Neon => {
                #[cfg(target_arch = "arm")]
                {
                    neon_detected()
                }
                #[cfg(not(target_arch = "arm"))]
                {
                    false
                }
            }
            Isa::Avx2Fma => {
                #[cfg(target_arch = "x86_64")]
                {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Avx512 => {
                #[cfg(target_arch = "x86_64")]
                {
                    Isa::Avx2Fma.is_available() && std::is_x86_feature_detected!("avx512f")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
        }
    }

    /// Whether this path runs the AVX2 + FMA kernels (AVX-512 hosts run them too).
    pub fn avx2(self) -> bool {
        matches!(self, Isa::Avx2Fma | Isa::Avx512)
    }
}

/// NEON present, from the kernel's AT_HWCAP. Stable Rust has no `target_feature = "neon"`
/// cfg on arm (it is silently absent even with `-C target-feature=+neon`), so decide at
/// run time; HWCAP is what the board's (and qemu-arm's) kernel reports.
#[cfg(target_arch = "arm")]
pub fn neon_detected() -> bool {
    use std::sync::OnceLock;
    const HWCAP_NEON: libc::c_ulong = 1 << 12;
    static NEON: OnceLock<bool> = OnceLock::new();
    // SAFETY: getauxval only reads the auxiliary vector.
    *NEON.get_or_init(|| unsafe { libc::getauxval(libc::AT_HWCAP) } & HWCAP_NEON != 0)
}

/// Bit-for-bit equality of packed weights (tract compares ops with `Eq`; a NaN weight
/// equals itself, which is what an op's identity needs).
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Deterministic test values in [-1, 1) (xorshift; no crate needed for a test pattern).
#[cfg(test)]
pub fn test_pattern(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12_345);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Planar images (`[channels][pixels]` each) as channels-last ones (`[pixels][channels]`).
#[cfg(test)]
pub fn test_channels_last(planar: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    test_channels_last_padded(planar, channels, pixels, channels)
}

/// As [`test_channels_last`] with `pixel_floats` floats per pixel, NaN after each pixel's
/// channels: a kernel that read them would turn its outputs NaN.
#[cfg(test)]
pub fn test_channels_last_padded(
    planar: &[f32],
    channels: usize,
    pixels: usize,
    pixel_floats: usize,
) -> Vec<f32> {
    planar
        .chunks_exact(channels * pixels)
        .flat_map(|x| {
            (0..pixel_floats * pixels).map(move |i| {
                let (pixel, c) = (i / pixel_floats, i % pixel_floats);
                if c < channels {
                    x[c * pixels + pixel]
                } else {
                    f32::NAN
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_path_is_the_vector_one_on_our_targets() {
        // The armv7 target is the i.MX 6 (Cortex-A9 with NEON); qemu-arm -cpu cortex-a9 too.
        if cfg!(target_arch = "arm") {
            assert_eq!(Isa::best(), Isa::Neon);
        }
        assert!(Isa::best().is_available());
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && Isa::Avx2Fma.is_available() {
            assert_eq!(Isa::best(), Isa::Avx512);
        }
        assert!(Isa::Scalar.is_available());
        let available = Isa::ALL.iter().filter(|isa| isa.is_available()).count();
        let vector = Isa::ALL
            .iter()
            .filter(|isa| **isa != Isa::Avx512 && isa.is_available())
            .count();
        assert!(vector <= 2, "at most one base vector path per CPU");
        assert!(available <= vector + 1);
    }
}
