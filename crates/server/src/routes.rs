//! The HTTP routes: authentication, `/health`, `/metrics`, `/v1/models`, and the two completion
//! endpoints, which turn a request into tokenized prompts for [`crate::respond`].

use crate::anthropic;
use crate::api::{
    parse_body, ChatRequest, Common, CompletionRequest, Generation, Prompt, MAX_TOP_LOGPROBS,
};
use crate::chat::{self, ChatOutput};
use crate::conn::BodyProgress;
use crate::cors;
use crate::error::ApiError;
use crate::jobs;
use crate::models::Readiness;
use crate::native;
use crate::prep::{check_length, offload};
use crate::request_id::{self, RequestId};
use crate::respond::{self, Api};
use crate::responses;
use crate::text_output::TextOutput;
use crate::tokens;
use crate::{AppState, ModelState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use frugal_tokenizer::{SpecialToken, Tokenizer};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.body_limit;
    // Every API route answers with and without `/v1`, as llama-server's do.
    let mut api = Router::new();
    for (path, route) in [
        ("/models", get(list_models)),
        ("/models/{id}", get(get_model)),
        ("/chat/completions", post(chat)),
        ("/completions", post(completions)),
        ("/messages", post(anthropic::messages)),
        ("/messages/count_tokens", post(anthropic::count_tokens)),
        ("/completion", post(native::completion)),
        ("/infill", post(native::infill)),
        ("/props", get(native::props)),
        ("/apply-template", post(native::apply_template)),
        ("/tokenize", post(tokens::tokenize)),
        ("/detokenize", post(tokens::detokenize)),
        ("/responses", post(responses::create)),
        (
            "/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        ),
    ] {
        api = api
            .route(&format!("/v1{path}"), route.clone())
            .route(path, route);
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let router = Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/health/live", get(live))
        .route("/v1/health/live", get(live))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(crate::page::router())
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(request_id::tag));
    // Outermost, so that preflight requests are answered before routing and authentication.
    let router = match cors::layer(&state.cfg.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

/// Checks the API key: `Authorization: Bearer KEY` (OpenAI) or `x-api-key: KEY` (Anthropic).
async fn authenticate(State(st): Shared, req: Request, next: Next) -> Response {
    if st.cfg.api_keys.is_empty() {
        return next.run(req).await;
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let known = |k: Option<&str>| k.is_some_and(|k| st.cfg.api_keys.iter().any(|key| key == k));
    if known(bearer) || known(x_api_key) {
        return next.run(req).await;
    }
    if is_anthropic(req.uri().path()) {
        return anthropic::AnthropicError(ApiError::unauthorized()).into_response();
    }
    ApiError::unauthorized().into_response()
}

/// Paths of Anthropic's API, whose errors take its shape.
pub(crate) fn is_anthropic(path: &str) -> bool {
    path.trim_start_matches("/v1").starts_with("/messages")
}

/// The credentials of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The readiness probe: 200 once the models loaded at startup (the one model; with several,
/// the pinned ones) are, 503 before and from the moment shutdown begins, so that a load balancer
/// stops sending requests while the running ones finish.
async fn health(State(st): Shared) -> Response {
    let status = match st.models.readiness() {
        Readiness::Ready => return Json(json!({"status": "ok"})).into_response(),
        Readiness::Loading => "loading",
        Readiness::Draining => "draining",
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": status })),
    )
        .into_response()
}

/// The liveness probe: 200 whenever the process answers, also while models load and while it
/// drains (restarting it then would only lose work).
async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

async fn metrics(State(st): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.models.render_metrics(&st.connections),
    )
        .into_response()
}

/// Every model under each of its names, with its state (`status.value`: unloaded, loading,
/// loaded or failed, as llama-server's router lists its models).
async fn list_models(State(st): Shared) -> Json<Value> {
    Json(json!({"object": "list", "data": st.models.list()}))
}

async fn get_model(State(st): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let models = st.models.list();
    match models.iter().find(|m| m["id"] == id.as_str()) {
        Some(m) => Ok(Json(m.clone())),
        None => Err(ApiError::model_not_found(
            &id,
            &models
                .iter()
                .filter_map(|m| m["id"].as_str())
                .collect::<Vec<_>>(),
        )),
    }
}

/// The body, or the error OpenAI's shape gives for it (413 over the limit).
fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(format!("Cannot read the request body: {}", e.body_text()))
        }
    })
}

