//! One model's thread: open its file (unless opened at startup), make room for it under
//! `--models-memory`, load the weights, publish its [`ModelState`], then run its engine until
//! the command channel closes (the model is unloaded) or a drain completes (shutdown).

use super::{LoadFailure, LoadResult, Phase, Registry};
use crate::worker::EngineConfig;
use crate::{build_engine, disk_cache, engine_config, speculator, worker, ModelState};
use crate::{kv_cache_summary, log_state_memory, open_draft, ServerConfig, ServerError};
use frugal_loader::ModelFile;
use frugal_output::TokenEnv;
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::watch;

/// The thread's body: load, tell the waiters, run the engine.
pub(super) fn run(
    reg: &Arc<Registry>,
    i: usize,
    done: watch::Sender<Option<LoadResult>>,
    opened: Option<ModelFile>,
) {
    let t0 = Instant::now();
    let mut pending = Pending {
        reg,
        i,
        done: Some(done),
    };
    let cfg = &reg.served[i].cfg;
    let (commands, rx) = mpsc::channel();
    let Loaded {
        opened: Opened {
            file,
            draft,
            engine_cfg,
        },
        model,
        draft_model,
        state,
    } = match in_background(|| load(reg, i, opened, commands)) {
        Ok(l) => l,
        Err(f) => return pending.fail(f),
    };
    // Threads that outlive the load start here, at the normal priority: the disk tier's writer
    // and the engine's pool.
    let disk = match disk_cache::open(cfg, &file) {
        Ok(d) => d,
        Err(e) => return pending.fail(LoadFailure::broken(e)),
    };
    let pool = file.thread_pool();
    drop(draft);
    let ModelFile {
        gguf, tokenizer, ..
    } = file;
    // The weights hold what they need of the file's map.
    drop(gguf);
    tracing::info!(
        "'{}' loaded in {:.1}s; KV cache: {}, context {} tokens, up to {} sequences",
        state.model_id,
        t0.elapsed().as_secs_f64(),
        kv_cache_summary(model.config(), &engine_cfg),
        engine_cfg.scheduler.n_ctx,
        cfg.max_seqs,
    );
    log_state_memory(&model, &engine_cfg);
    let spec = speculator(
        cfg.speculation.clone(),
        &model,
        &tokenizer,
        draft_model.as_ref(),
        &engine_cfg,
    );
    let spec = match spec {
        Ok(s) => s,
        Err(e) => return pending.fail(LoadFailure::broken(e)),
    };
    let block_size = engine_cfg.block_size;
    let engine = build_engine(&model, &tokenizer, &pool, engine_cfg, spec, disk);
    worker::describe_pool(&engine, &reg.served[i].metrics);
    let kv_events = kv_event_sink(reg, &state.model_id, block_size);
    if !pending.publish(state, t0) {
        return;
    }
    // The answer's channel goes now: a value it kept would count as a request in flight.
    drop(pending);
    worker::run(engine, rx, reg.served[i].metrics.clone(), kv_events);
}

/// Where the model's KV-cache events go, if the server publishes them.
fn kv_event_sink(reg: &Registry, model: &str, block_size: usize) -> Option<worker::KvEventSink> {
    let (publisher, cfg) = reg.shared.kv_events.as_ref()?;
    Some(worker::KvEventSink {
        tracker: frugal_kvevents::Tracker::new(cfg.hash_algo, &cfg.hash_seed, block_size),
        publisher: publisher.clone(),
        topic: cfg.topic.replace("{model}", model),
    })
}

/// A model read and ready for its engine.
struct Loaded {
    opened: Opened,
    model: frugal_models::Model,
    draft_model: Option<(frugal_models::Model, Arc<frugal_tokenizer::Tokenizer>)>,
    state: ModelState,
}

