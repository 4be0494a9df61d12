//! `frugal bench`: prompt-processing and generation throughput, measured like llama-bench
//! (pp: one batch of `-p` tokens from an empty cache; tg: `-n` single-token steps from an empty
//! cache), median of `-r` repetitions after one warm-up (`--no-warmup`: none).

use crate::commands::info::{human_bytes, human_count};
use crate::load::{load_weights, ModelArgs};
use anyhow::Result;
use frugal_loader::ModelOptions;
use frugal_models::{Logits, Model, SeqChunk};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the generation test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the context when each test runs (llama-bench's `-d`): filled once,
    /// untimed, before the test's repetitions.
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    /// Repetitions; the median is reported.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
    /// Skip the untimed run before the repetitions (llama-bench's `--no-warmup`; for long
    /// prompts, where one run is minutes).
    #[arg(long)]
    pub no_warmup: bool,
    /// Print one JSON object per test instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How the KV cache stores keys and values (f16, llama-bench's default; bf16; f32; q8_0;
    /// q4_0).
    #[arg(long, default_value = "f16")]
    pub kv_type: frugal_models::KvType,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.reps >= 1, "--reps must be at least 1");
    let t0 = Instant::now();
    let file = a.model.open(ModelOptions::default())?;
    file.check_kv_type(a.kv_type)?;
    let model = load_weights(&file)?;
    let load_s = t0.elapsed().as_secs_f64();
    let pool = file.thread_pool();
    let c = model.config();
    let depth = a.n_depth;
    let n_ctx = depth + a.n_prompt.max(a.n_gen).max(1);
    anyhow::ensure!(
        n_ctx <= c.n_ctx_train,
        "the test needs {n_ctx} positions but the model's context is {}",
        c.n_ctx_train
    );
    let block = 16;
    let blocks: Vec<u32> = (0..n_ctx.div_ceil(block) as u32).collect();
    let mut kv = model.new_kv_store_split(a.kv_type, blocks.len(), blocks.len(), block, 1);
    // Token ids do not change the cost; use a fixed spread of ids.
    let tokens: Vec<u32> = (0..n_ctx as u32)
        .map(|i| (i * 7919 + 13) % c.n_vocab as u32)
        .collect();

    let mut tests = Vec::new();
    if a.n_prompt > 0 {
        tests.push(("pp", a.n_prompt));
    }
    if a.n_gen > 0 {
        tests.push(("tg", a.n_gen));
    }
    if !a.json {
        println!(
            "| model | size | params | threads | isa | test | t/s |\n| --- | ---: | ---: | ---: | --- | ---: | ---: |"
        );
    }
    for (kind, n) in tests {
        fill(&model, &pool, &mut kv, &blocks, &tokens[..depth])?;
        let test = &tokens[depth..depth + n];
        let mut samples = Vec::new();
        let warmup = usize::from(!a.no_warmup);
        for rep in 0..a.reps + warmup {
            let secs = match kind {
                "pp" => time_prompt(&model, &pool, &mut kv, &blocks, test, depth)?,
                _ => time_generation(&model, &pool, &mut kv, &blocks, test, depth)?,
            };
            if rep >= warmup {
                samples.push(n as f64 / secs);
            }
        }
        let mut sorted = samples.clone();
        sorted.sort_by(|x, y| x.total_cmp(y));
        let median = sorted[sorted.len() / 2];
        let test = match depth {
            0 => format!("{kind}{n}"),
            d => format!("{kind}{n} @ d{d}"),
        };
        let name = a.model.model.file_name().map_or_else(
            || a.model.model.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "model": name, "test": test, "threads": pool.n_threads(),
                    "isa": frugal_kernels::cpu::level_name(), "tokens_per_second": median,
                    "samples": samples, "load_seconds": load_s, "params": model.n_params(),
                    "weight_bytes": model.weight_bytes(),
                })
            );
        } else {
            println!(
                "| {name} | {} | {} | {} | {} | {test} | {median:.2} ± {:.2} |",
                human_bytes(file.gguf.file_size()),
                human_count(model.n_params()),
                pool.n_threads(),
                frugal_kernels::cpu::level_name(),
                stddev(&samples),
            );
        }
    }
    Ok(())
}

/// Puts `tokens` in the context (from position 0), untimed.
fn fill(
    model: &Model,
    pool: &frugal_kernels::ThreadPool,
    kv: &mut frugal_models::KvStore,
    blocks: &[u32],
    tokens: &[u32],
) -> Result<()> {
    prefill(model, pool, kv, blocks, tokens, 0, Logits::None)
}

fn time_prompt(
    model: &Model,
    pool: &frugal_kernels::ThreadPool,
    kv: &mut frugal_models::KvStore,
    blocks: &[u32],
    tokens: &[u32],
    start: usize,
) -> Result<f64> {
    let t = Instant::now();
    prefill(model, pool, kv, blocks, tokens, start, Logits::Last)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs `tokens` from position `start` in chunks of 512, as the server prefills (and
/// llama-bench, with its default micro-batch); `last` says which logits the final chunk makes.
fn prefill(
    model: &Model,
    pool: &frugal_kernels::ThreadPool,
    kv: &mut frugal_models::KvStore,
    blocks: &[u32],
    tokens: &[u32],
    start: usize,
    last: Logits,
) -> Result<()> {
    let n_chunks = tokens.len().div_ceil(512);
    for (i, part) in tokens.chunks(512).enumerate() {
        let chunk = SeqChunk {
            tokens: part,
            pos: start + i * 512,
            blocks,
            window_blocks: &[],
            state: 0,
            logits: if i + 1 == n_chunks {
                last
            } else {
                Logits::None
            },
        };
        model.forward(pool, kv, &[chunk])?;
    }
    Ok(())
}

fn time_generation(
    model: &Model,
    pool: &frugal_kernels::ThreadPool,
    kv: &mut frugal_models::KvStore,
    blocks: &[u32],
    tokens: &[u32],
    start: usize,
) -> Result<f64> {
    let t = Instant::now();
    for (pos, tok) in tokens.iter().enumerate() {
        let one = std::slice::from_ref(tok);
        prefill(model, pool, kv, blocks, one, start + pos, Logits::Last)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn stddev(xs: &[f64]) -> f64 {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt()
}
