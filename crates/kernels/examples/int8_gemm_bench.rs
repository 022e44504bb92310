//! Measures each int8 tier's peak (a register-only loop of its multiply-add instruction) and
//! its GEMM on ViT shapes (the Linears, then the attention's two products per head, and `P·V`
//! with the 16-bit probabilities octet's attention multiplies), single-threaded, and prints
//! GOP/s and the share of the peak. The Linears are timed twice: on one weight matrix (in
//! cache) and cycling through 64 MiB of them, as a model's layers read their weights from
//! memory.
//!
//! `cargo run --release -p octet-kernels --example int8_gemm_bench`

use std::time::Instant;

use octet_kernels::i8::{gemm_i16s8, gemm_u8s8, PackedB};
use octet_kernels::Isa;

fn main() {
    let shapes = [(197, 384, 1152), (197, 384, 1536), (197, 1536, 384), (197, 384, 384), (197, 64, 197), (197, 197, 64)];
    // Full-range right operands, then 7-bit ones ([-64, 64], as `--reduce-range` writes).
    let operands: [fn(usize) -> i8; 2] = [|i| (i * 13 % 255) as u8 as i8, |i| (i * 13 % 129) as i8 - 64];
    let mut peaks: Vec<(&str, f64)> = Vec::new();
    println!("| tier | kernel | peak GOP/s | M×K×N | GOP/s | % of peak | weights from memory: GOP/s | % of peak |");
    println!("|---|---|---|---|---|---|---|---|");
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for weight in operands {
            if peaks.iter().any(|(k, _)| *k == PackedB::from_rows(isa, 2, 1, 0, &[weight(0), weight(1)], 1).kernel_name()) {
                continue;
            }
            for &(m, k, n) in &shapes {
                let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 251) as u8).collect();
                let b: Vec<i8> = (0..k * n).map(weight).collect();
                let packed = PackedB::from_rows(isa, k, n, 0, &b, n);
                let kernel = packed.kernel_name();
                let p = match peaks.iter().find(|(k, _)| *k == kernel) {
                    Some(&(_, p)) => p,
                    None => {
                        let p = octet_kernels::i8::peak(kernel).unwrap_or(f64::NAN);
                        peaks.push((kernel, p));
                        p
                    }
                };
                let mut c = vec![0i32; m * n];
                // Zero points 0, as octet runs its products: the left operand's zero point is
                // folded into the epilogue's bias (eq. 10), not corrected after.
                let gops = time(isa, m, k, n, |_| gemm_u8s8(m, &a, k, 0, &packed, &mut c, n));
                let share = |gops: f64| 100.0 * gops * 1e9 / p;
                let cold = if m * k < k * n {
                    let copies: Vec<PackedB> = (0..(64 << 20) / (k * n))
                        .map(|c| PackedB::from_rows(isa, k, n, 0, &b[c % n..].iter().chain(&b[..c % n]).copied().collect::<Vec<_>>(), n))
                        .collect();
                    let gops = time(isa, m, k, n, |i| gemm_u8s8(m, &a, k, 0, &copies[i % copies.len()], &mut c, n));
                    format!("{gops:.0} | {:.0} %", share(gops))
                } else {
                    "| ".into()
                };
                println!("| {} | {kernel} | {:.0} | {m}×{k}×{n} | {gops:.0} | {:.0} % | {cold} |", isa.name(), p / 1e9, share(gops));
            }
        }
        // P·V with 16-bit probabilities, counted as the 8-bit product's operations (its math).
        let (m, k, n) = (197, 197, 64);
        let a: Vec<i16> = (0..m * k).map(|i| (i * 331 % 65536) as u16 as i16).collect();
        let b: Vec<i8> = (0..k * n).map(operands[0]).collect();
        let packed = PackedB::from_rows_for_i16(isa, k, n, 0, &b, n);
        let kernel = packed.kernel_name();
        let p = peaks.iter().find(|(k, _)| *k == kernel).map(|&(_, p)| p).or_else(|| octet_kernels::i8::peak(kernel)).unwrap_or(f64::NAN);
        let mut c = vec![0i32; m * n];
        let gops = time(isa, m, k, n, |_| gemm_i16s8(m, &a, k, &packed, &mut c, n));
        println!(
            "| {} | {kernel}, 16-bit left | {:.0} | {m}×{k}×{n} | {gops:.0} | {:.0} % | | |",
            isa.name(),
            p / 1e9,
            100.0 * gops * 1e9 / p
        );
    }
}

/// GOP/s of `run(i)`, the `i`-th run of one `m × k × n` product, best of 5 timings.
fn time(isa: Isa, m: usize, k: usize, n: usize, mut run: impl FnMut(usize)) -> f64 {
    let ops = 2.0 * (m * k * n) as f64;
    let iters = (((2e9 / ops) as usize).clamp(1, 2000) / if isa == Isa::Scalar { 50 } else { 1 }).max(1);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..iters {
            run(i);
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    ops / best / 1e9
}
