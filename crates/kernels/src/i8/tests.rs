//! Every tier against the scalar reference, bit for bit, over the edge shapes and zero points of
//! DESIGN.md: M and N around the tile sizes, K from 1 to 10, odd, and around 64 and 128.

use super::*;

fn values(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

const ZERO_POINTS: [i32; 7] = [0, 18, 75, 128, 157, 231, 255];

fn tiers() -> Vec<Isa> {
    let t: Vec<Isa> = Isa::ALL.into_iter().filter(|i| *i != Isa::Scalar && i.available()).collect();
    println!("tiers tested against scalar: {:?}", t.iter().map(|i| i.name()).collect::<Vec<_>>());
    t
}

/// Right operands: full-range s8, or 7-bit ([-64, 64], which AVX2 multiplies with `vpmaddubsw`).
#[derive(Clone, Copy, PartialEq)]
enum Weights {
    Full,
    SevenBit,
}

fn right_operand(k: usize, n: usize, seed: u64, w: Weights) -> Vec<i8> {
    let v = values(k * n, seed).into_iter();
    match w {
        Weights::Full => v.map(|v| v as i8).collect(),
        Weights::SevenBit => v.map(|v| (v % 129) as i8 - 64).collect(),
    }
}

fn check(m: usize, k: usize, n: usize, a_zp: i32, b_zp: i32, tiers: &[Isa]) {
    check_weights(m, k, n, a_zp, b_zp, Weights::Full, tiers);
}

fn check_weights(m: usize, k: usize, n: usize, a_zp: i32, b_zp: i32, w: Weights, tiers: &[Isa]) {
    let a = values(m * k, (m * 31 + k * 7 + n) as u64);
    let b = right_operand(k, n, (n * 13 + k) as u64, w);
    let reference = PackedB::from_rows(Isa::Scalar, k, n, b_zp, &b, n);
    let mut want = vec![0i32; m * n];
    gemm_u8s8(m, &a, k, a_zp, &reference, &mut want, n);
    for i in 0..m {
        for j in 0..n {
            let exact: i32 = (0..k).map(|kk| (a[i * k + kk] as i32 - a_zp) * (b[kk * n + j] as i32 - b_zp)).sum();
            assert_eq!(want[i * n + j], exact, "scalar reference wrong at ({i}, {j})");
        }
    }
    for &isa in tiers {
        let packed = PackedB::from_rows(isa, k, n, b_zp, &b, n);
        let mut got = vec![7i32; m * n];
        gemm_u8s8(m, &a, k, a_zp, &packed, &mut got, n);
        assert_eq!(got, want, "{} m={m} k={k} n={n} a_zp={a_zp} b_zp={b_zp}", isa.name());
    }
}

#[test]
fn tiers_equal_scalar_on_edge_shapes() {
    let tiers = tiers();
    let ks: Vec<usize> = (1..=10).chain([15, 17, 63, 64, 65, 127, 128, 129]).collect();
    for m in [1, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 23] {
        for n in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47] {
            for &k in &ks {
                check(m, k, n, ZERO_POINTS[(m + n + k) % 7], 0, &tiers);
            }
        }
    }
    for (i, &a_zp) in ZERO_POINTS.iter().enumerate() {
        check(19, 37, 41, a_zp, [0, -3, 5, 100, -128, 17, 1][i], &tiers);
    }
}

#[test]
fn tiers_equal_scalar_on_seven_bit_operands() {
    let tiers = tiers();
    let ks: Vec<usize> = (1..=10).chain([15, 17, 63, 64, 65, 127, 128, 129]).collect();
    for m in [1, 4, 5, 6, 11, 17] {
        for n in [1, 7, 8, 9, 15, 16, 17, 33] {
            for &k in &ks {
                check_weights(m, k, n, ZERO_POINTS[(m + n + k) % 7], 0, Weights::SevenBit, &tiers);
            }
        }
    }
    for (i, &a_zp) in ZERO_POINTS.iter().enumerate() {
        check_weights(19, 37, 41, a_zp, [0, -3, 5, 64, -64, 17, 1][i], Weights::SevenBit, &tiers);
    }
    check_weights(197, 384, 1152, 131, 0, Weights::SevenBit, &tiers);
}

