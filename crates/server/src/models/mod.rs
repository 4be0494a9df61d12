//! The models a server serves (the registry): each one's spec and settings, its state
//! (unloaded, loading, loaded, failed), and when loaded its [`ModelState`]. A request's `model`
//! picks one ([`Registry::get`]): a loaded model answers at once, an unloaded one is loaded on
//! its own thread ([`load`]) while the request waits (bounded), and under `--models-memory` the
//! least recently used unpinned models with no request in flight are unloaded to make room.
//!
//! A request in flight holds its model's `Arc<ModelState>` (the handler, then its choices), so
//! "no request in flight" is "the registry's is the only reference": such a model can go, and
//! dropping that reference closes its engine's command channel, which ends the engine thread
//! and frees the weights.

mod load;
pub mod spec;

pub(crate) use load::open;

use crate::error::ApiError;
use crate::metrics::{Lifecycle, Metrics, ModelSeries};
use crate::responses::ResponseStore;
use crate::{worker, ModelState, ServerConfig, ServerError};
use frugal_loader::ModelFile;
use serde_json::{json, Value};
use spec::ModelSpec;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// What a load ends with, for everyone waiting on it.
type LoadResult = Result<Arc<ModelState>, LoadFailure>;

/// Why a model is not there: the message, and whether trying again later may work (503) or
/// the model itself failed (500).
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub message: String,
    pub retry: bool,
}

impl LoadFailure {
    fn error(&self) -> ApiError {
        if self.retry {
            ApiError::unavailable(self.message.clone())
        } else {
            ApiError::internal(self.message.clone())
        }
    }
}

/// A served model's fixed part.
struct Served {
    spec: ModelSpec,
    /// The server's settings with the model's own applied.
    cfg: ServerConfig,
    names: Vec<String>,
    /// Kept across loads, so that counters only grow.
    metrics: Arc<Metrics>,
}

enum Phase {
    Unloaded,
    Loading(watch::Receiver<Option<LoadResult>>),
    Loaded(Arc<ModelState>),
    Failed(String),
}

/// A served model's changing part.
struct Slot {
    phase: Phase,
    /// The thread that loads the model and then runs its engine.
    engine: Option<JoinHandle<()>>,
    last_use: Instant,
    /// The footprint reserved for it while it loads or is loaded (weights and KV cache).
    bytes: u64,
    /// Requests waiting for it to load.
    waiters: usize,
    lifecycle: Lifecycle,
    /// Opened at startup (a pinned model), for its first load.
    opened: Option<ModelFile>,
}

/// What every model's state shares with the server.
pub(crate) struct Shared {
    pub created: u64,
    /// `--kv-events-endpoint`: the publisher every model's engine sends its events to.
    pub kv_events: Option<(Arc<frugal_kvevents::Publisher>, crate::KvEventsConfig)>,
    pub responses: Arc<ResponseStore>,
    /// The blocking pool's permits for prompt preparation, one pool for every model.
    pub prep_permits: Arc<Semaphore>,
}

pub(crate) struct Registry {
    served: Vec<Served>,
    slots: Mutex<Vec<Slot>>,
    /// `--models-memory`: what loaded models may take together.
    budget: Option<u64>,
    load_timeout: Duration,
    max_waiters: usize,
    /// A request's `model` must name a served model (several models, or
    /// `--strict-model-name`); otherwise any name is the one model.
    strict: bool,
    shutting_down: std::sync::atomic::AtomicBool,
    shared: Shared,
}

