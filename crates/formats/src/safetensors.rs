//! safetensors: Hugging Face's checkpoint format (spec: huggingface/safetensors, README).
//!
//! Layout: a u64 (little-endian) header length `N`, `N` bytes of JSON — an object mapping each
//! tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`, plus an optional
//! `__metadata__` object of strings — then the data, offsets relative to its start (`8 + N`).
//! Every entry is checked before use: a known dtype, a shape whose byte size fits and equals the
//! offsets' span, offsets inside the file, no two tensors overlapping. A corrupt file is an error
//! naming the file and the tensor at fault. A sharded checkpoint's `model.safetensors.index.json`
//! is read by [`read_index`]. The data section starts at byte `8 + N`, with no alignment promised:
//! weight matrices borrow tensors that happen to be 4-byte aligned and copy the others at load
//! (`frugal_kernels::Matrix::from_mapped`), since every kernel reads unaligned.

use crate::gguf::{map_file, Bytes, GgufError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Headers larger than this are refused (the reference implementation's limit).
const MAX_HEADER: u64 = 100_000_000;

/// The element types safetensors defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    /// Power-of-two scales (MX formats).
    F8E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    /// Every dtype with its name in the header.
    const NAMES: [(Dtype, &'static str); 16] = [
        (Dtype::Bool, "BOOL"),
        (Dtype::U8, "U8"),
        (Dtype::I8, "I8"),
        (Dtype::F8E5M2, "F8_E5M2"),
        (Dtype::F8E4M3, "F8_E4M3"),
        (Dtype::F8E8M0, "F8_E8M0"),
        (Dtype::I16, "I16"),
        (Dtype::U16, "U16"),
        (Dtype::F16, "F16"),
        (Dtype::BF16, "BF16"),
        (Dtype::I32, "I32"),
        (Dtype::U32, "U32"),
        (Dtype::F32, "F32"),
        (Dtype::F64, "F64"),
        (Dtype::I64, "I64"),
        (Dtype::U64, "U64"),
    ];

    pub fn from_name(name: &str) -> Option<Dtype> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|&(d, _)| d)
    }

    /// The name the header spells.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("?", |&(_, n)| n)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E8M0 => {
                1
            }
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeTensor {
    pub name: String,
    pub dtype: Dtype,
    /// Row-major (PyTorch order): the last dimension is the row length.
    pub shape: Vec<u64>,
    /// Where the data starts, from the start of the data section.
    pub offset: usize,
    pub n_bytes: usize,
}

impl SafeTensor {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// An opened safetensors file: its tensor table validated, its data memory-mapped.
pub struct SafetensorsFile {
    name: String,
    pub(crate) bytes: Arc<Bytes>,
    pub(crate) data_offset: usize,
    tensors: Vec<SafeTensor>,
    index: HashMap<String, usize>,
    metadata: Vec<(String, String)>,
}

impl SafetensorsFile {
    /// Opens and memory-maps a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, GgufError> {
        let path = path.as_ref();
        Self::parse(path.display().to_string(), map_file(path)?)
    }

    /// Parses a safetensors image held in memory (tests, generated checkpoints).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<SafetensorsFile, GgufError> {
        Self::parse(name.to_string(), Bytes::Owned(bytes))
    }

    fn parse(name: String, bytes: Bytes) -> Result<SafetensorsFile, GgufError> {
        let header = parse_header(&name, bytes.as_slice())?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SafetensorsFile {
            name,
            bytes: Arc::new(bytes),
            data_offset: header.data_offset,
            tensors: header.tensors,
            index,
            metadata: header.metadata,
        })
    }

    /// The path (or name) it was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tensors in the order of their data.
    pub fn tensors(&self) -> &[SafeTensor] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&SafeTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The bytes of one of this file's tensors (validated at open).
    pub fn data(&self, t: &SafeTensor) -> &[u8] {
        let start = self.data_offset + t.offset;
        &self.bytes.as_slice()[start..start + t.n_bytes]
    }

    /// The length field and JSON header: what identifies the file short of its data.
    pub fn header(&self) -> &[u8] {
        &self.bytes.as_slice()[..self.data_offset]
    }

    /// Bytes of the whole file.
    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }
}

struct Header {
    tensors: Vec<SafeTensor>,
    metadata: Vec<(String, String)>,
    data_offset: usize,
}

fn invalid(file: &str, what: &str, msg: impl Into<String>) -> GgufError {
    GgufError::Invalid {
        file: file.to_string(),
        what: what.to_string(),
        msg: msg.into(),
    }
}

