//! OpenAI's response shapes for chat and text completions: one JSON body (chat.completion /
//! text_completion) or a stream of chunks over server-sent events, with usage and logprobs.

use crate::api::Generation;
use crate::chat::ChatOutput;
use crate::error::ApiError;
use crate::jobs::{self, Answer, Choice, Prompt, Update};
use crate::sse::{sse_response, SseSink};
use crate::worker::Done;
use crate::ModelState;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use frugal_engine::logprobs::TokenLogprobs;
use frugal_output::{OutputDelta, ParsedMessage};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;

/// Which API the response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

/// Submits every choice of every prompt, then answers as JSON or as a stream.
pub async fn generate(
    st: Arc<ModelState>,
    request: String,
    prompts: Vec<Prompt>,
    gen: Generation,
    logprobs: Option<usize>,
    api: Api,
    output: Option<ChatOutput>,
) -> Result<Response, ApiError> {
    let choices = jobs::submit(&st, &request, &prompts, &gen, logprobs, output.as_ref()).await?;
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
        let (id, timeout) = (out.id.clone(), st.cfg.write_timeout);
        Ok(sse_response(id, timeout, move |sink| {
            let n = choices.len();
            let streamer = Streamer {
                prompt_of: choices.iter().map(|c| c.prompt).collect(),
                offsets: vec![0; n],
                dones: Vec::new(),
                out,
                sink,
                include_usage: gen.include_usage,
            };
            streamer.run(choices, echoes)
        }))
    } else {
        collect_response(out, choices, echoes).await
    }
}

/// What every response object carries.
struct Output {
    id: String,
    created: u64,
    model: String,
    api: Api,
    st: Arc<ModelState>,
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
    for c in choices {
        let (index, prompt) = (c.index, c.prompt);
        let Answer {
            text,
            message,
            logprobs,
            done,
            ..
        } = c.collect().await?;
        let echo = echoes[prompt].clone().unwrap_or_default();
        let logprobs = if logprobs.is_empty() {
            Value::Null
        } else {
            out.logprobs(&logprobs, echo.chars().count())
        };
        bodies.push(match out.api {
            Api::Chat => {
                let (message, finish) = match message {
                    Some(m) => chat_message(m, done.finish.as_str()),
                    None => (
                        json!({"role": "assistant", "content": text}),
                        done.finish.as_str(),
                    ),
                };
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            }
            Api::Completion => json!({
                "index": index,
                "text": echo + &text,
                "logprobs": logprobs,
                "finish_reason": done.finish.as_str(),
            }),
        });
        dones.push((prompt, done));
    }
    let mut body = out.envelope(false, bodies);
    body["usage"] = usage(&dones);
    Ok(axum::Json(body).into_response())
}

/// One streamed response: the choices' pieces as OpenAI chunks.
struct Streamer {
    out: Output,
    sink: SseSink,
    include_usage: bool,
    prompt_of: Vec<usize>,
    /// Completions: each choice's text length so far, for logprobs' `text_offset`.
    offsets: Vec<usize>,
    dones: Vec<(usize, Done)>,
}

impl Streamer {
    /// Streams every choice, then the usage and `[DONE]`. Returning early (the client went away
    /// or stopped reading) drops the choices, which cancels their sequences.
    async fn run(mut self, choices: Vec<Choice>, echoes: Vec<Option<String>>) {
        if !self.open(&choices, &echoes).await {
            return;
        }
        let n_choices = choices.len();
        let mut merged = stream::select_all(choices.into_iter().map(|c| {
            stream::unfold(c, |mut c| async move {
                let u = c.next_update().await?;
                let called = c.called_tools;
                Some(((c.index, called, u), c))
            })
            .boxed()
        }));
        loop {
            let next = tokio::select! {
                biased;
                () = self.sink.closed() => return,
                n = merged.next() => n,
            };
            let Some((index, called_tools, update)) = next else {
                break;
            };
            let ok = match update {
                Update::Token {
                    token,
                    text,
                    logprobs,
                    deltas,
                    ..
                } => self.token(index, token, &text, logprobs, deltas).await,
                Update::Done { text, deltas, done } => {
                    self.done(index, &text, deltas, called_tools, done).await
                }
                Update::Failed(msg) => {
                    if self.sink.send(&ApiError::internal(msg).body()).await {
                        self.sink.send_event(Event::default().data("[DONE]")).await;
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

    async fn send(&self, v: Value) -> bool {
        self.sink.send(&v).await
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
        deltas: Vec<OutputDelta>,
    ) -> bool {
        let lp = match logprobs {
            Some(lp) => self.out.logprobs(&[(token, lp)], self.offsets[index]),
            None => Value::Null,
        };
        self.offsets[index] += text.chars().count();
        if self.out.api == Api::Chat {
            self.deltas(index, deltas, lp).await
        } else if text.is_empty() && lp.is_null() {
            true
        } else {
            self.send(self.chunk(index, self.text_delta(text), lp, None))
                .await
        }
    }

    /// A choice's held-back text and its finish chunk.
    async fn done(
        &mut self,
        index: usize,
        text: &str,
        deltas: Vec<OutputDelta>,
        called_tools: bool,
        d: Done,
    ) -> bool {
        let mut ok = true;
        let mut finish = d.finish.as_str();
        if self.out.api == Api::Chat {
            ok = self.deltas(index, deltas, Value::Null).await;
            if called_tools && finish == "stop" {
                finish = "tool_calls";
            }
        } else if !text.is_empty() {
            ok = self
                .send(self.chunk(index, self.text_delta(text), Value::Null, None))
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
            self.sink.send_event(Event::default().data("[DONE]")).await;
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
