//! GGUF: ggml's single-file model format (spec: ggml/docs/gguf.md in llama.cpp).
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, the
//! metadata key/value pairs, the tensor infos, padding to `general.alignment`, then tensor data.
//! Every count, length and offset is checked against the bytes that remain before anything is
//! allocated or read, so a corrupt file is an error naming the file and the key or tensor at fault.

pub mod build;

use crate::split;
use frugal_kernels::{GgmlType, SharedBytes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// Deepest nesting of arrays we accept (real files use 1).
const MAX_DEPTH: usize = 4;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: usize = 4;

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            Value::U8(v) => Some(v as i64),
            Value::U16(v) => Some(v as i64),
            Value::U32(v) => Some(v as i64),
            Value::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Floats and integers as f32.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self.as_i64().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type name, e.g. `u32`, `string`, `array<string>`.
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F32(_) => "f32".into(),
            Value::F64(_) => "f64".into(),
            Value::Bool(_) => "bool".into(),
            Value::String(_) => "string".into(),
            Value::Array(a) => match a.first() {
                Some(v) => format!("array<{}>", v.type_name()),
                None => "array".into(),
            },
        }
    }

    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
}

/// Where a tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of its file's data section.
    pub offset: u64,
    pub n_bytes: usize,
    /// Which file of a split set holds the data (0 for a one-file model).
    pub part: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row length (`dims[0]`).
    pub fn cols(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (product of the dims after the first).
    pub fn rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// Everything that can be wrong with a GGUF file. Every message names the file.
/// "type I8" for a type ggml defines, "an unknown type" otherwise.
fn ggml_type_name(id: u32) -> String {
    GgmlType::name_of_id(id).map_or_else(|| "an unknown type".into(), |n| format!("type {n}"))
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("{file} is {what}, not a GGUF file")]
    NotAFile { file: String, what: &'static str },
    #[error("{file}: not a GGUF file (magic {found:02x?}, expected \"GGUF\")")]
    BadMagic { file: String, found: Vec<u8> },
    #[error("{file}: GGUF version {version} is not supported (supported: 2, 3)")]
    UnsupportedVersion { file: String, version: u32 },
    #[error("{file}: big-endian GGUF files are not supported")]
    BigEndian { file: String },
    #[error("{file}: truncated while reading {what} at byte {offset} (file has {size} bytes)")]
    Truncated {
        file: String,
        what: String,
        offset: usize,
        size: usize,
    },
    #[error("{file}: {what}: {msg}")]
    Invalid {
        file: String,
        what: String,
        msg: String,
    },
    #[error("{file}: tensor '{tensor}' has {} (ggml type id {id}), which this build cannot compute with", ggml_type_name(*.id))]
    UnknownTensorType {
        file: String,
        tensor: String,
        id: u32,
    },
    #[error(
        "{file}: tensor '{tensor}' data [{start}, {end}) lies outside the file ({size} bytes)"
    )]
    TensorOutOfBounds {
        file: String,
        tensor: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("{file}: tensors '{a}' and '{b}' overlap")]
    TensorsOverlap { file: String, a: String, b: String },
    #[error("{file}: missing metadata key '{key}'")]
    MissingKey { file: String, key: String },
    #[error("{file}: metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        file: String,
        key: String,
        expected: String,
        found: String,
    },
}

pub(crate) enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

// SAFETY: neither variant is ever written or resized after construction (`GgufFile` holds it in an
// `Arc` and only reads), so `bytes()` always returns the same slice, valid until the value drops.
// The map is private and read-only; see `GgufFile::open` for files changed by other processes.
unsafe impl SharedBytes for Bytes {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }

    fn release(&self, offset: usize, len: usize) {
        if let Bytes::Mapped(m) = self {
            if offset.checked_add(len).is_some_and(|end| end <= m.len()) && len > 0 {
                // SAFETY: DONTNEED on a private read-only file mapping only drops cached pages;
                // later reads fault them back in from the file, so no data visible through `m`
                // changes.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                };
            }
        }
    }
}

/// One file of a model: its image and where its tensor data starts.
struct Part {
    bytes: Arc<Bytes>,
    data_offset: usize,
}

