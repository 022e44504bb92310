//! Spatial sampling ops: GridSample (ONNX "tensor" group), AffineGrid and Col2Im ("nn" group),
//! over any number of spatial axes. Computed in f64.

use super::elementwise::from_f64;
use super::layout::unravel;
use crate::error::OpResult;
use crate::op::{required, EvalCtx, Fact, Op};
use crate::op_any;
use crate::tensor::{numel, strides, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// Reads `X[n, c]` at the image coordinates `grid[n, …]` (normalised to [-1, 1], the last grid
/// axis listing x first), interpolating and padding as asked.
#[derive(Debug)]
pub struct GridSample {
    pub mode: SampleMode,
    pub padding: Padding,
    pub align_corners: bool,
}

/// Reflects `x` into `[lo, hi]` by the nearer border until it lies inside.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    let (dx, from_low) = if x < lo {
        (lo - x, true)
    } else if x > hi {
        (x - hi, false)
    } else {
        return x;
    };
    let n = (dx / range).floor();
    let r = dx - n * range;
    let even = (n as i64) % 2 == 0;
    match (from_low, even) {
        (true, true) | (false, false) => lo + r,
        (true, false) | (false, true) => hi - r,
    }
}

fn cubic_coeffs(t: f64) -> [f64; 4] {
    let a = -0.75;
    let x = t.abs();
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    [far(x + 1.0), near(x), near(1.0 - x), far(2.0 - x)]
}

impl GridSample {
    fn borders(&self, dims: &[usize]) -> Vec<(f64, f64)> {
        dims.iter().map(|&d| if self.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) }).collect()
    }

    fn pixel(&self, plane: &[f64], dims: &[usize], st: &[usize], idx: &[i64], borders: &[(f64, f64)]) -> f64 {
        let mut off = 0usize;
        for a in 0..dims.len() {
            let d = dims[a] as i64;
            let i = match self.padding {
                Padding::Zeros if idx[a] < 0 || idx[a] >= d => return 0.0,
                Padding::Zeros => idx[a],
                Padding::Border => idx[a].clamp(0, d - 1),
                Padding::Reflection => (reflect(idx[a] as f64, borders[a].0, borders[a].1) as i64).clamp(0, d - 1),
            };
            off += i as usize * st[a];
        }
        plane[off]
    }

    fn sample(&self, plane: &[f64], dims: &[usize], st: &[usize], x: &[f64], borders: &[(f64, f64)]) -> f64 {
        let dn = dims.len();
        let taps: &[i64] = match self.mode {
            SampleMode::Nearest => {
                let idx: Vec<i64> = x.iter().map(|&v| v as i64).collect();
                return self.pixel(plane, dims, st, &idx, borders);
            }
            SampleMode::Linear => &[0, 1],
            SampleMode::Cubic => &[-1, 0, 1, 2],
        };
        // Coordinates far outside read only padding: kept within a few pixels of the image so
        // that the tap arithmetic stays small (zeros padding reads 0 there either way).
        let x: Vec<f64> = x.iter().zip(dims).map(|(&v, &d)| if v.is_nan() { -4.0 } else { v.clamp(-4.0, d as f64 + 3.0) }).collect();
        let base: Vec<i64> = x.iter().map(|v| v.floor() as i64).collect();
        let weights: Vec<Vec<f64>> = x
            .iter()
            .zip(&base)
            .map(|(&v, &b)| {
                let t = v - b as f64;
                if self.mode == SampleMode::Linear {
                    vec![1.0 - t, t]
                } else {
                    cubic_coeffs(t).to_vec()
                }
            })
            .collect();
        let k = taps.len();
        let mut sum = 0.0;
        let mut corner = vec![0usize; dn];
        let mut idx = vec![0i64; dn];
        for c in 0..k.pow(dn as u32) {
            unravel(c, &vec![k; dn], &mut corner);
            let mut w = 1.0;
            for a in 0..dn {
                idx[a] = base[a] + taps[corner[a]];
                w *= weights[a][corner[a]];
            }
            if w != 0.0 {
                sum += w * self.pixel(plane, dims, st, &idx, borders);
            }
        }
        sum
    }
}

