//! Model file formats for frugal: a GGUF reader (versions 2 and 3, memory-mapped, every metadata
//! type, validated tensor infos, split sets read as one model) and a GGUF writer for tests and tools.
//! No architecture knowledge: this crate knows keys, values and tensors, not what a transformer is.

pub mod gguf;
pub mod split;

pub use gguf::{GgufError, GgufFile, GgufWriter, TensorInfo, Value};
pub use split::{part_name, split_part, split_set, SplitPart};