#[test]
fn avx2_kernel_follows_the_pair_bound() {
    if !Isa::Avx2.available() {
        println!("AVX2 not available: nothing to test");
        return;
    }
    // Columns of k = 3: pairs (b0, b1) and (b2, 0). |b0| + |b1| ≤ 128 keeps vpmaddubsw exact.
    for (col, fits) in
        [([64i8, 64, -128], true), ([-64, -64, 127], true), ([-128, 0, -128], true), ([-128, 1, 0], false), ([65, -64, 0], false)]
    {
        let packed = PackedB::from_rows(Isa::Avx2, 3, 1, 0, &col, 1);
        let name = if fits { "avx2_gemm_u8s7_5x16" } else { "avx2_gemm_u8s8_6x16" };
        assert_eq!(packed.kernel_name(), name, "{col:?}");
        let a = [255u8; 3 * 7];
        let mut got = [0i32; 7];
        gemm_u8s8(7, &a, 3, 0, &packed, &mut got, 1);
        let want: i32 = col.iter().map(|&v| 255 * v as i32).sum();
        assert_eq!(got, [want; 7], "{col:?}");
    }
}

#[test]
fn packing_from_columns_equals_packing_from_rows() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for (k, n, w) in [
            (1, 1, Weights::Full),
            (5, 17, Weights::Full),
            (64, 197, Weights::Full),
            (197, 64, Weights::Full),
            (13, 33, Weights::Full),
            (33, 47, Weights::Full),
            (48, 40, Weights::Full),
            (7, 9, Weights::SevenBit),
            (64, 197, Weights::SevenBit),
            (197, 64, Weights::SevenBit),
        ] {
            let b = right_operand(k, n, (k * 3 + n) as u64, w);
            let bt: Vec<i8> = (0..n).flat_map(|j| (0..k).map(move |kk| (j, kk))).map(|(j, kk)| b[kk * n + j]).collect();
            let (r, c) = (PackedB::from_rows(isa, k, n, 3, &b, n), PackedB::from_cols(isa, k, n, 3, &bt, k));
            let generic = PackedB::pack(isa, k, n, 3, |kk, j| b[kk * n + j]);
            assert_eq!(
                (&r.data, &r.col_sums, r.kernel_name()),
                (&generic.data, &generic.col_sums, generic.kernel_name()),
                "{} rows k={k} n={n}",
                isa.name()
            );
            assert_eq!(
                (&c.data, &c.col_sums, c.kernel_name()),
                (&generic.data, &generic.col_sums, generic.kernel_name()),
                "{} cols k={k} n={n}",
                isa.name()
            );
            let ld = k + 3;
            let padded: Vec<i8> = (0..n * ld).map(|i| if i % ld < k { bt[i / ld * k + i % ld] } else { 99 }).collect();
            let p = PackedB::from_cols(isa, k, n, 3, &padded, ld);
            assert_eq!((&p.data, &p.col_sums), (&generic.data, &generic.col_sums), "{} cols k={k} n={n} ld={ld}", isa.name());
        }
    }
}

#[test]
fn packing_for_sixteen_bit_operands_takes_the_pair_layout() {
    if !Isa::Avx2.available() {
        println!("AVX2 not available: nothing to test");
        return;
    }
    for (k, n) in [(1, 1), (2, 16), (3, 17), (32, 16), (33, 47), (64, 197), (197, 64)] {
        let b = right_operand(k, n, (k + 5 * n) as u64, Weights::SevenBit);
        let packed = PackedB::from_rows_for_i16(Isa::Avx2, k, n, 0, &b, n);
        let generic = PackedB {
            avx2_kernel: Some(avx2::Kernel::Madd),
            data: avx2::pack(avx2::Kernel::Madd, k, n, |kk, j| b[kk * n + j]),
            ..packed.clone()
        };
        assert_eq!((&packed.data, packed.kernel_name()), (&generic.data, "avx2_gemm_u8s8_6x16"), "k={k} n={n}");
    }
}

