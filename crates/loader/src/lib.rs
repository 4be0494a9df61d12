//! Opening a model, the one way every command and the server do it: the GGUF file (or a Hugging
//! Face safetensors checkpoint folder, converted at open by `frugal-checkpoint`), its tokenizer
//! and chat template, the context size, the thread count, then the weights (with the same
//! `--dequantize`, memory-map policy and threads everywhere).
//!
//! Opening is quick (metadata only); [`ModelFile::load`] reads the weights, so a server can
//! answer `/health` while they load.
#![forbid(unsafe_code)]

use frugal_chat::{ChatError, ChatTemplate};
use frugal_checkpoint::CheckpointError;
use frugal_formats::{GgufError, GgufFile};
use frugal_kernels::{GgmlType, ThreadPool};
use frugal_models::{LoadOptions, Mmap, Model, ModelConfig, ModelError};
use frugal_tokenizer::{SpecialToken, Tokenizer, TokenizerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The context used when none is asked for: the model's trained context, at most this.
pub const DEFAULT_MAX_CTX: usize = 4096;

/// How to open and load a model (the flags every model command shares).
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// Worker threads, for loading and running (`None`: every available core).
    pub threads: Option<usize>,
    /// Dequantize all weights to F32 at load (the exact reference path).
    pub dequantize: bool,
    /// `None`: as `FRUGAL_MMAP` says (see [`Mmap`]).
    pub mmap: Option<Mmap>,
    /// A Jinja chat template used instead of the model's own.
    pub chat_template: Option<String>,
    /// Lock the weights in RAM once loaded (`Model::lock_in_memory`); failing to is an error.
    pub mlock: bool,
    /// Context length of one sequence (`None`: the trained context, at most
    /// [`DEFAULT_MAX_CTX`]).
    pub ctx_size: Option<usize>,
    /// Quantize a safetensors checkpoint's weight matrices into this type at open
    /// (`--quantize`); a GGUF file is used as it is quantized.
    pub quantize: Option<GgmlType>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Format(#[from] GgufError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
    // The message carries the cause itself; `#[source]` would make `{:#}` print it twice.
    #[error("chat template: {0}")]
    Template(ChatError),
    #[error("{0}")]
    Options(String),
}

/// An opened model file: everything but the weights.
pub struct ModelFile {
    pub path: PathBuf,
    pub gguf: GgufFile,
    pub config: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    /// Context length of one sequence.
    pub n_ctx: usize,
    pub threads: usize,
    /// What the user should hear about.
    pub warnings: Vec<Warning>,
    dequantize: bool,
    mmap: Mmap,
    mlock: bool,
}

/// Something about an opened model that its user should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The model has no chat template: chats are rendered with the built-in one named here
    /// (the turn format its vocabulary's tokens say, else ChatML).
    NoChatTemplate { fallback: &'static str },
    /// The context asked for is longer than the model was trained on.
    BeyondTrainedContext { n_ctx: usize, trained: usize },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NoChatTemplate { fallback } => {
                write!(f, "the model has no chat template; using {fallback}")
            }
            // As llama.cpp warns; frugal applies the RoPE scaling the GGUF metadata declares.
            Warning::BeyondTrainedContext { n_ctx, trained } => write!(
                f,
                "the context of {n_ctx} tokens is longer than the {trained} the model was \
                 trained on: expect its output to degrade past {trained} tokens. To extend the \
                 context deliberately, use a GGUF whose metadata sets RoPE scaling (YaRN: \
                 `<arch>.rope.scaling.type = yarn` with `.factor` and \
                 `.original_context_length`)"
            ),
        }
    }
}

/// Every available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ModelFile {
    /// Reads the GGUF metadata (or converts a checkpoint folder's), the tokenizer and the chat
    /// template, and checks the options.
    pub fn open(path: &Path, opts: &ModelOptions) -> Result<ModelFile, LoadError> {
        let threads = match opts.threads {
            Some(0) => return Err(LoadError::Options("--threads must be at least 1".into())),
            Some(n) => n,
            None => default_threads(),
        };
        let (gguf, tokenizer) = open_model(path, opts)?;
        let config = ModelConfig::from_gguf(&gguf)?;
        let mut warnings = Vec::new();
        let template = chat_template(&tokenizer, opts.chat_template.as_deref(), &mut warnings)?;
        let n_ctx = context_size(&config, opts.ctx_size, &mut warnings)?;
        Ok(ModelFile {
            path: path.to_path_buf(),
            gguf,
            config,
            tokenizer: Arc::new(tokenizer),
            template: Arc::new(template),
            n_ctx,
            threads,
            warnings,
            dequantize: opts.dequantize,
            mmap: opts.mmap.unwrap_or_else(Mmap::from_env),
            mlock: opts.mlock,
        })
    }

    /// Loads the weights, repacking them on `threads` threads; `progress` is called with
    /// (bytes loaded, bytes total).
    pub fn load(&self, progress: Option<&(dyn Fn(u64, u64) + Sync)>) -> Result<Model, LoadError> {
        let opts = LoadOptions {
            dequantize: self.dequantize,
            threads: Some(self.threads),
            progress,
        };
        let model = Model::load_with(&self.gguf, &opts, self.mmap)?;
        if self.mlock {
            model
                .lock_in_memory()
                .map_err(|e| LoadError::Options(format!("--mlock: {e}")))?;
        }
        Ok(model)
    }

    /// Refuses a KV type the model's heads cannot be stored in (see
    /// [`ModelConfig::check_kv_type`]).
    pub fn check_kv_type(&self, ty: frugal_models::KvType) -> Result<(), LoadError> {
        self.config.check_kv_type(ty).map_err(LoadError::Options)
    }

    /// The pool that runs the model.
    pub fn thread_pool(&self) -> ThreadPool {
        ThreadPool::new(self.threads)
    }
}

