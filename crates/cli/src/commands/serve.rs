//! `frugal serve`: the OpenAI-compatible HTTP server (see the `frugal-server` crate).

use crate::load::ModelArgs;
use crate::spec::SpecArgs;
use anyhow::{Context, Result};
use frugal_server::{KvType, ReasoningFormat, Server, ServerConfig};
use std::io::Write;
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
    /// Tokens the KV cache holds across all sequences (default: max-seqs full contexts, within
    /// half of the memory available after the weights, cgroup-aware; logged at start). With
    /// sliding-window layers (Gemma 3): the memory these tokens take with full attention; the
    /// window layers get what the running sequences need, the full-attention layers the rest.
    #[arg(long)]
    pub kv_tokens: Option<usize>,
    /// How the KV cache stores keys and values: f16 (half the memory of f32, llama.cpp's
    /// default), bf16, f32 (exact), or q8_0 / q4_0 (ggml's 8- and 4-bit blocks: about half and
    /// a quarter of f16, for heads that are multiples of 32 wide).
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Tokens per KV-cache block (the unit of prefix caching).
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Tokens through the model per step; longer prompts are prefilled in chunks.
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Hybrid models (Qwen3.5): snapshot the recurrent state every this many tokens (and at
    /// each prompt's last block boundary), so prompts sharing a prefix resume there (rounded to a
    /// multiple of the block size and of the model's delta-rule window, 32).
    #[arg(long, default_value_t = 512)]
    pub state_snapshot_every: usize,
    /// Hybrid models: memory for recurrent-state snapshots, in MiB (0: no prefix caching for
    /// them).
    #[arg(long, default_value_t = 1024)]
    pub state_cache_mib: usize,
    /// Keep the prefix cache's blocks on disk too, in this directory (one subdirectory per model
    /// and KV settings): a prompt prefix seen before, also before a restart, is read back
    /// instead of recomputed. Servers may share the directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Most the disk tier may hold (e.g. `512M`, `10G`; a bare number is bytes); the least
    /// recently used blocks go first.
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_disk_size: u64,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_waiting: usize,
    /// A name clients may use for the model (repeat for several; the first is the one
    /// responses carry; default: the file name without extension).
    #[arg(long = "model-alias", alias = "alias")]
    pub model_alias: Vec<String>,
    /// Answer only requests naming the model by one of its names (404 otherwise). By default
    /// any name is answered by the one model served.
    #[arg(long)]
    pub strict_model_name: bool,
    /// Origins a browser may call the API from (CORS), comma-separated or repeated; `*` for
    /// any. Default: none (browsers get no CORS headers; the built-in chat page needs none).
    #[arg(long, value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Most tokens any request may generate; requests asking for more (or for no limit) get
    /// this.
    #[arg(long)]
    pub max_tokens: Option<usize>,
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
    /// Template variables for every request, as a JSON object (e.g. '{"enable_thinking":
    /// false}'); a request's own `chat_template_kwargs` win.
    #[arg(long, value_parser = parse_kwargs)]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Thinking for templates that switch it (`enable_thinking`): `on`, `off`, or `auto` (the
    /// template's default), as llama-server's flag.
    #[arg(long, value_enum, default_value_t = ReasoningArg::Auto)]
    pub reasoning: ReasoningArg,
    /// A request's headers must arrive within this (e.g. `10s`, `500ms`; a bare number is
    /// seconds); slower clients are disconnected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A request's body must arrive within this of its headers (408 otherwise).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Keep-alive connections with no request are closed after this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A client that reads nothing of its response for this long is disconnected and its
    /// request cancelled.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// A duration: a number with an optional unit `ms`, `s` or `m` (no unit: seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 10s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{text}' must be a positive duration"))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ReasoningFormatArg {
    Deepseek,
    None,
}

