//! Hugging Face safetensors checkpoints (a folder with `config.json`, `*.safetensors` and, when
//! sharded, `model.safetensors.index.json`) converted at open into the [`GgufFile`] every loader
//! path reads, as llama.cpp's `convert_hf_to_gguf.py` would have written it: metadata from
//! `config.json` (`config`), GGUF tensor names (`names`) and layouts (`tensors`: experts stacked,
//! DeepSeek's `kv_b` split, Llama's rotary permutation), dtypes (`convert`: F32/F16/BF16 kept as
//! stored and borrowed from the memory maps, FP8 E4M3 with block scales decoded, `--quantize`
//! through the kernels' quantizers). The tokenizer and chat template are the loader's business
//! (`tokenizer.json` and its companions).
#![forbid(unsafe_code)]

pub mod config;
pub mod convert;
pub mod names;
mod tensors;
pub mod transform;

use config::HfConfig;
use frugal_formats::{GgufError, GgufFile, SafetensorsFile};
use frugal_kernels::GgmlType;
use std::path::{Path, PathBuf};

pub use convert::{quant_type, quantizable_types};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Format(#[from] GgufError),
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    #[error(
        "{file}: model_type '{model_type}' (architectures {architectures}) is not supported for \
         safetensors checkpoints (supported model_type: {supported})"
    )]
    UnsupportedArch {
        file: String,
        model_type: String,
        architectures: String,
        supported: String,
    },
    #[error("{file}: tensor '{tensor}': {msg}")]
    Tensor {
        file: String,
        tensor: String,
        msg: String,
    },
    #[error("{dir}: {msg}")]
    Files { dir: String, msg: String },
    #[error("--quantize: {0}")]
    Quantize(String),
}

/// How to convert a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quantize weight matrices into this type (`llama-quantize`'s choices of what stays F32).
    pub quantize: Option<GgmlType>,
}

/// Whether `path` is a checkpoint folder (a directory with `config.json`).
pub fn is_checkpoint(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

/// Opens the checkpoint in folder `dir` as a model.
pub fn open(dir: &Path, opts: &Options) -> Result<GgufFile, CheckpointError> {
    let mut config = read_config(dir)?;
    let arch = config.arch()?;
    let files = shard_paths(dir)?
        .iter()
        .map(SafetensorsFile::open)
        .collect::<Result<Vec<_>, _>>()?;
    config.mtp_found = tensors::mtp_layers(&files);
    let metadata = config::metadata(&config, arch)?;
    let tensors = tensors::convert(&config, arch, &files, opts)?;
    Ok(GgufFile::build(
        &dir.display().to_string(),
        &files,
        metadata,
        tensors,
    )?)
}

/// `config.json`, parsed.
fn read_config(dir: &Path) -> Result<HfConfig, CheckpointError> {
    let path = dir.join("config.json");
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::Config {
        file: file.clone(),
        msg: e.to_string(),
    })?;
    let json = serde_json::from_str(&text).map_err(|e| CheckpointError::Config {
        file: file.clone(),
        msg: format!("invalid JSON: {e}"),
    })?;
    HfConfig::new(file, json)
}

/// The safetensors files of a checkpoint: those its index names, else `model.safetensors`, else
/// every `*.safetensors` in name order.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok(frugal_formats::safetensors::read_index(&index)?);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let err = |msg: String| CheckpointError::Files {
        dir: dir.display().to_string(),
        msg,
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(err(
            "no *.safetensors files (and no model.safetensors.index.json)".into(),
        ));
    }
    Ok(found)
}
