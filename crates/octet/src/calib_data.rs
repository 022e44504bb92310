//! Calibration data: a `.npy` of stacked samples, a `.npz` of named inputs, or a folder of
//! images with timm's evaluation transform.

use std::path::Path;

use anyhow::{bail, Context, Result};
use octet_graph::ops::view::View;
use octet_graph::{Graph, Tensor};

use crate::npy;

#[path = "resample.rs"]
mod resample;

/// How the shorter side is resized (PIL's filters, as timm uses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

impl Interpolation {
    /// Every interpolation, by the name the CLI and Python take.
    pub const ALL: [(&'static str, Interpolation); 3] =
        [("bicubic", Interpolation::Bicubic), ("bilinear", Interpolation::Bilinear), ("nearest", Interpolation::Nearest)];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, i)| *i == self).map(|(n, _)| *n).unwrap_or_default()
    }
}

impl std::str::FromStr for Interpolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, i)| *i)
            .ok_or_else(|| format!("unknown interpolation '{s}' (one of: {})", names.join(", ")))
    }
}

/// timm's eval transform: resize the shorter side to `floor(size / crop_pct)`, center-crop
/// `size × size`, scale to [0, 1], normalise with mean and std.
#[derive(Clone, Debug)]
pub struct Preprocess {
    pub size: u32,
    pub crop_pct: f32,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Preprocess {
    /// The ImageNet defaults timm uses for ViTs at 224.
    fn default() -> Self {
        Preprocess {
            size: 224,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl Preprocess {
    /// The key under which `octet quantize` records the transform of an image-folder calibration
    /// in the quantized file's metadata (`metadata_props`), so that pipelines can read it back.
    pub const METADATA_KEY: &'static str = "octet.preprocess";

    /// The transform as JSON: `{"image_size", "crop_pct", "interpolation", "mean", "std"}`, the
    /// names of the CLI's flags.
    pub fn to_json(&self) -> String {
        // f32s written as their shortest decimal (0.229, not 0.2290000021457672): read back as f32, the same bits.
        let short = |x: f32| -> serde_json::Value { serde_json::from_str(&format!("{x}")).unwrap_or(serde_json::Value::Null) };
        let triple = |t: [f32; 3]| serde_json::Value::Array(t.into_iter().map(short).collect());
        serde_json::json!({
            "image_size": self.size,
            "crop_pct": short(self.crop_pct),
            "interpolation": self.interpolation.name(),
            "mean": triple(self.mean),
            "std": triple(self.std),
        })
        .to_string()
    }

    /// Reads [`Preprocess::to_json`]'s form back; an entry it does not have keeps its default.
    pub fn from_json(text: &str) -> Result<Preprocess> {
        let v: serde_json::Value = serde_json::from_str(text).context("the recorded image transform is not JSON")?;
        let mut p = Preprocess::default();
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            match v.get(key) {
                None => Ok(None),
                Some(x) => {
                    let a: Vec<f32> = serde_json::from_value(x.clone()).with_context(|| format!("'{key}' is not a list of numbers"))?;
                    Ok(Some(a.try_into().map_err(|_| anyhow::anyhow!("'{key}' must hold 3 numbers (R, G, B)"))?))
                }
            }
        };
        if let Some(n) = v.get("image_size") {
            p.size =
                n.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0).context("'image_size' must be a positive integer")?;
        }
        if let Some(c) = v.get("crop_pct") {
            p.crop_pct = c.as_f64().filter(|c| *c > 0.0 && c.is_finite()).context("'crop_pct' must be a positive number")? as f32;
        }
        if let Some(i) = v.get("interpolation") {
            p.interpolation = i.as_str().context("'interpolation' must be a name")?.parse().map_err(anyhow::Error::msg)?;
        }
        p.mean = triple("mean")?.unwrap_or(p.mean);
        p.std = triple("std")?.unwrap_or(p.std);
        Ok(p)
    }
}

/// Decodes one image file and applies the transform: a `[1, 3, size, size]` float32 tensor.
pub fn preprocess_image(path: &Path, p: &Preprocess) -> Result<Tensor> {
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open '{}'", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    transform(reader, &path.display().to_string(), p)
}

/// [`preprocess_image`] of an encoded image in memory (JPEG or PNG bytes), named `what` in
/// errors: the same decoder and transform, so the same bits as from the file.
pub fn preprocess_bytes(bytes: &[u8], what: &str, p: &Preprocess) -> Result<Tensor> {
    let reader =
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().with_context(|| format!("cannot read '{what}'"))?;
    transform(reader, what, p)
}

/// Decodes with the allocation limit and applies the transform; `what` names the image in errors.
fn transform<R: std::io::BufRead + std::io::Seek>(mut reader: image::ImageReader<R>, what: &str, p: &Preprocess) -> Result<Tensor> {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(limits.max_alloc.unwrap_or(u64::MAX).min(octet_graph::limits::max_tensor_bytes()));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| anyhow::anyhow!("'{what}' is not a readable JPEG or PNG image: {e}"))?.to_rgb8();
    transform_rgb(&img, what, p)
}

/// The transform of an image already decoded: `rgb` holds `height × width × 3` bytes, row by
/// row (a decoded JPEG or PNG, as `ray.data.read_images` gives them). The same arithmetic as
/// from the file; equal bits to [`preprocess_image`] when the decoders agree (PNG always; JPEG
/// decoders may differ by a level).
pub fn preprocess_rgb(rgb: Vec<u8>, width: u32, height: u32, what: &str, p: &Preprocess) -> Result<Tensor> {
    let img = image::RgbImage::from_raw(width, height, rgb).with_context(|| format!("'{what}': not {height}×{width}×3 bytes"))?;
    transform_rgb(&img, what, p)
}

fn transform_rgb(img: &image::RgbImage, what: &str, p: &Preprocess) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        bail!("'{what}' is an empty image ({w}×{h})");
    }
    let short = (p.size as f32 / p.crop_pct).floor() as u32;
    let long = |a: u32, b: u32| short as u64 * a as u64 / b as u64;
    let (nw, nh) = if w <= h { (short as u64, long(h, w)) } else { (long(w, h), short as u64) };
    let resized_shape = [nh as usize, nw as usize, 3];
    octet_graph::limits::check_tensor(octet_graph::DType::U8, &resized_shape)
        .map_err(|m| anyhow::anyhow!("'{what}' ({w}×{h}) resized for the crop: {m}"))?;
    let (nw, nh) = (u32::try_from(nw)?, u32::try_from(nh)?);
    if nw < p.size || nh < p.size {
        bail!("'{what}': resized to {nw}×{nh}, smaller than the {}×{} crop (crop_pct {} > 1?)", p.size, p.size, p.crop_pct);
    }
    let resized = match p.interpolation {
        Interpolation::Nearest => image::imageops::resize(img, nw, nh, image::imageops::FilterType::Nearest),
        filter => resample::resize(img, nw, nh, filter),
    };
    let top = ((nh - p.size) as f32 / 2.0).round_ties_even() as u32;
    let left = ((nw - p.size) as f32 / 2.0).round_ties_even() as u32;
    let s = p.size as usize;
    let mut out = vec![0.0f32; 3 * s * s];
    for y in 0..s {
        for x in 0..s {
            let px = resized.get_pixel(left + x as u32, top + y as u32);
            for c in 0..3 {
                out[(c * s + y) * s + x] = (px[c] as f32 / 255.0 - p.mean[c]) / p.std[c];
            }
        }
    }
    Ok(Tensor::f32(vec![1, 3, s, s], out))
}

