//! The multi-token-prediction head against llama.cpp's MTP draft (crates/fixtures/data/mtp, made by
//! scripts/gen_mtp_fixtures.sh): on the exact path (weights dequantized to f32, as llama.cpp ran on the
//! dequantized copy), the prompt fills the head's cache from the trunk's hidden states; then, round
//! after round, the head chains its guesses from the last token, and the trunk computes the tokens
//! llama.cpp's verification kept (the greedy output) before the next round. Every guess's three best
//! tokens and their probabilities (within the ten best, as llama.cpp's draft sampler reports them)
//! must match llama.cpp's to 2e-3; where llama.cpp's best two are that close, either may lead.

mod common;

use frugal_fixtures::{ids, mtp_reference, Set};
use frugal_kernels::ThreadPool;
use frugal_models::{KvStore, KvType, Logits, Model, SeqChunk};
use serde_json::Value;

const TOLERANCE: f32 = 2e-3;

#[test]
fn glm4moe_mtp_guesses_match_llama_cpp() {
    check(&Set::labs(), "glm4moe-Q4_K_M");
}

#[test]
fn qwen35_mtp_guesses_match_llama_cpp() {
    check(&Set::hybrid(), "qwen35-Q4_K_M");
}

#[test]
fn qwen35moe_mtp_guesses_match_llama_cpp() {
    check(&Set::hybrid(), "qwen35moe-Q4_K_M");
}

/// A model with its cache and the head's, one sequence in blocks `0..8` of 16 positions.
struct Run<'m> {
    model: &'m Model,
    pool: ThreadPool,
    kv: KvStore,
    mtp_kv: KvStore,
    blocks: Vec<u32>,
    /// The trunk's hidden state at the last position it computed.
    last_hidden: Vec<f32>,
    /// Positions the trunk (and the head) computed.
    computed: usize,
}

impl Run<'_> {
    /// The trunk over `tokens` (the next positions), then the head over them, each paired with
    /// the trunk's hidden state of the position before it. Returns the trunk's logits of the
    /// last token.
    fn advance(&mut self, tokens: &[u32]) -> Vec<f32> {
        let chunk = SeqChunk {
            tokens,
            pos: self.computed,
            blocks: &self.blocks,
            window_blocks: &[],
            state: 0,
            logits: Logits::Last,
        };
        let out = self
            .model
            .forward_hidden(&self.pool, &mut self.kv, &[chunk])
            .unwrap();
        let e = self.model.config().n_embd;
        let shifted = [&self.last_hidden[..], &out.hidden[..(tokens.len() - 1) * e]].concat();
        let head = SeqChunk {
            logits: Logits::None,
            ..chunk
        };
        let none = self
            .model
            .mtp_forward(&self.pool, &mut self.mtp_kv, &[head], &shifted)
            .unwrap();
        assert!(none.logits.is_empty() && none.hidden.is_empty());
        self.last_hidden = out.hidden[(tokens.len() - 1) * e..].to_vec();
        self.computed += tokens.len();
        out.logits
    }

    /// The head's guesses after `last` (at the next position): per guess, its probabilities
    /// within its ten best tokens, best first.
    fn guess(&mut self, mut last: u32, n: usize) -> Vec<Vec<(u32, f32)>> {
        let mut h = self.last_hidden.clone();
        let mut out = Vec::new();
        for i in 0..n {
            let chunk = SeqChunk {
                tokens: std::slice::from_ref(&last),
                pos: self.computed + i,
                blocks: &self.blocks,
                window_blocks: &[],
                state: 0,
                logits: Logits::Last,
            };
            let o = self
                .model
                .mtp_forward(&self.pool, &mut self.mtp_kv, &[chunk], &h)
                .unwrap();
            let top = top10(&o.logits);
            last = top[0].0;
            h = o.hidden;
            out.push(top);
        }
        out
    }
}

fn check(set: &Set, name: &str) {
    let r = mtp_reference(name);
    let model = common::load(set, name, true);
    assert!(model.has_mtp(), "{name} has an MTP layer");
    let (prompt, tokens) = (ids(&r["prompt"]), ids(&r["tokens"]));
    let n_max = r["n_max"].as_u64().unwrap() as usize;
    let mut run = Run {
        model: &model,
        pool: ThreadPool::new(2),
        kv: model.new_kv_store(8, 16, 1),
        mtp_kv: model.new_mtp_kv_store(KvType::F32, 8, 16).unwrap(),
        blocks: (0..8).collect(),
        last_hidden: vec![0.0; model.config().n_embd],
        computed: 0,
    };
    let logits = run.advance(&prompt);
    assert_eq!(common::argmax(&logits), tokens[0], "{name}: first token");
    // `tokens[..produced]` are known; the last of them is not computed yet.
    let mut produced = 1;
    let rounds = r["rounds"].as_array().unwrap();
    for (ri, round) in rounds.iter().enumerate() {
        let want = round.as_array().unwrap();
        assert_eq!(want.len(), n_max);
        let got = run.guess(tokens[produced - 1], n_max);
        let mut guesses = Vec::new();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            compare(&format!("{name} round {ri} guess {i}"), g, w);
            guesses.push(candidates(w)[0].0);
        }
        // What llama.cpp's verification kept: the guesses that equal the greedy output.
        let kept = guesses
            .iter()
            .zip(&tokens[produced..])
            .take_while(|(g, t)| g == t)
            .count();
        let logits = run.advance(&tokens[produced - 1..produced + kept]);
        produced += kept + 1;
        if produced <= tokens.len() {
            assert_eq!(
                common::argmax(&logits),
                tokens[produced - 1],
                "{name}: token"
            );
        }
    }
    let accepted: usize = r["draft_n_accepted"].as_u64().unwrap() as usize;
    eprintln!(
        "{name}: {} rounds of {n_max} guesses, {accepted} accepted, match llama.cpp",
        rounds.len()
    );
}

/// llama.cpp's candidates of one guess: `[[token, probability], ...]`.
fn candidates(v: &Value) -> Vec<(u32, f32)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_u64().unwrap() as u32, c[1].as_f64().unwrap() as f32))
        .collect()
}

fn compare(what: &str, ours: &[(u32, f32)], want: &Value) {
    let want = candidates(want);
    for &(token, p) in &want {
        let mine = ours.iter().find(|c| c.0 == token).map_or(0.0, |c| c.1);
        assert!(
            (mine - p).abs() <= TOLERANCE,
            "{what}: token {token} has probability {mine}, llama.cpp {p} (ours: {ours:?})"
        );
    }
    let near_tie = want[0].1 - want[1].1 <= TOLERANCE;
    assert!(
        ours[0].0 == want[0].0 || near_tie,
        "{what}: best guess {} but llama.cpp's {}",
        ours[0].0,
        want[0].0
    );
}

/// The ten most likely tokens and their probabilities among those ten.
fn top10(logits: &[f32]) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    idx.truncate(10);
    let max = logits[idx[0] as usize];
    let sum: f32 = idx.iter().map(|&i| (logits[i as usize] - max).exp()).sum();
    idx.iter()
        .map(|&i| (i, (logits[i as usize] - max).exp() / sum))
        .collect()
}
