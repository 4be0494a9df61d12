//! The HTTP routes: authentication, `/health`, `/metrics`, `/v1/models`, and the two completion
//! endpoints, which turn a request into tokenized prompts for [`crate::respond`].

use crate::api::{parse_body, ChatRequest, Common, CompletionRequest, Prompt, MAX_TOP_LOGPROBS};
use crate::error::ApiError;
use crate::respond::{self, Api};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.body_limit;
    let v1 = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn authenticate(State(st): Shared, req: Request, next: Next) -> Response {
    if st.cfg.api_keys.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(k) if st.cfg.api_keys.iter().any(|key| key == k) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

async fn health(State(st): Shared) -> Response {
    if st.ready.get().is_some() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

async fn metrics(State(st): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({
        "id": st.model_id,
        "object": "model",
        "created": st.created,
        "owned_by": "frugal",
        "max_model_len": st.n_ctx,
    })
}

async fn list_models(State(st): Shared) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn get_model(State(st): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == st.model_id {
        Ok(Json(model_object(&st)))
    } else {
        Err(ApiError::model_not_found(&id, &st.model_id))
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

fn check_model(st: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != st.model_id => Err(ApiError::model_not_found(m, &st.model_id)),
        _ => Ok(()),
    }
}

/// A short unique id for responses and log lines.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{:04x}", rand::random::<u32>(), n & 0xffff)
}

fn tokenize(st: &AppState, text: &str, add_bos: bool) -> Result<Vec<u32>, ApiError> {
    st.tokenizer
        .encode(text, add_bos, true)
        .map_err(|e| ApiError::invalid_param("prompt", format!("Cannot tokenize the prompt: {e}")))
}

async fn chat(State(st): Shared, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(b, st.cfg.body_limit)?;
    let req: ChatRequest = parse_body(&b)?;
    let common: Common = parse_body(&b)?;
    check_model(&st, common.model.as_deref())?;
    let gen = common.generation(st.n_vocab)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), top) => {
            let top = top.unwrap_or(0);
            if top > MAX_TOP_LOGPROBS {
                return Err(ApiError::invalid_param(
                    "top_logprobs",
                    format!("'top_logprobs' must be at most {MAX_TOP_LOGPROBS}."),
                ));
            }
            Some(top as usize)
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "'top_logprobs' requires 'logprobs' to be true.",
            ))
        }
        _ => None,
    };
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
    if let Some(rf) = &req.response_format {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(other) => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    format!("response_format type '{other}' is not supported."),
                ))
            }
            None => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    "'response_format' needs a 'type'.",
                ))
            }
        }
    }
    let extra = req.chat_template_kwargs.clone().unwrap_or_default();
    let rendered = st
        .template
        .render(&req.messages, req.tools.as_deref(), true, &extra)
        .map_err(|e| {
            ApiError::invalid_param("messages", format!("Cannot apply the chat template: {e}"))
        })?;
    let tokens = tokenize(&st, &rendered, false)?;
    let prompts = vec![respond::Prompt { tokens, echo: None }];
    respond::generate(st.clone(), request_id(), prompts, gen, logprobs, Api::Chat).await
}

async fn completions(
    State(st): Shared,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b = body(b, st.cfg.body_limit)?;
    let req: CompletionRequest = parse_body(&b)?;
    let common: Common = parse_body(&b)?;
    check_model(&st, common.model.as_deref())?;
    let gen = common.generation(st.n_vocab)?;
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
    if req.suffix.is_some() {
        return Err(ApiError::invalid_param(
            "suffix",
            "'suffix' (fill-in-the-middle) is not supported for this model.",
        ));
    }
    let add_bos = st.tokenizer.add_bos();
    let n_vocab = st.n_vocab;
    let check_ids = |ids: &[u32]| -> Result<(), ApiError> {
        match ids.iter().find(|&&t| t as usize >= n_vocab) {
            Some(bad) => Err(ApiError::invalid_param(
                "prompt",
                format!("Token id {bad} is outside the vocabulary of {n_vocab}."),
            )),
            None => Ok(()),
        }
    };
    let echo = req.echo;
    let mut prompts = Vec::new();
    match &req.prompt {
        Prompt::Text(t) => prompts.push(respond::Prompt {
            tokens: tokenize(&st, t, add_bos)?,
            echo: echo.then(|| t.clone()),
        }),
        Prompt::Texts(ts) => {
            for t in ts {
                prompts.push(respond::Prompt {
                    tokens: tokenize(&st, t, add_bos)?,
                    echo: echo.then(|| t.clone()),
                });
            }
        }
        Prompt::Tokens(ids) => {
            check_ids(ids)?;
            prompts.push(respond::Prompt {
                tokens: ids.clone(),
                echo: echo.then(|| st.tokenizer.decode(ids, false)),
            });
        }
        Prompt::TokenLists(lists) => {
            for ids in lists {
                check_ids(ids)?;
                prompts.push(respond::Prompt {
                    tokens: ids.clone(),
                    echo: echo.then(|| st.tokenizer.decode(ids, false)),
                });
            }
        }
    }
    if prompts.is_empty() {
        return Err(ApiError::invalid_param("prompt", "'prompt' is empty."));
    }
    if prompts.len() * gen.n > crate::api::MAX_N as usize * 4 {
        return Err(ApiError::invalid_param(
            "prompt",
            "Too many prompts times 'n' in one request.",
        ));
    }
    respond::generate(
        st.clone(),
        request_id(),
        prompts,
        gen,
        logprobs,
        Api::Completion,
    )
    .await
}