/// A request body, read within the body timeout and under the body limit (which chunked bodies
/// meet too: the limit counts what arrives). Compressed bodies are refused: the server does not
/// decode them, so it could not hold them to the limit.
pub(crate) struct RequestBody(pub Bytes);

impl FromRequest<Arc<AppState>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Arc<AppState>) -> Result<Self, ApiError> {
        if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
            let encoding = String::from_utf8_lossy(encoding.as_bytes());
            if !encoding.trim().eq_ignore_ascii_case("identity") {
                return Err(ApiError::unsupported_encoding(encoding.trim()));
            }
        }
        let progress = req.extensions().get::<BodyProgress>().cloned();
        let timeout = st.cfg.body_timeout;
        let b = match tokio::time::timeout(timeout, Bytes::from_request(req, st)).await {
            Ok(b) => body(b, st.cfg.body_limit)?,
            Err(_) => return Err(ApiError::body_timeout(timeout)),
        };
        if let Some(p) = progress {
            p.received();
        }
        Ok(RequestBody(b))
    }
}

/// The model a request body names in `model`, loaded (waiting while it loads). With one model
/// and no `--strict-model-name`, whatever it names is the one model, and `model` is not read.
pub(crate) async fn model_of(app: &AppState, body: &Bytes) -> Result<Arc<ModelState>, ApiError> {
    let name = if app.models.needs_name() {
        requested_model(body).await
    } else {
        None
    };
    app.models.get(name.as_deref()).await
}

/// `?model=` of the endpoints without a body (`/props`).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ModelQuery {
    pub model: Option<String>,
}

/// The body's `model` (a string), read alone: a body that is not JSON, or names none, is the
/// default model's, whose preparation then reports what is wrong with it. Large bodies are
/// read on the blocking pool.
async fn requested_model(body: &Bytes) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<Value>,
    }
    let read = |b: &[u8]| {
        let named: Named = serde_json::from_slice(b).ok()?;
        named.model?.as_str().map(str::to_string)
    };
    if body.len() <= 64 << 10 {
        return read(body);
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || read(&body))
        .await
        .ok()
        .flatten()
}

/// A request's generation parameters, its token limit `default_max` when it gives none, and
/// never above the server's `--max-tokens`.
pub(crate) fn generation(
    st: &ModelState,
    common: &Common,
    default_max: Option<usize>,
) -> Result<Generation, ApiError> {
    let mut gen = common.generation(st.n_vocab)?;
    gen.max_tokens = gen.max_tokens.or(default_max);
    if let Some(cap) = st.cfg.max_tokens {
        gen.max_tokens = Some(gen.max_tokens.map_or(cap, |m| m.min(cap)));
    }
    Ok(gen)
}

/// A short unique id for responses, and for requests that bring none (`x-request-id`).
pub(crate) fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:04x}", rand::random::<u32>(), n & 0xffff)
}

pub(crate) fn tokenize(st: &ModelState, text: &str, add_bos: bool) -> Result<Vec<u32>, ApiError> {
    st.tokenizer
        .encode(text, add_bos, true)
        .map_err(|e| ApiError::invalid_param("prompt", format!("Cannot tokenize the prompt: {e}")))
}

async fn chat(
    State(app): Shared,
    Extension(id): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, ApiError> {
    let st = model_of(&app, &b).await?;
    let (gen, logprobs, tokens, output) = offload(&st, move |st| prepare_chat(st, &b)).await??;
    let prompts = vec![jobs::Prompt { tokens, echo: None }];
    respond::generate(
        st.clone(),
        id.0,
        prompts,
        gen,
        logprobs,
        Api::Chat,
        Some(output),
    )
    .await
}

/// What a chat request becomes before it is submitted: its generation parameters, logprobs,
/// prompt tokens and output plan.
pub(crate) type PreparedChat = (Generation, Option<usize>, Vec<u32>, ChatOutput);

/// A chat request body, checked, rendered and tokenized (on the blocking pool).
fn prepare_chat(st: &ModelState, b: &[u8]) -> Result<PreparedChat, ApiError> {
    let req: ChatRequest = parse_body(b)?;
    let common: Common = parse_body(b)?;
    prepare_chat_request(st, &req, &common)
}

/// A parsed chat request (from any API), checked, rendered and tokenized.
pub(crate) fn prepare_chat_request(
    st: &ModelState,
    req: &ChatRequest,
    common: &Common,
) -> Result<PreparedChat, ApiError> {
    let gen = generation(st, common, None)?;
    let logprobs = chat_logprobs(req)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(ApiError::invalid_param(
                format!("messages[{i}].role"),
                format!("messages[{i}] needs a string 'role'."),
            ));
        }
    }
    let rendered = chat::render(st, req)?;
    tracing::debug!(prompt = %rendered, "chat prompt");
    check_length(st, rendered.len(), 0, gen.max_tokens)?;
    let tokens = tokenize(st, &rendered, false)?;
    let max_tokens = gen
        .max_tokens
        .unwrap_or_else(|| st.n_ctx.saturating_sub(tokens.len()));
    let output = chat::output(st, req, &rendered, max_tokens)?;
    Ok((gen, logprobs, tokens, output))
}

