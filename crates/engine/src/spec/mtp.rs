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
use frugal_models::{KvStore, KvType, Logits, Model, ModelError, SeqChunk};

pub struct MtpHead<'a> {
    model: &'a Model,
    kv: KvStore,
    /// Below this probability of its best token, the head stops guessing.
    p_min: f32,
    /// Per KV block: the model's hidden state at the block's last position, kept when the head
    /// follows it there; a sequence that resumes after a cached prefix starts from it.
    block_end: Vec<f32>,
}

/// Where one sequence's head stands: the model's hidden state at the last position it followed
/// (reset when the sequence loses its blocks).
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
    /// Each guess's probability under the head.
    pub probs: Vec<f32>,
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
            .new_mtp_kv_store(KvType::F32, n_blocks, block_size)
            .ok_or(SpecError::NoMtpLayer)?;
        Ok(MtpHead {
            model,
            kv,
            p_min,
            block_end: vec![0.0; n_blocks * model.config().n_embd],
        })
    }

    /// Stores the head's keys and values as `kv_type` (nothing is cached yet).
    pub(crate) fn use_kv_type(&mut self, kv_type: KvType) {
        if self.kv.kv_type() != kv_type {
            let (n, bs) = (self.kv.n_blocks(), self.kv.block_size());
            self.kv = self
                .model
                .new_mtp_kv_store(kv_type, n, bs)
                .expect("the head was made from this model's MTP layer");
        }
    }

    /// What one guess costs against a decode step of the model: the weights a head step reads.
    pub fn cost(&self) -> f32 {
        self.model.mtp_weight_bytes() as f32 / self.model.weight_bytes().max(1) as f32
    }

    /// Runs the head over what the model just computed, one entry per sequence. Tokens the
    /// head has followed already (a hybrid model runs a chunk again after a rejected guess
    /// entered its recurrent state: the same tokens, the same hidden states) are skipped.
    pub fn follow(
        &mut self,
        pool: &ThreadPool,
        computed: &mut [(Computed<'_>, &mut MtpSeq)],
    ) -> Result<(), ModelError> {
        let e = self.model.config().n_embd;
        let mut chunks = Vec::new();
        let mut before = Vec::new();
        for (c, seq) in computed.iter_mut() {
            let seen = seq.pos.map_or(0, |p| (p + 1).saturating_sub(c.pos));
            let skip = seen.min(c.tokens.len());
            (c.tokens, c.pos, c.hidden) = (&c.tokens[skip..], c.pos + skip, &c.hidden[skip * e..]);
            if c.tokens.is_empty() {
                continue;
            }
            before.extend_from_slice(&self.before(seq, c.pos, c.blocks));
            before.extend_from_slice(&c.hidden[..(c.tokens.len() - 1) * e]);
            chunks.push(chunk(c.tokens, c.pos, c.blocks, Logits::None));
        }
        if chunks.is_empty() {
            return Ok(());
        }
        self.model
            .mtp_forward(pool, &mut self.kv, &chunks, &before)?;
        let bs = self.kv.block_size();
        for (c, seq) in computed.iter_mut().filter(|(c, _)| !c.tokens.is_empty()) {
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
                r.probs.push(p);
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

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_fixtures::{ids, Set};
    use frugal_formats::GgufFile;
    use frugal_models::LoadOptions;
    use frugal_models::Output;

    /// The model over `tokens` at `pos` (one sequence, state slot 0): its hidden states.
    fn model_forward(
        m: &Model,
        pool: &ThreadPool,
        kv: &mut KvStore,
        tokens: &[u32],
        pos: usize,
    ) -> Output {
        let blocks: Vec<u32> = (0..16).collect();
        let c = chunk(tokens, pos, &blocks, Logits::Last);
        m.forward_hidden(pool, kv, &[c]).unwrap()
    }

    /// A hybrid model runs `x y` again after a rejected guess: following it again leaves the
    /// head exactly where following `x y` once did.
    #[test]
    fn a_chunk_run_again_leaves_the_head_as_it_was() {
        let set = Set::hybrid();
        let gguf = GgufFile::open(set.model("qwen35-Q4_K_M")).unwrap();
        let model = Model::load(&gguf, &LoadOptions::default()).unwrap();
        let prompt = ids(&set.expected_json("qwen35-Q4_K_M")["token_ids"]);
        let (x, y, n) = (prompt[3], prompt[4], prompt.len());
        let pool = ThreadPool::new(2);
        let blocks: Vec<u32> = (0..16).collect();
        let run = |again: bool| {
            let mut kv = model.new_kv_store(16, 16, 2);
            let mut head = MtpHead::new(&model, 16, 16, 0.0).unwrap();
            let mut at = MtpSeq::default();
            let mut follow = |head: &mut MtpHead, kv: &mut KvStore, tokens: &[u32], pos| {
                let out = model_forward(&model, &pool, kv, tokens, pos);
                let c = Computed {
                    tokens,
                    pos,
                    blocks: &blocks,
                    hidden: &out.hidden,
                };
                head.follow(&pool, &mut [(c, &mut at)]).unwrap();
            };
            follow(&mut head, &mut kv, &prompt, 0);
            if again {
                // The state before `x` kept in slot 1, as a rollback slot keeps it.
                kv.copy_state(0, 1);
                follow(&mut head, &mut kv, &[x], n);
                kv.copy_state(1, 0);
            }
            follow(&mut head, &mut kv, &[x, y], n);
            let mut req = MtpRequest {
                last: y,
                pos: n + 2,
                blocks: &blocks,
                want: 3,
                guesses: Vec::new(),
                probs: Vec::new(),
            };
            head.guess(&pool, std::slice::from_mut(&mut req), &[&at])
                .unwrap();
            (req.guesses, req.probs)
        };
        let (once, twice) = (run(false), run(true));
        assert_eq!(once.0.len(), 3);
        assert_eq!(once, twice);
    }
}
