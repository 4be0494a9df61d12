//! From tokenized prompts to an HTTP response: one engine job per choice, then either one JSON
//! body (chat.completion / text_completion) or a stream of OpenAI chunks over server-sent events.

use crate::api::Generation;
use crate::chat::ChatOutput;
use crate::error::ApiError;
use crate::worker::{Command, Done, Job, JobError, Piece};
use crate::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use frugal_constraint::{Constraint, ConstraintError};
use frugal_engine::logprobs::TokenLogprobs;
use frugal_engine::Request;
use frugal_output::{OutputDelta, OutputParser, ParsedMessage};
use frugal_scheduler::Rejected;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Which API the response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// One tokenized prompt and, for completions with `echo`, its text.
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub echo: Option<String>,
}

/// One generated choice, as the handler sees it.
struct Choice {
    index: usize,
    prompt: usize,
    rx: mpsc::UnboundedReceiver<Piece>,
    /// Chat: splits the text into reasoning, content and tool calls.
    parser: Option<OutputParser>,
}

/// Submits every choice of every prompt, then answers as JSON or as a stream.
pub async fn generate(
    st: Arc<AppState>,
    request: String,
    prompts: Vec<Prompt>,
    gen: Generation,
    logprobs: Option<usize>,
    api: Api,
    output: Option<ChatOutput>,
) -> Result<Response, ApiError> {
    let ready = st
        .ready
        .get()
        .ok_or_else(|| ApiError::unavailable("The model is still loading."))?;
    if prompts.iter().any(|p| p.tokens.is_empty()) {
        return Err(ApiError::invalid_param("prompt", "The prompt is empty."));
    }
    let submit = Submit {
        ready,
        request: &request,
        gen: &gen,
        logprobs,
        output: output.as_ref(),
    };
    let choices = submit.all(&prompts).await?;
    let out = Output {
        id: format!(
            "{}-{request}",
            if api == Api::Chat { "chatcmpl" } else { "cmpl" }
        ),
        created: st.created_now(),
        model: st.model_id.clone(),
        api,
        st: st.clone(),
    };
    let echoes: Vec<Option<String>> = prompts.into_iter().map(|p| p.echo).collect();
    if gen.stream {
        Ok(stream_response(out, choices, echoes, gen.include_usage))
    } else {
        collect_response(out, choices, echoes).await
    }
}

/// What every job of one request shares.
struct Submit<'a> {
    ready: &'a crate::Ready,
    request: &'a str,
    gen: &'a Generation,
    logprobs: Option<usize>,
    output: Option<&'a ChatOutput>,
}

impl Submit<'_> {
    /// Sends `n` jobs per prompt to the engine and waits until it has queued them all.
    async fn all(&self, prompts: &[Prompt]) -> Result<Vec<Choice>, ApiError> {
        let arrived = Instant::now();
        let mut choices = Vec::new();
        let mut pending = Vec::new();
        for (pi, p) in prompts.iter().enumerate() {
            for i in 0..self.gen.n {
                let (job, choice, accepted) = self.job(p, i, arrived, choices.len());
                self.ready
                    .commands
                    .send(Command::Add(Box::new(job)))
                    .map_err(|_| ApiError::unavailable("The server is shutting down."))?;
                pending.push(accepted);
                choices.push(Choice {
                    prompt: pi,
                    ..choice
                });
            }
        }
        for acc in pending {
            match acc.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(job_error(e)),
                Err(_) => return Err(ApiError::internal("The engine thread stopped.")),
            }
        }
        Ok(choices)
    }

    /// Choice `index` (the `i`-th of its prompt) as an engine job, its receiving side, and the
    /// engine's answer to it.
    fn job(
        &self,
        p: &Prompt,
        i: usize,
        arrived: Instant,
        index: usize,
    ) -> (Job, Choice, oneshot::Receiver<Result<(), JobError>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (acc_tx, acc_rx) = oneshot::channel();
        let mut sampling = self.gen.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
        let mut req = Request::new(p.tokens.clone(), self.gen.max_tokens, sampling);
        req.stop = self.gen.stop.clone();
        req.logprobs = self.logprobs;
        req.constraint = if self.gen.inject_panic {
            Some(Box::new(PanicConstraint))
        } else {
            self.output.and_then(ChatOutput::constraint)
        };
        req.render_special = self.output.is_some_and(|o| o.render_special);
        req.speculate = self.gen.speculate;
        req.cache_prompt = self.gen.cache_prompt;
        req.cache_salt = self.gen.cache_salt.clone();
        let job = Job {
            request: req,
            arrived,
            id: format!("{}/{index}", self.request),
            pieces: tx,
            accepted: acc_tx,
        };
        let choice = Choice {
            index,
            prompt: 0,
            rx,
            parser: self.output.map(ChatOutput::parser),
        };
        (job, choice, acc_rx)
    }
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Rejected(Rejected::QueueFull(n)) => ApiError::queue_full(n),
        JobError::Rejected(Rejected::TooLong {
            prompt,
            max_tokens,
            n_ctx,
        }) => crate::prep::context_exceeded(n_ctx, prompt, max_tokens, false),
        JobError::Rejected(r) => ApiError::invalid(r.to_string()),
        JobError::Invalid { param, msg } => ApiError::invalid_param(param, msg),
        JobError::ShuttingDown => ApiError::unavailable("The server is shutting down."),
    }
}

