//! `frugal perplexity`: the perplexity of a model on a text file, computed as llama.cpp's
//! `llama-perplexity` does (chunks of `-c` tokens from an empty cache, the second half of each
//! scored), and the KL divergence of a second model from a base model's saved log-probabilities.
//! The arithmetic is in `stats`, the base file in `klfile`, llama.cpp's KL report in `report`.

mod klfile;
mod report;
mod stats;

use crate::load::{load_weights, ModelArgs};
use anyhow::{bail, ensure, Context, Result};
use frugal_kernels::ThreadPool;
use frugal_loader::ModelOptions;
use frugal_models::{KvStore, KvType, Logits, Model, SeqChunk};
use stats::{KlSample, KlStats, Plan, PplStats, QuantRow};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// llama-perplexity's default context.
const DEFAULT_CTX: usize = 512;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to evaluate (optional with --kl-divergence: the base file holds its tokens; given,
    /// it must tokenize to them).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each chunk is scored [default: 512].
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// Evaluate at most this many chunks (default: as many as the text holds).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Tokens per forward pass; at least --ctx-size runs several chunks side by side.
    #[arg(short = 'b', long, default_value_t = 2048)]
    pub batch_size: usize,
    /// Without --kl-divergence: save the base model's log-probabilities to this file. With it:
    /// read them from this file.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare this model with the base model saved by --kl-divergence-base.
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
    /// How the KV cache stores keys and values (f16, llama-perplexity's default; bf16; f32;
    /// q8_0; q4_0).
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
}

/// What is done with each chunk's logits.
enum Mode {
    Perplexity(PplStats),
    SaveBase(PplStats, klfile::Writer),
    Compare(KlStats, klfile::Reader),
}

pub fn run(a: Args) -> Result<()> {
    let reader = match (&a.kl_divergence_base, a.kl_divergence) {
        (Some(path), true) => Some(klfile::Reader::open(path)?),
        _ => None,
    };
    let n_ctx = match &reader {
        Some(r) => {
            let h = &r.header;
            check_same("--ctx-size", a.ctx_size, h.n_ctx)?;
            check_same("--chunks", a.chunks, h.n_chunk)?;
            h.n_ctx
        }
        None => a.ctx_size.unwrap_or(DEFAULT_CTX),
    };
    let file = a.model.open(ModelOptions {
        ctx_size: Some(n_ctx),
        ..ModelOptions::default()
    })?;
    file.check_kv_type(a.kv_type)?;
    let n_vocab = file.config.n_vocab;
    let tok = &file.tokenizer;
    // Replacing each chunk's first token by BOS, as llama.cpp does for models that add one.
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let describe = format!("{} bos {bos:?}", tok.kind());
    let fingerprint =
        klfile::vocab_fingerprint(&describe, tok.vocab_size(), |id| tok.token_bytes(id));
    let (tokens, plan) = match &reader {
        Some(r) => {
            let h = &r.header;
            ensure!(
                h.n_vocab == n_vocab && h.vocab_fingerprint == fingerprint,
                "the KL base file was made by a model with another tokenizer (vocabulary, \
                 pre-tokenizer or BOS; n_vocab {} vs this model's {n_vocab}): compare models \
                 that share a tokenizer, such as quantizations of one model",
                h.n_vocab
            );
            if let Some(text) = &a.file {
                let ours = tokenize(&file, text)?;
                ensure!(
                    ours.get(..h.tokens.len()) == Some(&h.tokens[..]),
                    "{} does not tokenize to the text the KL base file was made from",
                    text.display()
                );
            }
            let plan =
                Plan::for_chunks(h.n_ctx, a.batch_size, h.n_chunk).map_err(anyhow::Error::msg)?;
            (h.tokens.clone(), plan)
        }
        None => {
            let text = a
                .file
                .as_ref()
                .context("give the text to evaluate with -f FILE")?;
            let tokens = tokenize(&file, text)?;
            let plan = Plan::new(tokens.len(), n_ctx, a.batch_size, a.chunks)
                .map_err(anyhow::Error::msg)?;
            (tokens, plan)
        }
    };
    let mode = match (reader, &a.kl_divergence_base) {
        (Some(r), _) => Mode::Compare(KlStats::default(), r),
        (None, Some(path)) => {
            let header = klfile::Header {
                n_ctx,
                n_vocab,
                n_chunk: plan.n_chunk,
                vocab_fingerprint: fingerprint,
                tokens: tokens[..plan.n_chunk * n_ctx].to_vec(),
            };
            Mode::SaveBase(PplStats::default(), klfile::Writer::create(path, &header)?)
        }
        (None, None) => Mode::Perplexity(PplStats::default()),
    };
    let model = load_weights(&file)?;
    let pool = file.thread_pool();
    let mut runner = Runner::new(&model, &pool, plan, bos, a.kv_type);
    evaluate(&mut runner, &tokens, mode)
}

