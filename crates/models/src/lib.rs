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
mod transformer;
mod weights;

pub use config::{Arch, DeltaNetConfig, Gating, MlaConfig, ModelConfig, MoeConfig, SharedGate};
pub use kv_store::KvStore;
pub use weights::{LoadOptions, Mmap};

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
        Ok(Model { config, weights })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A KV store with `n_blocks` blocks of `block_size` positions each (sliding-window layers,
    /// if any, get as many, with the same ids) and `n_states` recurrent-state slots (used only by
    /// models with linear-attention layers).
    pub fn new_kv_store(&self, n_blocks: usize, block_size: usize, n_states: usize) -> KvStore {
        KvStore::new(&self.config, n_blocks, n_blocks, block_size, n_states)
    }

    /// [`Model::new_kv_store`] with a pool of its own, of `n_window_blocks` blocks, for the
    /// sliding-window layers (addressed by [`SeqChunk::window_blocks`]).
    pub fn new_kv_store_split(
        &self,
        n_blocks: usize,
        n_window_blocks: usize,
        block_size: usize,
        n_states: usize,
    ) -> KvStore {
        KvStore::new(
            &self.config,
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
            if let Some(w) = self.config.sliding_window() {
                let table = match c.window_blocks.is_empty() {
                    true => c.blocks,
                    false => c.window_blocks,
                };
                let first = (c.pos + 1).saturating_sub(w);
                let (end, bs) = (c.pos + c.tokens.len(), kv.block_size());
                check_blocks(table, first, end, bs, kv.n_window_blocks())?;
            }
        }
        if kv.has_states() {
            check_state_slots(kv, chunks)?;
            for c in chunks.iter().filter(|c| c.pos == 0) {
                kv.clear_state(c.state);
            }
        }
        Ok(transformer::forward(
            &self.config,
            &self.weights,
            pool,
            kv,
            chunks,
        ))
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
