//! Transformer models for frugal: the configuration read from GGUF metadata, the weights loaded into
//! kernel matrices, the KV store, and the forward pass of each supported architecture family.
//!
//! The forward pass works on a batch of sequence chunks ([`SeqChunk`]): all their tokens go through
//! every matrix product together, while attention reads each sequence's own KV blocks. `frugal logits`
//! is one chunk; a serving engine passes many.

#![forbid(unsafe_code)]

mod attention;
mod config;
mod delta_net;
mod ffn;
mod kv_store;
mod mtp;
mod transformer;
mod weights;

pub use config::{Arch, DeltaNetConfig, Gating, MlaConfig, ModelConfig, MoeConfig, SharedGate};
pub use kv_store::{BlockGroup, KvStore, KvType};
pub use weights::{available_memory, LoadOptions, Mmap};

use frugal_formats::{GgufError, GgufFile};
use frugal_kernels::{KernelError, ThreadPool};

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArch {
        file: String,
        arch: String,
        supported: String,
    },
    #[error("{file}: missing tensor '{name}'")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor '{name}' has shape {actual:?}, expected {expected:?}")]
    BadShape {
        file: String,
        name: String,
        expected: Vec<u64>,
        actual: Vec<u64>,
    },
    #[error("{file}: invalid model configuration: {msg}")]
    BadConfig { file: String, msg: String },
    #[error("{file}: tensor '{name}': {source}")]
    Kernel {
        file: String,
        name: String,
        source: KernelError,
    },
    #[error("token id {token} is out of range (vocabulary has {n_vocab} entries)")]
    TokenOutOfRange { token: u32, n_vocab: usize },
    #[error("sequence needs {needed} positions but its KV blocks hold {capacity}")]
    KvOverflow { needed: usize, capacity: usize },
    #[error("the model has no multi-token-prediction layer")]
    NoMtpLayer,
    #[error("{got} hidden values for {tokens} tokens of {width}")]
    HiddenLength {
        got: usize,
        tokens: usize,
        width: usize,
    },
    #[error(
        "state slot {slot} is out of range ({n_states} slots) or used by two chunks of one step"
    )]
    BadStateSlot { slot: u32, n_states: usize },
}

/// Which logits a chunk wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the end of the prompt).
    None,
    /// Only for the chunk's last token (generation).
    Last,
    /// For every token of the chunk (`frugal logits`, prompt logprobs).
    All,
    /// For the chunk's last this many tokens (verifying guesses appended to a chunk).
    Tail(usize),
}

/// A run of consecutive tokens of one sequence, processed in one forward call.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// The new tokens.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; the sequence's KV blocks already hold positions `0..pos`.
    pub pos: usize,
    /// The sequence's KV block ids, in order; they must cover positions `0..pos + tokens.len()`.
    pub blocks: &'a [u32],
    /// The block table of the sliding-window layers (their own pool), indexed like `blocks`;
    /// entries of blocks that lie wholly before the window of the chunk's first token,
    /// `(pos + 1).saturating_sub(window)`, are never read (a pool may have reused them; any
    /// value, `u32::MAX` by convention). Empty: the same table as `blocks`. Ignored by models
    /// without sliding-window layers.
    pub window_blocks: &'a [u32],
    /// The sequence's recurrent-state slot (models with linear-attention layers; ignored by the
    /// others). It must hold the state after position `pos - 1`; at `pos` 0 it is cleared first.
    pub state: u32,
    pub logits: Logits,
}

/// A loaded model, ready to run forward passes.
pub struct Model {
    config: ModelConfig,
    weights: weights::Weights,
    /// The configuration the multi-token-prediction head runs under, if the file has one.
    mtp_config: Option<ModelConfig>,
}

/// A forward pass's results.
#[derive(Debug, Default)]
pub struct Output {
    /// The requested logits, `[rows][n_vocab]` row-major, in chunk order (per chunk: none, its
    /// last token, its last few, or all its tokens).
    pub logits: Vec<f32>,
    /// Hidden states after the final norm, `[rows][n_embd]`: of every token
    /// ([`Model::forward_hidden`]), or of the rows whose logits were asked for
    /// ([`Model::mtp_forward`]).
    pub hidden: Vec<f32>,
}

