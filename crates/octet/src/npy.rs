//! `.npy` files ↔ [`Tensor`]s, through the `npyz` crate. Writes are atomic.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;
use octet_graph::ops::view::View;
use octet_graph::{DType, Data, Tensor};

/// Reads a `.npy` of any element type octet has: float32, float64, float16, signed and
/// unsigned integers of 8 to 64 bits, bool (C or Fortran order).
pub fn read(path: &Path) -> Result<Tensor> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
    let npy =
        npyz::NpyFile::new(BufReader::new(file)).map_err(|e| anyhow::anyhow!("'{}' is not a valid .npy file: {e}", path.display()))?;
    from_npy(npy, &format!("'{}'", path.display()))
}

/// Reads every array of a `.npz`, in the archive's order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |e: std::io::Error| anyhow::anyhow!("'{}' is not a valid .npz file: {e}", path.display());
    let mut npz = npyz::npz::NpzArchive::open(path).map_err(bad)?;
    let archive = npz.zip_archive();
    let files = (0..archive.len())
        .map(|i| archive.by_index_raw(i).map(|f| f.name().to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.into()))?;
    let names: Vec<String> = files.iter().filter_map(|f| npyz::npz::array_name_from_file_name(f)).map(String::from).collect();
    names
        .into_iter()
        .map(|n| {
            let npy = npz.by_name(&n).map_err(bad)?.expect("listed array exists");
            let t = from_npy(npy, &format!("array '{n}' of '{}'", path.display()))?;
            Ok((n, t))
        })
        .collect()
}

/// Converts an opened `.npy` stream; `what` names it in errors.
fn from_npy<R: std::io::Read>(npy: npyz::NpyFile<R>, what: &str) -> Result<Tensor> {
    let fortran = npy.order() == npyz::Order::Fortran;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let bad = |e: std::io::Error| anyhow::anyhow!("{what} is truncated or malformed: {e}");
    let dtype = match descr.trim_matches('\'') {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" => DType::I8,
        "<u8" => DType::U64,
        "<u4" => DType::U32,
        "<u2" => DType::U16,
        "|u1" => DType::U8,
        "|b1" => DType::Bool,
        other => bail!("{what} holds elements of numpy type {other}, which octet does not read"),
    };
    octet_graph::limits::check_tensor(dtype, &shape).map_err(|m| anyhow::anyhow!("{what}: header {m}"))?;
    let data = match dtype {
        DType::F32 => Data::F32(npy.into_vec().map_err(bad)?),
        DType::F64 => Data::F64(npy.into_vec().map_err(bad)?),
        DType::F16 => Data::F16(npy.into_vec().map_err(bad)?),
        DType::I64 => Data::I64(npy.into_vec().map_err(bad)?),
        DType::I32 => Data::I32(npy.into_vec().map_err(bad)?),
        DType::I16 => Data::I16(npy.into_vec().map_err(bad)?),
        DType::I8 => Data::I8(npy.into_vec().map_err(bad)?),
        DType::U64 => Data::U64(npy.into_vec().map_err(bad)?),
        DType::U32 => Data::U32(npy.into_vec().map_err(bad)?),
        DType::U16 => Data::U16(npy.into_vec().map_err(bad)?),
        DType::U8 => Data::U8(npy.into_vec().map_err(bad)?),
        DType::Bool => Data::Bool(npy.into_vec::<bool>().map_err(bad)?),
    };
    let n = data.len();
    // Fortran order is C order of the reversed shape: read it so, then reverse the axes.
    let stored: Vec<usize> = if fortran { shape.iter().rev().copied().collect() } else { shape.clone() };
    let t = Tensor::new(stored.clone(), data).ok_or_else(|| anyhow::anyhow!("{what} is truncated: shape {shape:?} but {n} elements"))?;
    if !fortran {
        return Ok(t);
    }
    let st = octet_graph::tensor::strides(&stored);
    let view = View { base: 0, shape: shape.clone(), strides: st.iter().rev().map(|&s| s as isize).collect() };
    Ok(view.copy(&t))
}

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U64 => "<u8",
        DType::U32 => "<u4",
        DType::U16 => "<u2",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
    }
}

/// A tensor as the bytes of a `.npy` file.
fn encode(t: &Tensor) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let dtype = npyz::DType::Plain(descr(t.dtype()).parse().expect("valid type string"));
    macro_rules! put {
        ($v:expr) => {{
            let mut w = npyz::WriteOptions::new().dtype(dtype).shape(&shape).writer(&mut buf).begin_nd()?;
            w.extend($v)?;
            w.finish()?;
        }};
    }
    match t.data() {
        Data::F32(v) => put!(v.iter().copied()),
        Data::F64(v) => put!(v.iter().copied()),
        Data::F16(v) => put!(v.iter().copied()),
        Data::I64(v) => put!(v.iter().copied()),
        Data::I32(v) => put!(v.iter().copied()),
        Data::I16(v) => put!(v.iter().copied()),
        Data::I8(v) => put!(v.iter().copied()),
        Data::U64(v) => put!(v.iter().copied()),
        Data::U32(v) => put!(v.iter().copied()),
        Data::U16(v) => put!(v.iter().copied()),
        Data::U8(v) => put!(v.iter().copied()),
        Data::Bool(v) => put!(v.iter().copied()),
    }
    Ok(buf)
}

/// Whether `path` names a `.npz` archive.
pub fn is_npz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "npz")
}

/// Writes a tensor as `.npy`, through a temporary file renamed into place.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    crate::write_atomically(path, &encode(t)?)
}

/// Writes named tensors as one `.npz` (uncompressed, as `numpy.savez`), through a temporary
/// file renamed into place.
pub fn write_npz(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    for (name, t) in tensors {
        zip.start_file(npyz::npz::file_name_from_array_name(name), options)?;
        zip.write_all(&encode(t)?)?;
    }
    crate::write_atomically(path, &zip.finish()?.into_inner())
}
