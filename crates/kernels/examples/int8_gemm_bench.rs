//! Measures each int8 tier's peak (a register-only loop of its multiply-add instruction) and
//! its GEMM on ViT shapes, single-threaded, and prints GOP/s and the share of the peak.
//!
//! `cargo run --release -p octet-kernels --example int8_gemm_bench`

use std::time::Instant;

use octet_kernels::i8::{gemm_kernel_name, gemm_u8s8, PackedB};
use octet_kernels::Isa;

/// Operations (multiply + add = 2) per second of the tier's inner instruction, from 16
/// independent accumulator chains (enough to cover its latency).
fn peak(isa: Isa) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn vnni(iters: usize) -> i32 {
            let a = _mm512_set1_epi32(0x01020304);
            let b = _mm512_set1_epi32(0x01010101);
            let mut acc = [_mm512_setzero_si512(); 16];
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm512_dpbusd_epi32(*r, a, b);
                }
            }
            let mut s = _mm512_setzero_si512();
            for r in acc {
                s = _mm512_add_epi32(s, r);
            }
            _mm512_reduce_add_epi32(s)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(iters: usize) -> i32 {
            let a = _mm256_set1_epi32(0x00020003);
            let b = _mm256_set1_epi32(0x00010001);
            let mut acc = [_mm256_setzero_si256(); 12];
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm256_add_epi32(*r, _mm256_madd_epi16(a, b));
                }
            }
            let mut s = _mm256_setzero_si256();
            for r in acc {
                s = _mm256_add_epi32(s, r);
            }
            _mm256_extract_epi32::<0>(s)
        }
        let iters = 20_000_000;
        let (ops, f): (f64, Box<dyn Fn() -> i32>) = match isa {
            Isa::Avx512Vnni => (16.0 * 64.0 * 2.0, Box::new(move || unsafe { vnni(iters) })),
            Isa::Avx2 => (12.0 * 16.0 * 2.0, Box::new(move || unsafe { avx2(iters) })),
            Isa::Scalar => return f64::NAN,
        };
        let t = Instant::now();
        std::hint::black_box(f());
        ops * iters as f64 / t.elapsed().as_secs_f64()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        f64::NAN
    }
}

fn main() {
    let shapes = [(197, 384, 1152), (197, 384, 1536), (197, 1536, 384), (197, 384, 384), (197, 64, 197), (197, 197, 64)];
    println!("| tier | kernel | peak GOP/s | M×K×N | GOP/s | % of peak |");
    println!("|---|---|---|---|---|---|");
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let p = peak(isa);
        for &(m, k, n) in &shapes {
            let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 251) as u8).collect();
            let b: Vec<i8> = (0..k * n).map(|i| (i * 13 % 255) as u8 as i8).collect();
            let packed = PackedB::from_rows(isa, k, n, 0, &b, n);
            let mut c = vec![0i32; m * n];
            let ops = 2.0 * (m * k * n) as f64;
            let iters = ((2e9 / ops) as usize).clamp(1, 2000) / if isa == Isa::Scalar { 50 } else { 1 };
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..iters.max(1) {
                    gemm_u8s8(m, &a, k, 3, &packed, &mut c, n);
                }
                best = best.min(t.elapsed().as_secs_f64() / iters.max(1) as f64);
            }
            let gops = ops / best / 1e9;
            println!("| {} | {} | {:.0} | {m}×{k}×{n} | {gops:.0} | {:.0} % |", isa.name(), gemm_kernel_name(isa), p / 1e9, 100.0 * gops * 1e9 / p);
        }
    }
}