impl Model {
    /// Locks the weight matrices' memory in RAM (see `storage::lock_in_memory`): the bytes the
    /// products read, packed copies or mapped file pages, experts kept in the map included (all
    /// of them are read into memory). Returns the bytes locked.
    pub fn lock_in_memory(&self) -> std::io::Result<usize> {
        let mut locked = 0;
        for m in self.weights.matrices() {
            let bytes = m.resident_bytes();
            frugal_kernels::storage::lock_in_memory(bytes).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}, after {locked} bytes of weights: raise the locked-memory limit (ulimit -l)"
                    ),
                )
            })?;
            locked += bytes.len();
        }
        Ok(locked)
    }

    /// Loads a model from an opened GGUF file, mapping or copying weights as `FRUGAL_MMAP`
    /// (`auto`, the default; `always`; `never`) says: see [`Mmap`].
    pub fn load(gguf: &GgufFile, opts: &LoadOptions) -> Result<Model, ModelError> {
        Self::load_with(gguf, opts, Mmap::from_env())
    }

    /// [`Model::load`] with an explicit [`Mmap`] policy.
    pub fn load_with(gguf: &GgufFile, opts: &LoadOptions, mmap: Mmap) -> Result<Model, ModelError> {
        let mut config = ModelConfig::from_gguf(gguf)?;
        let weights = weights::Weights::load(gguf, &config, opts, mmap)?;
        config.rope.freq_factors = weights.rope_freqs.clone();
        let mtp_config = (!weights.nextn.is_empty()).then(|| mtp::config(&config));
        Ok(Model {
            config,
            weights,
            mtp_config,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A KV store in f32 (exact) with `n_blocks` blocks of `block_size` positions each
    /// (sliding-window layers, if any, get as many, with the same ids) and `n_states`
    /// recurrent-state slots (used only by models with linear-attention layers).
    pub fn new_kv_store(&self, n_blocks: usize, block_size: usize, n_states: usize) -> KvStore {
        KvStore::new(
            &self.config,
            KvType::F32,
            n_blocks,
            n_blocks,
            block_size,
            n_states,
        )
    }

    /// [`Model::new_kv_store`] in `kv_type`, with a pool of its own, of `n_window_blocks`
    /// blocks, for the sliding-window layers (addressed by [`SeqChunk::window_blocks`]).
    pub fn new_kv_store_split(
        &self,
        kv_type: KvType,
        n_blocks: usize,
        n_window_blocks: usize,
        block_size: usize,
        n_states: usize,
    ) -> KvStore {
        KvStore::new(
            &self.config,
            kv_type,
            n_blocks,
            n_window_blocks,
            block_size,
            n_states,
        )
    }

    /// The sliding window of the model's sliding-window layers, in positions (Gemma 3).
    pub fn sliding_window(&self) -> Option<usize> {
        self.config.sliding_window()
    }

    /// Runs the chunks through the model, writing their keys and values into `kv`. Returns the
    /// requested logits, `[rows, n_vocab]` row-major, in chunk order (per chunk: none, its last
    /// token, or all its tokens).
    pub fn forward(
        &self,
        pool: &ThreadPool,
        kv: &mut KvStore,
        chunks: &[SeqChunk<'_>],
    ) -> Result<Vec<f32>, ModelError> {
        Ok(self.run(pool, kv, chunks, false)?.logits)
    }

    /// [`Model::forward`], also returning every token's hidden state after the final norm (what
    /// the multi-token-prediction head reads).
    pub fn forward_hidden(
        &self,
        pool: &ThreadPool,
        kv: &mut KvStore,
        chunks: &[SeqChunk<'_>],
    ) -> Result<Output, ModelError> {
        self.run(pool, kv, chunks, true)
    }

    fn run(
        &self,
        pool: &ThreadPool,
        kv: &mut KvStore,
        chunks: &[SeqChunk<'_>],
        hidden: bool,
    ) -> Result<Output, ModelError> {
        self.check_chunks(kv, chunks, self.config.sliding_window())?;
        if kv.has_states() {
            check_state_slots(kv, chunks)?;
            for c in chunks.iter().filter(|c| c.pos == 0) {
                kv.clear_state(c.state);
            }
        }
        let out = transformer::forward(&self.config, &self.weights, pool, kv, chunks, hidden);
        Ok(Output {
            logits: out.logits,
            hidden: out.hidden,
        })
    }

    /// Token ids in range, and block tables that cover every chunk (their windows, with a
    /// sliding window).
    fn check_chunks(
        &self,
        kv: &KvStore,
        chunks: &[SeqChunk<'_>],
        window: Option<usize>,
    ) -> Result<(), ModelError> {
        for c in chunks {
            for &t in c.tokens {
                if t as usize >= self.config.n_vocab {
                    return Err(ModelError::TokenOutOfRange {
                        token: t,
                        n_vocab: self.config.n_vocab,
                    });
                }
            }
            check_blocks(
                c.blocks,
                0,
                c.pos + c.tokens.len(),
                kv.block_size(),
                kv.n_blocks(),
            )?;
            if let Some(w) = window {
                let table = match c.window_blocks.is_empty() {
                    true => c.blocks,
                    false => c.window_blocks,
                };
                let first = (c.pos + 1).saturating_sub(w);
                let (end, bs) = (c.pos + c.tokens.len(), kv.block_size());
                check_blocks(table, first, end, bs, kv.n_window_blocks())?;
            }
        }
        Ok(())
    }

    /// Whether the file has a multi-token-prediction head ([`Model::mtp_forward`]).
    pub fn has_mtp(&self) -> bool {
        self.mtp_config.is_some()
    }

    /// The multi-token-prediction head's KV store in `kv_type`: one layer, `n_blocks` blocks of
    /// `block_size` positions (addressed by the same block tables as the model's own).
    pub fn new_mtp_kv_store(
        &self,
        kv_type: KvType,
        n_blocks: usize,
        block_size: usize,
    ) -> Option<KvStore> {
        let c = self.mtp_config.as_ref()?;
        Some(KvStore::new(c, kv_type, n_blocks, n_blocks, block_size, 0))
    }

    /// Bytes of weights one token of the multi-token-prediction head reads at most: its layer,
    /// its input projection and the output projection (0 without a head).
    pub fn mtp_weight_bytes(&self) -> u64 {
        let Some(m) = self.weights.nextn.first() else {
            return 0;
        };
        let output = m.shared_head_head.as_ref().unwrap_or(self.weights.output());
        let layer: usize = weights::layer_matrices(&m.layer)
            .iter()
            .map(|w| w.n_bytes())
            .sum();
        (layer + m.eh_proj.n_bytes() + output.n_bytes()) as u64
    }

    /// Runs the multi-token-prediction head over `chunks`, writing its keys and values into
    /// `kv` (from [`Model::new_mtp_kv_store`]); `hidden` holds, per token of the chunks, the
    /// hidden state (after the final norm) of the position before it: the model's
    /// ([`Model::forward_hidden`]), or the head's own for a chained guess. Returns the requested
    /// logits (a token's logits predict the token two positions after it) and the head's hidden
    /// state of the same rows.
    pub fn mtp_forward(
        &self,
        pool: &ThreadPool,
        kv: &mut KvStore,
        chunks: &[SeqChunk<'_>],
        hidden: &[f32],
    ) -> Result<Output, ModelError> {
        let (Some(c), Some(m)) = (&self.mtp_config, self.weights.nextn.first()) else {
            return Err(ModelError::NoMtpLayer);
        };
        self.check_chunks(kv, chunks, None)?;
        let n: usize = chunks.iter().map(|c| c.tokens.len()).sum();
        if hidden.len() != n * self.config.n_embd {
            return Err(ModelError::HiddenLength {
                got: hidden.len(),
                tokens: n,
                width: self.config.n_embd,
            });
        }
        let out = mtp::forward(c, &self.weights, m, pool, kv, chunks, hidden);
        Ok(Output {
            logits: out.logits,
            hidden: out.hidden,
        })
    }

    /// Where a hybrid model's prompt chunks should be cut, if the token budget allows: at
    /// multiples of this many positions, the windows of the delta rule's chunked form. A
    /// sequence's numbers then do not depend on how its prompt was split across steps.
    pub fn state_window(&self) -> usize {
        delta_net::WINDOW
    }

    /// Bytes of one sequence's recurrent state (0 for models without linear attention).
    pub fn state_bytes_per_seq(&self) -> usize {
        self.config.state_bytes_per_seq()
    }

    /// Total number of weight parameters.
    pub fn n_params(&self) -> u64 {
        self.weights.n_params
    }

    /// Bytes of weights as stored in memory.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.n_bytes
    }
}

/// `table` covers positions `first..end` with ids of a pool of `n_blocks` blocks.
fn check_blocks(
    table: &[u32],
    first: usize,
    end: usize,
    block_size: usize,
    n_blocks: usize,
) -> Result<(), ModelError> {
    let capacity = table.len() * block_size;
    if end > capacity {
        return Err(ModelError::KvOverflow {
            needed: end,
            capacity,
        });
    }
    if table[first / block_size..end.div_ceil(block_size)]
        .iter()
        .any(|&b| b as usize >= n_blocks)
    {
        return Err(ModelError::KvOverflow {
            needed: end,
            capacity: n_blocks * block_size,
        });
    }
    Ok(())
}

/// Every chunk's state slot exists, and no two chunks share one (they would race on it).
fn check_state_slots(kv: &KvStore, chunks: &[SeqChunk<'_>]) -> Result<(), ModelError> {
    let mut seen = std::collections::HashSet::new();
    for c in chunks {
        if c.state as usize >= kv.n_states() || !seen.insert(c.state) {
            return Err(ModelError::BadStateSlot {
                slot: c.state,
                n_states: kv.n_states(),
            });
        }
    }
    Ok(())
}
