//! `frugal serve`: the OpenAI-compatible HTTP server (see the `frugal-server` crate).

use crate::load::{resolve_model, ModelArgs};
use crate::spec::SpecArgs;
use anyhow::{Context, Result};
use frugal_server::{read_models_file, KvType, ModelSpec, ReasoningFormat, Server, ServerConfig};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
// MODEL may be left out for --models FILE (then it is empty). `mut_arg` moves the argument to the
// end, so its position is set again.
#[command(mut_arg("model", |a| a
    .index(1)
    .required(false)
    .value_parser(|s: &str| Ok::<_, std::convert::Infallible>(PathBuf::from(s)))
    .default_value("")
    .hide_default_value(true)
    .value_name("MODEL")
    .help("The model to serve: a GGUF file or a Hub reference (several: see MORE_MODELS and --models)")))]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// More models to serve beside the first: requests pick one by its name (the file name
    /// without extension) in `model`; a request without `model` gets the first. Models load
    /// when first asked for; --spec draft serves one model only; every other flag applies to
    /// each model, with its own KV cache and (--cache-dir) its own disk tier.
    #[arg(index = 2, value_name = "MORE_MODELS")]
    pub more_models: Vec<String>,
    /// Serve the models a TOML file lists (instead of MODEL), each `[[model]]` with `model` (a
    /// file or Hub reference) and optionally `aliases`, `ctx_size`, `threads`, `kv_type`,
    /// `chat_template` (a file), `reasoning_format` (deepseek or none) and `pinned` (loaded at
    /// start, never unloaded); what a model leaves out, the flags give.
    #[arg(long = "models", value_name = "FILE")]
    pub models_file: Option<PathBuf>,
    /// With several models: what the loaded ones may take together (weights and KV caches,
    /// e.g. `12G`, `800M`); before a model loads, the least recently used unpinned ones with
    /// no request running are unloaded to make room.
    #[arg(long, value_parser = parse_size)]
    pub models_memory: Option<u64>,
    /// How long a request waits for its model to load before a 503 (e.g. `5m`, `90s`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub model_load_timeout: Duration,
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
    /// responses carry; default: the file name without extension). With MORE_MODELS: the
    /// first model's.
    #[arg(long = "model-alias", alias = "alias")]
    pub model_alias: Vec<String>,
    /// Answer only requests naming the model by one of its names (404 otherwise). By default
    /// any name is answered by the one model served; with several models, names are always
    /// strict.
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
    #[command(flatten)]
    pub kv_events: KvEventArgs,
}

/// KV-cache events for a prefix-aware router, as vLLM publishes them.
#[derive(clap::Args, Debug)]
pub struct KvEventArgs {
    /// Publish the prefix cache's stored and removed blocks over ZeroMQ (vLLM's KV events):
    /// `tcp://*:5557` binds, `tcp://HOST:PORT` connects to a router that binds.
    #[arg(long, value_name = "ENDPOINT")]
    pub kv_events_endpoint: Option<String>,
    /// A ROUTER endpoint to bind where subscribers ask for missed batches again.
    #[arg(long, value_name = "ENDPOINT", requires = "kv_events_endpoint")]
    pub kv_events_replay_endpoint: Option<String>,
    /// Batches kept for replay.
    #[arg(long, default_value_t = 10_000)]
    pub kv_events_buffer_steps: usize,
    /// The topic of each model's batches; `{model}` is replaced by the model's name (llm-d
    /// expects `kv@POD_IP@{model}`).
    #[arg(long, default_value = "")]
    pub kv_events_topic: String,
    /// The block hash of the events, as vLLM's `--prefix-caching-hash-algo`: `sha256` (of
    /// the pickle, vLLM's default) or `sha256_cbor`.
    #[arg(long, default_value = "sha256", value_parser = parse_hash_algo)]
    pub prefix_caching_hash_algo: frugal_kvevents::HashAlgo,
    /// What the first block's parent hash derives from; vLLM takes its `PYTHONHASHSEED`.
    #[arg(long, env = "PYTHONHASHSEED", default_value = frugal_kvevents::DEFAULT_SEED)]
    pub prefix_hash_seed: String,
}