impl Op for GridSample {
    fn name(&self) -> &'static str {
        "GridSample"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, g) = (required(inputs, 0, "X")?, required(inputs, 1, "grid")?);
        let sp = x.shape.len().saturating_sub(2);
        if sp == 0 || g.shape.len() != sp + 2 || g.shape[0] != x.shape[0] || g.shape[sp + 1] != sp || !x.dtype.is_float() {
            return Err(format!("X {:?} and grid {:?} do not describe a {sp}-D sampling", x.shape, g.shape));
        }
        Ok(vec![Fact::new(x.dtype, x.shape[..2].iter().chain(&g.shape[1..=sp]).copied().collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, gt) = (required(inputs, 0, "X")?, required(inputs, 1, "grid")?);
        let shape = self
            .infer(&[Some(&Fact::new(xt.dtype(), xt.shape().to_vec())), Some(&Fact::new(gt.dtype(), gt.shape().to_vec()))])?
            .remove(0)
            .shape;
        let s = xt.shape();
        let (dims, sp) = (&s[2..], s.len() - 2);
        let st = strides(dims);
        let plane_len = numel(dims);
        let points = numel(&gt.shape()[1..=sp]);
        let (xv, gv) = (xt.to_f64_vec(), gt.to_f64_vec());
        let borders = self.borders(dims);
        let mut out = Vec::with_capacity(numel(&shape));
        let mut x = vec![0.0; sp];
        for n in 0..s[0] {
            for c in 0..s[1] {
                let plane = &xv[(n * s[1] + c) * plane_len..][..plane_len];
                for p in 0..points {
                    let g = &gv[(n * points + p) * sp..][..sp];
                    for a in 0..sp {
                        let norm = g[sp - 1 - a];
                        let d = dims[a] as f64;
                        let mut v = if self.align_corners { (norm + 1.0) / 2.0 * (d - 1.0) } else { ((norm + 1.0) * d - 1.0) / 2.0 };
                        if self.mode == SampleMode::Nearest {
                            v = v.round_ties_even();
                        }
                        let (lo, hi) = borders[a];
                        if v < lo || v > hi {
                            v = match self.padding {
                                Padding::Border => v.clamp(0.0, d - 1.0),
                                Padding::Reflection => reflect(v, lo, hi),
                                Padding::Zeros => v,
                            };
                        }
                        x[a] = v;
                    }
                    out.push(self.sample(plane, dims, &st, &x, &borders));
                }
            }
        }
        Ok(vec![Tensor::from_parts(shape, from_f64(xt.dtype(), out))])
    }
    op_any!();
}

/// The sampling grid of an affine transform `theta` (N × D × (D + 1)) over an output `size`
/// (N, C, spatial…): normalised coordinates, x first along the last axis.
#[derive(Debug)]
pub struct AffineGrid {
    pub align_corners: bool,
}

impl AffineGrid {
    fn out_shape(theta: &[usize], size: &[i64]) -> OpResult<Vec<usize>> {
        let sp = size
            .len()
            .checked_sub(2)
            .filter(|&s| (2..=3).contains(&s))
            .ok_or_else(|| format!("size {size:?} must be (N, C, H, W) or (N, C, D, H, W)"))?;
        if size.iter().any(|&d| d < 0) || theta != [size[0] as usize, sp, sp + 1] {
            return Err(format!("theta {theta:?} does not fit size {size:?}"));
        }
        Ok(std::iter::once(size[0] as usize).chain(size[2..].iter().map(|&d| d as usize)).chain([sp]).collect())
    }
}

