//! Guessing with the model's own multi-token-prediction head (`nextn`: GLM-4.5, Qwen3.5,
//! DeepSeek-style files): one decoder layer that reads the model's hidden state at a position
//! and the next token, and predicts the token after it.
//!
//! The head keeps keys and values of its own, addressed by the engine's block tables like a draft
//! model's. After every forward pass of the model, the head runs over the tokens the model kept
//! (a prefill chunk, or a decoding token and its accepted guesses), each paired with the model's
//! hidden state of the position before it ([`MtpHead::follow`]), so its cache always holds what
//! the model computed. To guess, it starts from the sequence's last token and the model's last
//! hidden state and chains: each guess's own hidden state feeds the next ([`MtpHead::guess`]).
//! Positions written while guessing lie beyond what the model kept and are written again.

use super::{draft::confident_best, SpecError};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, Logits, Model, ModelError, SeqChunk};

pub struct MtpHead<'a> {
    model: &'a Model,
    kv: KvStore,
    /// Below this probability of its best token, the head stops guessing.
    p_min: f32,
    /// Per KV block: the model's hidden state at the block's last position, kept when the head
    /// follows it there; a sequence that resumes after a cached prefix starts from it.
    block_end: Vec<f32>,
}

/// Where one sequence's head stands: the model's hidden state at the last position it followed.
#[derive(Debug, Clone, Default)]
pub struct MtpSeq {
    hidden: Vec<f32>,
    pos: Option<usize>,
}

/// Tokens the model just computed for one sequence, and their hidden states.
pub struct Computed<'t> {
    pub tokens: &'t [u32],
    pub pos: usize,
    pub blocks: &'t [u32],
    /// `[tokens][n_embd]`, after the final norm.
    pub hidden: &'t [f32],
}

/// One sequence's guessing job: guesses after `last`, the token at `pos` that the model has not
/// computed yet.
pub struct MtpRequest<'t> {
    pub last: u32,
    pub pos: usize,
    pub blocks: &'t [u32],
    pub want: usize,
    pub guesses: Vec<u32>,
}

impl<'a> MtpHead<'a> {
    /// The head of `model`, with a KV store of `n_blocks` blocks of `block_size` positions.
    pub fn new(
        model: &'a Model,
        n_blocks: usize,
        block_size: usize,
        p_min: f32,
    ) -> Result<Self, SpecError> {
        let kv = model
            .new_mtp_kv_store(n_blocks, block_size)
            .ok_or_else(|| {
                SpecError::Unsupported("a model without multi-token-prediction layers".into())
            })?;
        Ok(MtpHead {
            model,
            kv,
            p_min,
            block_end: vec![0.0; n_blocks * model.config().n_embd],
        })
    }

    /// What one guess costs against a decode step of the model: the weights a head step reads.
    pub fn cost(&self) -> f32 {
        self.model.mtp_weight_bytes() as f32 / self.model.weight_bytes().max(1) as f32
    }

    /// Runs the head over what the model just computed, one entry per sequence.
    pub fn follow(
        &mut self,
        pool: &ThreadPool,
        computed: &mut [(Computed<'_>, &mut MtpSeq)],
    ) -> Result<(), ModelError> {
        if computed.is_empty() {
            return Ok(());
        }
        let e = self.model.config().n_embd;
        let mut before = Vec::new();
        for (c, seq) in computed.iter() {
            before.extend_from_slice(&self.before(seq, c.pos, c.blocks));
            before.extend_from_slice(&c.hidden[..(c.tokens.len() - 1) * e]);
        }
        let chunks: Vec<SeqChunk> = computed
            .iter()
            .map(|(c, _)| chunk(c.tokens, c.pos, c.blocks, Logits::None))
            .collect();
        self.model
            .mtp_forward(pool, &mut self.kv, &chunks, &before)?;
        let bs = self.kv.block_size();
        for (c, seq) in computed.iter_mut() {
            for (i, row) in c.hidden.chunks_exact(e).enumerate() {
                let p = c.pos + i;
                if (p + 1).is_multiple_of(bs) {
                    let b = c.blocks[p / bs] as usize;
                    self.block_end[b * e..(b + 1) * e].copy_from_slice(row);
                }
            }
            seq.hidden = c.hidden[(c.tokens.len() - 1) * e..].to_vec();
            seq.pos = Some(c.pos + c.tokens.len() - 1);
        }
        Ok(())
    }

    /// Fills each request's guesses (up to `want`), for sequences whose heads stand at
    /// `seqs[i]`.
    pub fn guess(
        &mut self,
        pool: &ThreadPool,
        reqs: &mut [MtpRequest<'_>],
        seqs: &[&MtpSeq],
    ) -> Result<(), ModelError> {
        let e = self.model.config().n_embd;
        let mut active: Vec<usize> = (0..reqs.len()).filter(|&i| reqs[i].want > 0).collect();
        let mut hidden: Vec<Vec<f32>> = reqs
            .iter()
            .zip(seqs)
            .map(|(r, s)| self.before(s, r.pos, r.blocks))
            .collect();
        while !active.is_empty() {
            let chunks: Vec<SeqChunk> = active
                .iter()
                .map(|&i| {
                    let r = &reqs[i];
                    let token = r.guesses.last().unwrap_or(&r.last);
                    let pos = r.pos + r.guesses.len();
                    chunk(std::slice::from_ref(token), pos, r.blocks, Logits::Last)
                })
                .collect();
            let h: Vec<f32> = active.iter().flat_map(|&i| &hidden[i]).copied().collect();
            let out = self.model.mtp_forward(pool, &mut self.kv, &chunks, &h)?;
            let n_vocab = self.model.config().n_vocab;
            let mut still = Vec::with_capacity(active.len());
            for (j, &i) in active.iter().enumerate() {
                let (token, p) = confident_best(&out.logits[j * n_vocab..(j + 1) * n_vocab]);
                if p < self.p_min {
                    continue;
                }
                let r = &mut reqs[i];
                r.guesses.push(token);
                hidden[i] = out.hidden[j * e..(j + 1) * e].to_vec();
                if r.guesses.len() < r.want {
                    still.push(i);
                }
            }
            active = still;
        }
        Ok(())
    }

    /// The model's hidden state at `pos - 1` for a sequence whose head stands at `seq`: the one
    /// it kept, or where it resumes after a cached prefix at a block boundary, the one kept for
    /// that block; zeros before the first token (and, for want of better, anywhere else).
    fn before(&self, seq: &MtpSeq, pos: usize, blocks: &[u32]) -> Vec<f32> {
        let e = self.model.config().n_embd;
        let bs = self.kv.block_size();
        if pos > 0 && seq.pos == Some(pos - 1) {
            return seq.hidden.clone();
        }
        if pos > 0 && pos.is_multiple_of(bs) {
            let b = blocks[pos / bs - 1] as usize;
            return self.block_end[b * e..(b + 1) * e].to_vec();
        }
        vec![0.0; e]
    }
}

fn chunk<'t>(tokens: &'t [u32], pos: usize, blocks: &'t [u32], logits: Logits) -> SeqChunk<'t> {
    SeqChunk {
        tokens,
        pos,
        blocks,
        window_blocks: &[],
        state: 0,
        logits,
    }
}
