//! `frugal serve`: the OpenAI-compatible HTTP server (see the `frugal-server` crate).

use crate::load::ModelArgs;
use anyhow::{Context, Result};
use frugal_server::{ReasoningFormat, Server, ServerConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read accepted API keys from a file, one per line.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Context length of one sequence (default: the model's training context, at most 4096).
    #[arg(short = 'c', long)]
    pub ctx_size: Option<usize>,
    /// Sequences decoded together in one batch.
    #[arg(long, default_value_t = 16)]
    pub max_seqs: usize,
    /// Tokens the KV cache holds across all sequences (default: max-seqs full contexts, at most 65536).
    #[arg(long)]
    pub kv_tokens: Option<usize>,
    /// Tokens per KV-cache block (the unit of prefix caching).
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Tokens through the model per step; longer prompts are prefilled in chunks.
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// The model name clients use (default: the file name without extension).
    #[arg(long)]
    pub model_alias: Option<String>,
    /// Seconds SIGTERM waits for running requests before cancelling them.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub body_limit: usize,
    /// `deepseek`: reasoning goes to `reasoning_content`; `none`: the raw text, `<think>` tags
    /// included, stays in `content`.
    #[arg(long, value_enum, default_value_t = ReasoningFormatArg::Deepseek)]
    pub reasoning_format: ReasoningFormatArg,
    /// Reasoning tokens allowed when a request sets neither `max_reasoning_tokens` nor
    /// `reasoning_effort`; then `</think>` is forced (-1: unlimited).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub reasoning_budget: i64,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long)]
    pub chat_template_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ReasoningFormatArg {
    Deepseek,
    None,
}

pub fn run(a: Args) -> Result<()> {
    let mut cfg = ServerConfig::new(a.model.model.clone());
    cfg.threads = a.model.threads;
    cfg.dequantize = a.model.dequantize;
    cfg.host = a.host;
    cfg.port = a.port;
    if let Some(k) = a.api_key {
        anyhow::ensure!(!k.trim().is_empty(), "--api-key is empty");
        cfg.api_keys = vec![k];
    }
    if let Some(f) = &a.api_key_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        cfg.api_keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!cfg.api_keys.is_empty(), "{} holds no API key", f.display());
    }
    cfg.ctx_size = a.ctx_size;
    cfg.max_seqs = a.max_seqs;
    cfg.kv_tokens = a.kv_tokens;
    cfg.block_size = a.block_size;
    cfg.token_budget = a.batch_tokens;
    cfg.max_waiting = a.max_waiting;
    cfg.model_alias = a.model_alias;
    cfg.shutdown_timeout = Duration::from_secs(a.shutdown_timeout);
    cfg.body_limit = a.body_limit;
    cfg.reasoning_format = match a.reasoning_format {
        ReasoningFormatArg::Deepseek => ReasoningFormat::Deepseek,
        ReasoningFormatArg::None => ReasoningFormat::Raw,
    };
    anyhow::ensure!(
        a.reasoning_budget >= -1,
        "--reasoning-budget must be -1 (unlimited) or at least 0"
    );
    cfg.reasoning_budget = usize::try_from(a.reasoning_budget).ok();
    if let Some(f) = &a.chat_template_file {
        cfg.chat_template = Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = Server::bind(cfg).await?;
        eprintln!(
            "frugal: listening on http://{} (loading the model; /health answers 503 until it is ready)",
            server.local_addr()?
        );
        server.run(shutdown_signal()).await?;
        eprintln!("frugal: stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