/// The image files of a folder (JPEG and PNG by extension), sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list '{}'", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("'{}' holds no .jpg, .jpeg or .png files", dir.display());
    }
    Ok(files)
}

/// Sample `i` of a stacked array, shaped as the model input (with its batch axis of 1).
fn sample(stack: &Tensor, i: usize, input_rank: usize) -> Tensor {
    let mut v = View::of(stack.shape());
    v.base = i as isize * v.strides[0];
    if stack.rank() == input_rank {
        v.shape[0] = 1;
        v.copy(stack)
    } else {
        v.shape.remove(0);
        v.strides.remove(0);
        let t = v.copy(stack);
        let mut shape = t.shape().to_vec();
        shape.insert(0, 1);
        t.reshaped(shape)
    }
}

/// Loads calibration samples for `graph` from `path` (at most `limit`); each sample holds the
/// model's inputs in graph order, batch 1.
pub fn load(path: &Path, graph: &Graph, pre: &Preprocess, limit: Option<usize>) -> Result<Vec<Vec<Tensor>>> {
    let names: Vec<&str> = (0..graph.inputs.len()).map(|i| graph.input_name(i)).collect();
    let take = |n: usize| limit.map_or(n, |l| l.min(n));
    if path.is_dir() {
        if names.len() != 1 {
            bail!("a folder of images calibrates single-input models; this one has {} inputs ({})", names.len(), names.join(", "));
        }
        let files = image_files(path)?;
        return files.iter().take(take(files.len())).map(|f| Ok(vec![preprocess_image(f, pre)?])).collect();
    }
    let stacks: Vec<(String, Tensor)> = match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => npy::read_npz(path)?,
        Some("npy") => {
            if names.len() != 1 {
                bail!("the model has {} inputs ({}): pass a .npz with one array per input", names.len(), names.join(", "));
            }
            vec![(names[0].to_string(), npy::read(path)?)]
        }
        _ => bail!("'{}' is neither a .npy, a .npz nor a folder of images", path.display()),
    };
    from_stacks(&stacks, graph, limit, &format!("'{}'", path.display()))
}