/// A flag given for --kl-divergence must match the base file.
fn check_same(flag: &str, given: Option<usize>, in_file: usize) -> Result<()> {
    match given {
        Some(v) if v != in_file => {
            bail!("{flag} {v} differs from the KL base file's {in_file}; leave it out to use the file's")
        }
        _ => Ok(()),
    }
}

/// The file's tokens, as llama.cpp's `-f` reads it: one trailing newline dropped, BOS added when
/// the model adds one, special-token texts read as plain text.
fn tokenize(file: &frugal_loader::ModelFile, path: &std::path::Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(file.tokenizer.encode(&text, true, false)?)
}

/// Runs chunks through the model in batches, from an empty cache each time.
struct Runner<'a> {
    model: &'a Model,
    pool: &'a ThreadPool,
    plan: Plan,
    bos: Option<u32>,
    kv: KvStore,
    /// One block table per chunk evaluated side by side.
    tables: Vec<Vec<u32>>,
}

const BLOCK: usize = 16;

impl<'a> Runner<'a> {
    fn new(
        model: &'a Model,
        pool: &'a ThreadPool,
        plan: Plan,
        bos: Option<u32>,
        kv_type: KvType,
    ) -> Runner<'a> {
        let per_seq = plan.n_ctx.div_ceil(BLOCK);
        let tables = (0..plan.n_seq)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        Runner {
            model,
            pool,
            plan,
            bos,
            kv: {
                let n_blocks = plan.n_seq * per_seq;
                model.new_kv_store_split(kv_type, n_blocks, n_blocks, BLOCK, plan.n_seq)
            },
            tables,
        }
    }

    /// The logits of positions `first..n_ctx` of each of `chunks` (consecutive chunk indices, at
    /// most `n_seq`): `[chunks, n_ctx - first, n_vocab]`.
    fn eval(&mut self, tokens: &[u32], chunks: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let p = self.plan;
        // Writing from position 0 again is what empties the cache: attention reads only the
        // positions before each token.
        let seqs: Vec<Vec<u32>> = chunks
            .map(|c| {
                let mut t = tokens[c * p.n_ctx..(c + 1) * p.n_ctx].to_vec();
                if let Some(b) = self.bos {
                    t[0] = b;
                }
                t
            })
            .collect();
        // Several chunks side by side means one batch covers whole chunks, so one pass returns
        // all their scored rows, chunk after chunk; otherwise the passes of the one chunk follow
        // each other. Either way the rows arrive in the order returned, without a copy per chunk.
        let mut out = Vec::new();
        for (range, want) in p.passes() {
            let batch: Vec<SeqChunk> = seqs
                .iter()
                .zip(&self.tables)
                .enumerate()
                .map(|(i, (s, blocks))| SeqChunk {
                    tokens: &s[range.clone()],
                    pos: range.start,
                    blocks,
                    window_blocks: &[],
                    state: i as u32,
                    logits: if want { Logits::All } else { Logits::None },
                })
                .collect();
            let logits = self.model.forward(self.pool, &mut self.kv, &batch)?;
            if out.is_empty() {
                out = logits;
            } else {
                out.extend_from_slice(&logits);
            }
        }
        Ok(out)
    }
}

/// `f(i)` for `i` in `0..n`, spread over the pool, in order.
fn par_map<T: Send + Default + Clone>(
    pool: &ThreadPool,
    n: usize,
    f: &(dyn Fn(usize) -> T + Sync),
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    frugal_kernels::parallel::par_chunks_mut(pool, &mut out, 1, &|i, slot| slot[0] = f(i));
    out
}

