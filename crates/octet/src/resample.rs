//! Bicubic and bilinear resizing of 8-bit RGB images exactly as Pillow does it (torchvision and
//! timm resize through Pillow): a separable filter widened by the downscale factor, weights in
//! 22-bit fixed point, a horizontal pass rounded to 8 bits, then a vertical pass.

use image::RgbImage;

use super::Interpolation;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn filter(kind: Interpolation, x: f64) -> f64 {
    let x = x.abs();
    match kind {
        Interpolation::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        _ => (1.0 - x).max(0.0),
    }
}

/// For each output index: the first input index and the fixed-point weights.
fn coefficients(in_size: u32, out_size: u32, kind: Interpolation) -> Vec<(usize, Vec<i32>)> {
    let support = if kind == Interpolation::Bicubic { 2.0 } else { 1.0 };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| filter(kind, (x as f64 - center + 0.5) / filterscale)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let f = v * (1u64 << PRECISION_BITS) as f64;
                    (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `w × h` with Pillow's bicubic or bilinear filter.
pub fn resize(img: &RgbImage, w: u32, h: u32, kind: Interpolation) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let horizontal = if w != iw {
        let k = coefficients(iw, w, kind);
        RgbImage::from_fn(w, ih, |x, y| {
            let (start, ws) = &k[x as usize];
            let mut px = [0u8; 3];
            for (c, out) in px.iter_mut().enumerate() {
                let acc = ws
                    .iter()
                    .enumerate()
                    .fold(1i64 << (PRECISION_BITS - 1), |a, (i, &wt)| a + img.get_pixel((start + i) as u32, y)[c] as i64 * wt as i64);
                *out = clip8(acc);
            }
            image::Rgb(px)
        })
    } else {
        img.clone()
    };
    if h == ih {
        return horizontal;
    }
    let k = coefficients(ih, h, kind);
    RgbImage::from_fn(w, h, |x, y| {
        let (start, ws) = &k[y as usize];
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let acc = ws
                .iter()
                .enumerate()
                .fold(1i64 << (PRECISION_BITS - 1), |a, (i, &wt)| a + horizontal.get_pixel(x, (start + i) as u32)[c] as i64 * wt as i64);
            *out = clip8(acc);
        }
        image::Rgb(px)
    })
}