impl KvEventArgs {
    fn config(&self) -> Option<frugal_server::KvEventsConfig> {
        let endpoint = self.kv_events_endpoint.clone()?;
        Some(frugal_server::KvEventsConfig {
            publisher: frugal_kvevents::PublisherConfig {
                endpoint,
                replay_endpoint: self.kv_events_replay_endpoint.clone(),
                buffer_steps: self.kv_events_buffer_steps,
            },
            topic: self.kv_events_topic.clone(),
            hash_algo: self.prefix_caching_hash_algo,
            hash_seed: self.prefix_hash_seed.clone(),
        })
    }
}

fn parse_hash_algo(name: &str) -> Result<frugal_kvevents::HashAlgo, String> {
    frugal_kvevents::HashAlgo::parse(name)
        .ok_or_else(|| format!("'{name}': use sha256 or sha256_cbor"))
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
    // References resolve (and may download) before the runtime starts.
    let specs = served_models(&a)?;
    let mut cfg = ServerConfig::new(specs[0].model.clone());
    if specs.len() > 1 || a.models_file.is_some() {
        cfg.models = specs;
    }
    cfg.models_memory = a.models_memory;
    cfg.model_load_timeout = a.model_load_timeout;
    cfg.threads = a.model.threads;
    cfg.dequantize = a.model.dequantize;
    cfg.quantize = a.model.quantize;
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
    cfg.kv_events = a.kv_events.config();
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
            "frugal: listening on http://{} (loading; /health answers 503 until the models loaded at start are ready)",
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

/// The models to serve: MODEL and MORE_MODELS, or those of `--models FILE`, every reference
/// resolved to a local file.
fn served_models(a: &Args) -> Result<Vec<ModelSpec>> {
    let first = a.model.model.to_string_lossy();
    let given: Vec<&str> = std::iter::once(first.as_ref())
        .filter(|m| !m.is_empty())
        .chain(a.more_models.iter().map(String::as_str))
        .collect();
    match (&a.models_file, given.is_empty()) {
        (Some(_), false) => {
            anyhow::bail!("give the models either as MODEL arguments or in --models FILE, not both")
        }
        (None, true) => anyhow::bail!(
            "give a model to serve (a GGUF file or a Hub reference), or --models FILE"
        ),
        (Some(_), true) if !a.model_alias.is_empty() => {
            anyhow::bail!(
                "--model-alias names the one MODEL; in --models FILE, give each model its aliases"
            )
        }
        (Some(file), true) => Ok(read_models_file(file, |r| {
            resolve_model(r).map_err(|e| format!("{e:#}"))
        })?),
        (None, false) => {
            let mut specs = Vec::new();
            for r in given {
                specs.push(ModelSpec::new(resolve_model(r)?));
            }
            if let Some(first) = specs.first_mut() {
                first.aliases.clone_from(&a.model_alias);
            }
            Ok(specs)
        }
    }
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

#[cfg(test)]
mod model_list_tests {
    use super::{served_models, Args};
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        let argv = std::iter::once("serve").chain(argv.iter().copied());
        Serve::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn models_come_from_the_arguments_or_from_a_file() {
        let one = served_models(&parse(&["a.gguf", "--model-alias", "x"])).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].names(), ["x"]);
        let two = served_models(&parse(&["a.gguf", "b.gguf", "--model-alias", "x"])).unwrap();
        assert_eq!(
            (two[0].names(), two[1].names()),
            (vec!["x".into()], vec!["b".into()])
        );
        let dir = std::env::temp_dir().join(format!("frugal-serve-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("models.toml");
        std::fs::write(&file, "[[model]]\nmodel = \"c.gguf\"\npinned = true\n").unwrap();
        let listed = served_models(&parse(&["--models", file.to_str().unwrap()])).unwrap();
        assert!(listed[0].pinned && listed[0].names() == ["c"]);
        let both = served_models(&parse(&["a.gguf", "--models", file.to_str().unwrap()]));
        assert!(both.unwrap_err().to_string().contains("not both"));
        let none = served_models(&parse(&[]));
        assert!(none.unwrap_err().to_string().contains("--models FILE"));
        let size = parse(&["a.gguf", "b.gguf", "--models-memory", "800M"]).models_memory;
        assert_eq!(size, Some(800 << 20));
        std::fs::remove_dir_all(&dir).ok();
    }
}