/// Evaluates every chunk, printing the running figures, then the final ones.
fn evaluate(runner: &mut Runner, tokens: &[u32], mut mode: Mode) -> Result<()> {
    let p = runner.plan;
    eprintln!(
        "perplexity: calculating perplexity over {} chunks, n_ctx={}, batch_size={}, n_seq={}",
        p.n_chunk, p.n_ctx, p.n_batch, p.n_seq
    );
    let mut stdout = std::io::stdout().lock();
    for i in (0..p.n_chunk).step_by(p.n_seq) {
        let t0 = Instant::now();
        let group = i..(i + p.n_seq).min(p.n_chunk);
        let logits = runner.eval(tokens, group.clone())?;
        if i == 0 {
            let secs = t0.elapsed().as_secs_f64();
            let eta = secs * p.n_chunk.div_ceil(p.n_seq) as f64 / 60.0;
            eprintln!("perplexity: {secs:.2} seconds per pass - ETA {eta:.2} minutes");
            if matches!(mode, Mode::Compare(..)) {
                writeln!(stdout, "{}", report::CHUNK_HEADER)?;
            }
        }
        let per_chunk = (p.n_ctx - p.first) * runner.model.config().n_vocab;
        for (c, logits) in group.zip(logits.chunks(per_chunk)) {
            let from = c * p.n_ctx + p.first + 1;
            let targets = &tokens[from..from + p.n_scored()];
            score_chunk(runner.pool, &mut mode, logits, targets)?;
            match &mode {
                Mode::Perplexity(s) | Mode::SaveBase(s, _) => {
                    write!(stdout, "[{}]{:.4},", c + 1, s.ppl())?;
                }
                Mode::Compare(k, _) => writeln!(stdout, "{}", report::chunk_row(c + 1, k))?,
            }
            stdout.flush()?;
        }
    }
    writeln!(stdout)?;
    finish(&mut stdout, mode)
}

/// Scores one chunk: `logits` has a row per position from `first` on, `targets` the token each
/// scored row predicts.
fn score_chunk(pool: &ThreadPool, mode: &mut Mode, logits: &[f32], targets: &[u32]) -> Result<()> {
    let n_vocab = logits.len() / (targets.len() + 1);
    let row = |i: usize| &logits[i * n_vocab..(i + 1) * n_vocab];
    match mode {
        Mode::Perplexity(s) => {
            for v in par_map(pool, targets.len(), &|i| {
                stats::nll(row(i), targets[i] as usize)
            }) {
                s.add(v);
            }
        }
        Mode::SaveBase(s, w) => {
            let rows = par_map(pool, targets.len(), &|i| {
                QuantRow::new(row(i), targets[i] as usize)
            });
            for (_, v) in &rows {
                s.add(*v);
            }
            let rows: Vec<QuantRow> = rows.into_iter().map(|(r, _)| r).collect();
            w.write_rows(&rows)?;
        }
        Mode::Compare(k, r) => {
            let base = r.read_rows()?;
            let samples = par_map(pool, targets.len(), &|i| {
                KlSample::new(row(i), &base[i], targets[i] as usize)
            });
            for s in &samples {
                k.add(s);
            }
        }
    }
    Ok(())
}

/// The final estimate (perplexity) or statistics (KL divergence).
fn finish(out: &mut impl Write, mode: Mode) -> Result<()> {
    match mode {
        Mode::Perplexity(s) => final_estimate(out, &s),
        Mode::SaveBase(s, w) => {
            w.finish()?;
            final_estimate(out, &s)
        }
        Mode::Compare(k, _) => {
            match report::summary(&k) {
                Some(text) => write!(out, "{text}")?,
                None => writeln!(
                    out,
                    "({} scored tokens: too few for statistics, as llama.cpp asks 100)",
                    k.count
                )?,
            }
            Ok(())
        }
    }
}

fn final_estimate(out: &mut impl Write, s: &PplStats) -> Result<()> {
    match s.estimate() {
        Some((ppl, err)) => writeln!(out, "Final estimate: PPL = {ppl:.4} +/- {err:.5}")?,
        None => writeln!(
            out,
            "Final estimate: PPL = {:.4} (no uncertainty: the log-likelihoods do not vary)",
            s.ppl()
        )?,
    }
    Ok(())
}
