//! llama-server's own endpoints, for clients written against it: `/completion` with its request
//! fields (`n_predict`, `n_probs`, `repeat_penalty`, …) and response shape (`content`, `stop`,
//! `stop_type`, `timings`, …), `/infill` (its fill-in-the-middle form, with `input_extra`),
//! `/apply-template` and `/props`.

use crate::api::{Common, Generation};
use crate::error::ApiError;
use crate::jobs::{self, Answer, Choice, Prompt, Update};
use crate::request_id::RequestId;
use crate::routes::{fim_layout, fim_tokens, generation, RequestBody};
use crate::sse::{sse_response, SseSink};
use crate::text_output::TextOutput;
use crate::worker::Done;
use crate::{AppState, ModelState};
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use frugal_engine::logprobs::TokenLogprobs;
use frugal_engine::FinishReason;
use frugal_tokenizer::{SpecialToken, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

type Shared = State<Arc<AppState>>;

/// The fields of llama-server's `/completion` and `/infill` that are not OpenAI's.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NativeRequest {
    pub prompt: Option<NativePrompt>,
    /// -1: no limit (up to the context).
    pub n_predict: Option<i64>,
    pub n_probs: Option<u32>,
    #[serde(default)]
    pub return_tokens: bool,
    #[serde(default)]
    pub ignore_eos: bool,
    pub input_prefix: Option<String>,
    pub input_suffix: Option<String>,
    pub input_extra: Option<Vec<ExtraChunk>>,
    /// What the text must match: a GBNF grammar or a JSON schema.
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
}

/// `prompt`: a string or token ids (llama-server also mixes the two in one list).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NativePrompt {
    Text(String),
    Mixed(Vec<PromptPiece>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptPiece {
    Token(u32),
    Text(String),
}

/// One file of `/infill`'s extra context.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtraChunk {
    pub filename: Option<String>,
    pub text: String,
}

/// llama-server's sampling defaults, for a request that names none.
fn native_defaults() -> [(&'static str, Value); 4] {
    [
        ("temperature", json!(0.8)),
        ("top_k", json!(40)),
        ("top_p", json!(0.95)),
        ("min_p", json!(0.05)),
    ]
}

/// The OpenAI-named fields of a native body (`repeat_penalty` → `repetition_penalty`, `seed` -1
/// → random, llama-server's defaults for sampling, its `logit_bias` lists as a map).
fn common_fields(body: &Map<String, Value>) -> Result<Common, ApiError> {
    let mut out = body.clone();
    for k in ["n_predict", "max_tokens", "prompt", "logit_bias"] {
        out.remove(k);
    }
    for (k, v) in native_defaults() {
        out.entry(k).or_insert(v);
    }
    if let Some(p) = body.get("repeat_penalty") {
        out.insert("repetition_penalty".into(), p.clone());
    }
    if body
        .get("seed")
        .and_then(Value::as_i64)
        .is_some_and(|s| s < 0)
    {
        out.remove("seed");
    }
    if let Some(bias) = body.get("logit_bias") {
        out.insert("logit_bias".into(), logit_bias(bias)?);
    }
    serde_json::from_value(Value::Object(out))
        .map_err(|e| ApiError::invalid(format!("Invalid request: {e}")))
}

/// llama-server's `logit_bias`: `[[id, bias], …]` (`false` bans the token) or `{"id": bias}`.
fn logit_bias(v: &Value) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "logit_bias",
            "'logit_bias' must be [[token id, bias], …] or {\"token id\": bias}.",
        )
    };
    match v {
        Value::Object(_) => Ok(v.clone()),
        Value::Array(pairs) => {
            let mut m = Map::new();
            for p in pairs {
                let (Some(id), Some(bias)) = (p.get(0).and_then(Value::as_u64), p.get(1)) else {
                    return Err(bad());
                };
                let bias = match bias {
                    Value::Bool(false) => -1e30,
                    b => b.as_f64().ok_or_else(bad)?,
                };
                m.insert(id.to_string(), json!(bias));
            }
            Ok(Value::Object(m))
        }
        _ => Err(bad()),
    }
}

