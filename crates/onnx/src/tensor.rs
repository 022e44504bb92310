//! TensorProto → [`Tensor`], with inline, typed-field and external data.

use std::path::Path;

use octet_graph::{Data, Tensor};

use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::TensorProto;

/// The ONNX name of a `TensorProto.DataType` code, for messages.
pub fn dtype_name(code: i32) -> String {
    DataType::try_from(code).map(|d| d.as_str_name().to_string()).unwrap_or_else(|_| format!("type {code}"))
}

/// The file an external-data `location` names, if it is safe to read: a relative path that,
/// symlinks resolved, stays inside the model's folder `base` (as ONNX's checker and ONNX Runtime
/// require). Anything else would let a downloaded model read files of the machine it runs on.
fn confined(location: &str, base: &Path) -> Result<std::path::PathBuf, String> {
    let relative = Path::new(location);
    if location.is_empty() || relative.is_absolute() || relative.has_root() {
        return Err(format!("external data location '{location}' is not a path relative to the model's folder"));
    }
    if relative.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("external data location '{location}' leaves the model's folder ('..')"));
    }
    let folder = base.canonicalize().map_err(|e| format!("the model's folder '{}' cannot be resolved: {e}", base.display()))?;
    let path = base.join(relative);
    let resolved = path.canonicalize().map_err(|e| format!("external data file '{}' cannot be read: {e}", path.display()))?;
    if !resolved.starts_with(&folder) {
        return Err(format!("external data location '{location}' resolves to '{}', outside the model's folder", resolved.display()));
    }
    Ok(resolved)
}

/// Reads the bytes an external-data tensor points at (`base` is the model's folder), after
/// checking the location (see [`confined`]) and that offset and length lie inside the file.
pub(crate) fn external_bytes(t: &TensorProto, base: &Path) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let get = |k: &str| t.external_data.iter().find(|e| e.key() == k).map(|e| e.value().to_string());
    let location = get("location").ok_or("external data without a location")?;
    let path = confined(&location, base)?;
    let mut file = std::fs::File::open(&path).map_err(|e| format!("external data file '{}' cannot be read: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("external data file '{}' cannot be read: {e}", path.display()))?.len();
    let parse = |k: &str| get(k).map(|v| v.parse::<u64>().map_err(|_| format!("bad external data {k} '{v}'"))).transpose();
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(size.saturating_sub(offset));
    let end = offset.checked_add(length).filter(|&e| e <= size);
    let Some(_) = end else {
        return Err(format!("external data file '{location}' has {size} bytes; offset {offset} and length {length} reach past its end"));
    };
    let mut bytes = vec![0u8; usize::try_from(length).map_err(|_| format!("external data length {length} does not fit in memory"))?];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("external data file '{location}' cannot be read: {e}"))?;
    Ok(bytes)
}

/// Converts a TensorProto. `base` is the folder that external data paths are relative to.
pub fn tensor_from_proto(t: &TensorProto, base: &Path) -> Result<Tensor, String> {
    tensor_from_parts(t, t.raw_data.clone(), base)
}

/// Converts a TensorProto, taking its inline bytes out of it (the proto keeps its name, type
/// and dims): the bytes are released as soon as the tensor holds them.
pub(crate) fn take_tensor(t: &mut TensorProto, base: &Path) -> Result<Tensor, String> {
    let raw = t.raw_data.take();
    tensor_from_parts(t, raw, base)
}

fn tensor_from_parts(t: &TensorProto, raw: Option<bytes::Bytes>, base: &Path) -> Result<Tensor, String> {
    let shape: Vec<usize> =
        t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}"))).collect::<Result<_, _>>()?;
    let external = t.data_location == Some(DataLocation::External as i32);
    let raw: Option<bytes::Bytes> = if external { Some(external_bytes(t, base)?.into()) } else { raw };
    let code = t.data_type();
    let dtype = octet_graph::ops::elementwise::dtype_from_onnx(code as i64)
        .ok_or_else(|| format!("data type {} is not supported", dtype_name(code)))?;
    let data = match (DataType::try_from(code), raw) {
        (_, Some(r)) => Data::from_le_bytes(dtype, &r),
        (Ok(DataType::Float), None) => Data::F32(t.float_data.clone()),
        (Ok(DataType::Double), None) => Data::F64(t.double_data.clone()),
        (Ok(DataType::Int64), None) => Data::I64(t.int64_data.clone()),
        (Ok(DataType::Int32), None) => Data::I32(t.int32_data.clone()),
        (Ok(DataType::Int8), None) => Data::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
        (Ok(DataType::Uint8), None) => Data::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        (Ok(DataType::Float16), None) => Data::F16(t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16)).collect()),
        (Ok(DataType::Int16), None) => Data::I16(t.int32_data.iter().map(|&v| v as i16).collect()),
        (Ok(DataType::Uint16), None) => Data::U16(t.int32_data.iter().map(|&v| v as u16).collect()),
        (Ok(DataType::Uint32), None) => Data::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        (Ok(DataType::Uint64), None) => Data::U64(t.uint64_data.clone()),
        (Ok(DataType::Bool), None) => Data::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        _ => return Err(format!("data type {} is not supported", dtype_name(code))),
    };
    let n = data.len();
    Tensor::new(shape.clone(), data).ok_or_else(|| match octet_graph::tensor::checked_numel(&shape) {
        Some(want) => format!("shape {shape:?} needs {want} elements, the data holds {n}"),
        None => format!("shape {shape:?} has more elements than memory can address; the data holds {n}"),
    })
}