/// Chat's `logprobs` and `top_logprobs`: how many alternatives to report, if any.
fn chat_logprobs(req: &ChatRequest) -> Result<Option<usize>, ApiError> {
    match (req.logprobs, req.top_logprobs) {
        (Some(true), top) => {
            let top = top.unwrap_or(0);
            if top > MAX_TOP_LOGPROBS {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    format!("'top_logprobs' must be at most {MAX_TOP_LOGPROBS}."),
                ));
            }
            Ok(Some(top as usize))
        }
        (_, Some(_)) => Err(ApiError::invalid_param(
            "top_logprobs",
            "'top_logprobs' requires 'logprobs' to be true.",
        )),
        _ => Ok(None),
    }
}

async fn completions(
    State(app): Shared,
    Extension(id): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, ApiError> {
    let st = model_of(&app, &b).await?;
    let (gen, logprobs, prompts) = offload(&st, move |st| prepare_completions(st, &b)).await??;
    respond::generate(
        st.clone(),
        id.0,
        prompts,
        gen,
        logprobs,
        Api::Completion,
        None,
    )
    .await
}

/// A completions request, checked and tokenized (on the blocking pool).
fn prepare_completions(
    st: &ModelState,
    b: &[u8],
) -> Result<(Generation, Option<usize>, Vec<jobs::Prompt>), ApiError> {
    let req: CompletionRequest = parse_body(b)?;
    let common: Common = parse_body(b)?;
    // Without a limit, OpenAI's completions generate 16 tokens.
    let mut gen = generation(st, &common, Some(16))?;
    gen.text_output = TextOutput::from_request(
        st,
        req.grammar.as_deref(),
        req.json_schema.as_ref(),
        req.response_format.as_ref(),
        gen.max_tokens,
    )?;
    let logprobs = match req.logprobs {
        Some(n) if n > MAX_TOP_LOGPROBS => {
            return Err(ApiError::invalid_param(
                "logprobs",
                format!("'logprobs' must be at most {MAX_TOP_LOGPROBS}."),
            ))
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let prompts = match &req.suffix {
        Some(suffix) => vec![fim_completion(st, &req, suffix, gen.max_tokens)?],
        None => completion_prompts(st, &req, gen.max_tokens)?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid_param("prompt", "'prompt' is empty."));
    }
    if prompts.len() * gen.n > crate::api::MAX_N as usize * 4 {
        return Err(ApiError::invalid_param(
            "prompt",
            "Too many prompts times 'n' in one request.",
        ));
    }
    Ok((gen, logprobs, prompts))
}

/// The fill-in-the-middle prompt of a request with `suffix`.
fn fim_completion(
    st: &ModelState,
    req: &CompletionRequest,
    suffix: &str,
    max_tokens: Option<usize>,
) -> Result<jobs::Prompt, ApiError> {
    let Prompt::Text(text) = &req.prompt else {
        return Err(ApiError::invalid_param(
            "prompt",
            "With 'suffix', 'prompt' must be one string.",
        ));
    };
    // BOS and the three FIM tokens come on top of the two texts.
    check_length(st, text.len() + suffix.len(), 4, max_tokens)?;
    let tokens = fim_prompt(&st.tokenizer, text, suffix)?;
    Ok(jobs::Prompt {
        tokens,
        echo: req.echo.then(|| text.clone()),
    })
}

/// The prompts of a request without `suffix`: texts tokenized, token lists checked.
fn completion_prompts(
    st: &ModelState,
    req: &CompletionRequest,
    max_tokens: Option<usize>,
) -> Result<Vec<jobs::Prompt>, ApiError> {
    let add_bos = st.tokenizer.add_bos();
    let echo = req.echo;
    let text = |t: &String| -> Result<jobs::Prompt, ApiError> {
        check_length(st, t.len(), usize::from(add_bos), max_tokens)?;
        Ok(jobs::Prompt {
            tokens: tokenize(st, t, add_bos)?,
            echo: echo.then(|| t.clone()),
        })
    };
    let ids = |ids: &Vec<u32>| -> Result<jobs::Prompt, ApiError> {
        crate::prep::check_token_ids(st, ids, "prompt")?;
        Ok(jobs::Prompt {
            tokens: ids.clone(),
            echo: echo.then(|| st.tokenizer.decode(ids, false)),
        })
    };
    match &req.prompt {
        Prompt::Text(t) => Ok(vec![text(t)?]),
        Prompt::Texts(ts) => ts.iter().map(text).collect(),
        Prompt::Tokens(t) => Ok(vec![ids(t)?]),
        Prompt::TokenLists(lists) => lists.iter().map(ids).collect(),
    }
}

/// A fill-in-the-middle prompt in llama.cpp's prefix-suffix-middle order:
/// `[BOS] <FIM_PRE> prompt <FIM_SUF> suffix <FIM_MID>`; the model writes the middle.
pub(crate) fn fim_prompt(
    tok: &Tokenizer,
    prompt: &str,
    suffix: &str,
) -> Result<Vec<u32>, ApiError> {
    let Some(fim) = fim_tokens(tok) else {
        return Err(ApiError::invalid_param(
            "suffix",
            "'suffix' (fill-in-the-middle) needs a model with FIM tokens; this model has none.",
        ));
    };
    let encode = |t: &str| {
        tok.encode(t, false, false).map_err(|e| {
            ApiError::invalid_param("prompt", format!("Cannot tokenize the prompt: {e}"))
        })
    };
    Ok(fim_layout(tok, fim, &[], encode(prompt)?, encode(suffix)?))
}

/// The model's fill-in-the-middle tokens (prefix, suffix, middle), if it has all three.
pub(crate) fn fim_tokens(tok: &Tokenizer) -> Option<[u32; 3]> {
    let [Some(pre), Some(suf), Some(mid)] = [
        SpecialToken::FimPre,
        SpecialToken::FimSuf,
        SpecialToken::FimMid,
    ]
    .map(|w| tok.special_token_id(w)) else {
        return None;
    };
    Some([pre, suf, mid])
}

/// `[BOS] extra <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID>`, the prefix-suffix-middle order of
/// both OpenAI's `suffix` and llama-server's `/infill` (whose other files are `extra`).
pub(crate) fn fim_layout(
    tok: &Tokenizer,
    [pre, suf, mid]: [u32; 3],
    extra: &[u32],
    prefix: Vec<u32>,
    suffix: Vec<u32>,
) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(extra.len() + prefix.len() + suffix.len() + 4);
    if tok.add_bos() {
        tokens.extend(tok.bos());
    }
    tokens.extend_from_slice(extra);
    tokens.push(pre);
    tokens.extend(prefix);
    tokens.push(suf);
    tokens.extend(suffix);
    tokens.push(mid);
    tokens
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use frugal_fixtures::dir as fixtures;
    use frugal_formats::GgufFile;

    /// The fixtures' toy Qwen2 tokenizer.json plus Qwen2.5-Coder's FIM tokens.
    pub(crate) fn tokenizer_with_fim() -> Tokenizer {
        let src = fixtures().join("hf/qwen2");
        let mut spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
                .unwrap();
        let added = spec["added_tokens"].as_array_mut().unwrap();
        for (i, text) in ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
            .iter()
            .enumerate()
        {
            added.push(json!({"id": 515 + i, "content": text, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
        }
        // A folder per call: tests that call this run at once in one process.
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("frugal-server-fim-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), spec.to_string()).unwrap();
        for f in ["tokenizer_config.json", "generation_config.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        tok
    }

    #[test]
    fn fim_prompts_use_the_model_fim_tokens() {
        let tok = tokenizer_with_fim();
        let ids = fim_prompt(&tok, "def f(x):", "    return y").unwrap();
        assert_eq!(ids[0], 515);
        assert_eq!(*ids.last().unwrap(), 516);
        assert!(ids.contains(&517));
        assert_eq!(
            tok.decode(&ids, false),
            "<|fim_prefix|>def f(x):<|fim_suffix|>    return y<|fim_middle|>"
        );
        // A model without FIM tokens: a 400 naming `suffix`.
        let gguf = GgufFile::open(fixtures().join("models/qwen2-Q8_0.gguf")).unwrap();
        let toy = Tokenizer::from_gguf(&gguf).unwrap();
        let e = fim_prompt(&toy, "a", "b").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("suffix"));
    }
}
