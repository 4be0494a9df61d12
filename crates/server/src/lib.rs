//! `frugal serve`: an OpenAI/DeepSeek-compatible HTTP server. The HTTP side ([`routes`], with
//! request types in [`api`], errors in [`error`], streaming and response shapes in [`respond`])
//! runs on tokio; each served model (the registry, `models`) runs on an engine thread of its own
//! ([`worker`]) that batches every request's sequences into shared forward passes. [`metrics`]
//! is what both sides report.

#![forbid(unsafe_code)]

mod anthropic;
pub mod api;
mod chat;
mod conn;
mod cors;
mod disk_cache;
pub mod error;
mod jobs;
pub mod metrics;
mod models;
mod native;
mod page;
mod prep;
mod request_id;
mod respond;
mod responses;
mod routes;
mod sse;
mod text_output;
mod tokens;
pub mod worker;

use frugal_chat::ChatTemplate;
use frugal_engine::spec::draft::same_vocabulary;
pub use frugal_engine::spec::SpecConfig;
use frugal_engine::spec::Speculator;
use frugal_engine::BatchEngine;
use frugal_loader::{ModelFile, ModelOptions};
pub use frugal_models::KvType;
use frugal_models::ModelConfig;
use frugal_output::TokenEnv;
pub use frugal_scheduler::SnapshotConfig;
use frugal_scheduler::{window_pool_blocks, SchedulerConfig};
use frugal_tokenizer::Tokenizer;
pub use models::spec::{read_models_file, ModelSpec};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Everything `frugal serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model: PathBuf,
    pub host: String,
    pub port: u16,
    /// Accepted bearer tokens; empty: no authentication.
    pub api_keys: Vec<String>,
    /// Context length of one sequence (default: the model's, at most 4096).
    pub ctx_size: Option<usize>,
    /// Sequences decoded together.
    pub max_seqs: usize,
    /// Total tokens the KV cache holds across sequences (default: enough for `max_seqs` full
    /// contexts, within half of the memory available after the weights, at least one full
    /// context). For a model with
    /// sliding-window layers this is the memory those tokens take with full attention: the
    /// window layers' pool gets what the running sequences' windows need, the full-attention
    /// layers' pool the rest (so it holds more tokens).
    pub kv_tokens: Option<usize>,
    /// How the KV cache stores keys and values.
    pub kv_type: KvType,
    pub block_size: usize,
    /// Tokens through the model per step; long prompts are prefilled in chunks of at most this.
    pub token_budget: usize,
    /// Hybrid models: where recurrent-state snapshots are taken for prefix caching, and how
    /// much memory they may use.
    pub snapshots: SnapshotConfig,
    /// Requests allowed to wait for a slot; more get 429.
    pub max_waiting: usize,
    /// Worker threads, for loading and running (`None`: every available core).
    pub threads: Option<usize>,
    /// The names clients use in `model`: the first is the one responses carry; all are listed
    /// (default: the file name without extension).
    pub model_aliases: Vec<String>,
    /// Refuse (404) a request naming a model other than these (by default any name is answered
    /// by the one model served, as llama-server and Ollama-style clients expect).
    pub strict_model_name: bool,
    /// Origins browsers may call the API from (CORS); `*` for any. Empty: none.
    pub cors_origins: Vec<String>,
    /// Most tokens any request may generate (`--max-tokens`); requests asking for more, or for
    /// no limit, get this.
    pub max_tokens: Option<usize>,
    /// Largest request body accepted (bytes).
    pub body_limit: usize,
    /// How long SIGTERM waits for running requests before cancelling them.
    pub shutdown_timeout: Duration,
    pub dequantize: bool,
    /// Quantize a safetensors checkpoint's weights at load (`--quantize`).
    pub quantize: Option<frugal_kernels::GgmlType>,
    /// Lock the weights in RAM (`--mlock`).
    pub mlock: bool,
    /// Split `<think>` reasoning into `reasoning_content` (DeepSeek's API), or keep the raw
    /// text in `content`.
    pub reasoning_format: ReasoningFormat,
    /// Reasoning tokens allowed when a request sets neither `max_reasoning_tokens` nor
    /// `reasoning_effort` (`None`: unlimited).
    pub reasoning_budget: Option<usize>,
    /// A Jinja chat template to use instead of the model's own.
    pub chat_template: Option<String>,
    /// Template variables for every request (`--chat-template-kwargs`, `--reasoning`); a
    /// request's own `chat_template_kwargs` win.
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// A request's head must arrive within this (from its first byte, or from the connection's
    /// opening for its first request).
    pub header_timeout: Duration,
    /// A request's body must arrive within this of its head (408 otherwise).
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A response the client stops reading is abandoned (its sequences cancelled) after this.
    pub write_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Where the prefix cache keeps blocks on disk (`--cache-dir`), and how much it may use.
    pub cache_dir: Option<PathBuf>,
    pub cache_disk_size: u64,
    /// Speculative decoding for every request that does not opt out (`--spec`).
    pub speculation: Option<Speculation>,
    /// The models served when there are several (the first is the default); empty: the one
    /// `model`, with `model_aliases` and the settings above.
    pub models: Vec<ModelSpec>,
    /// What the loaded models may take together (weights and KV caches, `--models-memory`):
    /// before a model loads, least recently used unpinned idle ones are unloaded to make room.
    pub models_memory: Option<u64>,
    /// How long a request waits for its model to load before a 503.
    pub model_load_timeout: Duration,
    /// Publish KV-cache events (`--kv-events-endpoint`).
    pub kv_events: Option<KvEventsConfig>,
    /// Tests only (`fault-injection` feature): every load sleeps this long first, so that a
    /// test sees a model loading.
    #[cfg(feature = "fault-injection")]
    pub load_delay: Duration,
}

/// How KV-cache events are published: vLLM's transport, schema and block hashes.
#[derive(Debug, Clone)]
pub struct KvEventsConfig {
    pub publisher: frugal_kvevents::PublisherConfig,
    /// Each model's batches go out under this topic, `{model}` replaced by the model's name.
    pub topic: String,
    /// vLLM's `--prefix-caching-hash-algo`.
    pub hash_algo: frugal_kvevents::HashAlgo,
    /// What vLLM's first-block parent hash derives from (its `PYTHONHASHSEED`).
    pub hash_seed: String,
}

/// How the server speculates: where guesses come from, and how many are verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Speculation {
    pub method: SpecMethod,
    pub config: SpecConfig,
}

/// Where guesses come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecMethod {
    /// The sequence's own text and the text of the server's other sequences.
    Ngram,
    /// A smaller model of the same vocabulary, from this file.
    Draft(PathBuf),
    /// The model's own multi-token-prediction layers.
    Mtp,
}

impl ServerConfig {
    /// How the model file is opened and loaded (shared with every command: `frugal-loader`).
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            threads: self.threads,
            dequantize: self.dequantize,
            quantize: self.quantize,
            mmap: None,
            chat_template: self.chat_template.clone(),
            ctx_size: self.ctx_size,
            mlock: self.mlock,
        }
    }
}

/// How chat responses carry the model's reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningFormat {
    /// `message.reasoning_content` / `delta.reasoning_content`, as DeepSeek's API does.
    #[default]
    Deepseek,
    /// Everything the model wrote, tags included, in `content`.
    Raw,
}

impl ServerConfig {
    pub fn new(model: PathBuf) -> Self {
        ServerConfig {
            model,
            host: "127.0.0.1".into(),
            port: 8080,
            api_keys: Vec::new(),
            ctx_size: None,
            max_seqs: 16,
            kv_tokens: None,
            kv_type: KvType::default(),
            block_size: 16,
            token_budget: 512,
            snapshots: SnapshotConfig::default(),
            max_waiting: 256,
            threads: None,
            model_aliases: Vec::new(),
            strict_model_name: false,
            cors_origins: Vec::new(),
            max_tokens: None,
            body_limit: 8 << 20,
            shutdown_timeout: Duration::from_secs(30),
            dequantize: false,
            quantize: None,
            mlock: false,
            reasoning_format: ReasoningFormat::Deepseek,
            reasoning_budget: None,
            chat_template: None,
            chat_template_kwargs: serde_json::Map::new(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            speculation: None,
            cache_dir: None,
            cache_disk_size: 10 << 30,
            models: Vec::new(),
            models_memory: None,
            model_load_timeout: Duration::from_secs(300),
            kv_events: None,
            #[cfg(feature = "fault-injection")]
            load_delay: Duration::ZERO,
        }
    }

    /// The models served: `models`, or the one `model` (loaded at startup, never unloaded).
    pub fn served_models(&self) -> Vec<ModelSpec> {
        if !self.models.is_empty() {
            return self.models.clone();
        }
        vec![ModelSpec {
            aliases: self.model_aliases.clone(),
            pinned: true,
            ..ModelSpec::new(self.model.clone())
        }]
    }

    fn connection_limits(&self) -> Result<conn::Limits, ServerError> {
        let timeouts = [
            self.header_timeout,
            self.body_timeout,
            self.idle_timeout,
            self.write_timeout,
        ];
        if timeouts.contains(&Duration::ZERO) || self.max_connections == 0 {
            return Err(ServerError::Config(
                "the header, body, idle and write timeouts and max-connections must be above 0"
                    .into(),
            ));
        }
        Ok(conn::Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Load(#[from] frugal_loader::LoadError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the engine thread stopped: {0}")]
    Engine(String),
    #[error("cannot load the model '{model}': {reason}")]
    ModelLoad { model: String, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What every request shares, whichever model it uses.
pub(crate) struct AppState {
    pub cfg: ServerConfig,
    pub connections: Arc<metrics::ConnMetrics>,
    /// Responses API answers kept for `previous_response_id` (the same store as the models').
    pub responses: Arc<responses::ResponseStore>,
    /// The served models.
    pub models: Arc<models::Registry>,
}

/// A loaded model, as the handlers use it. A request holds it (an `Arc`) until its answer is
/// sent, which keeps the model from being unloaded meanwhile.
pub(crate) struct ModelState {
    /// The server's settings with the model's own applied.
    pub cfg: ServerConfig,
    /// The name responses carry (the first of the model's names).
    pub model_id: String,
    pub created: u64,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    /// The vocabulary as grammars see it; `None` when the tokenizer cannot serve constrained
    /// decoding (requests that need it get a 400 saying why).
    pub output: Result<Arc<TokenEnv>, String>,
    pub n_ctx: usize,
    pub n_vocab: usize,
    /// The model's engine thread; dropping the last sender stops it.
    pub commands: mpsc::Sender<worker::Command>,
    /// The blocking pool for parsing, templating and tokenizing, and the cheap prompt bound.
    pub prep: prep::Prep,
    /// Responses API answers kept for `previous_response_id` and `GET /v1/responses/{id}`
    /// (one store for every model).
    pub responses: Arc<responses::ResponseStore>,
}

impl ModelState {
    pub fn created_now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(self.created, |d| d.as_secs())
    }
}

/// A server that is listening; [`Server::run`] serves until `shutdown` resolves.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Opens the pinned models' files (with one model, that one), checks that the others
    /// exist, and binds the socket. The weights load in [`Server::run`], while `/health`
    /// answers 503.
    pub async fn bind(cfg: ServerConfig) -> Result<Server, ServerError> {
        if cfg.max_seqs == 0 || cfg.token_budget == 0 || cfg.block_size == 0 {
            return Err(ServerError::Config(
                "max-seqs, token budget and block size must be at least 1".into(),
            ));
        }
        if cfg.kv_events.is_some() && cfg.block_size > frugal_kvevents::hash::MAX_BLOCK_SIZE {
            return Err(ServerError::Config(format!(
                "KV events hash blocks of at most {} tokens",
                frugal_kvevents::hash::MAX_BLOCK_SIZE
            )));
        }
        let specs = cfg.served_models();
        let several = specs.len() > 1;
        if several
            && matches!(
                &cfg.speculation,
                Some(Speculation {
                    method: SpecMethod::Draft(_),
                    ..
                })
            )
        {
            return Err(ServerError::Config(
                "--spec draft serves one model; with several, use --spec ngram or mtp".into(),
            ));
        }
        let opened = specs
            .iter()
            .map(|s| open_at_startup(&cfg, s))
            .collect::<Result<Vec<_>, _>>()?;
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|error| ServerError::Bind { addr, error })?;
        let kv_events = cfg.kv_events.as_ref().map(start_kv_events).transpose()?;
        let responses = Arc::<responses::ResponseStore>::default();
        let shared = models::Shared {
            kv_events,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            responses: responses.clone(),
            prep_permits: prep::permits(),
        };
        let registry = models::Registry::new(&cfg, specs, opened, shared)?;
        let state = Arc::new(AppState {
            cfg,
            connections: Arc::default(),
            responses,
            models: Arc::new(registry),
        });
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Loads the pinned models on their engine threads and serves until `shutdown` resolves;
    /// then stops accepting, lets running requests finish within the shutdown timeout and
    /// returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server { listener, state } = self;
        let local = listener.local_addr().ok();
        let limits = state.cfg.connection_limits()?;
        let app = routes::router(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let timeout = state.cfg.shutdown_timeout;
        let models = state.models.clone();
        let stop = async move {
            let mut stop_rx = stop_rx;
            tokio::select! {
                () = shutdown => {}
                _ = stop_rx.changed() => {}
            }
            tracing::info!(
                "shutting down: no new requests; waiting up to {timeout:?} for running ones"
            );
            let deadline = Instant::now() + timeout;
            models.drain(deadline);
            deadline
        };
        // The pinned weights load while the socket already answers /health with 503.
        let pinned = state.models.load_pinned();
        let server = tokio::spawn(conn::serve(
            listener,
            app,
            limits,
            state.connections.clone(),
            stop,
        ));
        let loaded = pinned.wait(&state.models).await;
        if loaded.is_ok() {
            tracing::info!(
                "ready: serving '{}' on http://{}",
                state.models.names(),
                local.map_or_else(
                    || format!("{}:{}", state.cfg.host, state.cfg.port),
                    |a| a.to_string()
                )
            );
        } else {
            let _ = stop_tx.send(true);
        }
        let served = server.await;
        // The engine threads exit once drained (or when their command channels close).
        let models = state.models.clone();
        drop(state);
        let _ = tokio::task::spawn_blocking(move || models.join_all()).await;
        loaded?;
        served.map_err(|e| ServerError::Engine(e.to_string()))
    }
}

/// A model's file at startup: opened now if it is pinned (so that a bad one stops the server
/// before it listens), else only checked to exist (it opens when first used).
fn open_at_startup(cfg: &ServerConfig, spec: &ModelSpec) -> Result<Option<ModelFile>, ServerError> {
    if !spec.pinned {
        if !spec.model.is_file() {
            return Err(ServerError::Config(format!(
                "{}: no such model file",
                spec.model.display()
            )));
        }
        return Ok(None);
    }
    let settings = spec.settings(cfg);
    let file = models::open(&settings)?;
    open_draft(&settings, &file)?;
    Ok(Some(file))
}

/// Opens the draft model of `--spec draft` and checks that it speaks the model's vocabulary;
/// refuses a method the model cannot use.
pub(crate) fn open_draft(
    cfg: &ServerConfig,
    target: &ModelFile,
) -> Result<Option<ModelFile>, ServerError> {
    let Some(spec) = &cfg.speculation else {
        return Ok(None);
    };
    match &spec.method {
        SpecMethod::Ngram => Ok(None),
        SpecMethod::Mtp if target.config.n_nextn == 0 => Err(ServerError::Config(format!(
            "--spec mtp: {} has no multi-token-prediction layers (nextn); use --spec ngram or --spec draft",
            target.path.display()
        ))),
        SpecMethod::Mtp => Ok(None),
        SpecMethod::Draft(path) => {
            let draft = ModelFile::open(path, &cfg.model_options())?;
            same_vocabulary(&target.tokenizer, &draft.tokenizer).map_err(|e| {
                ServerError::Config(format!("--draft-model {}: {e}", path.display()))
            })?;
            Ok(Some(draft))
        }
    }
}

/// The publisher of `--kv-events-endpoint`, its sockets open.
fn start_kv_events(
    cfg: &KvEventsConfig,
) -> Result<(Arc<frugal_kvevents::Publisher>, KvEventsConfig), ServerError> {
    let publisher = frugal_kvevents::Publisher::start(cfg.publisher.clone())
        .map_err(|e| ServerError::Config(e.to_string()))?;
    tracing::info!(
        "KV-cache events published on {} (topic '{}', {:?} block hashes)",
        cfg.publisher.endpoint,
        cfg.topic,
        cfg.hash_algo
    );
    Ok((Arc::new(publisher), cfg.clone()))
}

/// The engine of the served model, with its speculation and disk tier.
pub(crate) fn build_engine<'a>(
    model: &'a frugal_models::Model,
    tokenizer: &'a Tokenizer,
    pool: &'a frugal_kernels::ThreadPool,
    e: worker::EngineConfig,
    spec: Option<Speculator<'a>>,
    disk: Option<frugal_diskcache::DiskCache>,
) -> BatchEngine<'a> {
    let mut engine = BatchEngine::new_split(
        model,
        tokenizer,
        pool,
        e.scheduler,
        e.n_blocks,
        e.n_window_blocks,
        e.block_size,
    )
    .with_kv_type(e.kv_type);
    if let Some(spec) = spec {
        engine = engine.with_speculation(spec);
    }
    if let Some(disk) = disk {
        engine.set_disk_cache(disk);
    }
    engine
}

/// The speculator `--spec` asks for: n-gram lookup, the model's MTP head, or the loaded draft
/// model.
pub(crate) fn speculator<'a>(
    speculation: Option<Speculation>,
    model: &'a frugal_models::Model,
    tokenizer: &Tokenizer,
    draft: Option<&'a (frugal_models::Model, Arc<Tokenizer>)>,
    e: &worker::EngineConfig,
) -> Result<Option<Speculator<'a>>, ServerError> {
    let Some(Speculation { method, config }) = speculation else {
        return Ok(None);
    };
    let (n_blocks, block, max) = (e.n_blocks, e.block_size, config.max);
    let config_error = |e: frugal_engine::spec::SpecError| ServerError::Config(e.to_string());
    let spec = match (method, draft) {
        (SpecMethod::Draft(_), Some((draft, draft_tokens))) => {
            let spec = Speculator::draft_model(
                config,
                model,
                tokenizer,
                draft,
                draft_tokens,
                n_blocks,
                block,
            )
            .map_err(config_error)?;
            tracing::info!(
                "speculative decoding: a draft model of {:.0} MB (a draft step costs {:.2} of the model's), up to {max} tokens per step",
                draft.weight_bytes() as f64 / 1e6,
                spec.proposer_cost(),
            );
            spec
        }
        (SpecMethod::Mtp, _) => {
            let spec = Speculator::mtp(config, model, n_blocks, block).map_err(config_error)?;
            tracing::info!(
                "speculative decoding: the model's multi-token-prediction head (a guess costs {:.2} of a step), up to {max} tokens per step",
                spec.proposer_cost(),
            );
            spec
        }
        _ => {
            tracing::info!("speculative decoding: n-gram lookup, up to {max} tokens per step");
            Speculator::ngram(config)
        }
    };
    Ok(Some(spec))
}

/// For hybrid models: the recurrent state's memory, per sequence and for the snapshots that
/// let prefix caching resume a prompt, beside what the KV cache takes per token.
pub(crate) fn log_state_memory(model: &frugal_models::Model, engine_cfg: &worker::EngineConfig) {
    let per_seq = model.state_bytes_per_seq();
    if per_seq == 0 {
        return;
    }
    let snap = engine_cfg.scheduler.snapshots;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    tracing::info!(
        "recurrent state: {:.1} MiB per sequence ({} live slots, {:.0} MiB); prefix snapshots every {} tokens and at prompt ends: {} slots, {:.0} MiB budget; KV cache {} KiB per token ({} of {} layers)",
        mib(per_seq),
        engine_cfg.scheduler.max_seqs,
        mib(per_seq * engine_cfg.scheduler.max_seqs),
        snap.every,
        snap.budget_bytes / per_seq,
        mib(snap.budget_bytes),
        model.config().kv_bytes_per_token(engine_cfg.kv_type) / 1024,
        model.config().n_kv_layers(),
        model.config().n_layer,
    );
}

/// The KV pools, as the startup log states them: blocks, tokens and memory of each.
pub(crate) fn kv_cache_summary(model: &ModelConfig, e: &worker::EngineConfig) -> String {
    let mib = |blocks: usize, bytes_per_token: usize| {
        (blocks * e.block_size * bytes_per_token) as f64 / (1 << 20) as f64
    };
    match model.sliding_window() {
        None => format!(
            "{} blocks of {} tokens ({:.0} MiB of {})",
            e.n_blocks,
            e.block_size,
            mib(e.n_blocks, model.kv_bytes_per_token(e.kv_type)),
            e.kv_type,
        ),
        Some(window) => {
            let (full, sliding) = model.kv_bytes_per_token_split(e.kv_type);
            format!(
                "{}: full-attention layers {} blocks of {} tokens ({:.0} MiB), sliding-window layers (window {window}) {} blocks ({:.0} MiB)",
                e.kv_type,
                e.n_blocks,
                e.block_size,
                mib(e.n_blocks, full),
                e.n_window_blocks,
                mib(e.n_window_blocks, sliding),
            )
        }
    }
}

/// How many tokens the KV cache holds by default: `max_seqs` full contexts, within half of
/// `memory` (what is available after the weights, where known), and at least one context.
fn default_kv_tokens(
    cfg: &ServerConfig,
    n_ctx: usize,
    bytes_per_token: usize,
    memory: Option<u64>,
) -> usize {
    let wanted = n_ctx * cfg.max_seqs;
    let cap = memory.map_or(usize::MAX, |m| (m / 2) as usize / bytes_per_token.max(1));
    let tokens = wanted.min(cap).max(n_ctx);
    let gib = |b: f64| b / (1u64 << 30) as f64;
    match memory {
        Some(m) if cap < wanted => tracing::info!(
            "KV cache: {} sequences of {n_ctx} tokens would take {:.1} GiB; capped at half of the {:.1} GiB available after the weights: {tokens} tokens (--kv-tokens sets it)",
            cfg.max_seqs,
            gib((wanted * bytes_per_token) as f64),
            gib(m as f64),
        ),
        Some(m) => tracing::info!(
            "KV cache: {} sequences of {n_ctx} tokens, {tokens} tokens ({:.1} GiB; at most half of the {:.1} GiB available after the weights)",
            cfg.max_seqs,
            gib((tokens * bytes_per_token) as f64),
            gib(m as f64),
        ),
        None => tracing::info!(
            "KV cache: {} sequences of {n_ctx} tokens, {tokens} tokens (available memory unknown)",
            cfg.max_seqs
        ),
    }
    tokens
}

/// Turns the KV budget into pools of blocks. The budget is `kv_tokens` tokens of every
/// attention layer's keys and values (by default [`default_kv_tokens`]); for a model with
/// sliding-window layers, their pool gets what the running sequences need (one window plus one
/// chunk each) and the full-attention layers' pool the rest of the memory, at least one full
/// context.
pub(crate) fn engine_config(
    cfg: &ServerConfig,
    n_ctx: usize,
    model: &ModelConfig,
    memory: Option<u64>,
) -> worker::EngineConfig {
    let ty = cfg.kv_type;
    let kv_tokens = match cfg.kv_tokens {
        Some(t) => t.max(n_ctx),
        None => default_kv_tokens(cfg, n_ctx, model.kv_bytes_per_token(ty), memory),
    };
    let scheduler = SchedulerConfig {
        max_seqs: cfg.max_seqs,
        token_budget: cfg.token_budget,
        max_waiting: cfg.max_waiting,
        n_ctx,
        snapshots: cfg.snapshots,
    };
    let bs = cfg.block_size;
    let (mut n_blocks, mut n_window_blocks) = (kv_tokens.div_ceil(bs), 0);
    if let Some(window) = model.sliding_window() {
        let (full, sliding) = model.kv_bytes_per_token_split(ty);
        let budget = kv_tokens * model.kv_bytes_per_token(ty);
        n_window_blocks = window_pool_blocks(&scheduler, window, bs);
        let rest = budget.saturating_sub(n_window_blocks * bs * sliding);
        if full > 0 {
            n_blocks = (rest / (bs * full)).max(n_ctx.div_ceil(bs));
        }
        // The window pool never needs more blocks than the full pool (a window is part of a
        // context).
        n_window_blocks = n_window_blocks.min(n_blocks);
    }
    worker::EngineConfig {
        scheduler,
        n_blocks,
        n_window_blocks,
        block_size: bs,
        kv_type: ty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(name: &str, set: frugal_fixtures::Set) -> ModelConfig {
        let opts = ModelOptions {
            threads: Some(1),
            dequantize: false,
            quantize: None,
            mmap: None,
            chat_template: None,
            ctx_size: None,
            mlock: false,
        };
        ModelFile::open(&set.model(name), &opts).unwrap().config
    }

    #[test]
    fn a_window_pool_gets_what_the_running_windows_need_and_the_full_pool_the_rest() {
        let model = config_of("gemma3-Q4_K_M", frugal_fixtures::Set::labs());
        let window = model.sliding_window().unwrap();
        let mut cfg = ServerConfig::new("unused".into());
        cfg.max_seqs = 4;
        cfg.kv_tokens = Some(8192);
        let e = engine_config(&cfg, 1024, &model, None);
        let per_seq = (window + cfg.token_budget).div_ceil(cfg.block_size) + 1;
        assert_eq!(e.n_window_blocks, 4 * per_seq);
        let (full, sliding) = model.kv_bytes_per_token_split(cfg.kv_type);
        let used = (e.n_blocks * full + e.n_window_blocks * sliding) * cfg.block_size;
        let budget = 8192 * model.kv_bytes_per_token(cfg.kv_type);
        assert!(
            used <= budget && budget - used < cfg.block_size * full,
            "{used} of {budget}"
        );
        assert!(
            e.n_blocks * cfg.block_size > 8192,
            "the full pool holds more tokens"
        );
    }

    /// By default the cache holds `max_seqs` contexts, within half of the memory available
    /// after the weights, and never less than one context.
    #[test]
    fn the_default_pool_follows_the_model_and_the_memory() {
        let model = config_of("qwen35-Q4_K_M", frugal_fixtures::Set::hybrid());
        let mut cfg = ServerConfig::new("unused".into());
        cfg.max_seqs = 4;
        let per_token = model.kv_bytes_per_token(cfg.kv_type);
        assert_eq!(cfg.kv_type, KvType::F16);
        let blocks = |cfg: &ServerConfig, memory| engine_config(cfg, 1024, &model, memory).n_blocks;
        assert_eq!(blocks(&cfg, None), 4 * 1024 / cfg.block_size);
        assert_eq!(blocks(&cfg, Some(1 << 40)), 4 * 1024 / cfg.block_size);
        // Room for 1.5 contexts in half the memory: capped there.
        let memory = (2 * 1536 * per_token) as u64;
        assert_eq!(blocks(&cfg, Some(memory)), 1536 / cfg.block_size);
        // Room for less than one: one context all the same.
        assert_eq!(blocks(&cfg, Some(1000)), 1024 / cfg.block_size);
        // f32 takes twice the bytes: half the tokens in the same memory.
        cfg.kv_type = KvType::F32;
        let memory = (2 * 2048 * per_token) as u64;
        assert_eq!(blocks(&cfg, Some(memory)), 1024 / cfg.block_size);
    }

    #[test]
    fn a_model_without_a_window_gets_one_pool() {
        let model = config_of("qwen35-Q4_K_M", frugal_fixtures::Set::hybrid());
        let mut cfg = ServerConfig::new("unused".into());
        cfg.kv_tokens = Some(8192);
        let e = engine_config(&cfg, 1024, &model, None);
        assert_eq!((e.n_blocks, e.n_window_blocks), (8192 / cfg.block_size, 0));
    }
}