/// What a native request becomes before it is submitted.
struct Prepared {
    gen: Generation,
    n_probs: Option<usize>,
    return_tokens: bool,
    prompt: Vec<u32>,
}

fn prepare(st: &ModelState, b: &[u8], infill: bool) -> Result<Prepared, ApiError> {
    let body: Map<String, Value> = crate::api::parse_body(b)?;
    let req: NativeRequest = crate::api::parse_body(b)?;
    let mut common = common_fields(&body)?;
    let limit = match (
        req.n_predict,
        body.get("max_tokens").and_then(Value::as_u64),
    ) {
        (Some(n), _) if n >= 0 => Some(n as usize),
        (Some(_), _) => None,
        (None, m) => m.map(|m| m as usize),
    };
    if limit == Some(0) {
        return Err(ApiError::invalid_param(
            "n_predict",
            "'n_predict' must be at least 1 (or -1 for no limit).",
        ));
    }
    // `n_predict` (or `max_tokens`) is the limit, capped by `--max-tokens` like every request's.
    if let Some(l) = limit {
        common.max_tokens = Some(l as u64);
        common.max_completion_tokens = None;
    }
    let mut gen = generation(st, &common, None)?;
    gen.ignore_eos = req.ignore_eos;
    gen.text_output = TextOutput::from_request(
        st,
        req.grammar.as_deref(),
        req.json_schema.as_ref(),
        None,
        gen.max_tokens,
    )?;
    let prompt = if infill {
        infill_prompt(&st.tokenizer, st.n_ctx, &req, gen.max_tokens)?
    } else {
        completion_prompt(st, &req)?
    };
    let n_probs = req
        .n_probs
        .filter(|&n| n > 0)
        .map(|n| n.min(crate::api::MAX_TOP_LOGPROBS) as usize);
    Ok(Prepared {
        gen,
        n_probs,
        return_tokens: req.return_tokens,
        prompt,
    })
}

/// The tokens of `/completion`'s prompt: text tokenized with BOS and special tokens, ids as given.
fn completion_prompt(st: &ModelState, req: &NativeRequest) -> Result<Vec<u32>, ApiError> {
    let tok = &st.tokenizer;
    let encode = |t: &str, bos: bool| {
        tok.encode(t, bos, true).map_err(|e| {
            ApiError::invalid_param("prompt", format!("Cannot tokenize the prompt: {e}"))
        })
    };
    let tokens = match &req.prompt {
        None => return Err(ApiError::invalid_param("prompt", "'prompt' is required.")),
        Some(NativePrompt::Text(t)) => {
            crate::prep::check_length(st, t.len(), 1, None)?;
            encode(t, tok.add_bos())?
        }
        Some(NativePrompt::Mixed(pieces)) => {
            let mut out = Vec::new();
            for (i, p) in pieces.iter().enumerate() {
                match p {
                    PromptPiece::Token(id) => out.push(*id),
                    PromptPiece::Text(t) => out.extend(encode(t, i == 0 && tok.add_bos())?),
                }
            }
            out
        }
    };
    crate::prep::check_token_ids(st, &tokens, "prompt")?;
    Ok(tokens)
}