#[test]
fn i16_product_equals_its_exact_sum_on_every_tier() {
    // Rows at both ends of the i16 range and odd K, against full-range and 7-bit operands packed
    // both ways, with zero points inside and outside s8 (VNNI folds the first into its words):
    // every tier gives Σ a·(b − zp) mod 2³², here past 2³¹ too (K = 511 of −32768 · −128).
    for &(m, k, n) in &[(1, 1, 1), (6, 2, 9), (5, 3, 16), (7, 64, 17), (11, 197, 64), (197, 197, 64), (3, 511, 20)] {
        let a: Vec<i16> = values(2 * m * k, (m + k) as u64)
            .chunks(2)
            .enumerate()
            .map(|(i, b)| match i % 5 {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => i16::from_le_bytes([b[0], b[1]]),
            })
            .collect();
        for (w, zp) in [(Weights::Full, 0), (Weights::SevenBit, 0), (Weights::Full, -128), (Weights::Full, 127), (Weights::Full, 300)] {
            let b = right_operand(k, n, (k * 7 + n) as u64, w);
            let exact: Vec<i32> = (0..m * n)
                .map(|ij| (0..k).map(|kk| a[ij / n * k + kk] as i64 * (b[kk * n + ij % n] as i64 - zp as i64)).sum::<i64>() as i32)
                .collect();
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                for packed in [PackedB::from_rows(isa, k, n, zp, &b, n), PackedB::from_rows_for_i16(isa, k, n, zp, &b, n)] {
                    let mut got = vec![7i32; m * n];
                    gemm_i16s8(m, &a, k, &packed, &mut got, n);
                    assert_eq!(got, exact, "{} {} m={m} k={k} n={n} zp={zp}", isa.name(), packed.kernel_name());
                }
            }
        }
    }
}

#[test]
fn vnni_words_are_the_operand_minus_its_zero_point_in_k_pairs() {
    if !Isa::Avx512Vnni.available() {
        println!("AVX-512 VNNI not available: nothing to test");
        return;
    }
    for (k, n, zp) in [(1, 1, 0), (2, 16, -128), (3, 17, 127), (32, 16, 5), (33, 47, -3), (197, 64, -77)] {
        let b = right_operand(k, n, (k + 3 * n) as u64, Weights::Full);
        let packed = PackedB::from_rows_for_i16(Isa::Avx512Vnni, k, n, zp, &b, n);
        let words = pack_panels(k, n, 16, 2, |kk, j| b[kk * n + j] as i16 - zp as i16);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!((&packed.data, packed.kernel_name()), (&bytes, "avx512vnni_gemm_i16s8_6x64"), "k={k} n={n} zp={zp}");
    }
}

#[test]
fn probabilities_times_values_epilogue_is_the_same_on_every_tier() {
    // Centred 16-bit codes of rows that sum to about 65,535 (the attention's probabilities),
    // values with s8 zero points, to f32 and to 8-bit outputs: every tier equals the exact
    // integer sum through the scalar epilogue, bit for bit.
    for &(m, k, n) in &[(1, 1, 1), (7, 5, 17), (197, 197, 64), (13, 50, 70)] {
        let raw = values(m * k, (m * k) as u64);
        let mut codes = vec![0i16; m * k];
        for (row, src) in codes.chunks_exact_mut(k).zip(raw.chunks_exact(k)) {
            let total: u32 = src.iter().map(|&v| v as u32 + 1).sum();
            for (c, &v) in row.iter_mut().zip(src) {
                *c = ((v as u32 + 1) * 65535 / total) as i32 as i16 ^ i16::MIN;
            }
        }
        for zp in [0, -128, 41, 127, 300] {
            let b = right_operand(k, n, (k + n) as u64, Weights::Full);
            let exact: Vec<i32> = (0..m * n)
                .map(|ij| (0..k).map(|kk| (codes[ij / n * k + kk] as i32 + 32768) * (b[kk * n + ij % n] as i32 - zp)).sum())
                .collect();
            for out in [OutType::F32, OutType::U8 { zero_point: 131 }, OutType::S8 { zero_point: -5 }] {
                let e = Epilogue { scale: vec![1.3e-5], bias: None, out, table: None, residual: None, activation: None };
                let (mut wf, mut wq) = (vec![0.0f32; m * n], vec![0u8; m * n]);
                epilogue(m, n, &exact, n, &e, &mut wf, &mut wq, &[]);
                for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                    let packed = PackedB::from_rows_for_i16(isa, k, n, zp, &b, n);
                    let (mut gf, mut gq) = (vec![0.0f32; m * n], vec![0u8; m * n]);
                    gemm_i16s8_epilogue(m, &codes, k, &packed, &e, &mut gf, &mut gq, &[]);
                    assert!(
                        gq == wq && gf.iter().zip(&wf).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{} m={m} k={k} n={n} zp={zp} {out:?}",
                        packed.kernel_name()
                    );
                }
            }
        }
    }
}