/// Memory-maps a file (read-only, private).
pub(crate) fn map_file(path: &Path) -> Result<Bytes, GgufError> {
    let name = path.display().to_string();
    let io = |error| GgufError::Io {
        file: name.clone(),
        error,
    };
    // Checked before opening: mapping a directory fails with a baffling "No such device", and
    // opening a FIFO would wait for a writer.
    let file_type = std::fs::metadata(path).map_err(io)?.file_type();
    if !file_type.is_file() {
        return Err(GgufError::NotAFile {
            file: name,
            what: if file_type.is_dir() {
                "a directory"
            } else {
                "a special file (pipe, socket or device)"
            },
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(Bytes::Owned(Vec::new()));
    }
    // SAFETY: the map is read-only and private to this process; frugal never writes the file.
    // Another process truncating it while mapped could fault, as with every mmap loader
    // (llama.cpp included); that is outside what a process can guard against.
    Ok(Bytes::Mapped(
        unsafe { memmap2::Mmap::map(&file) }.map_err(io)?,
    ))
}

/// An opened GGUF model: its metadata and tensor infos parsed and validated, its tensor data
/// memory-mapped (or in memory, for [`GgufFile::from_bytes`]). A split set
/// (`NAME-0000K-of-0000N.gguf`, llama.cpp's `gguf-split`) is one model: the first part's metadata,
/// every part's tensors.
pub struct GgufFile {
    name: String,
    /// Shared with the weight matrices that borrow tensor data from them.
    parts: Vec<Part>,
    version: u32,
    alignment: usize,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// For a model built in memory ([`GgufFile::build`]): the GGUF header it would be written
    /// with, which identifies it in [`GgufFile::headers`].
    built_header: Option<Vec<u8>>,
}

impl GgufFile {
    /// Opens and memory-maps a GGUF file; for a part of a split set, every part of it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let first = Self::parse(path.display().to_string(), map_file(path)?)?;
        let count = first.opt_u64("split.count")?.unwrap_or(1);
        if count <= 1 {
            return Ok(first);
        }
        Self::open_set(path, first, count)
    }

    /// The whole split set that `path` (whose parsed header is `opened`) belongs to: the first
    /// part's metadata, every part's tensors. The parts must be named as `gguf-split` names them,
    /// each saying which it is (`split.no`) of how many (`split.count`).
    fn open_set(path: &Path, opened: GgufFile, count: u64) -> Result<GgufFile, GgufError> {
        let invalid = |file: &str, msg: String| GgufError::Invalid {
            file: file.to_string(),
            what: "split set".into(),
            msg,
        };
        let files = split::split_set(path).map_err(|error| GgufError::Io {
            file: opened.name.clone(),
            error,
        })?;
        if files.len() as u64 != count {
            return Err(invalid(
                &opened.name,
                format!(
                    "the file says it is one of {count} parts (split.count), but its name is not \
                     PREFIX-0000K-of-{count:05}.gguf as llama-gguf-split names the parts"
                ),
            ));
        }
        let mut model = match opened.opt_u64("split.no")?.unwrap_or(0) {
            0 => opened,
            _ => Self::parse(files[0].display().to_string(), map_file(&files[0])?)?,
        };
        for (k, f) in files.iter().enumerate() {
            let part = match k {
                0 => None,
                _ => Some(Self::parse(f.display().to_string(), map_file(f)?)?),
            };
            let header = part.as_ref().unwrap_or(&model);
            let (no, n) = (header.opt_u64("split.no")?, header.opt_u64("split.count")?);
            if no != Some(k as u64) || n != Some(count) {
                return Err(invalid(
                    &header.name,
                    format!(
                        "expected part {} of {count} (split.no {k}), found split.no {no:?} of \
                         split.count {n:?}",
                        k + 1
                    ),
                ));
            }
            if let Some(part) = part {
                let index = model.parts.len();
                model.parts.extend(part.parts);
                let moved = part
                    .tensors
                    .into_iter()
                    .map(|t| TensorInfo { part: index, ..t });
                model.tensors.extend(moved);
            }
        }
        let total = model.opt_u64("split.tensors.count")?;
        if total.is_some_and(|n| n != model.tensors.len() as u64) {
            return Err(invalid(
                &model.name,
                format!(
                    "split.tensors.count is {total:?}, the parts hold {} tensors",
                    model.tensors.len()
                ),
            ));
        }
        model.index_tensors()?;
        Ok(model)
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, generated models).
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile, GgufError> {
        Self::parse(name.to_string(), Bytes::Owned(bytes))
    }

    fn parse(name: String, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let header = Parser::new(&name, bytes.as_slice()).parse()?;
        let mut file = GgufFile {
            name,
            parts: vec![Part {
                bytes: Arc::new(bytes),
                data_offset: header.data_offset,
            }],
            version: header.version,
            alignment: header.alignment,
            index: HashMap::new(),
            metadata: header.metadata,
            tensor_index: HashMap::new(),
            tensors: header.tensors,
            built_header: None,
        };
        file.index = file
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        file.index_tensors()?;
        Ok(file)
    }

    /// Builds the name → tensor index; a name twice is an error (across the parts of a set too).
    fn index_tensors(&mut self) -> Result<(), GgufError> {
        self.tensor_index = HashMap::with_capacity(self.tensors.len());
        for (i, t) in self.tensors.iter().enumerate() {
            if self.tensor_index.insert(t.name.clone(), i).is_some() {
                return Err(GgufError::Invalid {
                    file: self.name.clone(),
                    what: format!("tensor '{}'", t.name),
                    msg: "the name appears twice".into(),
                });
            }
        }
        Ok(())
    }

    /// The path (or name) the model was opened with (the first part of a split set).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Bytes of every file of the model together.
    pub fn file_size(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.bytes.as_slice().len() as u64)
            .sum()
    }

    /// How many files the model is stored in (1 unless split).
    pub fn n_parts(&self) -> usize {
        self.parts.len()
    }

    /// Metadata in file order (the first part's, for a split set).
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this model (validated at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let part = &self.parts[t.part];
        let start = part.data_offset + t.offset as usize;
        &part.bytes.as_slice()[start..start + t.n_bytes]
    }

    /// Each file's bytes before its tensor data: header, metadata and tensor table (with the
    /// model's size, a cheap fingerprint of the model, for caches keyed by it).
    /// A model built in memory gives the GGUF header it would be written with, then each source
    /// file's header.
    pub fn headers(&self) -> Vec<&[u8]> {
        let built = self.built_header.as_deref();
        built
            .into_iter()
            .chain(
                self.parts
                    .iter()
                    .map(|p| &p.bytes.as_slice()[..p.data_offset])
                    .filter(|h| !h.is_empty()),
            )
            .collect()
    }

    /// The image of the file holding `t` (the memory map, or the bytes given to
    /// [`GgufFile::from_bytes`]) and where `t`'s data starts in it, for weight matrices that
    /// borrow tensor data instead of copying it; the image stays alive as long as any of them,
    /// even after this `GgufFile` is dropped.
    pub fn tensor_image(&self, t: &TensorInfo) -> (Arc<dyn SharedBytes>, usize) {
        let part = &self.parts[t.part];
        (part.bytes.clone(), part.data_offset + t.offset as usize)
    }

    /// Whether the data is a memory map of the files (pages read on demand, droppable by the OS)
    /// rather than bytes in memory.
    pub fn is_mapped(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(*p.bytes, Bytes::Mapped(_)))
    }

    /// Tells the kernel the tensor data will be read soon.
    pub fn advise_willneed(&self) {
        for p in &self.parts {
            if let Bytes::Mapped(m) = &*p.bytes {
                let _ = m.advise(memmap2::Advice::WillNeed);
            }
        }
    }

    /// Tells the kernel the mapped pages are no longer needed (after the weights were copied out),
    /// so they leave this process's resident set.
    pub fn advise_dontneed(&self) {
        for p in &self.parts {
            p.bytes.release(0, p.bytes.as_slice().len());
        }
    }

    /// [`GgufFile::advise_dontneed`] for the pages of one tensor (once it has been copied).
    pub fn release_tensor(&self, t: &TensorInfo) {
        let (image, start) = self.tensor_image(t);
        image.release(start, t.n_bytes);
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> GgufError {
        GgufError::WrongType {
            file: self.name.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.type_name(),
        }
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey {
            file: self.name.clone(),
            key: key.to_string(),
        }
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, expected, v)),
        }
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "an unsigned 32-bit integer", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    pub fn req_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.opt_u32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }

    pub fn req_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "an integer", Value::as_i64)
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", Value::as_f32)
    }

    pub fn req_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn req_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.opt_bool(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn req_str(&self, key: &str) -> Result<&str, GgufError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        self.typed(key, "an array", Value::as_array)
    }

    pub fn req_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.opt_array(key)?.ok_or_else(|| self.missing(key))
    }
}

