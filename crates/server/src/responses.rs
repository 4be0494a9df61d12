//! OpenAI's Responses API (`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`): the
//! request is translated into the chat request the chat endpoint takes ([`input`]), so templates,
//! reasoning, tools and constraints are the same code; the answer comes back as output items
//! ([`output`]), whole or as the API's named stream events; stored responses ([`store`]) let a
//! request continue a conversation by `previous_response_id`.

mod input;
mod output;
mod store;

pub use store::ResponseStore;

use crate::api::{parse_body, ChatRequest, Common};
use crate::error::ApiError;
use crate::jobs::{self, Choice, Prompt, Update};
use crate::request_id::RequestId;
use crate::routes::{prepare_chat_request, request_id, PreparedChat, RequestBody};
use crate::sse::{sse_response, SseSink};
use crate::worker::Done;
use crate::{AppState, ModelState};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use frugal_engine::FinishReason;
use frugal_output::OutputDelta;
use output::Items;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use store::Stored;

type Shared = State<Arc<AppState>>;

/// A request, prepared: the chat job, the fields its response echoes, and what storing it takes.
struct Prepared {
    chat: PreparedChat,
    echo: Map<String, Value>,
    /// The conversation so far (without instructions), for the store.
    conversation: Vec<Value>,
    store: bool,
}

/// `POST /v1/responses`.
pub async fn create(
    State(app): Shared,
    Extension(request): Extension<RequestId>,
    RequestBody(b): RequestBody,
) -> Result<Response, ApiError> {
    let st = crate::routes::model_of(&app, &b).await?;
    let p = crate::prep::offload(&st, move |st| prepare(st, &b)).await??;
    let (gen, _, tokens, output) = p.chat;
    let prompts = [Prompt { tokens, echo: None }];
    let id = format!("resp_{}", request_id());
    let mut choices = jobs::submit(&st, &request.0, &prompts, &gen, None, Some(&output)).await?;
    let choice = choices.pop().expect("one prompt, one choice");
    let run = Run {
        head: head(&id, st.created_now(), &st.model_id, p.echo),
        conversation: p.conversation,
        store: p.store.then(|| st.responses.clone()),
    };
    if gen.stream {
        let timeout = st.cfg.write_timeout;
        return Ok(sse_response(id, timeout, move |sink| {
            run.stream(Events::Sse { sink, next: 0 }, choice)
        }));
    }
    match run.answer(choice, &mut Events::Drop).await {
        Outcome::Done(response) => Ok(Json(response).into_response()),
        Outcome::Failed(msg) => Err(ApiError::internal(msg)),
        Outcome::Gone => Err(ApiError::internal("The request was cancelled.")),
    }
}