#[test]
fn tiers_equal_scalar_on_vit_shapes() {
    let tiers = tiers();
    for (m, k, n) in [(197, 384, 1152), (197, 64, 197), (197, 197, 64), (197, 1536, 384)] {
        check(m, k, n, 131, 0, &tiers);
    }
}

#[test]
fn epilogue_is_the_same_on_every_tier() {
    let (m, n) = (5, 37);
    let c: Vec<i32> = values(m * n * 4, 3).chunks(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], 0]) - (1 << 23)).collect();
    let scale: Vec<f32> = (0..n).map(|j| 1e-5 * (j as f32 + 1.5)).collect();
    for out in [OutType::U8 { zero_point: 128 }, OutType::S8 { zero_point: -3 }, OutType::F32] {
        let e = Epilogue {
            scale: scale.clone(),
            bias: Some((0..n as i32).map(|j| j * 1000 - 9000).collect()),
            out,
            table: None,
            residual: None,
            activation: None,
        };
        let (mut f, mut q) = (vec![0.0f32; m * n], vec![0u8; m * n]);
        epilogue(m, n, &c, n, &e, &mut f, &mut q, &[]);
        for i in 0..m {
            for j in 0..n {
                let v = (c[i * n + j] + e.bias.as_ref().unwrap()[j]) as f32 * scale[j];
                match out {
                    OutType::F32 => assert_eq!(f[i * n + j].to_bits(), v.to_bits()),
                    OutType::U8 { zero_point } => {
                        assert_eq!(q[i * n + j], (v.round_ties_even() + zero_point as f32).clamp(0.0, 255.0) as u8)
                    }
                    OutType::S8 { zero_point } => {
                        assert_eq!(q[i * n + j] as i8, (v.round_ties_even() + zero_point as f32).clamp(-128.0, 127.0) as i8)
                    }
                }
            }
        }
    }
}

#[test]
fn fused_epilogue_equals_gemm_then_epilogue_on_every_tier() {
    use super::elementwise::Affine;
    // Both AVX2 kernels: full-range operands (vpmaddwd) and 7-bit ones (vpmaddubsw).
    let shapes = [
        (1, 4, 1, Weights::Full),
        (7, 64, 17, Weights::Full),
        (13, 37, 100, Weights::SevenBit),
        (197, 384, 70, Weights::Full),
        (11, 9, 23, Weights::SevenBit),
    ];
    for &(m, k, n, w) in &shapes {
        let a = values(m * k, 5);
        let b = right_operand(k, n, 6, w);
        let residual = values(m * n, 7);
        let table: Box<[u8; 256]> = Box::new(std::array::from_fn(|i| (255 - i) as u8));
        // Scales from tiny to huge, so that results saturate both ways past ±2^31.
        let scale: Vec<f32> = (0..n).map(|j| [3e-5, 1e-2, 7.0, 1e4, -2e3][j % 5] * (1.0 + j as f32 * 0.01)).collect();
        let bias: Vec<i32> = (0..n as i32).map(|j| j * 313 - 4000).collect();
        let q = |z: i32, signed: bool| Affine { scale: 0.05, zero_point: z, signed };
        let outs = [OutType::F32, OutType::U8 { zero_point: 131 }, OutType::S8 { zero_point: -5 }];
        for out in outs {
            for (t, r, act) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, false),
                (false, false, true),
                (true, true, true),
            ] {
                if out == OutType::F32 && (t || r) {
                    continue;
                }
                let e = Epilogue {
                    scale: scale.clone(),
                    bias: Some(bias.clone()),
                    out,
                    table: t.then(|| table.clone()),
                    residual: r.then(|| Residual { y: q(131, false), r: q(40, false), out: q(7, false) }),
                    activation: act.then_some(Activation { f: crate::f32::gelu_erf, out_scale: 0.37 }),
                };
                let reference = PackedB::from_rows(Isa::Scalar, k, n, 0, &b, n);
                let mut c = vec![0i32; m * n];
                gemm_u8s8(m, &a, k, 0, &reference, &mut c, n);
                let (mut wf, mut wq) = (vec![0.0f32; m * n], vec![0u8; m * n]);
                epilogue(m, n, &c, n, &e, &mut wf, &mut wq, &residual);
                for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                    let packed = PackedB::from_rows(isa, k, n, 0, &b, n);
                    let (mut gf, mut gq) = (vec![0.0f32; m * n], vec![0u8; m * n]);
                    gemm_u8s8_epilogue(m, &a, k, 0, &packed, &e, &mut gf, &mut gq, &residual);
                    assert!(
                        gq == wq && gf.iter().zip(&wf).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{} m={m} k={k} n={n} {out:?} table={t} residual={r}",
                        isa.name()
                    );
                    // Into memory holding other values: every output is written.
                    let f32_out = out == OutType::F32;
                    let mut uf = vec![std::mem::MaybeUninit::new(f32::NAN); if f32_out { m * n } else { 0 }];
                    let mut uq = vec![std::mem::MaybeUninit::new(0xA5u8); if f32_out { 0 } else { m * n }];
                    // f32 outputs with a sum added last, as a residual stream in float.
                    let sum: Vec<f32> = if f32_out { (0..m * n).map(|i| (i % 97) as f32 * 0.37 - 11.0).collect() } else { Vec::new() };
                    gemm_u8s8_epilogue_uninit(m, &a, k, &packed, &e, &mut uf, &mut uq, &residual, &sum);
                    // SAFETY: initialised when allocated.
                    let (uf, uq) = unsafe { (uf.assume_init_mut(), uq.assume_init_mut()) };
                    let summed: Vec<f32> = wf.iter().zip(&sum).map(|(y, s)| y + s).collect();
                    let (want_f, want_q) = if f32_out { (&summed[..], &[][..]) } else { (&[][..], &wq[..]) };
                    assert!(
                        uq == want_q && uf.iter().zip(want_f).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "uninitialised outputs: {} m={m} k={k} n={n} {out:?} table={t} residual={r}",
                        isa.name()
                    );
                }
            }
        }
    }
}