impl Op for AffineGrid {
    fn name(&self) -> &'static str {
        "AffineGrid"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (t, size) = (required(inputs, 0, "theta")?, required(inputs, 1, "size")?);
        let size = size.const_ints().ok_or("size must be a constant")?;
        Ok(vec![Fact::new(t.dtype, Self::out_shape(&t.shape, &size)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (t, size) = (required(inputs, 0, "theta")?, required(inputs, 1, "size")?);
        let size = size.to_i64_vec().ok_or("size must be integers")?;
        let shape = Self::out_shape(t.shape(), &size)?;
        let sp = size.len() - 2;
        let dims: Vec<usize> = size[2..].iter().map(|&d| d as usize).collect();
        let coord = |i: usize, d: usize| -> f64 {
            if self.align_corners {
                if d <= 1 {
                    0.0
                } else {
                    -1.0 + 2.0 * i as f64 / (d - 1) as f64
                }
            } else {
                (2.0 * i as f64 + 1.0) / d as f64 - 1.0
            }
        };
        let th = t.to_f64_vec();
        let points = numel(&dims);
        let mut out = Vec::with_capacity(numel(&shape));
        let mut pos = vec![0usize; sp];
        for n in 0..shape[0] {
            let m = &th[n * sp * (sp + 1)..][..sp * (sp + 1)];
            for p in 0..points {
                unravel(p, &dims, &mut pos);
                // Homogeneous source point, x first: (x, y[, z], 1).
                let src: Vec<f64> = (0..sp).map(|a| coord(pos[sp - 1 - a], dims[sp - 1 - a])).chain([1.0]).collect();
                for r in 0..sp {
                    out.push((0..=sp).map(|k| m[r * (sp + 1) + k] * src[k]).sum());
                }
            }
        }
        Ok(vec![Tensor::from_parts(shape, from_f64(t.dtype(), out))])
    }
    op_any!();
}

/// Rearranges column blocks (N, C·Πblock, L) back into an image (N, C, image…), summing overlaps.
#[derive(Debug)]
pub struct Col2Im {
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
}

/// Block sizes, block counts per axis, and per axis (image size, dilation, pad begin, stride).
type Col2ImPlan = (Vec<usize>, Vec<usize>, Vec<[usize; 4]>);

impl Col2Im {
    fn plan(&self, x: &[usize], image: &[i64], block: &[i64]) -> OpResult<Col2ImPlan> {
        let sp = image.len();
        if block.len() != sp || x.len() != 3 || image.iter().chain(block).any(|&d| d <= 0) {
            return Err(format!("input {x:?}, image_shape {image:?} and block_shape {block:?} do not fit"));
        }
        let get = |v: &Option<Vec<i64>>, i: usize, d: i64| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(d).max(0) as usize;
        let blocks: Vec<usize> = block.iter().map(|&b| b as usize).collect();
        let bprod: usize = blocks.iter().product();
        if !x[1].is_multiple_of(bprod) {
            return Err(format!("{} rows are not a multiple of the block size {bprod}", x[1]));
        }
        let axes: Vec<[usize; 4]> = (0..sp)
            .map(|a| [image[a] as usize, get(&self.dilations, a, 1).max(1), get(&self.pads, a, 0), get(&self.strides, a, 1).max(1)])
            .collect();
        let counts: Vec<usize> = axes
            .iter()
            .zip(&blocks)
            .enumerate()
            .map(|(a, ([size, dil, pb, st], &b))| {
                let pe = get(&self.pads, a + sp, 0);
                let eff = (b - 1).checked_mul(*dil).and_then(|v| v.checked_add(1));
                let padded = size.checked_add(*pb).and_then(|v| v.checked_add(pe));
                match (eff, padded) {
                    (Some(eff), Some(padded)) => padded.checked_sub(eff).map(|span| span / st + 1).unwrap_or(0),
                    _ => usize::MAX,
                }
            })
            .collect();
        if numel(&counts) != x[2] {
            return Err(format!("{} columns, but the geometry gives {}", x[2], numel(&counts)));
        }
        Ok((blocks, counts, axes))
    }
}

impl Op for Col2Im {
    fn name(&self) -> &'static str {
        "Col2Im"
    }
    fn value_operands(&self) -> &'static [usize] {
        &[1, 2]
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let x = required(inputs, 0, "input")?;
        let image = required(inputs, 1, "image_shape")?.const_ints().ok_or("image_shape must be a constant")?;
        let block = required(inputs, 2, "block_shape")?.const_ints().ok_or("block_shape must be a constant")?;
        let (blocks, _, _) = self.plan(&x.shape, &image, &block)?;
        let c = x.shape[1] / numel(&blocks);
        Ok(vec![Fact::new(x.dtype, [x.shape[0], c].into_iter().chain(image.iter().map(|&d| d as usize)).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let x = required(inputs, 0, "input")?;
        let image = required(inputs, 1, "image_shape")?.to_i64_vec().ok_or("image_shape must be integers")?;
        let block = required(inputs, 2, "block_shape")?.to_i64_vec().ok_or("block_shape must be integers")?;
        let s = x.shape();
        let (blocks, counts, axes) = self.plan(s, &image, &block)?;
        let sp = image.len();
        let bprod = numel(&blocks);
        let c = s[1] / bprod;
        let img: Vec<usize> = axes.iter().map(|a| a[0]).collect();
        let ist = strides(&img);
        let plane = numel(&img);
        let v = x.to_f64_vec();
        let mut out = vec![0.0; s[0] * c * plane];
        let (mut bpos, mut lpos) = (vec![0usize; sp], vec![0usize; sp]);
        for n in 0..s[0] {
            for ch in 0..c {
                for b in 0..bprod {
                    unravel(b, &blocks, &mut bpos);
                    for l in 0..s[2] {
                        unravel(l, &counts, &mut lpos);
                        let mut off = 0usize;
                        let mut inside = true;
                        for a in 0..sp {
                            let [size, dil, pb, st] = axes[a];
                            let p = (lpos[a] * st + bpos[a] * dil) as i64 - pb as i64;
                            if p < 0 || p >= size as i64 {
                                inside = false;
                                break;
                            }
                            off += p as usize * ist[a];
                        }
                        if inside {
                            out[(n * c + ch) * plane + off] += v[((n * s[1]) + ch * bprod + b) * s[2] + l];
                        }
                    }
                }
            }
        }
        let shape = [s[0], c].into_iter().chain(img).collect();
        Ok(vec![Tensor::from_parts(shape, from_f64(x.dtype(), out))])
    }
    op_any!();
}

/// 2-D deformable convolution: each kernel tap samples X bilinearly (zeros outside) at its
/// regular position plus a learned offset, optionally scaled by a mask.
#[derive(Debug)]
pub struct DeformConv {
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub group: usize,
    pub offset_group: usize,
}

impl DeformConv {
    fn check(&self, x: &[usize], w: &[usize], off: &[usize]) -> OpResult<()> {
        let (g, og) = (self.group.max(1), self.offset_group.max(1));
        if x.len() != 4 || w.len() != 4 || off.len() != 4 {
            return Err(format!("only 2-D deformable convolution is supported: X {x:?}, W {w:?}, offset {off:?}"));
        }
        if x[1] != w[1] * g || !w[0].is_multiple_of(g) || !x[1].is_multiple_of(og) || off[1] != og * w[2] * w[3] * 2 || off[0] != x[0] {
            return Err(format!("X {x:?}, W {w:?} and offset {off:?} do not fit group {g} and offset_group {og}"));
        }
        Ok(())
    }
}

impl Op for DeformConv {
    fn name(&self) -> &'static str {
        "DeformConv"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, w, off) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?, required(inputs, 2, "offset")?);
        self.check(&x.shape, &w.shape, &off.shape)?;
        Ok(vec![Fact::new(x.dtype, vec![x.shape[0], w.shape[0], off.shape[2], off.shape[3]])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, wt, ot) = (required(inputs, 0, "X")?, required(inputs, 1, "W")?, required(inputs, 2, "offset")?);
        let (xs, ws, os) = (xt.shape(), wt.shape(), ot.shape());
        self.check(xs, ws, os)?;
        let get = |v: &Option<Vec<i64>>, i: usize, d: i64| v.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(d) as f64;
        let (sh, sw, dh, dw) = (get(&self.strides, 0, 1), get(&self.strides, 1, 1), get(&self.dilations, 0, 1), get(&self.dilations, 1, 1));
        let (ph, pw) = (get(&self.pads, 0, 0), get(&self.pads, 1, 0));
        let (n, c, ih, iw) = (xs[0], xs[1], xs[2], xs[3]);
        let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let (oh, ow) = (os[2], os[3]);
        let (g, og) = (self.group.max(1), self.offset_group.max(1));
        let (x, w, off) = (xt.to_f64_vec(), wt.to_f64_vec(), ot.to_f64_vec());
        let mask = crate::op::optional(inputs, 4).map(|t| t.to_f64_vec());
        let bias = crate::op::optional(inputs, 3).map(|t| t.to_f64_vec());
        let pixel = |plane: &[f64], y: i64, xx: i64| {
            if y < 0 || xx < 0 || y >= ih as i64 || xx >= iw as i64 {
                0.0
            } else {
                plane[y as usize * iw + xx as usize]
            }
        };
        let bilinear = |plane: &[f64], y: f64, xx: f64| {
            // Far outside (or not a number) every tap reads the zero padding.
            if !(y > -2.0 && y < ih as f64 + 1.0 && xx > -2.0 && xx < iw as f64 + 1.0) {
                return 0.0;
            }
            let (y0, x0) = (y.floor(), xx.floor());
            let (ty, tx) = (y - y0, xx - x0);
            let (y0, x0) = (y0 as i64, x0 as i64);
            (1.0 - ty) * ((1.0 - tx) * pixel(plane, y0, x0) + tx * pixel(plane, y0, x0 + 1))
                + ty * ((1.0 - tx) * pixel(plane, y0 + 1, x0) + tx * pixel(plane, y0 + 1, x0 + 1))
        };
        let taps = kh * kw;
        let mut out = vec![0.0f64; n * m * oh * ow];
        for b in 0..n {
            for mo in 0..m {
                let grp = mo / (m / g);
                for i in 0..oh {
                    for j in 0..ow {
                        let mut sum = bias.as_ref().map_or(0.0, |bv| bv[mo]);
                        for ci in 0..cg {
                            let ch = grp * cg + ci;
                            let ogi = ch / (c / og);
                            let plane = &x[(b * c + ch) * ih * iw..][..ih * iw];
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let tap = ki * kw + kj;
                                    let at = |k: usize| off[(((b * og + ogi) * taps + tap) * 2 + k) * oh * ow + i * ow + j];
                                    let y = i as f64 * sh - ph + ki as f64 * dh + at(0);
                                    let xx = j as f64 * sw - pw + kj as f64 * dw + at(1);
                                    let mk = mask.as_ref().map_or(1.0, |mv| mv[((b * og + ogi) * taps + tap) * oh * ow + i * ow + j]);
                                    sum += w[((mo * cg + ci) * kh + ki) * kw + kj] * mk * bilinear(plane, y, xx);
                                }
                            }
                        }
                        out[((b * m + mo) * oh + i) * ow + j] = sum;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_parts(vec![n, m, oh, ow], from_f64(xt.dtype(), out))])
    }
    op_any!();
}

/// RoiAlign: per region of interest, an output_height × output_width grid of bins, each the
/// average (or max) of bilinear samples on a regular sub-grid, as ONNX's reference computes it.
#[derive(Debug)]
pub struct RoiAlign {
    pub max: bool,
    pub half_pixel: bool,
    pub output_height: usize,
    pub output_width: usize,
    pub sampling_ratio: usize,
    pub spatial_scale: f64,
}

impl RoiAlign {
    /// The four corner offsets and weights of a sample at (y, x), or `None` outside the image.
    fn corners(y: f64, x: f64, h: usize, w: usize) -> Option<[(usize, f64); 4]> {
        if h == 0 || w == 0 || !(y >= -1.0 && y <= h as f64 && x >= -1.0 && x <= w as f64) {
            return None;
        }
        let (mut y, mut x) = (y.max(0.0), x.max(0.0));
        let (mut yl, mut xl) = (y as usize, x as usize);
        let yh = if yl >= h - 1 {
            yl = h - 1;
            y = yl as f64;
            yl
        } else {
            yl + 1
        };
        let xh = if xl >= w - 1 {
            xl = w - 1;
            x = xl as f64;
            xl
        } else {
            xl + 1
        };
        let (ly, lx) = (y - yl as f64, x - xl as f64);
        let (hy, hx) = (1.0 - ly, 1.0 - lx);
        Some([(yl * w + xl, hy * hx), (yl * w + xh, hy * lx), (yh * w + xl, ly * hx), (yh * w + xh, ly * lx)])
    }
}

impl Op for RoiAlign {
    fn name(&self) -> &'static str {
        "RoiAlign"
    }
    fn infer(&self, inputs: &[Option<&Fact>]) -> OpResult<Vec<Fact>> {
        let (x, rois, idx) = (required(inputs, 0, "X")?, required(inputs, 1, "rois")?, required(inputs, 2, "batch_indices")?);
        if x.shape.len() != 4 || rois.shape.len() != 2 || rois.shape[1] != 4 || idx.shape != [rois.shape[0]] || !x.dtype.is_float() {
            return Err(format!(
                "X {:?}, rois {:?} and batch_indices {:?} must be (N, C, H, W), (R, 4) and (R)",
                x.shape, rois.shape, idx.shape
            ));
        }
        Ok(vec![Fact::new(x.dtype, vec![rois.shape[0], x.shape[1], self.output_height, self.output_width])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>], _: &EvalCtx) -> OpResult<Vec<Tensor>> {
        let (xt, rt, it) = (required(inputs, 0, "X")?, required(inputs, 1, "rois")?, required(inputs, 2, "batch_indices")?);
        let fact = self
            .infer(&[
                Some(&Fact::new(xt.dtype(), xt.shape().to_vec())),
                Some(&Fact::new(rt.dtype(), rt.shape().to_vec())),
                Some(&Fact::new(it.dtype(), it.shape().to_vec())),
            ])?
            .remove(0);
        let [n, c, h, w] = [xt.shape()[0], xt.shape()[1], xt.shape()[2], xt.shape()[3]];
        let (ph, pw) = (self.output_height, self.output_width);
        let (x, rois) = (xt.to_f64_vec(), rt.to_f64_vec());
        let batch = it.to_i64_vec().ok_or("batch_indices must be integers")?;
        let mut out = Vec::with_capacity(fact.shape.iter().product());
        for (r, &b) in batch.iter().enumerate() {
            let b = usize::try_from(b).ok().filter(|&b| b < n).ok_or_else(|| format!("batch index {b} is outside the batch of {n}"))?;
            let off = if self.half_pixel { 0.5 } else { 0.0 };
            let roi = &rois[r * 4..r * 4 + 4];
            let (sw, sh) = (roi[0] * self.spatial_scale - off, roi[1] * self.spatial_scale - off);
            let (mut rw, mut rh) = (roi[2] * self.spatial_scale - off - sw, roi[3] * self.spatial_scale - off - sh);
            if !self.half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            let (bh, bw) = (rh / ph as f64, rw / pw as f64);
            // Samples per bin and axis: the attribute, or enough to cover the bin (at most 256).
            let grid = |extent: f64, bins: usize| {
                if self.sampling_ratio > 0 {
                    self.sampling_ratio.min(256)
                } else {
                    (extent / bins as f64).ceil().clamp(0.0, 256.0) as usize
                }
            };
            let (gh, gw) = (grid(rh, ph), grid(rw, pw));
            let count = (gh * gw).max(1) as f64;
            for ch in 0..c {
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                for py in 0..ph {
                    for px in 0..pw {
                        let (mut acc, mut best): (f64, Option<f64>) = (0.0, None);
                        for iy in 0..gh {
                            let y = sh + py as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                            for ix in 0..gw {
                                let xx = sw + px as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                                let taps = Self::corners(y, xx, h, w).unwrap_or([(0, 0.0); 4]);
                                if self.max {
                                    let v = taps.iter().map(|&(p, wt)| wt * plane[p]).fold(f64::NEG_INFINITY, f64::max);
                                    best = Some(best.map_or(v, |m| m.max(v)));
                                } else {
                                    acc += taps.iter().map(|&(p, wt)| wt * plane[p]).sum::<f64>();
                                }
                            }
                        }
                        out.push(if self.max { best.unwrap_or(0.0) } else { acc / count });
                    }
                }
            }
        }
        Ok(vec![Tensor::from_parts(fact.shape, from_f64(xt.dtype(), out))])
    }
    op_any!();
}
