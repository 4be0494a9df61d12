//! The engine thread: owns the model's [`BatchEngine`], takes jobs from the HTTP handlers over a
//! channel and forwards each sequence's text to the job's own channel. The generation itself
//! (sampling, detokenizing, stop strings, finish reasons) is the engine's; this is glue: intake,
//! disconnects, drain, step, emit — and the metrics and the per-request log line.
//!
//! A failed or panicking step fails the sequences in it, not the server.

use crate::metrics::Metrics;
use frugal_engine::{panic_message, BatchEngine, EngineError, Event, FinishReason, Request, SeqId};
use frugal_kvevents::{KvEvent, Publisher, Tracker};
use frugal_models::KvType;
use frugal_scheduler::{Rejected, SchedulerConfig};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub use frugal_engine::logprobs::TokenLogprobs;

/// One sequence to generate.
pub struct Job {
    pub request: Request,
    pub arrived: Instant,
    /// Request id for the log line.
    pub id: String,
    pub pieces: mpsc::UnboundedSender<Piece>,
    /// Answered once the scheduler has queued the job or refused it.
    pub accepted: oneshot::Sender<Result<(), JobError>>,
}

/// Why a job was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    Rejected(Rejected),
    Invalid { param: &'static str, msg: String },
    ShuttingDown,
}

/// What a job's channel carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A sampled token and the text it completed (possibly empty: held back for a stop string or
    /// an incomplete character).
    Token {
        token: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The last message of a job.
    Done(Done),
    /// The job failed inside the server; nothing follows.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub finish: FinishReason,
    /// Text released at the end (held back until the sequence ended).
    pub text: String,
    /// The stop string that ended the sequence, if one did.
    pub stop_string: Option<String>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

pub enum Command {
    Add(Box<Job>),
    /// Stop taking jobs; cancel whatever is still running at the deadline.
    Drain(Instant),
}

/// Sizes the engine is built with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Blocks of the full-attention layers (every attention layer's, without a window).
    pub n_blocks: usize,
    /// Blocks of the sliding-window layers' own pool (0 for a model without them).
    pub n_window_blocks: usize,
    pub block_size: usize,
    pub kv_type: KvType,
}

/// A job the engine is running: where its text goes, and what its log line needs.
struct Active {
    pieces: mpsc::UnboundedSender<Piece>,
    arrived: Instant,
    request: String,
    n_prompt: usize,
    n_generated: usize,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

struct Worker<'a> {
    engine: BatchEngine<'a>,
    metrics: Arc<Metrics>,
    active: HashMap<SeqId, Active>,
    next_id: SeqId,
    drain: Option<Instant>,
    kv_events: Option<KvEventSink>,
}

/// Where a model's KV-cache events go (`--kv-events-endpoint`): its view of the cache under
/// vLLM's hashes, the server's publisher, and the model's topic.
pub struct KvEventSink {
    pub tracker: Tracker,
    pub publisher: Arc<Publisher>,
    pub topic: String,
}

impl KvEventSink {
    fn send(&mut self, engine: &mut BatchEngine<'_>) {
        let events = self.tracker.translate(engine.take_cache_events());
        self.publisher.publish(&self.topic, &events);
    }
}

/// Sets the gauges of a model about to be published: its pool's size and an empty engine, so
/// that no scrape of a loaded model reads a pool of 0 blocks or the last load's queue.
pub fn describe_pool(engine: &BatchEngine<'_>, metrics: &Metrics) {
    let blocks = engine.scheduler().blocks();
    metrics
        .kv_blocks_total
        .store(blocks.n_blocks() as u64, Relaxed);
    metrics
        .kv_block_size
        .store(blocks.block_size() as u64, Relaxed);
    for gauge in [&metrics.running, &metrics.waiting, &metrics.kv_blocks_used] {
        gauge.store(0, Relaxed);
    }
}

/// Runs the engine until the command channel closes or a drain completes. With KV events,
/// the cache's changes are published after each step, and its end (the model unloaded, or
/// the server stopped) as everything cleared.
pub fn run(
    mut engine: BatchEngine<'_>,
    commands: Receiver<Command>,
    metrics: Arc<Metrics>,
    kv_events: Option<KvEventSink>,
) {
    if kv_events.is_some() {
        engine.log_cache_events();
    }
    let mut w = Worker {
        engine,
        metrics,
        active: HashMap::new(),
        next_id: 0,
        drain: None,
        kv_events,
    };
    w.serve(&commands);
    if let Some(sink) = &mut w.kv_events {
        sink.publisher
            .publish(&sink.topic, &[KvEvent::AllBlocksCleared]);
    }
}

