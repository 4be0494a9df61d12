//! `frugal logits`: raw logits for a token sequence, for comparison with reference implementations.

use crate::load::{load_weights, ModelArgs};
use anyhow::{Context, Result};
use frugal_loader::ModelOptions;
use frugal_models::{Logits, SeqChunk};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Feed one token per forward pass through the KV cache instead of one batch.
    #[arg(long)]
    pub step: bool,
    /// Output file: little-endian f32 `[n_tokens, n_vocab]`.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let file = a.model.open(ModelOptions::default())?;
    let model = load_weights(&file)?;
    let pool = file.thread_pool();
    let logits = compute(&model, &pool, &a.tokens, a.step)?;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&a.out)
            .with_context(|| format!("cannot create {}", a.out.display()))?,
    );
    for v in &logits {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// Logits of every position, batched or one token at a time.
pub fn compute(
    model: &frugal_models::Model,
    pool: &frugal_kernels::ThreadPool,
    tokens: &[u32],
    step: bool,
) -> Result<Vec<f32>> {
    let n_ctx = model.config().n_ctx_train;
    anyhow::ensure!(!tokens.is_empty(), "--tokens is empty");
    anyhow::ensure!(
        tokens.len() <= n_ctx,
        "{} tokens exceed the model's context of {n_ctx}",
        tokens.len()
    );
    let block = 16;
    let blocks: Vec<u32> = (0..tokens.len().div_ceil(block) as u32).collect();
    let mut kv = model.new_kv_store(blocks.len(), block, 1);
    if step {
        let mut out = Vec::with_capacity(tokens.len() * model.config().n_vocab);
        for (pos, t) in tokens.iter().enumerate() {
            let chunk = SeqChunk {
                tokens: std::slice::from_ref(t),
                pos,
                blocks: &blocks,
                window_blocks: &[],
                state: 0,
                logits: Logits::Last,
            };
            out.extend(model.forward(pool, &mut kv, &[chunk])?);
        }
        Ok(out)
    } else {
        let chunk = SeqChunk {
            tokens,
            pos: 0,
            blocks: &blocks,
            window_blocks: &[],
            state: 0,
            logits: Logits::All,
        };
        Ok(model.forward(pool, &mut kv, &[chunk])?)
    }
}
