//! AVX2 without i16 saturation: u8 and s8 are widened to i16 and `vpmaddwd` adds pairs of
//! products into i32 lanes (exact: |255 · 128 · 2| < 2^31).
//!
//! B is packed as i16 in panels of 8 columns; for every pair of k, the 8 columns' 2 values
//! follow each other (32 bytes, one ymm). The microkernel keeps 6 rows × 16 columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const NR: usize = 8;
const MR: usize = 6;

pub fn pack(k: usize, n: usize, get: impl Fn(usize, usize) -> i8) -> Vec<u8> {
    super::pack_panels(k, n, NR, 2, |kk, j| get(kk, j) as i16).iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<const R: usize, const P: usize>(k: usize, a: *const u8, lda: usize, b: *const u8, k2: usize, c: *mut i32, ldc: usize, cols: usize) {
    let mut acc = [[_mm256_setzero_si256(); P]; R];
    for g in 0..k2 {
        let bv: [__m256i; P] = std::array::from_fn(|p| _mm256_loadu_si256(b.add((p * k2 + g) * NR * 4) as *const __m256i));
        for r in 0..R {
            let row = a.add(r * lda + g * 2);
            let hi = if g * 2 + 1 < k { *row.add(1) as i32 } else { 0 };
            let av = _mm256_set1_epi32(*row as i32 | (hi << 16));
            for p in 0..P {
                acc[r][p] = _mm256_add_epi32(acc[r][p], _mm256_madd_epi16(av, bv[p]));
            }
        }
    }
    for r in 0..R {
        for p in 0..P {
            let start = p * NR;
            if start >= cols {
                break;
            }
            let valid = (cols - start).min(NR);
            let dst = c.add(r * ldc + start);
            if valid == NR {
                _mm256_storeu_si256(dst as *mut __m256i, acc[r][p]);
            } else {
                let mut tmp = [0i32; NR];
                _mm256_storeu_si256(tmp.as_mut_ptr() as *mut __m256i, acc[r][p]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
            }
        }
    }
}

/// Raw sums `c = a · B` for `m` rows.
///
/// # Safety
/// The CPU supports AVX2; `b` was packed by [`pack`] for `k × n`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], c: &mut [i32], ldc: usize) {
    let k2 = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut p = 0;
    while p < panels {
        let np = if p + 1 < panels { 2 } else { 1 };
        let cols = (n - p * NR).min(np * NR);
        let bp = b.add(p * k2 * NR * 4);
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let (ai, ci) = (a.add(i * lda), c.add(i * ldc + p * NR));
            macro_rules! go {
                ($($r:literal)*) => {
                    match (rows, np) {
                        $(($r, 2) => tile::<$r, 2>(k, ai, lda, bp, k2, ci, ldc, cols),
                          ($r, _) => tile::<$r, 1>(k, ai, lda, bp, k2, ci, ldc, cols),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1 2 3 4 5 6);
            i += MR;
        }
        p += np;
    }
}
