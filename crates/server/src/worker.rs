//! The engine thread: owns the model, the KV store and the batching engine; takes jobs from the
//! HTTP handlers over a channel and streams text pieces back to each job's own channel.
//!
//! The loop: take new jobs (blocking only when idle), cancel jobs whose client went away, run one
//! batched step, turn each sampled token into text (streaming detokenization, stop strings), and
//! publish the gauges. A failed or panicking step fails the sequences in it, not the server.

use crate::metrics::Metrics;
use frugal_engine::batch::{panic_message, BatchEngine, BatchError, SeqOptions, TokenLogprobs};
use frugal_engine::constraint::Constraint;
use frugal_engine::sampler::SamplingParams;
use frugal_engine::stop::{StopMatcher, StopResult};
use frugal_kernels::ThreadPool;
use frugal_models::Model;
use frugal_scheduler::{Finish, Rejected, SchedulerConfig, SeqId};
use frugal_tokenizer::{StreamDecoder, Tokenizer};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// One sequence to generate.
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
    pub constraint: Option<Box<dyn Constraint>>,
    /// Decode control tokens as their text (end-of-generation tokens aside), for output parsers
    /// that look for tags such as `<think>` or `<｜tool▁calls▁begin｜>`.
    pub render_special: bool,
    pub arrived: Instant,
    /// Request id for the log line.
    pub request: String,
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
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
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
    pub n_blocks: usize,
    pub block_size: usize,
}

struct Active<'t> {
    render_special: bool,
    pieces: mpsc::UnboundedSender<Piece>,
    decoder: StreamDecoder<'t>,
    stop: StopMatcher,
    arrived: Instant,
    request: String,
    n_prompt: usize,
    n_generated: usize,
    cached: Option<usize>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