/// The header length, the JSON header and every entry of it, checked against the file's size.
fn parse_header(file: &str, buf: &[u8]) -> Result<Header, GgufError> {
    let truncated = |what: &str, offset: usize| GgufError::Truncated {
        file: file.to_string(),
        what: what.to_string(),
        offset,
        size: buf.len(),
    };
    let len_bytes: [u8; 8] = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| truncated("the header length", 0))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER {
        return Err(invalid(
            file,
            "header",
            format!("length {n} is larger than the {MAX_HEADER} bytes allowed"),
        ));
    }
    if n > (buf.len() - 8) as u64 {
        return Err(truncated(&format!("the {n}-byte JSON header"), 8));
    }
    let data_offset = 8 + n as usize;
    let json: serde_json::Value = serde_json::from_slice(&buf[8..data_offset])
        .map_err(|e| invalid(file, "header", format!("invalid JSON: {e}")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(invalid(file, "header", "is not a JSON object"));
    };
    let data_len = buf.len() - data_offset;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut metadata = Vec::new();
    for (name, entry) in &entries {
        if name == "__metadata__" {
            metadata = read_metadata(file, entry)?;
        } else {
            tensors.push(read_entry(file, name, entry, data_len)?);
        }
    }
    tensors.sort_by_key(|t| (t.offset, t.n_bytes));
    for pair in tensors.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::TensorsOverlap {
                file: file.to_string(),
                a: pair[0].name.clone(),
                b: pair[1].name.clone(),
            });
        }
    }
    Ok(Header {
        tensors,
        metadata,
        data_offset,
    })
}

/// `__metadata__`: an object of strings.
fn read_metadata(file: &str, v: &serde_json::Value) -> Result<Vec<(String, String)>, GgufError> {
    let bad = || invalid(file, "__metadata__", "must be an object of strings");
    v.as_object()
        .ok_or_else(bad)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_string())))
        .collect()
}

/// One tensor entry: dtype, shape and offsets, consistent with each other and the file.
fn read_entry(
    file: &str,
    name: &str,
    v: &serde_json::Value,
    data_len: usize,
) -> Result<SafeTensor, GgufError> {
    let what = format!("tensor '{name}'");
    let bad = |msg: String| invalid(file, &what, msg);
    let dtype_name = v["dtype"]
        .as_str()
        .ok_or_else(|| bad("has no \"dtype\" string".into()))?;
    let dtype = Dtype::from_name(dtype_name)
        .ok_or_else(|| bad(format!("has an unknown dtype \"{dtype_name}\"")))?;
    let shape = v["shape"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(serde_json::Value::as_u64)
                .collect::<Option<Vec<u64>>>()
        })
        .ok_or_else(|| bad("has no \"shape\" array of non-negative integers".into()))?;
    let offsets = v["data_offsets"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(serde_json::Value::as_u64)
                .collect::<Option<Vec<u64>>>()
        })
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("has no \"data_offsets\" pair of non-negative integers".into()))?;
    let (begin, end) = (offsets[0], offsets[1]);
    let n_bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= isize::MAX as u64)
        .ok_or_else(|| bad(format!("byte size of shape {shape:?} overflows")))?;
    if end < begin || end - begin != n_bytes {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}) hold {} bytes, its {dtype} shape {shape:?} needs {n_bytes}",
            end.saturating_sub(begin)
        )));
    }
    if end > data_len as u64 {
        return Err(GgufError::TensorOutOfBounds {
            file: file.to_string(),
            tensor: name.to_string(),
            start: begin,
            end,
            size: data_len as u64,
        });
    }
    Ok(SafeTensor {
        name: name.to_string(),
        dtype,
        shape,
        offset: begin as usize,
        n_bytes: n_bytes as usize,
    })
}

/// The shards a `model.safetensors.index.json` names (its `weight_map`: tensor → file), each
/// once, in order of first appearance, as paths beside the index.
pub fn read_index(index: &Path) -> Result<Vec<PathBuf>, GgufError> {
    let file = index.display().to_string();
    let text = std::fs::read_to_string(index).map_err(|error| GgufError::Io {
        file: file.clone(),
        error,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(&file, "index", format!("{e}")))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| invalid(&file, "weight_map", "missing or not an object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .filter(|s| !s.is_empty() && Path::new(s).file_name() == Some(s.as_ref()))
            .ok_or_else(|| {
                invalid(
                    &file,
                    &format!("weight_map['{tensor}']"),
                    "must be a file name beside the index",
                )
            })?;
        let path = dir.join(shard);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    Ok(shards)
}