impl Registry {
    /// The served models of `cfg`, with the files opened at startup (`opened`, one per model,
    /// `None` for those opened when first used).
    pub fn new(
        cfg: &ServerConfig,
        specs: Vec<ModelSpec>,
        mut opened: Vec<Option<ModelFile>>,
        shared: Shared,
    ) -> Result<Registry, ServerError> {
        let mut served = Vec::new();
        for spec in specs {
            let names = spec.names();
            if let Some(dup) = names
                .iter()
                .find(|n| served.iter().any(|s: &Served| s.names.contains(n)))
            {
                return Err(ServerError::Config(format!(
                    "the model name '{dup}' is given to two models; give them distinct aliases"
                )));
            }
            served.push(Served {
                cfg: spec.settings(cfg),
                names,
                spec,
                metrics: Arc::new(Metrics::default()),
            });
        }
        let slots = opened
            .drain(..)
            .map(|file| Slot {
                phase: Phase::Unloaded,
                engine: None,
                last_use: Instant::now(),
                bytes: 0,
                waiters: 0,
                lifecycle: Lifecycle::default(),
                opened: file,
            })
            .collect();
        Ok(Registry {
            strict: served.len() > 1 || cfg.strict_model_name,
            served,
            slots: Mutex::new(slots),
            budget: cfg.models_memory,
            load_timeout: cfg.model_load_timeout,
            max_waiters: cfg.max_waiting,
            shutting_down: false.into(),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether requests must name a model (so the handlers read `model` before preparing).
    pub fn needs_name(&self) -> bool {
        self.strict
    }

    /// Each model's first name, the default first, for the log.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.served.iter().map(|s| s.names[0].as_str()).collect();
        names.join("', '")
    }

    fn every_name(&self) -> Vec<String> {
        self.served.iter().flat_map(|s| s.names.clone()).collect()
    }

    /// Which model a request's `model` picks: by name or alias; none, the first. An unknown
    /// name is the first model's unless names are strict (then 404).
    fn index_of(&self, name: Option<&str>) -> Result<usize, ApiError> {
        let Some(name) = name else { return Ok(0) };
        match self
            .served
            .iter()
            .position(|s| s.names.iter().any(|n| n == name))
        {
            Some(i) => Ok(i),
            None if self.strict => Err(ApiError::model_not_found(name, &self.every_name())),
            None => Ok(0),
        }
    }

    /// The model a request names, loaded: at once if it is, else after its load (started here
    /// if none is under way), waiting at most the load timeout.
    pub async fn get(self: &Arc<Self>, name: Option<&str>) -> Result<Arc<ModelState>, ApiError> {
        let i = self.index_of(name)?;
        let rx = {
            let mut slots = self.lock();
            if self
                .shutting_down
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(ApiError::unavailable("The server is shutting down."));
            }
            let slot = &mut slots[i];
            let rx = match &slot.phase {
                Phase::Loaded(m) => {
                    slot.last_use = Instant::now();
                    return Ok(m.clone());
                }
                Phase::Loading(_) if slot.waiters >= self.max_waiters => {
                    return Err(ApiError::unavailable(format!(
                        "The model '{}' is loading and {} requests already wait for it.",
                        self.served[i].names[0], slot.waiters
                    )));
                }
                Phase::Loading(rx) => rx.clone(),
                Phase::Unloaded | Phase::Failed(_) => self.start_load(i, slot),
            };
            slot.waiters += 1;
            rx
        };
        let waiting = Waiting { reg: self, i };
        let result = waiting.wait(rx).await;
        drop(waiting);
        result
    }

    /// Starts loading model `i` on its own thread; the receiver says how it ended.
    fn start_load(
        self: &Arc<Self>,
        i: usize,
        slot: &mut Slot,
    ) -> watch::Receiver<Option<LoadResult>> {
        let (tx, rx) = watch::channel(None);
        slot.phase = Phase::Loading(rx.clone());
        let file = slot.opened.take();
        let reg = self.clone();
        let thread = std::thread::Builder::new()
            .name(format!("frugal-engine-{i}"))
            .spawn(move || load::run(&reg, i, tx, file));
        match thread {
            Ok(handle) => slot.engine = Some(handle),
            Err(e) => {
                let message = format!("cannot start a thread for the model: {e}");
                slot.phase = Phase::Failed(message.clone());
                slot.lifecycle.load_failures += 1;
                // Nobody has the sender: answer through a channel of its own.
                let (tx, rx) = watch::channel(Some(Err(LoadFailure {
                    message,
                    retry: true,
                })));
                drop(tx);
                return rx;
            }
        }
        rx
    }

    /// Starts loading the pinned models (with one model, that one), before any request can.
    pub fn load_pinned(self: &Arc<Self>) -> PinnedLoads {
        let mut slots = self.lock();
        let loads = (0..self.served.len())
            .filter(|&i| self.served[i].spec.pinned)
            .map(|i| (i, self.start_load(i, &mut slots[i])))
            .collect();
        PinnedLoads { loads }
    }

    /// Ready when every pinned model (with one model, that one) is loaded, until shutdown
    /// begins. Models loaded on demand do not count: the others serve meanwhile.
    pub fn readiness(&self) -> Readiness {
        let slots = self.lock();
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Readiness::Draining;
        }
        let loaded = self
            .served
            .iter()
            .zip(slots.iter())
            .all(|(s, slot)| !s.spec.pinned || matches!(slot.phase, Phase::Loaded(_)));
        if loaded {
            Readiness::Ready
        } else {
            Readiness::Loading
        }
    }