/// `/infill`'s prompt as llama-server lays it out: the extra files first (after the repository
/// name, where the model has a repository token), then `<FIM_PRE>prefix prompt<FIM_SUF>suffix
/// <FIM_MID>`; the prefix keeps its end and the suffix its start when they do not fit a batch,
/// and the extra context keeps its end within what the context has left.
fn infill_prompt(
    tok: &Tokenizer,
    n_ctx: usize,
    req: &NativeRequest,
    max_tokens: Option<usize>,
) -> Result<Vec<u32>, ApiError> {
    let (Some(prefix), Some(suffix)) = (&req.input_prefix, &req.input_suffix) else {
        let missing = if req.input_prefix.is_none() {
            "input_prefix"
        } else {
            "input_suffix"
        };
        return Err(ApiError::invalid_param(
            missing,
            format!("'{missing}' is required."),
        ));
    };
    let Some(fim) = fim_tokens(tok) else {
        return Err(ApiError::invalid(
            "Infill is not supported by this model: it has no fill-in-the-middle tokens.",
        ));
    };
    let encode = |t: &str| {
        tok.encode(t, false, false)
            .map_err(|e| ApiError::invalid(format!("Cannot tokenize the infill input: {e}")))
    };
    let prompt = match &req.prompt {
        Some(NativePrompt::Text(t)) => encode(t)?,
        None => Vec::new(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "'prompt' must be a string.",
            ))
        }
    };
    // llama-server fits prefix and suffix in a batch (2048 by default, at most half the context
    // here) and the extra files in what is left.
    let batch = (n_ctx / 2).min(2048);
    let mut before = encode(prefix)?;
    before.drain(..before.len().saturating_sub(3 * batch / 4));
    let mut after = encode(suffix)?;
    after.truncate((batch / 4).saturating_sub(2 + prompt.len()));
    let extra = extra_context(tok, req.input_extra.as_deref().unwrap_or_default(), &encode)?;
    let room = n_ctx.saturating_sub(batch + 2 * max_tokens.unwrap_or(0));
    before.extend(prompt);
    let extra = &extra[extra.len().saturating_sub(room)..];
    Ok(fim_layout(tok, fim, extra, before, after))
}

/// The extra files of `/infill`: `<FIM_REP>myproject\n`, each file as `<FIM_SEP>name\n` and its
/// text, and the current file's separator; without those tokens, a text separator between files.
fn extra_context(
    tok: &Tokenizer,
    chunks: &[ExtraChunk],
    encode: &dyn Fn(&str) -> Result<Vec<u32>, ApiError>,
) -> Result<Vec<u32>, ApiError> {
    let rep = tok.special_token_id(SpecialToken::FimRep);
    let sep = tok.special_token_id(SpecialToken::FimSep);
    let mut out = Vec::new();
    if let Some(rep) = rep {
        out.push(rep);
        out.extend(encode("myproject\n")?);
    }
    for c in chunks {
        match sep {
            Some(sep) => {
                out.push(sep);
                out.extend(encode(&format!(
                    "{}\n",
                    c.filename.as_deref().unwrap_or("tmp")
                ))?);
            }
            None => out.extend(encode("\n\n--- snippet ---\n\n")?),
        }
        out.extend(encode(&c.text)?);
    }
    if let Some(sep) = sep {
        out.push(sep);
        out.extend(encode("filename\n")?);
    }
    Ok(out)
}