/// `GET /v1/responses/{id}`: a stored response.
pub async fn retrieve(State(st): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    match st.responses.get(&id) {
        Some(s) => Ok(Json(s.response.clone()).into_response()),
        None => Err(not_found(&id, None)),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(State(st): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    if st.responses.remove(&id) {
        Ok(Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response())
    } else {
        Err(not_found(&id, None))
    }
}

/// 404 for a response that is not stored (never was, expired, deleted or `store: false`).
fn not_found(id: &str, param: Option<&str>) -> ApiError {
    let what = if param.is_some() {
        "Previous response"
    } else {
        "Response"
    };
    let mut e = ApiError::invalid(format!("{what} with id '{id}' not found."));
    e.status = StatusCode::NOT_FOUND;
    e.param = param.map(str::to_string);
    if param.is_some() {
        e = e.with_code("previous_response_not_found");
    }
    e
}

/// Parses, continues the stored conversation, translates, renders and tokenizes (on the
/// blocking pool).
fn prepare(st: &ModelState, b: &[u8]) -> Result<Prepared, ApiError> {
    let body: Map<String, Value> = parse_body(b)?;
    let history = match body.get("previous_response_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(prev)) => match st.responses.get(prev) {
            Some(s) => s.conversation.clone(),
            None => return Err(not_found(prev, Some("previous_response_id"))),
        },
        Some(_) => {
            return Err(ApiError::invalid_param(
                "previous_response_id",
                "'previous_response_id' must be a string.",
            ))
        }
    };
    let t = input::to_chat(&body, &history)?;
    let req: ChatRequest = input::from_chat(&t.chat)?;
    let common: Common = input::from_chat(&t.chat)?;
    let chat = prepare_chat_request(st, &req, &common).map_err(input::rename_param)?;
    Ok(Prepared {
        chat,
        echo: echo(&body)?,
        conversation: t.conversation,
        store: body.get("store") != Some(&Value::Bool(false)),
    })
}

/// The request fields a response repeats, with OpenAI's defaults for those not given.
fn echo(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let given = |k: &str, default: Value| {
        body.get(k)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let metadata = given("metadata", json!({}));
    if !metadata.is_object() {
        return Err(ApiError::invalid_param(
            "metadata",
            "'metadata' must be an object of strings.",
        ));
    }
    let reasoning = body.get("reasoning");
    let field = |k: &str| {
        reasoning
            .and_then(|r| r.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let v = json!({
        "instructions": given("instructions", Value::Null),
        "max_output_tokens": given("max_output_tokens", Value::Null),
        "parallel_tool_calls": given("parallel_tool_calls", json!(true)),
        "previous_response_id": given("previous_response_id", Value::Null),
        "reasoning": {"effort": field("effort"), "summary": field("summary")},
        "store": given("store", json!(true)),
        "temperature": given("temperature", json!(1.0)),
        "text": given("text", json!({"format": {"type": "text"}})),
        "tool_choice": given("tool_choice", json!("auto")),
        "tools": given("tools", json!([])),
        "top_p": given("top_p", json!(1.0)),
        "truncation": "disabled",
        "user": given("user", Value::Null),
        "metadata": metadata,
    });
    Ok(v.as_object().cloned().unwrap_or_default())
}

/// The response object before any output: `in_progress`, with the echoed request fields.
fn head(id: &str, created_at: u64, model: &str, echo: Map<String, Value>) -> Value {
    let mut r = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": [],
        "usage": null,
    });
    if let Value::Object(o) = &mut r {
        o.extend(echo);
    }
    r
}

/// The finished response: status, output and usage on the head.
fn finished(head: &Value, output: &[Value], done: &Done, reasoning_tokens: usize) -> Value {
    let mut r = head.clone();
    if done.finish == FinishReason::Length {
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    } else {
        r["status"] = json!("completed");
    }
    r["output"] = json!(output);
    r["usage"] = json!({
        "input_tokens": done.prompt_tokens,
        "input_tokens_details": {"cached_tokens": done.cached_tokens},
        "output_tokens": done.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens.min(done.completion_tokens)},
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    });
    r
}

/// Where a response's stream events go: nowhere for a plain response, or to the client with
/// increasing sequence numbers.
enum Events {
    Drop,
    Sse { sink: SseSink, next: u64 },
}

impl Events {
    /// False when the client has gone.
    async fn send(&mut self, events: Vec<Value>) -> bool {
        let Events::Sse { sink, next } = self else {
            return true;
        };
        for mut e in events {
            e["sequence_number"] = json!(*next);
            *next += 1;
            let name = e["type"].as_str().unwrap_or("").to_string();
            if !sink.send_named(&name, &e).await {
                return false;
            }
        }
        true
    }

    /// A lifecycle event carrying the whole response.
    async fn response(&mut self, name: &str, response: &Value) -> bool {
        self.send(vec![json!({"type": name, "response": response})])
            .await
    }
}

enum Outcome {
    Done(Value),
    Failed(String),
    /// The client went away.
    Gone,
}

/// One response being generated.
struct Run {
    head: Value,
    conversation: Vec<Value>,
    /// The store, when the response is to be stored.
    store: Option<Arc<ResponseStore>>,
}

impl Run {
    /// Reads the choice to its end, building the output items (and sending their events); the
    /// finished response is stored if asked.
    async fn answer(&self, mut choice: Choice, events: &mut Events) -> Outcome {
        let mut items = Items::new(request_id);
        let mut reasoning_tokens = 0;
        loop {
            let update = choice.next_update().await;
            let (deltas, done) = match update {
                Some(Update::Token { deltas, .. }) => (deltas, None),
                Some(Update::Done { deltas, done, .. }) => (deltas, Some(done)),
                Some(Update::Failed(msg)) => return Outcome::Failed(msg),
                None => return Outcome::Failed("The engine thread stopped.".into()),
            };
            if done.is_none()
                && deltas
                    .iter()
                    .any(|d| matches!(d, OutputDelta::Reasoning(_)))
            {
                reasoning_tokens += 1;
            }
            let mut evs = items.push(deltas);
            if let Some(done) = &done {
                evs.extend(items.finish(done.finish == FinishReason::Length));
            }
            if !events.send(evs).await {
                return Outcome::Gone;
            }
            if let Some(done) = done {
                let response = finished(&self.head, items.output(), &done, reasoning_tokens);
                self.save(&response);
                return Outcome::Done(response);
            }
        }
    }

    fn save(&self, response: &Value) {
        let Some(store) = &self.store else {
            return;
        };
        let mut conversation = self.conversation.clone();
        let output = response["output"].as_array().map_or(&[][..], Vec::as_slice);
        // Output items are valid input items: the answer becomes the assistant's turn.
        if let Err(e) = input::items_to_chat(output, "output", &mut conversation) {
            tracing::warn!("not storing {}: {}", response["id"], e.message);
            return;
        }
        let id = response["id"].as_str().unwrap_or_default().to_string();
        let stored = Stored {
            response: response.clone(),
            conversation,
        };
        store.insert(id, stored);
    }

    /// The streamed response: `response.created` and `response.in_progress`, the items' events,
    /// then `response.completed` or `response.incomplete` (or `response.failed`).
    async fn stream(self, mut events: Events, choice: Choice) {
        if !(events.response("response.created", &self.head).await
            && events.response("response.in_progress", &self.head).await)
        {
            return;
        }
        match self.answer(choice, &mut events).await {
            Outcome::Done(response) => {
                let name = match response["status"].as_str() {
                    Some("incomplete") => "response.incomplete",
                    _ => "response.completed",
                };
                events.response(name, &response).await;
            }
            Outcome::Failed(msg) => {
                let mut failed = self.head.clone();
                failed["status"] = json!("failed");
                failed["error"] = json!({"code": "server_error", "message": msg});
                events.response("response.failed", &failed).await;
            }
            Outcome::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(finish: FinishReason) -> Done {
        Done {
            finish,
            text: String::new(),
            stop_string: None,
            prompt_tokens: 10,
            completion_tokens: 4,
            cached_tokens: 6,
        }
    }

    #[test]
    fn the_response_echoes_the_request_with_openai_defaults() {
        let body = json!({"input": "x", "instructions": "Be brief.", "max_output_tokens": 5,
            "reasoning": {"effort": "low"}, "metadata": {"k": "v"}});
        let h = head("resp_1", 7, "m", echo(body.as_object().unwrap()).unwrap());
        assert_eq!(h["object"], "response");
        assert_eq!(h["status"], "in_progress");
        assert_eq!(h["instructions"], "Be brief.");
        assert_eq!(h["max_output_tokens"], 5);
        assert_eq!(h["reasoning"], json!({"effort": "low", "summary": null}));
        assert_eq!(h["tool_choice"], "auto");
        assert_eq!(h["tools"], json!([]));
        assert_eq!(h["store"], true);
        assert_eq!(h["text"], json!({"format": {"type": "text"}}));
        assert_eq!(h["metadata"], json!({"k": "v"}));
        let bad = json!({"input": "x", "metadata": 3});
        assert_eq!(
            echo(bad.as_object().unwrap()).unwrap_err().param.as_deref(),
            Some("metadata")
        );
    }

    #[test]
    fn a_length_cut_makes_an_incomplete_response_with_usage() {
        let h = head("resp_1", 7, "m", Map::new());
        let r = finished(&h, &[], &done(FinishReason::Length), 2);
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 6},
                "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2},
                "total_tokens": 14})
        );
        let r = finished(&h, &[], &done(FinishReason::Stop), 0);
        assert_eq!(r["status"], "completed");
        assert_eq!(r["incomplete_details"], Value::Null);
    }

    #[test]
    fn unknown_ids_are_404s_in_openai_shape() {
        let e = not_found("resp_x", Some("previous_response_id"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["param"], "previous_response_id");
        assert_eq!(e.body()["error"]["code"], "previous_response_not_found");
        assert_eq!(
            not_found("resp_x", None).body()["error"]["param"],
            Value::Null
        );
    }
}
