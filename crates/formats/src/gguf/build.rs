//! A model assembled in memory: GGUF metadata and a tensor table whose data is borrowed from
//! opened safetensors files (no copy: their memory maps become the model's parts) or owned. This
//! is how a checkpoint in another format becomes the one model representation every loader
//! path reads; which tensors and keys it has is the caller's business.

use super::{tensor_size, write_header, Bytes, GgufError, GgufFile, Part, TensorInfo, Value};
use super::{DEFAULT_ALIGNMENT, MAGIC};
use crate::safetensors::SafetensorsFile;
use frugal_kernels::GgmlType;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a tensor of a built model takes its bytes from.
pub enum TensorBytes {
    /// Borrowed: the tensor's bytes start `offset` bytes into the data section of
    /// `files[file]` given to [`GgufFile::build`].
    Borrowed { file: usize, offset: usize },
    /// Converted, transformed or quantized at load.
    Owned(Vec<u8>),
}

/// A tensor of a built model, in GGUF terms.
pub struct NewTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: TensorBytes,
}

impl GgufFile {
    /// A model named `name` with `metadata` and `tensors`, whose borrowed tensors point into
    /// `files`. Every tensor's size is checked against its dims and type, and every borrowed
    /// region against its file.
    pub fn build(
        name: &str,
        files: &[SafetensorsFile],
        metadata: Vec<(String, Value)>,
        tensors: Vec<NewTensor>,
    ) -> Result<GgufFile, GgufError> {
        let invalid = |what: &str, msg: String| GgufError::Invalid {
            file: name.to_string(),
            what: what.to_string(),
            msg,
        };
        let mut parts: Vec<Part> = files
            .iter()
            .map(|f| Part {
                bytes: f.bytes.clone(),
                data_offset: f.data_offset,
            })
            .collect();
        let mut infos = Vec::with_capacity(tensors.len());
        for t in tensors {
            let what = format!("tensor '{}'", t.name);
            let n_bytes = tensor_size(&t.dims, t.ty).map_err(|msg| invalid(&what, msg))?;
            let (part, offset) = match t.data {
                TensorBytes::Borrowed { file, offset } => {
                    let f = files.get(file).ok_or_else(|| {
                        invalid(
                            &what,
                            format!("borrows from file #{file} of {}", files.len()),
                        )
                    })?;
                    let data_len = f.file_size() as usize - f.data_offset;
                    if offset.checked_add(n_bytes).is_none_or(|end| end > data_len) {
                        return Err(GgufError::TensorOutOfBounds {
                            file: f.name().to_string(),
                            tensor: t.name,
                            start: offset as u64,
                            end: offset.saturating_add(n_bytes) as u64,
                            size: data_len as u64,
                        });
                    }
                    (file, offset)
                }
                TensorBytes::Owned(bytes) => {
                    if bytes.len() != n_bytes {
                        return Err(invalid(
                            &what,
                            format!(
                                "{} bytes given, its dims and type need {n_bytes}",
                                bytes.len()
                            ),
                        ));
                    }
                    // Each its own part: no copy into a growing buffer, freed with its matrices.
                    parts.push(Part {
                        bytes: Arc::new(Bytes::Owned(bytes)),
                        data_offset: 0,
                    });
                    (parts.len() - 1, 0)
                }
            };
            infos.push(TensorInfo {
                name: t.name,
                dims: t.dims,
                ty: t.ty,
                offset: offset as u64,
                n_bytes,
                part,
            });
        }
        Self::assemble(name, parts, metadata, infos)
    }

    /// The model of `parts`, its indexes, and the GGUF header that identifies it.
    fn assemble(
        name: &str,
        parts: Vec<Part>,
        metadata: Vec<(String, Value)>,
        tensors: Vec<TensorInfo>,
    ) -> Result<GgufFile, GgufError> {
        let mut index = HashMap::with_capacity(metadata.len());
        for (i, (k, _)) in metadata.iter().enumerate() {
            if index.insert(k.clone(), i).is_some() {
                return Err(GgufError::Invalid {
                    file: name.to_string(),
                    what: format!("metadata key '{k}'"),
                    msg: "duplicate key".into(),
                });
            }
        }
        let table = tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.offset));
        let header = write_header(&metadata, tensors.len(), table);
        debug_assert!(header.starts_with(MAGIC));
        let mut file = GgufFile {
            name: name.to_string(),
            parts,
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata,
            index,
            tensors,
            tensor_index: HashMap::new(),
            built_header: Some(header),
        };
        file.index_tensors()?;
        Ok(file)
    }
}