struct Header {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data_offset: usize,
}

/// A bounds-checked cursor over the file.
struct Parser<'a> {
    file: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(file: &'a str, buf: &'a [u8]) -> Self {
        Parser { file, buf, pos: 0 }
    }

    fn truncated(&self, what: &str) -> GgufError {
        GgufError::Truncated {
            file: self.file.to_string(),
            what: what.to_string(),
            offset: self.pos,
            size: self.buf.len(),
        }
    }

    fn invalid(&self, what: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Invalid {
            file: self.file.to_string(),
            what: what.to_string(),
            msg: msg.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items that each take at least `min_item_bytes`: larger counts than the rest of
    /// the file could hold are rejected before anything is allocated.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(self.invalid(
                what,
                format!(
                    "count {n} is larger than the {} remaining bytes can hold",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(self.invalid(
                what,
                format!(
                    "string length {len} exceeds the {} remaining bytes",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.invalid(what, "string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of '{key}'");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what())?[0]),
            1 => Value::I8(self.array::<1>(&what())?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => match self.array::<1>(&what())?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.invalid(&what(), format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(&what())?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.invalid(&what(), format!("arrays nested deeper than {MAX_DEPTH}"))
                    );
                }
                let elem = self.u32(&what())?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(self.invalid(&what(), format!("unknown array element type {t}")))
                    }
                };
                let n = self.count(&what(), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            t => return Err(self.invalid(&what(), format!("unknown value type {t}"))),
        })
    }

    fn parse(mut self) -> Result<Header, GgufError> {
        let version = self.magic_and_version()?;
        // A tensor info takes at least 8 (name len) + 4 (n_dims) + 8 (one dim) + 4 + 8 bytes; a
        // metadata pair at least 8 (key len) + 4 (type) + 1 byte.
        let n_tensors = self.count("tensor count", 32)?;
        let n_kv = self.count("metadata count", 13)?;
        let metadata = self.metadata(n_kv)?;
        let alignment = self.alignment(&metadata)?;
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let t = self.tensor_info(i, alignment)?;
            if !names.insert(t.name.clone()) {
                return Err(self.invalid(&format!("tensor '{}'", t.name), "duplicate tensor name"));
            }
            tensors.push(t);
        }
        let data_offset = self.pos.div_ceil(alignment) * alignment;
        self.check_tensor_data(&tensors, data_offset)?;
        Ok(Header {
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
        })
    }

    /// The magic and a supported version (2 or 3, little-endian).
    fn magic_and_version(&mut self) -> Result<u32, GgufError> {
        let magic = self.take(4, "magic").map_err(|_| GgufError::BadMagic {
            file: self.file.to_string(),
            found: self.buf[..self.buf.len().min(4)].to_vec(),
        })?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                file: self.file.to_string(),
                found: magic.to_vec(),
            });
        }
        let version = self.u32("version")?;
        if version.swap_bytes() <= 3 && version > 3 {
            return Err(GgufError::BigEndian {
                file: self.file.to_string(),
            });
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion {
                file: self.file.to_string(),
                version,
            });
        }
        Ok(version)
    }

    /// `n_kv` key/value pairs, keys unique.
    fn metadata(&mut self, n_kv: usize) -> Result<Vec<(String, Value)>, GgufError> {
        let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv);
        let mut seen = std::collections::HashSet::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = self.string(&format!("metadata key #{i}"))?;
            let ty = self.u32(&format!("type of '{key}'"))?;
            let value = self.value(ty, &key, 0)?;
            if !seen.insert(key.clone()) {
                return Err(self.invalid(&format!("metadata key '{key}'"), "duplicate key"));
            }
            metadata.push((key, value));
        }
        Ok(metadata)
    }

    /// `general.alignment` (a u32 power of two), or the default.
    fn alignment(&self, metadata: &[(String, Value)]) -> Result<usize, GgufError> {
        match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(*a as usize),
            Some((_, v)) => Err(self.invalid(
                "metadata key 'general.alignment'",
                format!("must be a u32 power of two, found {v:?}"),
            )),
        }
    }

    /// Tensor info `#i`: name, dims, type and offset, checked for sane dims, whole blocks, a byte
    /// size that fits in memory and an aligned offset.
    fn tensor_info(&mut self, i: usize, alignment: usize) -> Result<TensorInfo, GgufError> {
        let name = self.string(&format!("name of tensor #{i}"))?;
        let what = format!("tensor '{name}'");
        let n_dims = self.u32(&what)? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.invalid(
                &what,
                format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        let type_id = self.u32(&what)?;
        let offset = self.u64(&what)?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            file: self.file.to_string(),
            tensor: name.clone(),
            id: type_id,
        })?;
        let n_bytes = self.tensor_bytes(&what, &dims, ty)?;
        if offset % alignment as u64 != 0 {
            return Err(self.invalid(
                &what,
                format!("data offset {offset} is not aligned to {alignment}"),
            ));
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
            part: 0,
        })
    }

    /// The byte size of a `ty` tensor of `dims`: every dim positive, the element count and the
    /// size without overflow, rows of whole blocks.
    fn tensor_bytes(&self, what: &str, dims: &[u64], ty: GgmlType) -> Result<usize, GgufError> {
        tensor_size(dims, ty).map_err(|msg| self.invalid(what, msg))
    }

    /// Every tensor's data lies inside the file, after `data_offset`, and no two overlap.
    fn check_tensor_data(
        &self,
        tensors: &[TensorInfo],
        data_offset: usize,
    ) -> Result<(), GgufError> {
        let size = self.buf.len() as u64;
        let data_len = size.saturating_sub(data_offset as u64);
        for t in tensors {
            let end = t.offset.checked_add(t.n_bytes as u64);
            if end.is_none_or(|e| e > data_len) {
                return Err(GgufError::TensorOutOfBounds {
                    file: self.file.to_string(),
                    tensor: t.name.clone(),
                    start: (data_offset as u64).saturating_add(t.offset),
                    end: (data_offset as u64).saturating_add(end.unwrap_or(u64::MAX)),
                    size,
                });
            }
        }
        let mut order: Vec<&TensorInfo> = tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        for pair in order.windows(2) {
            if pair[0].offset + pair[0].n_bytes as u64 > pair[1].offset {
                return Err(GgufError::TensorsOverlap {
                    file: self.file.to_string(),
                    a: pair[0].name.clone(),
                    b: pair[1].name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The byte size of a `ty` tensor of `dims`: every dim positive, the element count and the size
/// without overflow, rows of whole blocks.
fn tensor_size(dims: &[u64], ty: GgmlType) -> Result<usize, String> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions (1 to {MAX_DIMS} allowed)",
            dims.len()
        ));
    }
    if dims.iter().any(|&d| d == 0 || d > i64::MAX as u64) {
        return Err(format!("invalid dimensions {dims:?}"));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("element count of {dims:?} overflows"))?;
    if !dims[0].is_multiple_of(ty.block_len() as u64) {
        return Err(format!(
            "row length {} is not a multiple of the {ty} block length {}",
            dims[0],
            ty.block_len()
        ));
    }
    let n_bytes = (n_elements / ty.block_len() as u64)
        .checked_mul(ty.block_bytes() as u64)
        .filter(|&b| b <= usize::MAX as u64)
        .ok_or("byte size overflows")?;
    Ok(n_bytes as usize)
}

/// The GGUF v3 header (magic to tensor table, unpadded) of `metadata` and tensors given as
/// (name, dims, type, offset).
fn write_header<'a>(
    metadata: &[(String, Value)],
    n_tensors: usize,
    tensors: impl Iterator<Item = (&'a str, &'a [u64], GgmlType, u64)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(n_tensors as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        write_value(&mut out, v);
    }
    for (name, dims, ty, offset) in tensors {
        write_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(ty as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out
}

/// Builds GGUF version 3 files (tests, tools, generated models).
pub struct GgufWriter {
    alignment: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Uses another alignment (also written as `general.alignment`).
    pub fn with_alignment(mut self, alignment: usize) -> Self {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        self.alignment = alignment;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        self.metadata
            .push(("general.alignment".into(), Value::U32(alignment as u32)));
        self
    }

    pub fn add_metadata(&mut self, key: impl Into<String>, value: Value) {
        self.metadata.push((key.into(), value));
    }

    /// Adds a tensor; `data` must be exactly its size in `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) {
        let n: u64 = dims.iter().product();
        let expected = n as usize / ty.block_len() * ty.block_bytes();
        assert_eq!(
            data.len(),
            expected,
            "tensor data size does not match its dims and type"
        );
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (_, _, _, data) in &self.tensors {
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment as u64)
                * self.alignment as u64;
        }
        let infos = self
            .tensors
            .iter()
            .zip(&offsets)
            .map(|((name, dims, ty, _), &off)| (name.as_str(), dims.as_slice(), *ty, off));
        let mut out = write_header(&self.metadata, self.tensors.len(), infos);
        let data_start = out.len().div_ceil(self.alignment) * self.alignment;
        out.resize(data_start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            // An empty array is written with element type u8.
            let elem = items.first().map_or(0, Value::type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}