/// The model at `path` and its tokenizer: a checkpoint folder (`config.json`, safetensors,
/// `tokenizer.json`) converted at open, or a GGUF file (of a split set too).
fn open_model(path: &Path, opts: &ModelOptions) -> Result<(GgufFile, Tokenizer), LoadError> {
    if frugal_checkpoint::is_checkpoint(path) {
        let ckpt = frugal_checkpoint::Options {
            quantize: opts.quantize,
        };
        let gguf = frugal_checkpoint::open(path, &ckpt)?;
        let tokenizer = Tokenizer::from_file(&path.join("tokenizer.json"))?;
        return Ok((gguf, tokenizer));
    }
    if let Some(ty) = opts.quantize {
        return Err(LoadError::Options(format!(
            "--quantize {ty} applies to safetensors checkpoint folders; {} is used as its \
             GGUF is quantized (llama-quantize makes other types)",
            path.display()
        )));
    }
    let gguf = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    Ok((gguf, tokenizer))
}

/// Built-in templates for files that carry none (base models, some conversions), by the turn
/// tokens their vocabulary has, as Ollama picks a family's template: (name, tokens, template).
const FALLBACK_TEMPLATES: &[(&str, &[&str], &str)] = &[(
    "Gemma's turn format",
    &["<start_of_turn>", "<end_of_turn>"],
    include_str!("templates/gemma.jinja"),
)];

/// The built-in template a model without one is chatted with: the turn format its vocabulary's
/// special tokens name, else ChatML (`None` source). Returns its name and source.
pub fn built_in_template(tokenizer: &Tokenizer) -> (&'static str, Option<&'static str>) {
    let found = FALLBACK_TEMPLATES.iter().find(|(_, tokens, _)| {
        tokens.iter().all(|t| {
            tokenizer
                .token_id(t)
                .is_some_and(|id| tokenizer.is_special(id))
        })
    });
    match found {
        Some(&(name, _, src)) => (name, Some(src)),
        None => ("ChatML", None),
    }
}

/// The template given, else the model's, else a built-in one (with a warning): the turn format
/// of the vocabulary's family, or ChatML.
fn chat_template(
    tokenizer: &Tokenizer,
    given: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Result<ChatTemplate, LoadError> {
    let src = match given.or(tokenizer.chat_template()) {
        Some(src) => src,
        None => {
            let (name, src) = built_in_template(tokenizer);
            warnings.push(Warning::NoChatTemplate { fallback: name });
            match src {
                Some(src) => src,
                None => return Ok(ChatTemplate::chatml()),
            }
        }
    };
    ChatTemplate::new(
        src,
        tokenizer.special_token_text(SpecialToken::Bos),
        tokenizer.special_token_text(SpecialToken::Eos),
        tokenizer.special_token_text(SpecialToken::Pad),
    )
    .map_err(LoadError::Template)
}

/// The context asked for, or the default; a warning past the trained context.
fn context_size(
    config: &ModelConfig,
    asked: Option<usize>,
    warnings: &mut Vec<Warning>,
) -> Result<usize, LoadError> {
    let trained = config.n_ctx_train;
    let n_ctx = asked.unwrap_or(trained.min(DEFAULT_MAX_CTX));
    if n_ctx == 0 {
        return Err(LoadError::Options("--ctx-size must be at least 1".into()));
    }
    if n_ctx > trained {
        warnings.push(Warning::BeyondTrainedContext { n_ctx, trained });
    }
    Ok(n_ctx)
}

/// A tokenizer alone, from a GGUF file (a vocabulary-only one works), a `tokenizer.json`, or a
/// folder holding one.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, LoadError> {
    let json = if path.is_dir() {
        Some(path.join("tokenizer.json"))
    } else if path.extension().is_some_and(|e| e == "json") {
        Some(path.to_path_buf())
    } else {
        None
    };
    Ok(match json {
        Some(j) => Tokenizer::from_file(&j)?,
        None => Tokenizer::from_gguf(&GgufFile::open(path)?)?,
    })
}
