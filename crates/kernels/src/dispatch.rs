/// Defines a public function whose body is compiled three times — for AVX-512F, for AVX2+FMA and
/// for the baseline target — and picks the best copy the CPU supports at run time, no wider than
/// `OCTET_ISA` allows ([`crate::isa::vector_level`]). The body must
/// be plain loops over slices calling `#[inline(always)]` arithmetic so that each copy is
/// auto-vectorised for its ISA. No copy contracts `a * b + c` into a fused multiply-add, so every
/// copy returns the same bits.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) { body($($arg),*) }
                match $crate::isa::vector_level() {
                    // SAFETY: vector_level() only names levels the CPU supports.
                    $crate::isa::VectorLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::isa::VectorLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::isa::VectorLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