/// Everything a load does before the engine runs: open, make room, read and repack the
/// weights (the draft model's too), build the tokenizer's derived tables.
fn load(
    reg: &Arc<Registry>,
    i: usize,
    opened: Option<ModelFile>,
    commands: mpsc::Sender<worker::Command>,
) -> Result<Loaded, LoadFailure> {
    let opened = prepare(reg, i, opened)?;
    let model = opened.file.load(None).map_err(LoadFailure::broken)?;
    let draft_model = opened
        .draft
        .as_ref()
        .map(|f| f.load(None).map(|m| (m, f.tokenizer.clone())))
        .transpose()
        .map_err(LoadFailure::broken)?;
    let state = model_state(reg, i, &opened.file, commands);
    Ok(Loaded {
        opened,
        model,
        draft_model,
        state,
    })
}

/// Runs `work` on a thread of its own at the lowest CPU priority (the threads it starts, such as
/// the repacking ones, inherit it), so that the models serving meanwhile keep their speed; the
/// calling thread, the engine's, and the pool it makes next keep the normal priority.
fn in_background<T: Send>(
    work: impl FnOnce() -> Result<T, LoadFailure> + Send,
) -> Result<T, LoadFailure> {
    std::thread::scope(|s| {
        let loader = std::thread::Builder::new()
            .name("frugal-load".into())
            .spawn_scoped(s, || {
                if let Err(e) = frugal_kernels::priority::lower_this_thread() {
                    tracing::debug!("loading at the normal priority: {e}");
                }
                work()
            })
            .map_err(|e| LoadFailure::broken(format!("cannot start a loading thread: {e}")))?;
        loader
            .join()
            .map_err(|_| LoadFailure::broken("loading the model panicked"))?
    })
}

/// What a load needs before the weights: the file (and draft), the engine's settings within
/// the memory left, room under the budget.
struct Opened {
    file: ModelFile,
    draft: Option<ModelFile>,
    engine_cfg: EngineConfig,
}

fn prepare(
    reg: &Arc<Registry>,
    i: usize,
    opened: Option<ModelFile>,
) -> Result<Opened, LoadFailure> {
    let cfg = &reg.served[i].cfg;
    #[cfg(feature = "fault-injection")]
    std::thread::sleep(cfg.load_delay);
    let file = match opened {
        Some(f) => f,
        None => open(cfg).map_err(LoadFailure::broken)?,
    };
    let draft = open_draft(cfg, &file).map_err(LoadFailure::broken)?;
    let weights = file.gguf.file_size();
    let available = frugal_models::available_memory().map(|a| a.saturating_sub(weights));
    // Under a budget, the default KV cache is sized within what the budget leaves too.
    let memory = match (available, reg.budget) {
        (Some(a), Some(b)) => Some(a.min(b.saturating_sub(weights))),
        (a, b) => a.or(b.map(|b| b.saturating_sub(weights))),
    };
    let engine_cfg = engine_config(cfg, file.n_ctx, &file.config, memory);
    let need = weights + cache_bytes(&file, &engine_cfg);
    make_room(reg, i, need)?;
    Ok(Opened {
        file,
        draft,
        engine_cfg,
    })
}

/// Opens a model file as the server does at startup: KV type checked, warnings logged.
pub(crate) fn open(cfg: &ServerConfig) -> Result<ModelFile, ServerError> {
    let file = ModelFile::open(&cfg.model, &cfg.model_options())?;
    file.check_kv_type(cfg.kv_type)?;
    for w in &file.warnings {
        tracing::warn!("{}: {w}", cfg.model.display());
    }
    Ok(file)
}

