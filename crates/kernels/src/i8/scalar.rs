//! The reference: a plain triple loop.

#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, a: &[u8], lda: usize, b: &[u8], c: &mut [i32], ldc: usize) {
    for i in 0..m {
        let ci = &mut c[i * ldc..i * ldc + n];
        ci.fill(0);
        for kk in 0..k {
            let av = a[i * lda + kk] as i32;
            let brow = &b[kk * n..kk * n + n];
            for (cv, &bv) in ci.iter_mut().zip(brow) {
                *cv = cv.wrapping_add(av * (bv as i8) as i32);
            }
        }
    }
}