#[test]
fn table_lookup_equals_indexing() {
    let table: [u8; 256] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    for n in [0, 1, 63, 64, 65, 200, 1000] {
        let x = values(n, n as u64 + 1);
        let mut out = vec![0u8; n];
        super::elementwise::lookup(&x, &table, &mut out);
        let want: Vec<u8> = x.iter().map(|&b| table[b as usize]).collect();
        assert_eq!(out, want, "n={n}");
        let mut buf = x.clone();
        super::elementwise::lookup_in_place(&mut buf, &table);
        assert_eq!(buf, want, "in place, n={n}");
    }
    for (rows, cols, ld) in [(1, 64, 64), (5, 64, 1152), (3, 65, 70), (4, 31, 33), (2, 130, 200)] {
        let x = values((rows - 1) * ld + cols, ld as u64);
        let mut out = vec![0u8; rows * cols];
        super::elementwise::lookup_rows(&x, ld, rows, cols, &table, &mut out);
        let want: Vec<u8> = (0..rows * cols).map(|i| table[x[i / cols * ld + i % cols] as usize]).collect();
        assert_eq!(out, want, "{rows} rows of {cols} at stride {ld}");
    }
}

#[test]
fn sixteen_bit_product_equals_its_exact_sum_on_every_tier() {
    // Codes near 65535 against full-range weights over K = 1536 (fc2 of ViT-S) pass 2³¹.
    for &(m, k, n, a_zp) in &[(1, 1, 1, 0), (7, 64, 17, 1095), (13, 37, 100, 40000), (11, 1536, 40, 65535), (197, 1536, 70, 0)] {
        let a: Vec<u16> = values(2 * m * k, 8)
            .chunks(2)
            .enumerate()
            .map(|(i, b)| if i % 3 == 0 { 65535 } else { u16::from_le_bytes([b[0], b[1]]) })
            .collect();
        let b: Vec<i8> = values(k * n, 9).into_iter().enumerate().map(|(i, v)| if i % 4 == 0 { -128 } else { v as i8 }).collect();
        let scale: Vec<f32> = (0..n).map(|j| 1e-9 * (j as f32 + 1.0)).collect();
        let bias: Vec<i32> = (0..n as i32).map(|j| j * 70_001 - 1_000_000).collect();
        let exact = |i: usize, j: usize| -> f32 {
            ((0..k).map(|kk| (a[i * k + kk] as i64 - a_zp as i64) * b[kk * n + j] as i64).sum::<i64>() + bias[j] as i64) as f32 * scale[j]
        };
        for out in [OutType::F32, OutType::U8 { zero_point: 131 }, OutType::S8 { zero_point: -5 }] {
            let e = Epilogue { scale: scale.clone(), bias: Some(bias.clone()), out, table: None, residual: None, activation: None };
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let packed = PackedB::from_rows(isa, k, n, 0, &b, n);
                let (mut f, mut q) = (vec![0.0f32; m * n], vec![0u8; m * n]);
                gemm_u16s8_epilogue(m, &a, k, a_zp, &packed, &e, &mut f, &mut q, &[]);
                for i in 0..m {
                    for j in 0..n {
                        let v = exact(i, j);
                        let at = format!("{} m={m} k={k} n={n} a_zp={a_zp} ({i}, {j}) {out:?}", isa.name());
                        match out {
                            OutType::F32 => assert_eq!(f[i * n + j].to_bits(), v.to_bits(), "{at}"),
                            OutType::U8 { zero_point } => {
                                assert_eq!(q[i * n + j], (v.round_ties_even() + zero_point as f32).clamp(0.0, 255.0) as u8, "{at}")
                            }
                            OutType::S8 { zero_point } => {
                                assert_eq!(q[i * n + j] as i8, (v.round_ties_even() + zero_point as f32).clamp(-128.0, 127.0) as i8, "{at}")
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The mean of codes against its definition computed code by code in f64: equal, or one output
/// step apart where the f64 mean lands within float rounding of a rounding boundary.
#[test]
fn mean_rows_match_the_dequantized_mean() {
    use elementwise::{mean_rows_q8, Affine};
    for (n, signed) in [(1, false), (7, true), (49, false), (196, true), (3136, false)] {
        let rows = 5;
        let x = values(rows * n, n as u64);
        let px = Affine { scale: 0.037, zero_point: if signed { -3 } else { 131 }, signed };
        let po = Affine { scale: 0.011, zero_point: if signed { 4 } else { 120 }, signed };
        let mut got = vec![0u8; rows];
        mean_rows_q8(&x, px, n, po, &mut got);
        for (r, row) in x.chunks_exact(n).enumerate() {
            let mean = row.iter().map(|&b| px.dequantize(b) as f64).sum::<f64>() / n as f64;
            let want = po.code(po.quantize(mean as f32));
            assert!((po.code(got[r]) - want).abs() <= 1, "n {n} row {r}: got {} want {want}", po.code(got[r]));
        }
    }
}

/// LayerNorm quantized row by row gives the bits of the f32 LayerNorm followed by the quantizer,
/// with and without gamma and beta, on rows holding large, tiny and infinite values.
#[test]
fn layer_norm_quantized_by_rows_equals_layer_norm_then_quantize() {
    use elementwise::{layer_norm_rows_quantize, quantize, Affine};
    for (c, signed) in [(1, false), (7, true), (384, false), (1000, true)] {
        let rows = 6;
        let mut x: Vec<f32> = values(rows * c, c as u64).iter().map(|&b| (b as f32 - 120.0) * 0.37).collect();
        x[c / 2] = 1e30;
        x[rows * c - 1] = f32::INFINITY;
        x[2 * c] = -1e-30;
        let gamma: Vec<f32> = (0..c).map(|j| 0.5 + (j % 13) as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..c).map(|j| (j % 7) as f32 * -0.3).collect();
        let p = Affine { scale: 0.021, zero_point: if signed { -5 } else { 127 }, signed };
        for (g, b) in [(&gamma[..], &beta[..]), (&[][..], &beta[..]), (&gamma[..], &[][..]), (&[][..], &[][..])] {
            let mut y = vec![0.0f32; x.len()];
            crate::f32::layer_norm_rows(&x, &mut y, c, g, b, 1e-5);
            let mut want = vec![0u8; x.len()];
            quantize(&y, p, &mut want);
            let mut out = vec![std::mem::MaybeUninit::new(0xa5u8); x.len()];
            layer_norm_rows_quantize(&x, c, g, b, 1e-5, p, &mut out);
            // SAFETY: initialised above (and every element written by the kernel).
            let got: Vec<u8> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(got, want, "rows of {c}, gamma {}, beta {}", g.len(), b.len());
        }
    }
}