/// Runs the engine until the command channel closes or a drain completes.
pub fn run(
    model: &Model,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    cfg: EngineConfig,
    commands: Receiver<Command>,
    metrics: Arc<Metrics>,
) {
    let eog = tokenizer.eog_ids().to_vec();
    let mut engine = BatchEngine::new(
        model,
        pool,
        cfg.scheduler,
        cfg.n_blocks,
        cfg.block_size,
        eog.clone(),
    );
    metrics.kv_blocks_total.store(cfg.n_blocks as u64, Relaxed);
    let mut active: HashMap<SeqId, Active> = HashMap::new();
    let mut next_id: SeqId = 0;
    let mut drain: Option<Instant> = None;
    loop {
        // New jobs: wait for one when there is nothing to do, otherwise just look.
        loop {
            let cmd = if engine.is_idle() && drain.is_none() {
                match commands.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                }
            } else {
                match commands.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if engine.is_idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            match cmd {
                Command::Drain(deadline) => drain = Some(deadline),
                Command::Add(job) if drain.is_some() => {
                    let _ = job.accepted.send(Err(JobError::ShuttingDown));
                }
                Command::Add(job) => {
                    let id = next_id;
                    next_id += 1;
                    let job = *job;
                    let n_prompt = job.prompt.len();
                    let opts = SeqOptions {
                        logprobs: job.logprobs,
                        constraint: job.constraint,
                    };
                    match engine.add_with(id, job.prompt, job.max_tokens, job.sampling, opts) {
                        Ok(()) => {
                            if job.accepted.send(Ok(())).is_err() {
                                engine.abort(id);
                                continue;
                            }
                            active.insert(
                                id,
                                Active {
                                    render_special: job.render_special,
                                    pieces: job.pieces,
                                    decoder: StreamDecoder::new(tokenizer, !job.render_special),
                                    stop: StopMatcher::new(job.stop),
                                    arrived: job.arrived,
                                    request: job.request,
                                    n_prompt,
                                    n_generated: 0,
                                    cached: None,
                                    first_token: None,
                                    last_token: None,
                                },
                            );
                        }
                        Err(e) => {
                            let err = match e {
                                BatchError::Rejected(r) => {
                                    if matches!(r, Rejected::QueueFull(_)) {
                                        metrics.requests_rejected.fetch_add(1, Relaxed);
                                    }
                                    JobError::Rejected(r)
                                }
                                BatchError::Sampling(s) => JobError::Invalid {
                                    param: s.param,
                                    msg: s.msg,
                                },
                                other => JobError::Invalid {
                                    param: "request",
                                    msg: other.to_string(),
                                },
                            };
                            let _ = job.accepted.send(Err(err));
                        }
                    }
                }
            }
        }

        // Clients that went away.
        let gone: Vec<SeqId> = active
            .iter()
            .filter(|(_, a)| a.pieces.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            engine.abort(id);
            if let Some(a) = active.remove(&id) {
                tracing::info!(request = %a.request, generated = a.n_generated, "client disconnected; sequence cancelled");
            }
            metrics.requests_aborted.fetch_add(1, Relaxed);
        }

        if let Some(deadline) = drain {
            if engine.is_idle() {
                publish(&engine, &metrics);
                return;
            }
            if Instant::now() >= deadline {
                for (id, a) in active.drain() {
                    engine.abort(id);
                    let _ = a
                        .pieces
                        .send(Piece::Failed("the server is shutting down".into()));
                    metrics.requests_aborted.fetch_add(1, Relaxed);
                }
                publish(&engine, &metrics);
                return;
            }
        }

        if engine.is_idle() {
            publish(&engine, &metrics);
            continue;
        }

        let preempted_before = engine.scheduler().preemptions();
        let result = catch_unwind(AssertUnwindSafe(|| engine.step()));
        metrics
            .preemptions
            .fetch_add(engine.scheduler().preemptions() - preempted_before, Relaxed);
        // Cache hits are known once a sequence is admitted; record them before it can finish.
        for (&id, a) in active.iter_mut() {
            if a.cached.is_none() {
                if let Some(c) = engine.scheduler().cached_tokens(id) {
                    a.cached = Some(c);
                    metrics.prompt_tokens.fetch_add(a.n_prompt as u64, Relaxed);
                    metrics.prefix_cache_hit_tokens.fetch_add(c as u64, Relaxed);
                }
            }
        }
        let events = match result {
            Ok(Ok(out)) => {
                for (id, e) in out.failed {
                    tracing::error!("sequence {id}: {e}");
                    fail(
                        &mut active,
                        &metrics,
                        &[id],
                        &format!("internal error: {e}"),
                    );
                }
                out.events
            }
            Ok(Err(e)) => {
                tracing::error!("engine step failed: {e}");
                let ids: Vec<SeqId> = active.keys().copied().collect();
                for &id in &ids {
                    engine.abort(id);
                }
                fail(&mut active, &metrics, &ids, &format!("internal error: {e}"));
                Vec::new()
            }
            Err(panic) => {
                let msg = panic_message(&*panic);
                tracing::error!("engine step panicked: {msg}");
                let ids: Vec<SeqId> = active.keys().copied().collect();
                for &id in &ids {
                    engine.abort(id);
                }
                fail(
                    &mut active,
                    &metrics,
                    &ids,
                    &format!("internal error: {msg}"),
                );
                Vec::new()
            }
        };

        let now = Instant::now();
        for ev in events {
            let Some(a) = active.get_mut(&ev.id) else {
                continue;
            };
            a.n_generated += 1;
            metrics.generation_tokens.fetch_add(1, Relaxed);
            match a.last_token {
                None => {
                    a.first_token = Some(now);
                    metrics.observe_ttft(now.duration_since(a.arrived).as_secs_f64());
                }
                Some(prev) => metrics.observe_tpot(now.duration_since(prev).as_secs_f64()),
            }
            a.last_token = Some(now);
            let piece = if a.render_special && eog.contains(&ev.token) {
                String::new()
            } else {
                a.decoder.push(ev.token)
            };
            let (text, stopped) = match a.stop.push(&piece) {
                StopResult::Continue(t) => (t, false),
                StopResult::Stopped(t) => (t, true),
            };
            let finish = if stopped {
                engine.abort(ev.id);
                Some(FinishReason::Stop)
            } else {
                match ev.finish {
                    Some(Finish::Stop) => Some(FinishReason::Stop),
                    Some(Finish::Length) => Some(FinishReason::Length),
                    Some(Finish::Aborted) | None => None,
                }
            };
            let _ = a.pieces.send(Piece::Token {
                token: ev.token,
                text,
                logprobs: ev.logprobs,
            });
            if let Some(finish) = finish {
                let mut a = active.remove(&ev.id).expect("present");
                let mut tail = String::new();
                if !stopped {
                    tail = a.decoder.finish();
                    match a.stop.push(&tail) {
                        StopResult::Continue(t) => tail = t + &a.stop.flush(),
                        StopResult::Stopped(t) => tail = t,
                    }
                }
                finished(&a, finish, tail, &metrics);
            }
        }
        publish(&engine, &metrics);
    }
}

fn finished(a: &Active, finish: FinishReason, text: String, metrics: &Metrics) {
    metrics.requests_finished.fetch_add(1, Relaxed);
    let cached = a.cached.unwrap_or(0);
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
        prompt_tokens = a.n_prompt,
        cached_tokens = cached,
        completion_tokens = a.n_generated,
        ttft_ms = (ttft * 1e3).round() as u64,
        tokens_per_s = (tps * 10.0).round() / 10.0,
        total_ms = (elapsed * 1e3).round() as u64,
        finish = finish.as_str(),
        "request done"
    );
    let _ = a.pieces.send(Piece::Done(Done {
        finish,
        text,
        prompt_tokens: a.n_prompt,
        completion_tokens: a.n_generated,
        cached_tokens: cached,
    }));
}

fn fail(active: &mut HashMap<SeqId, Active>, metrics: &Metrics, ids: &[SeqId], msg: &str) {
    for id in ids {
        if let Some(a) = active.remove(id) {
            tracing::warn!(request = %a.request, "request failed: {msg}");
            metrics.requests_failed.fetch_add(1, Relaxed);
            let _ = a.pieces.send(Piece::Failed(msg.to_string()));
        }
    }
}

fn publish(engine: &BatchEngine, metrics: &Metrics) {
    let s = engine.scheduler();
    metrics.running.store(s.n_running() as u64, Relaxed);
    metrics.waiting.store(s.n_waiting() as u64, Relaxed);
    metrics
        .kv_blocks_used
        .store(s.blocks().n_used() as u64, Relaxed);
}
