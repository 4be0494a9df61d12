//! Model file formats for frugal: a GGUF reader (versions 2 and 3, memory-mapped, every metadata
//! type, validated tensor infos) and a GGUF writer for tests and tools. No architecture knowledge:
//! this crate knows keys, values and tensors, not what a transformer is.

pub mod gguf;

pub use gguf::{GgufError, GgufFile, GgufWriter, TensorInfo, Value};
