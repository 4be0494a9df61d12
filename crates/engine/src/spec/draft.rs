//! Guessing the next tokens with a smaller model of the same vocabulary: it runs ahead of the
//! target greedily, one token per forward pass for all guessing sequences together, and stops a
//! sequence's guesses where it is no longer confident (`--draft-p-min`).
//!
//! Its keys and values live in a KV store of its own addressed by the target's block tables
//! (same block size and count), so that the scheduler's blocks, growth and preemption serve both.
//! Each sequence's draft cache is valid up to a position the engine keeps ([`DraftRequest::
//! computed`]); positions after it, rejected guesses or blocks shared through the prefix cache
//! that this draft has not computed, are written again before they are read.

use super::SpecError;
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, KvType, Logits, Model, ModelError, SeqChunk};
use frugal_tokenizer::Tokenizer;

pub struct DraftModel<'a> {
    model: &'a Model,
    kv: KvStore,
    /// Below this probability of its best token, the draft stops guessing.
    p_min: f32,
    /// Ids the target can take (the draft's may go further).
    n_vocab: usize,
}

/// One sequence's guessing job.
pub struct DraftRequest<'t> {
    /// The sequence's tokens; the target has computed all but the last.
    pub history: &'t [u32],
    /// Positions whose keys and values the draft holds for this sequence.
    pub computed: usize,
    pub want: usize,
    /// The target's block table, covering the history and the guesses.
    pub blocks: &'t [u32],
    pub guesses: Vec<u32>,
}

impl<'a> DraftModel<'a> {
    /// A draft for `target` with a KV store of `n_blocks` blocks of `block_size` positions;
    /// refused when its vocabulary differs or it keeps state this engine cannot share.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &Model,
        target_tokens: &Tokenizer,
        draft: &'a Model,
        draft_tokens: &Tokenizer,
        n_blocks: usize,
        block_size: usize,
        p_min: f32,
    ) -> Result<Self, SpecError> {
        same_vocabulary(target_tokens, draft_tokens)?;
        if draft.state_bytes_per_seq() > 0 || draft.sliding_window().is_some() {
            return Err(SpecError::Unsupported(
                "a draft model with linear-attention or sliding-window layers".into(),
            ));
        }
        Ok(DraftModel {
            model: draft,
            kv: draft.new_kv_store(n_blocks, block_size, 0),
            p_min,
            n_vocab: target.config().n_vocab.min(draft.config().n_vocab),
        })
    }

    /// Stores the draft's keys and values as `kv_type` (nothing is cached yet).
    pub(crate) fn use_kv_type(&mut self, kv_type: KvType) {
        // A draft whose heads cannot be quantized keeps f16.
        let kv_type = match self.model.config().check_kv_type(kv_type) {
            Ok(()) => kv_type,
            Err(_) => KvType::F16,
        };
        if self.kv.kv_type() != kv_type {
            let (n, bs) = (self.kv.n_blocks(), self.kv.block_size());
            self.kv = self.model.new_kv_store_split(kv_type, n, n, bs, 0);
        }
    }

    /// What one guess costs against a decode step of `target`: the weights a draft step reads.
    pub fn cost(&self, target: &Model) -> f32 {
        self.model.weight_bytes() as f32 / target.weight_bytes().max(1) as f32
    }

    /// Fills each request's guesses (up to `want`) and advances its `computed`.
    pub fn guess(
        &mut self,
        pool: &ThreadPool,
        reqs: &mut [DraftRequest<'_>],
    ) -> Result<(), ModelError> {
        let mut active: Vec<usize> = (0..reqs.len()).filter(|&i| reqs[i].want > 0).collect();
        let mut first = true;
        while !active.is_empty() {
            let chunks: Vec<SeqChunk> = active
                .iter()
                .map(|&i| {
                    let r = &reqs[i];
                    let len = r.history.len();
                    // First the tokens the draft has not seen, then its own last guess.
                    let (tokens, pos) = match first {
                        true => (&r.history[r.computed..], r.computed),
                        false => (&r.guesses[r.guesses.len() - 1..], len + r.guesses.len() - 1),
                    };
                    SeqChunk {
                        tokens,
                        pos,
                        blocks: r.blocks,
                        window_blocks: &[],
                        state: 0,
                        logits: Logits::Last,
                    }
                })
                .collect();
            let logits = self.model.forward(pool, &mut self.kv, &chunks)?;
            let n_vocab = self.model.config().n_vocab;
            let mut still = Vec::with_capacity(active.len());
            for (&i, row) in active.iter().zip(logits.chunks_exact(n_vocab)) {
                let r = &mut reqs[i];
                // The chunk just run ends at the last guess (or the history's end).
                r.computed = r.history.len() + r.guesses.len();
                let (token, p) = confident_best(&row[..self.n_vocab]);
                if p < self.p_min {
                    continue;
                }
                r.guesses.push(token);
                if r.guesses.len() < r.want {
                    still.push(i);
                }
            }
            active = still;
            first = false;
        }
        Ok(())
    }
}

/// The most likely token and its probability.
pub(crate) fn confident_best(logits: &[f32]) -> (u32, f32) {
    let (mut best, mut max) = (0, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            (best, max) = (i, l);
        }
    }
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    (best as u32, 1.0 / sum)
}

/// Both tokenizers give every id the target can emit the same text and kind, and name the same
/// special tokens.
pub fn same_vocabulary(target: &Tokenizer, draft: &Tokenizer) -> Result<(), SpecError> {
    let differ = |what: String| Err(SpecError::Vocabulary(what));
    if draft.vocab_size() < target.vocab_size() {
        return differ(format!(
            "the draft has {} tokens, the model {}",
            draft.vocab_size(),
            target.vocab_size()
        ));
    }
    for id in 0..target.vocab_size() as u32 {
        let (t, d) = (target.token_text(id), draft.token_text(id));
        if t != d || target.is_special(id) != draft.is_special(id) {
            return differ(format!(
                "token {id} is {t:?} in the model and {d:?} in the draft"
            ));
        }
    }
    if target.eog_ids() != draft.eog_ids()
        || (target.bos(), target.eos()) != (draft.bos(), draft.eos())
    {
        return differ("their special tokens (BOS, EOS, end of generation) differ".into());
    }
    Ok(())
}
