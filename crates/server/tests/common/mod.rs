//! The test harness shared by the server's integration tests: a server on a fixture model on
//! 127.0.0.1 (port 0), and small HTTP helpers over reqwest.

#![allow(dead_code)]

use frugal_server::{Server, ServerConfig};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::oneshot;

pub const MODEL: &str = "models/qwen2-Q8_0.gguf";
/// The Qwen3 fixture, served with a real chat template by [`with_template`].
pub const QWEN3: &str = "models/qwen3-Q8_0.gguf";

/// The Qwen3 fixture with a real chat template (tools, `<think>`), a 1024-token context.
pub fn with_template(template: &str) -> impl FnOnce(&mut ServerConfig) + '_ {
    move |cfg| {
        let f = frugal_fixtures::dir();
        cfg.model = f.join(QWEN3);
        cfg.ctx_size = Some(1024);
        cfg.chat_template = Some(std::fs::read_to_string(f.join(template)).unwrap());
    }
}

pub struct Running {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), frugal_server::ServerError>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// The body of a finished SSE stream, checking its status and content type.
    async fn sse_text(&self, path: &str, body: Value) -> String {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        r.text().await.unwrap()
    }

    /// The `data:` payloads of a finished SSE stream.
    pub async fn stream(&self, path: &str, body: Value) -> Vec<Value> {
        let text = self.sse_text(path, body).await;
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .collect();
        assert_eq!(
            data.last(),
            Some(&"[DONE]"),
            "stream must end with [DONE]: {text}"
        );
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// The `(event, data)` pairs of a finished stream of named events (Anthropic's and the
    /// Responses API's).
    pub async fn named_events(&self, path: &str, body: Value) -> Vec<(String, Value)> {
        let text = self.sse_text(path, body).await;
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .filter_map(|e| {
                let name = e.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((name.to_string(), serde_json::from_str(data).unwrap()))
            })
            .collect()
    }

    /// A series' value: the first of `name` (a family name, or one with its labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                Some(value.to_string())
            })
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.finished().await;
    }

    /// Starts the shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to exit, which must be cleanly.
    pub async fn finished(mut self) {
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut cfg = ServerConfig::new(frugal_fixtures::dir().join(MODEL));
    cfg.port = 0;
    cfg.threads = Some(2);
    cfg.ctx_size = Some(256);
    cfg.max_seqs = 8;
    tweak(&mut cfg);
    let server = Server::bind(cfg).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Running {
        base,
        client,
        stop: Some(tx),
        task: Some(task),
    }
}

pub fn usage_ok(u: &Value) {
    let p = u["prompt_tokens"].as_u64().unwrap();
    let c = u["completion_tokens"].as_u64().unwrap();
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    let hit = u["prompt_cache_hit_tokens"].as_u64().unwrap();
    assert_eq!(
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        hit
    );
    assert_eq!(u["prompt_cache_miss_tokens"].as_u64().unwrap(), p - hit);
}

pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    assert!(e["type"].is_string());
    assert!(e.get("param").is_some() && e.get("code").is_some());
}