/// What the engine's caches take: the KV pools (both groups) and, for hybrid models, the
/// recurrent state's slots and snapshot budget.
fn cache_bytes(file: &ModelFile, e: &EngineConfig) -> u64 {
    let c = &file.config;
    let tokens = |blocks: usize| (blocks * e.block_size) as u64;
    let kv = match c.sliding_window() {
        None => tokens(e.n_blocks) * c.kv_bytes_per_token(e.kv_type) as u64,
        Some(_) => {
            let (full, sliding) = c.kv_bytes_per_token_split(e.kv_type);
            tokens(e.n_blocks) * full as u64 + tokens(e.n_window_blocks) * sliding as u64
        }
    };
    let state = match c.state_bytes_per_seq() {
        0 => 0,
        per_seq => per_seq * e.scheduler.max_seqs + e.scheduler.snapshots.budget_bytes,
    };
    kv + state as u64
}

/// Reserves `need` bytes of the budget for model `i`, unloading least recently used unpinned
/// models with no request in flight until it fits (their engine threads are joined, so their
/// memory is back before this one loads).
fn make_room(reg: &Registry, i: usize, need: u64) -> Result<(), LoadFailure> {
    for evicted in reg.reserve(i, need)? {
        tracing::info!(
            "unloading '{}' to make room for '{}'",
            evicted.name,
            reg.served[i].names[0]
        );
        // The last reference: its command channel closes and the engine thread ends.
        drop(evicted.model);
        if let Some(engine) = evicted.engine {
            let _ = engine.join();
        }
    }
    Ok(())
}

/// A model taken out of the registry to make room: what is left to stop it.
struct Evicted {
    name: String,
    model: Arc<ModelState>,
    engine: Option<std::thread::JoinHandle<()>>,
}

/// What the handlers use of a loaded model.
fn model_state(
    reg: &Registry,
    i: usize,
    file: &ModelFile,
    commands: mpsc::Sender<worker::Command>,
) -> ModelState {
    let served = &reg.served[i];
    let output = TokenEnv::new(file.tokenizer.clone())
        .map(Arc::new)
        .map_err(|e| e.to_string());
    if let Err(e) = &output {
        tracing::warn!(
            "'{}': constrained decoding is unavailable: {e}",
            served.names[0]
        );
    }
    ModelState {
        cfg: served.cfg.clone(),
        model_id: served.names[0].clone(),
        created: reg.shared.created,
        tokenizer: file.tokenizer.clone(),
        template: file.template.clone(),
        output,
        n_ctx: file.n_ctx,
        n_vocab: file.config.n_vocab,
        commands,
        prep: crate::prep::Prep::new(&file.tokenizer, reg.shared.prep_permits.clone()),
        responses: reg.shared.responses.clone(),
    }
}

impl LoadFailure {
    /// The model itself cannot load (a bad file, a bad setting): 500 until it is tried again.
    fn broken(e: impl std::fmt::Display) -> LoadFailure {
        LoadFailure {
            message: e.to_string(),
            retry: false,
        }
    }
}

/// A load whose waiters have not been answered yet. Answered once: published, or failed (also
/// when the thread unwinds before either).
struct Pending<'a> {
    reg: &'a Arc<Registry>,
    i: usize,
    done: Option<watch::Sender<Option<LoadResult>>>,
}

impl Pending<'_> {
    fn answer(&mut self, result: LoadResult) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Some(result));
        }
    }

    fn fail(&mut self, f: LoadFailure) {
        let name = &self.reg.served[self.i].names[0];
        tracing::error!("cannot load the model '{name}': {}", f.message);
        self.reg.failed(self.i, &f);
        self.answer(Err(f));
    }

    /// Makes the model loaded and answers its waiters; false when the server is shutting down
    /// (then the engine does not run).
    fn publish(&mut self, state: ModelState, t0: Instant) -> bool {
        let model = Arc::new(state);
        let result = self.reg.loaded(self.i, &model, t0.elapsed().as_secs_f64());
        let ok = result.is_ok();
        self.answer(result.map(|()| model));
        ok
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.fail(LoadFailure::broken(
                "the loading thread stopped unexpectedly",
            ));
        }
    }
}