pub fn run(a: Args) -> Result<()> {
    // A Hub reference is downloaded (or found in the cache) before the server starts.
    let mut cfg = ServerConfig::new(crate::load::resolve_model(
        &a.model.model.to_string_lossy(),
    )?);
    cfg.threads = a.model.threads;
    cfg.dequantize = a.model.dequantize;
    cfg.mlock = a.model.mlock;
    a.model.pin()?;
    cfg.api_keys = api_keys(&a)?;
    cfg.chat_template_kwargs = template_kwargs(&a);
    cfg.host = a.host;
    cfg.port = a.port;
    cfg.ctx_size = a.ctx_size;
    cfg.max_seqs = a.max_seqs;
    cfg.kv_tokens = a.kv_tokens;
    cfg.kv_type = a.kv_type;
    cfg.block_size = a.block_size;
    cfg.token_budget = a.batch_tokens;
    cfg.snapshots = frugal_server::SnapshotConfig {
        every: a.state_snapshot_every,
        budget_bytes: a.state_cache_mib << 20,
    };
    cfg.max_waiting = a.max_waiting;
    cfg.cache_dir = a.cache_dir;
    cfg.cache_disk_size = a.cache_disk_size;
    cfg.model_aliases = a.model_alias;
    cfg.strict_model_name = a.strict_model_name;
    cfg.cors_origins = a.cors_origins;
    cfg.max_tokens = a.max_tokens;
    cfg.shutdown_timeout = Duration::from_secs(a.shutdown_timeout);
    cfg.body_limit = a.body_limit;
    cfg.header_timeout = a.header_timeout;
    cfg.body_timeout = a.body_timeout;
    cfg.idle_timeout = a.idle_timeout;
    cfg.write_timeout = a.write_timeout;
    cfg.max_connections = a.max_connections;
    anyhow::ensure!(
        a.max_connections > 0,
        "--max-connections must be at least 1"
    );
    warn_if_few_files(a.max_connections);
    cfg.reasoning_format = match a.reasoning_format {
        ReasoningFormatArg::Deepseek => ReasoningFormat::Deepseek,
        ReasoningFormatArg::None => ReasoningFormat::Raw,
    };
    anyhow::ensure!(
        a.reasoning_budget >= -1,
        "--reasoning-budget must be -1 (unlimited) or at least 0"
    );
    cfg.reasoning_budget = usize::try_from(a.reasoning_budget).ok();
    cfg.speculation = a.spec.speculation()?;
    if let Some(f) = &a.chat_template_file {
        cfg.chat_template = Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(async move {
        let server = Server::bind(cfg).await?;
        let _ = writeln!(
            std::io::stderr(),
            "frugal: listening on http://{} (loading the model; /health answers 503 until it is ready)",
            server.local_addr()?
        );
        server.run(shutdown_signal()).await?;
        let _ = writeln!(std::io::stderr(), "frugal: stopped");
        Ok(())
    });
    // Prompt preparation still running on the blocking pool is not waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    served
}

/// `--chat-template-kwargs` with `--reasoning`'s `enable_thinking`.
fn template_kwargs(a: &Args) -> serde_json::Map<String, serde_json::Value> {
    let mut kwargs = a.chat_template_kwargs.clone().unwrap_or_default();
    match a.reasoning {
        ReasoningArg::On => kwargs.insert("enable_thinking".into(), true.into()),
        ReasoningArg::Off => kwargs.insert("enable_thinking".into(), false.into()),
        ReasoningArg::Auto => None,
    };
    kwargs
}

fn parse_kwargs(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    serde_json::from_str(s).map_err(|e| format!("not a JSON object: {e}"))
}

/// `--reasoning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasoningArg {
    On,
    Off,
    Auto,
}

/// The keys of `--api-key` and `--api-key-file` (the file wins).
fn api_keys(a: &Args) -> Result<Vec<String>> {
    if let Some(f) = &a.api_key_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let keys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!keys.is_empty(), "{} holds no API key", f.display());
        return Ok(keys);
    }
    match &a.api_key {
        Some(k) if k.trim().is_empty() => anyhow::bail!("--api-key is empty"),
        Some(k) => Ok(vec![k.clone()]),
        None => Ok(Vec::new()),
    }
}

/// Warns when the open-file limit is below what `--max-connections` needs: past it, new
/// connections wait in the kernel's queue instead of getting a 503.
fn warn_if_few_files(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|&s| s < max_connections + 64) {
        tracing::warn!(
            "the open-file limit ({soft}) is below --max-connections ({max_connections}) plus 64; raise it (ulimit -n) or lower --max-connections"
        );
    }
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

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024; `B`, `iB`
/// and lower case accepted).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512M, 10G)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{s}' is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        for bad in ["", "G", "ten", "-1G", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