/// What every response object carries.
struct Output {
    id: String,
    created: u64,
    model: String,
    api: Api,
    st: Arc<AppState>,
}

impl Output {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("frugal-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        })
    }

    fn token_text(&self, t: u32) -> (String, Vec<u8>) {
        let bytes = self.st.tokenizer.token_bytes(t);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// Chat's `logprobs.content` entries.
    fn chat_logprobs(&self, toks: &[(u32, TokenLogprobs)]) -> Value {
        let entry = |t: u32, lp: f32| {
            let (s, b) = self.token_text(t);
            json!({"token": s, "logprob": lp, "bytes": b})
        };
        let content: Vec<Value> = toks
            .iter()
            .map(|(t, lp)| {
                let mut e = entry(*t, lp.logprob);
                e["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    /// Completions' `logprobs` object; offsets count from `offset` characters.
    fn completion_logprobs(&self, toks: &[(u32, TokenLogprobs)], mut offset: usize) -> Value {
        let mut tokens = Vec::new();
        let mut token_logprobs = Vec::new();
        let mut top = Vec::new();
        let mut offsets = Vec::new();
        for (t, lp) in toks {
            let (s, _) = self.token_text(*t);
            offsets.push(offset);
            offset += s.chars().count();
            tokens.push(s);
            token_logprobs.push(lp.logprob);
            let mut m = serde_json::Map::new();
            for &(t, l) in &lp.top {
                m.insert(self.token_text(t).0, json!(l));
            }
            top.push(Value::Object(m));
        }
        json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
    }

    fn logprobs(&self, toks: &[(u32, TokenLogprobs)], offset: usize) -> Value {
        match self.api {
            Api::Chat => self.chat_logprobs(toks),
            Api::Completion => self.completion_logprobs(toks, offset),
        }
    }
}

/// `usage` over the finished choices; each prompt's tokens are counted once.
fn usage(dones: &[(usize, Done)]) -> Value {
    let mut prompt = 0;
    let mut cached = 0;
    let mut completion = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (pi, d) in dones {
        if seen.insert(*pi) {
            prompt += d.prompt_tokens;
            cached += d.cached_tokens;
        }
        completion += d.completion_tokens;
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "prompt_cache_hit_tokens": cached,
        "prompt_cache_miss_tokens": prompt - cached,
    })
}

async fn collect_response(
    out: Output,
    choices: Vec<Choice>,
    echoes: Vec<Option<String>>,
) -> Result<Response, ApiError> {
    let mut bodies = Vec::new();
    let mut dones = Vec::new();
    for mut c in choices {
        // (`c.parser` is taken below, once the text is complete.)
        let mut text = echoes[c.prompt].clone().unwrap_or_default();
        let echo_len = text.chars().count();
        let mut toks = Vec::new();
        let done = loop {
            match c.rx.recv().await {
                Some(Piece::Token {
                    token,
                    text: t,
                    logprobs,
                }) => {
                    text.push_str(&t);
                    if let Some(lp) = logprobs {
                        toks.push((token, lp));
                    }
                }
                Some(Piece::Done(d)) => break d,
                Some(Piece::Failed(msg)) => return Err(ApiError::internal(msg)),
                None => return Err(ApiError::internal("The engine thread stopped.")),
            }
        };
        text.push_str(&done.text);
        let logprobs = if toks.is_empty() {
            Value::Null
        } else {
            out.logprobs(&toks, echo_len)
        };
        bodies.push(match out.api {
            Api::Chat => {
                let (message, finish) = match c.parser.take() {
                    Some(mut parser) => {
                        parser.push(&text);
                        parser.finish();
                        chat_message(parser.into_message(), done.finish.as_str())
                    }
                    None => (
                        json!({"role": "assistant", "content": text}),
                        done.finish.as_str(),
                    ),
                };
                json!({
                    "index": c.index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            }
            Api::Completion => json!({
                "index": c.index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": done.finish.as_str(),
            }),
        });
        dones.push((c.prompt, done));
    }
    let mut body = out.envelope(false, bodies);
    body["usage"] = usage(&dones);
    Ok(axum::Json(body).into_response())
}

/// Events a stream holds for a client that has not read them yet; when they are all waiting,
/// the stream waits for the client, at most the write timeout.
const STREAM_BUFFER: usize = 32;

fn stream_response(
    out: Output,
    mut choices: Vec<Choice>,
    echoes: Vec<Option<String>>,
    include_usage: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    let n = choices.len();
    let streamer = Streamer {
        write_timeout: out.st.cfg.write_timeout,
        prompt_of: choices.iter().map(|c| c.prompt).collect(),
        parsers: choices.iter_mut().map(|c| c.parser.take()).collect(),
        offsets: vec![0; n],
        called_tools: vec![false; n],
        dones: Vec::new(),
        out,
        tx,
        include_usage,
    };
    tokio::spawn(streamer.run(choices, echoes));
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One streamed response: the choices' pieces as OpenAI chunks, into a bounded queue of events.
struct Streamer {
    out: Output,
    tx: mpsc::Sender<Event>,
    include_usage: bool,
    write_timeout: Duration,
    prompt_of: Vec<usize>,
    /// Chat: each choice's parser (reasoning, content, tool calls).
    parsers: Vec<Option<OutputParser>>,
    /// Completions: each choice's text length so far, for logprobs' `text_offset`.
    offsets: Vec<usize>,
    called_tools: Vec<bool>,
    dones: Vec<(usize, Done)>,
}

impl Streamer {
    /// Streams every choice, then the usage and `[DONE]`. Returning early (the client went away
    /// or stopped reading) drops the choices' receivers, which cancels their sequences.
    async fn run(mut self, choices: Vec<Choice>, echoes: Vec<Option<String>>) {
        if !self.open(&choices, &echoes).await {
            return;
        }
        let n_choices = choices.len();
        let mut merged = stream::select_all(choices.into_iter().map(|c| {
            let index = c.index;
            stream::unfold(
                c.rx,
                |mut rx| async move { rx.recv().await.map(|p| (p, rx)) },
            )
            .map(move |p| (index, p))
            .boxed()
        }));
        loop {
            let next = tokio::select! {
                biased;
                () = self.tx.closed() => return,
                n = merged.next() => n,
            };
            let Some((index, piece)) = next else { break };
            let ok = match piece {
                Piece::Token {
                    token,
                    text,
                    logprobs,
                } => self.token(index, token, &text, logprobs).await,
                Piece::Done(d) => self.done(index, d).await,
                Piece::Failed(msg) => {
                    if self.send(ApiError::internal(msg).body()).await {
                        self.send_event(Event::default().data("[DONE]")).await;
                    }
                    return;
                }
            };
            if !ok {
                return;
            }
        }
        self.finish(n_choices).await;
    }

    /// Queues an event; false when the client has gone, or has read nothing for the write
    /// timeout (then the stream ends).
    async fn send_event(&self, event: Event) -> bool {
        match tokio::time::timeout(self.write_timeout, self.tx.send(event)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::info!(
                    "{}: the client read nothing for {:?}; cancelling the request",
                    self.out.id,
                    self.write_timeout
                );
                false
            }
        }
    }

    async fn send(&self, v: Value) -> bool {
        self.send_event(Event::default().data(v.to_string())).await
    }

    fn chunk(&self, index: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let c = match self.out.api {
            Api::Chat => {
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Completion => {
                json!({"index": index, "text": delta, "logprobs": logprobs, "finish_reason": finish})
            }
        };
        let mut e = self.out.envelope(true, vec![c]);
        if self.include_usage {
            e["usage"] = Value::Null;
        }
        e
    }

    fn text_delta(&self, text: &str) -> Value {
        match self.out.api {
            Api::Chat => json!({"content": text}),
            Api::Completion => json!(text),
        }
    }

    /// Opening chunks: the role (chat) or the echoed prompt (completions).
    async fn open(&mut self, choices: &[Choice], echoes: &[Option<String>]) -> bool {
        for c in choices {
            let first = match (self.out.api, &echoes[c.prompt]) {
                (Api::Chat, _) => Some(json!({"role": "assistant", "content": ""})),
                (Api::Completion, Some(e)) => {
                    self.offsets[c.index] = e.chars().count();
                    Some(json!(e))
                }
                (Api::Completion, None) => None,
            };
            if let Some(d) = first {
                if !self.send(self.chunk(c.index, d, Value::Null, None)).await {
                    return false;
                }
            }
        }
        true
    }

    /// A chat choice's parsed text as delta chunks; the token's logprobs ride on the first, and a
    /// token that completes no delta still reports them.
    async fn deltas(&mut self, index: usize, deltas: Vec<OutputDelta>, lp: Value) -> bool {
        if deltas.is_empty() {
            return lp.is_null() || self.send(self.chunk(index, json!({}), lp, None)).await;
        }
        let mut lp = Some(lp);
        for d in &deltas {
            self.called_tools[index] |= matches!(d, OutputDelta::ToolCallStart { .. });
            let lp = lp.take().unwrap_or(Value::Null);
            if !self.send(self.chunk(index, delta_json(d), lp, None)).await {
                return false;
            }
        }
        true
    }

    async fn token(
        &mut self,
        index: usize,
        token: u32,
        text: &str,
        logprobs: Option<TokenLogprobs>,
    ) -> bool {
        let lp = match logprobs {
            Some(lp) => self.out.logprobs(&[(token, lp)], self.offsets[index]),
            None => Value::Null,
        };
        self.offsets[index] += text.chars().count();
        if let Some(p) = &mut self.parsers[index] {
            let deltas = p.push(text);
            self.deltas(index, deltas, lp).await
        } else if text.is_empty() && lp.is_null() {
            true
        } else {
            self.send(self.chunk(index, self.text_delta(text), lp, None))
                .await
        }
    }

    /// A choice's held-back text and its finish chunk.
    async fn done(&mut self, index: usize, d: Done) -> bool {
        let mut ok = true;
        let mut finish = d.finish.as_str();
        if let Some(p) = &mut self.parsers[index] {
            let mut deltas = p.push(&d.text);
            deltas.extend(p.finish());
            ok = self.deltas(index, deltas, Value::Null).await;
            if self.called_tools[index] && finish == "stop" {
                finish = "tool_calls";
            }
        } else if !d.text.is_empty() {
            ok = self
                .send(self.chunk(index, self.text_delta(&d.text), Value::Null, None))
                .await;
        }
        let empty = match self.out.api {
            Api::Chat => json!({}),
            Api::Completion => json!(""),
        };
        ok = ok
            && self
                .send(self.chunk(index, empty, Value::Null, Some(finish)))
                .await;
        self.dones.push((self.prompt_of[index], d));
        ok
    }

    /// After the last piece: the usage chunk (or an error if a choice never finished), `[DONE]`.
    async fn finish(&self, n_choices: usize) {
        let ok = if self.dones.len() < n_choices {
            self.send(ApiError::internal("The engine thread stopped.").body())
                .await
        } else if self.include_usage {
            let mut e = self.out.envelope(true, Vec::new());
            e["usage"] = usage(&self.dones);
            self.send(e).await
        } else {
            true
        };
        if ok {
            self.send_event(Event::default().data("[DONE]")).await;
        }
    }
}

/// A streamed chat delta in OpenAI's (and DeepSeek's) shape.
fn delta_json(d: &OutputDelta) -> Value {
    match d {
        OutputDelta::Reasoning(t) => json!({"reasoning_content": t}),
        OutputDelta::Content(t) => json!({"content": t}),
        OutputDelta::ToolCallStart { index, id, name } => json!({"tool_calls": [{
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]}),
        OutputDelta::ToolCallArguments { index, arguments } => json!({"tool_calls": [{
            "index": index,
            "function": {"arguments": arguments},
        }]}),
    }
}

/// A finished chat message and its finish reason (`tool_calls` when it called any).
fn chat_message(m: ParsedMessage, finish: &str) -> (Value, &str) {
    let mut msg = json!({"role": "assistant", "content": m.content});
    if let Some(r) = m.reasoning_content {
        msg["reasoning_content"] = json!(r);
    }
    if m.tool_calls.is_empty() {
        return (msg, finish);
    }
    if m.content.is_empty() {
        msg["content"] = Value::Null;
    }
    msg["tool_calls"] = m
        .tool_calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })
        })
        .collect();
    (
        msg,
        if finish == "stop" {
            "tool_calls"
        } else {
            finish
        },
    )
}

/// The `fault-injection` feature's constraint: fails its sequence from inside the engine step.
struct PanicConstraint;

impl Constraint for PanicConstraint {
    fn mask(&mut self, _logits: &mut [f32]) -> Result<(), ConstraintError> {
        panic!("fault injected by the request");
    }

    fn accept(&mut self, _token: u32) -> Result<bool, ConstraintError> {
        Ok(false)
    }
}
