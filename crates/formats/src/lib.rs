//! Model file formats for frugal: a GGUF reader (versions 2 and 3, memory-mapped, every metadata
//! type, validated tensor infos, split sets read as one model), a GGUF writer for tests and tools,
//! a safetensors reader (validated header, memory-mapped data, sharded checkpoints' index), and
//! models built in memory from borrowed or owned tensors ([`GgufFile::build`]). No architecture
//! knowledge: this crate knows keys, values and tensors, not what a transformer is.

pub mod gguf;
pub mod safetensors;
pub mod split;

pub use gguf::build::{NewTensor, TensorBytes};
pub use gguf::{GgufError, GgufFile, GgufWriter, TensorInfo, Value};
pub use safetensors::{Dtype, SafeTensor, SafetensorsFile};
pub use split::{part_name, split_part, split_set, SplitPart};
