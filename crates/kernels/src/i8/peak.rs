//! The peak of an int8 microkernel on this CPU: its inner instruction mix in a loop of
//! registers only, the ceiling its GEMM is measured against (`int8_gemm_bench`, `octet bench
//! --peak`).

use std::time::Instant;

use crate::Isa;

/// Operations (multiply + add = 2) per second of the inner instruction mix of `kernel` (a name
/// from [`super::PackedB::kernel_name`]); `None` for the scalar kernel or a tier this CPU lacks.
/// Takes about 0.1 s. The mix runs in 12 independent chains (enough to cover its latency), each
/// feeding its accumulator back into its multiply, so that nothing can be hoisted out of the
/// loop: the figure is the instructions' throughput on this core, not a loop of additions.
pub fn peak(kernel: &str) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const CHAINS: usize = 12;
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn vnni(iters: usize) -> i32 {
            let b = _mm512_set1_epi32(0x01010101);
            let mut acc: [__m512i; CHAINS] = std::array::from_fn(|i| _mm512_set1_epi32(i as i32));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm512_dpbusd_epi32(*r, *r, b);
                }
            }
            acc.iter().fold(0, |s, &r| s ^ _mm512_reduce_add_epi32(r))
        }
        /// `vpmaddwd` + `vpaddd`: 16 multiply-adds (the full-range kernel's mix).
        #[target_feature(enable = "avx2")]
        unsafe fn madd(iters: usize) -> i32 {
            let b = _mm256_set1_epi32(0x00010001);
            let mut acc: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm256_add_epi32(*r, _mm256_madd_epi16(*r, b));
                }
            }
            acc.iter().fold(0, |s, &r| s ^ _mm256_extract_epi32::<0>(r))
        }
        /// `vpmaddubsw` + `vpmaddwd` (ones) + `vpaddd`: 32 multiply-adds (the 7-bit kernel's mix).
        #[target_feature(enable = "avx2")]
        unsafe fn maddubs(iters: usize) -> i32 {
            let (b, ones) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
            let mut acc: [__m256i; CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32));
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm256_add_epi32(*r, _mm256_madd_epi16(_mm256_maddubs_epi16(*r, b), ones));
                }
            }
            acc.iter().fold(0, |s, &r| s ^ _mm256_extract_epi32::<0>(r))
        }
        let iters = 5_000_000;
        let chains = CHAINS as f64;
        let available = |isa: Isa| isa.available();
        let (ops, f): (f64, Box<dyn Fn() -> i32>) = match kernel {
            k if k.starts_with("avx512vnni") && available(Isa::Avx512Vnni) => {
                (chains * 64.0 * 2.0, Box::new(move || unsafe { vnni(iters) }))
            }
            "avx2_gemm_u8s8_6x16" if available(Isa::Avx2) => (chains * 16.0 * 2.0, Box::new(move || unsafe { madd(iters) })),
            "avx2_gemm_u8s7_5x16" if available(Isa::Avx2) => (chains * 32.0 * 2.0, Box::new(move || unsafe { maddubs(iters) })),
            _ => return None,
        };
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            std::hint::black_box(f());
            best = best.max(ops * iters as f64 / t.elapsed().as_secs_f64());
        }
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        None
    }
}