    /// `/v1/models`: every model under each of its names, with its state.
    pub fn list(&self) -> Vec<Value> {
        let slots = self.lock();
        let mut data = Vec::new();
        for (s, slot) in self.served.iter().zip(slots.iter()) {
            let status = match &slot.phase {
                Phase::Unloaded => json!({"value": "unloaded"}),
                Phase::Loading(_) => json!({"value": "loading"}),
                Phase::Loaded(_) => json!({"value": "loaded"}),
                Phase::Failed(why) => json!({"value": "failed", "failed": true, "error": why}),
            };
            let n_ctx = match &slot.phase {
                Phase::Loaded(m) => Some(m.n_ctx),
                _ => s.cfg.ctx_size,
            };
            for name in &s.names {
                data.push(json!({
                    "id": name,
                    "object": "model",
                    "created": self.shared.created,
                    "owned_by": "frugal",
                    "max_model_len": n_ctx,
                    "aliases": s.names,
                    "status": status,
                    // Weights and KV cache, as reserved under --models-memory (0: not loaded).
                    "memory_bytes": slot.bytes,
                }));
            }
        }
        data
    }

    /// `/metrics`: every model's series under its first name.
    pub fn render_metrics(&self, conn: &crate::metrics::ConnMetrics) -> String {
        let slots = self.lock();
        let series: Vec<ModelSeries<'_>> = self
            .served
            .iter()
            .zip(slots.iter())
            .map(|(s, slot)| ModelSeries {
                name: &s.names[0],
                metrics: &s.metrics,
                lifecycle: Lifecycle {
                    loaded: matches!(slot.phase, Phase::Loaded(_)),
                    ..slot.lifecycle
                },
            })
            .collect();
        let mut out = crate::metrics::render(conn, &series);
        if let Some((publisher, _)) = &self.shared.kv_events {
            crate::metrics::render_kv_events(&mut out, publisher.sent(), publisher.dropped());
        }
        out
    }

    /// Shutdown begins: no more loads; every loaded engine drains by `deadline`.
    pub fn drain(&self, deadline: Instant) {
        let slots = self.lock();
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for slot in slots.iter() {
            if let Phase::Loaded(m) = &slot.phase {
                let _ = m.commands.send(worker::Command::Drain(deadline));
            }
        }
    }

    /// After the drain: drops every model and waits for its engine thread (call off the async
    /// runtime). A model still loading is not waited for: shutdown stays bounded by its
    /// deadline, and the load, finding the server shutting down, ends without running.
    pub fn join_all(&self) {
        let engines: Vec<_> = {
            let mut slots = self.lock();
            slots
                .iter_mut()
                .filter(|s| !matches!(s.phase, Phase::Loading(_)))
                .map(|s| {
                    s.phase = Phase::Unloaded;
                    s.engine.take()
                })
                .collect()
        };
        for handle in engines.into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

/// Whether the server takes requests (`/health`, the readiness probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// A pinned model is still loading (at startup).
    Loading,
    /// Shutdown has begun: running requests finish, new ones are refused.
    Draining,
}

/// The startup loads of the pinned models: the server is ready when they are.
pub(crate) struct PinnedLoads {
    loads: Vec<(usize, watch::Receiver<Option<LoadResult>>)>,
}

impl PinnedLoads {
    /// Waits for every pinned model; a failure is the server's.
    pub async fn wait(self, reg: &Registry) -> Result<(), ServerError> {
        for (i, mut rx) in self.loads {
            let done = rx.wait_for(Option::is_some).await.map(|v| v.clone());
            let reason = match done {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(f))) => f.message,
                _ => "the engine thread stopped while loading".into(),
            };
            return Err(ServerError::ModelLoad {
                model: reg.served[i].names[0].clone(),
                reason,
            });
        }
        Ok(())
    }
}

/// A request waiting for a load; counted while it waits.
struct Waiting<'a> {
    reg: &'a Arc<Registry>,
    i: usize,
}

impl Waiting<'_> {
    async fn wait(
        &self,
        mut rx: watch::Receiver<Option<LoadResult>>,
    ) -> Result<Arc<ModelState>, ApiError> {
        let name = &self.reg.served[self.i].names[0];
        let timeout = self.reg.load_timeout;
        let done = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        let result = match done {
            Err(_) => {
                return Err(ApiError::unavailable(format!(
                    "The model '{name}' is still loading after {timeout:?}; try again later."
                )))
            }
            Ok(Err(_)) => {
                return Err(ApiError::internal(format!(
                    "The model '{name}' could not be loaded: its engine thread stopped."
                )))
            }
            Ok(Ok(v)) => v.clone().expect("waited for a value"),
        };
        let model = result.map_err(|f| f.error())?;
        self.reg.lock()[self.i].last_use = Instant::now();
        Ok(model)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut slots = self.reg.lock();
        slots[self.i].waiters = slots[self.i].waiters.saturating_sub(1);
    }
}