impl Worker<'_> {
    fn serve(&mut self, commands: &Receiver<Command>) {
        loop {
            if !self.intake(commands) {
                return;
            }
            self.cancel_disconnected();
            if self.drained() {
                self.publish();
                return;
            }
            if self.engine.is_idle() {
                self.publish();
                continue;
            }
            let events = self.step();
            // Counters first: a client that has its answer must find it counted.
            self.publish();
            self.emit(events);
        }
    }

    /// Takes new commands: waits for one when there is nothing to do, otherwise just looks.
    /// Returns false when the channel is closed and nothing is left to run.
    fn intake(&mut self, commands: &Receiver<Command>) -> bool {
        loop {
            let cmd = if self.engine.is_idle() && self.drain.is_none() {
                match commands.recv() {
                    Ok(c) => c,
                    Err(_) => return false,
                }
            } else {
                match commands.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return !self.engine.is_idle(),
                }
            };
            match cmd {
                Command::Drain(deadline) => self.drain = Some(deadline),
                Command::Add(job) if self.drain.is_some() => {
                    let _ = job.accepted.send(Err(JobError::ShuttingDown));
                }
                Command::Add(job) => self.add(*job),
            }
        }
    }

    fn add(&mut self, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        let n_prompt = job.request.prompt.len();
        if let (Some(sink), Some(salt), true) = (
            &mut self.kv_events,
            &job.request.cache_salt,
            job.request.cache_prompt,
        ) {
            sink.tracker.note_salt(salt);
        }
        if let Err(e) = self.engine.add(id, job.request) {
            let _ = job.accepted.send(Err(self.refusal(e)));
            return;
        }
        if job.accepted.send(Ok(())).is_err() {
            self.engine.abort(id);
            return;
        }
        self.active.insert(
            id,
            Active {
                pieces: job.pieces,
                arrived: job.arrived,
                request: job.id,
                n_prompt,
                n_generated: 0,
                first_token: None,
                last_token: None,
            },
        );
    }

    fn refusal(&self, e: EngineError) -> JobError {
        match e {
            EngineError::Rejected(r) => {
                if matches!(r, Rejected::QueueFull(_)) {
                    self.metrics.requests_rejected.fetch_add(1, Relaxed);
                }
                JobError::Rejected(r)
            }
            EngineError::Sampling(s) => JobError::Invalid {
                param: s.param,
                msg: s.msg,
            },
            other => JobError::Invalid {
                param: "request",
                msg: other.to_string(),
            },
        }
    }

    /// Cancels the sequences whose client went away.
    fn cancel_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.pieces.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.engine.abort(id);
            if let Some(a) = self.active.remove(&id) {
                tracing::info!(request = %a.request, generated = a.n_generated, "client disconnected; sequence cancelled");
            }
            self.metrics.requests_aborted.fetch_add(1, Relaxed);
        }
    }

    /// During a drain: true once nothing is left, or at the deadline (cancelling what is left).
    fn drained(&mut self) -> bool {
        let Some(deadline) = self.drain else {
            return false;
        };
        if self.engine.is_idle() {
            return true;
        }
        if Instant::now() < deadline {
            return false;
        }
        for (id, a) in self.active.drain() {
            self.engine.abort(id);
            let _ = a
                .pieces
                .send(Piece::Failed("the server is shutting down".into()));
            self.metrics.requests_aborted.fetch_add(1, Relaxed);
        }
        true
    }

    /// One engine step; a failed or panicking step fails every running sequence.
    fn step(&mut self) -> Vec<Event> {
        let preempted_before = self.engine.scheduler().preemptions();
        let result = catch_unwind(AssertUnwindSafe(|| self.engine.step()));
        let preempted = self.engine.scheduler().preemptions() - preempted_before;
        self.metrics.preemptions.fetch_add(preempted, Relaxed);
        let msg = match result {
            Ok(Ok(out)) => {
                for a in &out.admitted {
                    let prompt = self.active.get(&a.id).map_or(0, |a| a.n_prompt);
                    let m = &self.metrics;
                    m.prompt_tokens.fetch_add(prompt as u64, Relaxed);
                    m.prefix_cache_hit_tokens
                        .fetch_add(a.cached as u64, Relaxed);
                    m.prefix_cache_disk_hit_tokens
                        .fetch_add(a.from_disk as u64, Relaxed);
                }
                for v in &out.verified {
                    tracing::trace!(
                        "sequence {}: guessed {:?}, {} accepted",
                        v.id,
                        v.guesses,
                        v.accepted
                    );
                }
                for (id, e) in out.failed {
                    tracing::error!("sequence {id}: {e}");
                    self.fail(id, &format!("internal error: {e}"));
                }
                return out.events;
            }
            Ok(Err(e)) => e.to_string(),
            Err(panic) => panic_message(&*panic).to_string(),
        };
        tracing::error!("engine step failed: {msg}");
        let ids: Vec<SeqId> = self.active.keys().copied().collect();
        for id in ids {
            self.engine.abort(id);
            self.fail(id, &format!("internal error: {msg}"));
        }
        Vec::new()
    }

    /// Forwards each event to its job, and the end of finished jobs.
    fn emit(&mut self, events: Vec<Event>) {
        let now = Instant::now();
        for ev in events {
            let Some(a) = self.active.get_mut(&ev.id) else {
                continue;
            };
            a.n_generated += 1;
            self.metrics.generation_tokens.fetch_add(1, Relaxed);
            match a.last_token {
                None => {
                    a.first_token = Some(now);
                    let ttft = now.duration_since(a.arrived).as_secs_f64();
                    self.metrics.observe_ttft(ttft);
                }
                Some(prev) => self
                    .metrics
                    .observe_tpot(now.duration_since(prev).as_secs_f64()),
            }
            a.last_token = Some(now);
            let _ = a.pieces.send(Piece::Token {
                token: ev.token,
                text: ev.text,
                logprobs: ev.logprobs,
            });
            if let Some(end) = ev.finish {
                let a = self.active.remove(&ev.id).expect("present");
                self.metrics.requests_finished.fetch_add(1, Relaxed);
                log_done(&a, &end);
                let _ = a.pieces.send(Piece::Done(Done {
                    finish: end.reason,
                    text: end.text,
                    stop_string: end.stop_string,
                    prompt_tokens: end.usage.prompt_tokens,
                    completion_tokens: end.usage.completion_tokens,
                    cached_tokens: end.usage.cached_tokens,
                }));
            }
        }
    }

    fn fail(&mut self, id: SeqId, msg: &str) {
        if let Some(a) = self.active.remove(&id) {
            tracing::warn!(request = %a.request, "request failed: {msg}");
            self.metrics.requests_failed.fetch_add(1, Relaxed);
            let _ = a.pieces.send(Piece::Failed(msg.to_string()));
        }
    }

    /// Publishes the gauges (and the KV-cache events) of the engine's state.
    fn publish(&mut self) {
        if let Some(sink) = &mut self.kv_events {
            sink.send(&mut self.engine);
        }
        let s = self.engine.scheduler();
        self.metrics.running.store(s.n_running() as u64, Relaxed);
        self.metrics.waiting.store(s.n_waiting() as u64, Relaxed);
        self.metrics
            .kv_blocks_used
            .store(s.blocks().n_used() as u64, Relaxed);
        if let Some(spec) = self.engine.speculator() {
            let (c, m) = (spec.counts(), &self.metrics);
            m.spec_draft_tokens.store(c.proposed, Relaxed);
            m.spec_accepted_tokens.store(c.accepted, Relaxed);
            m.spec_verifications.store(c.verifications, Relaxed);
        }
        if let Some(disk) = self.engine.disk_cache() {
            *self.metrics.disk.lock().unwrap_or_else(|e| e.into_inner()) = Some(disk.stats());
        }
        if let Some(w) = s.window_blocks() {
            let pool = w.pool();
            let m = &self.metrics;
            m.kv_window_blocks_used.store(pool.n_used() as u64, Relaxed);
            m.kv_window_blocks_total
                .store(pool.n_blocks() as u64, Relaxed);
        }
    }
}

/// The one log line of a finished request.
fn log_done(a: &Active, end: &frugal_engine::Finished) {
    let elapsed = a.arrived.elapsed().as_secs_f64();
    let ttft = a
        .first_token
        .map_or(0.0, |t| t.duration_since(a.arrived).as_secs_f64());
    let decode = a
        .first_token
        .zip(a.last_token)
        .map_or(0.0, |(f, l)| l.duration_since(f).as_secs_f64());
    let tps = if a.n_generated > 1 && decode > 0.0 {
        (a.n_generated - 1) as f64 / decode
    } else {
        0.0
    };
    tracing::info!(
        request = %a.request,
        prompt_tokens = end.usage.prompt_tokens,
        cached_tokens = end.usage.cached_tokens,
        completion_tokens = end.usage.completion_tokens,
        ttft_ms = (ttft * 1e3).round() as u64,
        tokens_per_s = (tps * 10.0).round() / 10.0,
        draft_tokens = end.usage.draft_tokens,
        accepted_tokens = end.usage.accepted_tokens,
        total_ms = (elapsed * 1e3).round() as u64,
        finish = end.reason.as_str(),
        "request done"
    );
}