/// Splits named arrays of stacked samples (one per model input, samples along the first axis)
/// into samples (at most `limit`); `what` names the data in errors. One array named `""` is the
/// data of a single-input model.
pub fn from_stacks(stacks: &[(String, Tensor)], graph: &Graph, limit: Option<usize>, what: &str) -> Result<Vec<Vec<Tensor>>> {
    let names: Vec<&str> = (0..graph.inputs.len()).map(|i| graph.input_name(i)).collect();
    let take = |n: usize| limit.map_or(n, |l| l.min(n));
    let unnamed = matches!(stacks, [(n, _)] if n.is_empty());
    if unnamed && names.len() != 1 {
        bail!("the model has {} inputs ({}): {what} must name an array for each", names.len(), names.join(", "));
    }
    let mut ordered = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (_, t) = stacks.iter().find(|(n, _)| n == name || unnamed).with_context(|| {
            let have: Vec<&str> = stacks.iter().map(|(n, _)| n.as_str()).collect();
            format!("{what} has no array for input '{name}' (it has: {})", have.join(", "))
        })?;
        let input = &graph.inputs[i];
        if t.dtype() != input.dtype {
            bail!("{what}: the data for input '{name}' is {}, the model takes {}", t.dtype(), input.dtype);
        }
        let rank = input.dims.len();
        if t.rank() != rank && t.rank() + 1 != rank || t.rank() == 0 {
            bail!(
                "{what}: input '{name}' is {} but the data has shape {:?}; stack samples along the first axis",
                input.describe_dims(),
                t.shape()
            );
        }
        ordered.push(t);
    }
    let n = ordered[0].shape()[0];
    if let Some((i, t)) = ordered.iter().enumerate().find(|(_, t)| t.shape()[0] != n) {
        bail!("{what}: input '{}' has {} samples but '{}' has {n}", names[i], t.shape()[0], names[0]);
    }
    Ok((0..take(n)).map(|s| ordered.iter().enumerate().map(|(i, t)| sample(t, s, graph.inputs[i].dims.len())).collect()).collect())
}