/// `POST /completion`.
pub async fn completion(
    State(app): Shared,
    Extension(id): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, ApiError> {
    run(&app, id, b, false).await
}

/// `POST /infill`.
pub async fn infill(
    State(app): Shared,
    Extension(id): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, ApiError> {
    run(&app, id, b, true).await
}

async fn run(
    app: &AppState,
    RequestId(id): RequestId,
    b: axum::body::Bytes,
    infill: bool,
) -> Result<Response, ApiError> {
    let st = crate::routes::model_of(app, &b).await?;
    let p = crate::prep::offload(&st, move |st| prepare(st, &b, infill)).await??;
    let prompts = [Prompt {
        tokens: p.prompt.clone(),
        echo: None,
    }];
    let mut choices = jobs::submit(&st, &id, &prompts, &p.gen, p.n_probs, None).await?;
    let choice = choices.pop().expect("one prompt, one choice");
    let out = Native {
        st: st.clone(),
        p,
        start: choice.submitted,
    };
    if out.p.gen.stream {
        let timeout = st.cfg.write_timeout;
        return Ok(sse_response(id, timeout, move |sink| {
            out.stream(sink, choice)
        }));
    }
    let answer = choice.collect().await?;
    Ok(Json(out.result(&answer)).into_response())
}

/// One native request's response shapes.
struct Native {
    st: Arc<ModelState>,
    p: Prepared,
    /// When the request was submitted.
    start: Instant,
}

impl Native {
    /// The final object: text, counts, why it stopped, settings and timings.
    fn result(&self, a: &Answer) -> Value {
        let mut v = self.summary(&a.done, a.first_token, a.finished, a.tokens.len());
        v["content"] = json!(a.text);
        v["has_new_line"] = json!(a.text.contains('\n'));
        v["tokens"] = if self.p.return_tokens {
            json!(a.tokens)
        } else {
            json!([])
        };
        if self.p.n_probs.is_some() {
            v["completion_probabilities"] = self.probabilities(&a.logprobs);
        }
        v
    }

    fn summary(
        &self,
        d: &Done,
        first: Option<Instant>,
        finished: Instant,
        n_tokens: usize,
    ) -> Value {
        let (stop_type, word) = match (&d.finish, &d.stop_string) {
            (FinishReason::Length, _) => ("limit", ""),
            (FinishReason::Stop, Some(w)) => ("word", w.as_str()),
            (FinishReason::Stop, None) => ("eos", ""),
            (FinishReason::Aborted, _) => ("none", ""),
        };
        let tok = &self.st.tokenizer;
        json!({
            "index": 0,
            "id_slot": 0,
            "stop": true,
            "model": self.st.model_id,
            "tokens_predicted": d.completion_tokens,
            "tokens_evaluated": d.prompt_tokens,
            "tokens_cached": d.cached_tokens,
            "generation_settings": self.settings(),
            "prompt": tok.decode(&self.p.prompt, false),
            "truncated": false,
            "stop_type": stop_type,
            "stopping_word": word,
            "timings": timings(d, self.start, first, finished, n_tokens),
        })
    }

    fn settings(&self) -> Value {
        let g = &self.p.gen;
        let s = &g.sampling;
        json!({
            "n_predict": g.max_tokens.map_or(-1, |m| m as i64),
            "seed": s.seed,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "repeat_penalty": s.repetition_penalty,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
            "stop": g.stop,
            "n_probs": self.p.n_probs.unwrap_or(0),
            "ignore_eos": g.ignore_eos,
            "stream": g.stream,
            "n_ctx": self.st.n_ctx,
        })
    }

    /// `completion_probabilities`: each token with its log-probability and the top ones.
    fn probabilities(&self, lps: &[(u32, TokenLogprobs)]) -> Value {
        let entry = |id: u32, lp: f32| {
            let bytes = self.st.tokenizer.token_bytes(id);
            json!({"id": id, "token": String::from_utf8_lossy(&bytes), "bytes": bytes, "logprob": lp})
        };
        lps.iter()
            .map(|(id, lp)| {
                let mut e = entry(*id, lp.logprob);
                e["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
                e
            })
            .collect()
    }

    /// A chunk per token (`stop: false`), then the final object with `stop: true`.
    async fn stream(self, sink: SseSink, mut choice: Choice) {
        let mut n = 0;
        loop {
            let v = match choice.next_update().await {
                Some(Update::Token {
                    token,
                    text,
                    logprobs,
                    ..
                }) => {
                    n += 1;
                    let mut v = json!({"index": 0, "content": text, "tokens": [token], "stop": false,
                        "id_slot": 0, "tokens_predicted": n, "tokens_evaluated": self.p.prompt.len()});
                    if let Some(lp) = logprobs {
                        v["completion_probabilities"] = self.probabilities(&[(token, lp)]);
                    }
                    v
                }
                Some(Update::Done { text, done, .. }) => {
                    let mut v = self.summary(&done, choice.first_token, Instant::now(), n);
                    v["content"] = json!(text);
                    v["has_new_line"] = json!(text.contains('\n'));
                    sink.send(&v).await;
                    return;
                }
                Some(Update::Failed(msg)) => {
                    sink.send(&ApiError::internal(msg).body()).await;
                    return;
                }
                None => return,
            };
            if !sink.send(&v).await {
                return;
            }
        }
    }
}

/// llama-server's `timings`: prompt time from submission to the first token (queueing
/// included), generation time from the first token to the last.
fn timings(d: &Done, start: Instant, first: Option<Instant>, end: Instant, n: usize) -> Value {
    let first = first.unwrap_or(end);
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let (prompt_ms, predicted_ms) = (ms(start, first), ms(first, end));
    let prompt_n = d.prompt_tokens - d.cached_tokens;
    let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let per = |n: usize, ms: f64| if n > 0 { ms / n as f64 } else { 0.0 };
    // The first token comes with the prompt: generation timing counts those after it.
    let after_first = n.saturating_sub(1);
    json!({
        "cache_n": d.cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per(prompt_n, prompt_ms),
        "prompt_per_second": rate(prompt_n, prompt_ms),
        "predicted_n": d.completion_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per(after_first, predicted_ms),
        "predicted_per_second": rate(after_first, predicted_ms),
    })
}

/// `POST /apply-template`: a chat request's prompt as the template renders it, without
/// generating (llama-server's endpoint).
pub async fn apply_template(
    State(app): Shared,
    RequestBody(b): RequestBody,
) -> Result<Json<Value>, ApiError> {
    let st = crate::routes::model_of(&app, &b).await?;
    crate::prep::offload(&st, move |st| {
        let req: crate::api::ChatRequest = crate::api::parse_body(&b)?;
        let prompt = crate::chat::render(st, &req)?;
        Ok(Json(json!({ "prompt": prompt })))
    })
    .await?
}

/// `GET /props`: the server's settings as llama-server reports them.
pub async fn props(
    State(app): Shared,
    Query(q): Query<crate::routes::ModelQuery>,
) -> Result<Json<Value>, ApiError> {
    let st = app.models.get(q.model.as_deref()).await?;
    let tok = &st.tokenizer;
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    Ok(Json(json!({
        "default_generation_settings": {
            "n_ctx": st.n_ctx,
            "params": {"n_predict": st.cfg.max_tokens.map_or(-1, |m| m as i64),
                       "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
        },
        "total_slots": st.cfg.max_seqs,
        "model_path": st.cfg.model.display().to_string(),
        "model_alias": st.model_id,
        "chat_template": st.template.source(),
        "bos_token": text(tok.bos()),
        "eos_token": text(tok.eos()),
        "modalities": {"vision": false, "audio": false},
        "build_info": concat!("frugal-", env!("CARGO_PKG_VERSION")),
        "is_sleeping": false,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::tests::tokenizer_with_fim;

    fn request(v: Value) -> NativeRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn infill_lays_out_extra_files_prefix_prompt_suffix_then_middle() {
        let tok = tokenizer_with_fim();
        let req = request(
            json!({"input_prefix": "def f(x):", "input_suffix": "    return y",
            "prompt": "  y = x", "input_extra": [{"filename": "a.py", "text": "import os"}]}),
        );
        let ids = infill_prompt(&tok, 4096, &req, Some(16)).unwrap();
        let text = tok.decode(&ids, false);
        assert_eq!(
            text,
            "\n\n--- snippet ---\n\nimport os<|fim_prefix|>def f(x):  y = x<|fim_suffix|>    return y<|fim_middle|>"
        );
        // Missing fields name themselves.
        let e =
            infill_prompt(&tok, 4096, &request(json!({"input_prefix": "a"})), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input_suffix"));
    }

    #[test]
    fn infill_keeps_the_end_of_a_long_prefix_and_the_start_of_a_long_suffix() {
        let tok = tokenizer_with_fim();
        let long = "a ".repeat(3000);
        let req = request(
            json!({"input_prefix": format!("{long}END"), "input_suffix": format!("START{long}")}),
        );
        let ids = infill_prompt(&tok, 1024, &req, Some(16)).unwrap();
        let text = tok.decode(&ids, false);
        assert!(text.contains("END<|fim_suffix|>START"), "{text}");
        assert!(ids.len() <= 1024, "{}", ids.len());
    }

    #[test]
    fn native_fields_become_openai_ones_with_llama_server_defaults() {
        let body = json!({"prompt": "x", "repeat_penalty": 1.1, "seed": -1, "temperature": 0.2,
            "logit_bias": [[5, -2.0], [7, false]]});
        let c = common_fields(body.as_object().unwrap()).unwrap();
        assert_eq!(c.repetition_penalty, Some(1.1));
        assert_eq!(c.seed, None);
        assert_eq!(c.temperature, Some(0.2));
        assert_eq!(c.top_k, Some(40));
        let bias = c.logit_bias.unwrap();
        assert_eq!(bias["5"], -2.0);
        assert!(bias["7"] < -1e20);
    }
}
