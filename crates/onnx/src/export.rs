//! Writing ONNX files: external data is brought inline, and the file is written to a temporary
//! name and renamed, so a failed write never leaves a half-written model.

use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::import::ImportError;
use crate::proto::tensor_proto::DataLocation;
use crate::proto::ModelProto;
use crate::tensor::external_bytes;

/// Moves every external initializer's bytes into the model (files up to 2 GB).
pub fn inline_external_data(model: &mut ModelProto, base: &Path) -> Result<(), ImportError> {
    let Some(g) = model.graph.as_mut() else { return Ok(()) };
    for t in &mut g.initializer {
        if t.data_location == Some(DataLocation::External as i32) {
            let bytes = external_bytes(t, base).map_err(|message| ImportError::Invalid { path: base.to_path_buf(), message })?;
            t.raw_data = Some(bytes.into());
            t.external_data.clear();
            t.data_location = Some(DataLocation::Default as i32);
        }
    }
    Ok(())
}

/// Serialises `model` to `path` atomically.
pub fn save(model: &ModelProto, path: &Path) -> Result<(), ImportError> {
    let io = |error| ImportError::Io { path: path.to_path_buf(), error };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&model.encode_to_vec())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