impl Registry {
    /// The registry's side of [`make_room`]: picks the victims and takes them out, under the
    /// lock, so that no request can pick one up meanwhile.
    fn reserve(&self, i: usize, need: u64) -> Result<Vec<Evicted>, LoadFailure> {
        let mut slots = self.lock();
        let victims = match self.budget {
            Some(budget) => self.victims(&slots, i, need, budget)?,
            None => Vec::new(),
        };
        slots[i].bytes = need;
        let mut evicted = Vec::new();
        for j in victims {
            let s = &mut slots[j];
            if let Phase::Loaded(model) = std::mem::replace(&mut s.phase, Phase::Unloaded) {
                s.bytes = 0;
                s.lifecycle.unloads += 1;
                evicted.push(Evicted {
                    name: self.served[j].names[0].clone(),
                    model,
                    engine: s.engine.take(),
                });
            }
        }
        Ok(evicted)
    }

    /// Which loaded models must go for model `i` to fit `budget`: the least recently used
    /// first, among those not pinned that nobody else holds (no request in flight).
    fn victims(
        &self,
        slots: &[super::Slot],
        i: usize,
        need: u64,
        budget: u64,
    ) -> Result<Vec<usize>, LoadFailure> {
        let mib = |b: u64| b >> 20;
        let name = &self.served[i].names[0];
        if need > budget {
            return Err(LoadFailure::broken(format!(
                "the model '{name}' needs about {} MiB (weights and KV cache), more than --models-memory ({} MiB); lower its ctx_size or --kv-tokens, or raise the budget",
                mib(need),
                mib(budget)
            )));
        }
        let others = || (0..slots.len()).filter(move |&j| j != i);
        let held = |j: &usize| matches!(slots[*j].phase, Phase::Loaded(_) | Phase::Loading(_));
        let mut used: u64 = others().filter(held).map(|j| slots[j].bytes).sum();
        let idle =
            |j: &usize| matches!(&slots[*j].phase, Phase::Loaded(m) if Arc::strong_count(m) == 1);
        let mut candidates: Vec<usize> = others()
            .filter(|&j| !self.served[j].spec.pinned)
            .filter(idle)
            .collect();
        candidates.sort_by_key(|&j| slots[j].last_use);
        let mut victims = Vec::new();
        for j in candidates {
            if used + need <= budget {
                break;
            }
            used -= slots[j].bytes;
            victims.push(j);
        }
        if used + need <= budget {
            return Ok(victims);
        }
        let holders: Vec<&str> = others()
            .filter(|j| held(j) && !victims.contains(j))
            .map(|j| self.served[j].names[0].as_str())
            .collect();
        Err(LoadFailure {
            message: format!(
                "Not enough of --models-memory ({} MiB) for the model '{name}' (about {} MiB): '{}' hold it (pinned, loading or answering requests); try again when their requests finish.",
                mib(budget),
                mib(need),
                holders.join("', '")
            ),
            retry: true,
        })
    }

    /// A load failed: the slot is free again (a lack of room leaves it loadable).
    fn failed(&self, i: usize, f: &LoadFailure) {
        let mut slots = self.lock();
        let slot = &mut slots[i];
        slot.bytes = 0;
        slot.lifecycle.load_failures += 1;
        slot.phase = if f.retry {
            Phase::Unloaded
        } else {
            Phase::Failed(f.message.clone())
        };
    }

    /// A load finished: the model is served, unless the server began shutting down meanwhile.
    fn loaded(&self, i: usize, model: &Arc<ModelState>, seconds: f64) -> Result<(), LoadFailure> {
        let mut slots = self.lock();
        let slot = &mut slots[i];
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            slot.phase = Phase::Unloaded;
            return Err(LoadFailure {
                message: "The server is shutting down.".into(),
                retry: true,
            });
        }
        slot.phase = Phase::Loaded(model.clone());
        slot.last_use = Instant::now();
        slot.lifecycle.loads += 1;
        slot.lifecycle.load_seconds += seconds;
        Ok(())
    }
}
