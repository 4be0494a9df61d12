//! Several models in one server: routing by name and alias, unknown names in each API's error
//! shape, loading on first use (requests wait for it), the memory budget unloading the least
//! recently used idle unpinned model, a model that fails to load, and `/metrics` per model.

use frugal_server::{ModelSpec, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn fixture(name: &str) -> PathBuf {
    frugal_fixtures::dir().join("models").join(name)
}

fn spec(file: &str, aliases: &[&str]) -> ModelSpec {
    ModelSpec {
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ..ModelSpec::new(fixture(file))
    }
}

/// Qwen2 as `qwen` (alias `q`), Llama under its file name.
fn two_models(cfg: &mut ServerConfig) {
    cfg.models = vec![
        spec("qwen2-Q8_0.gguf", &["qwen", "q"]),
        spec("llama-Q8_0.gguf", &[]),
    ];
}

fn greedy(model: Option<&str>) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 8, "temperature": 0,
    });
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    body
}

/// `status.value` of each model in `/v1/models`, by its first name.
async fn states(s: &Running) -> Vec<(String, String)> {
    let (_, text) = s.get("/v1/models").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == m["aliases"][0])
        .map(|m| {
            let id = m["id"].as_str().unwrap().to_string();
            (id, m["status"]["value"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn state_of(s: &Running, name: &str) -> String {
    let all = states(s).await;
    all.into_iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pick_their_model_by_name_or_alias() {
    let s = start(two_models).await;
    assert_eq!(state_of(&s, "qwen").await, "unloaded");
    let (st, by_alias) = s.post("/v1/chat/completions", greedy(Some("q"))).await;
    assert_eq!(st, StatusCode::OK, "{by_alias}");
    assert_eq!(by_alias["model"], "qwen");
    let (_, llama) = s
        .post("/v1/chat/completions", greedy(Some("llama-Q8_0")))
        .await;
    assert_eq!(llama["model"], "llama-Q8_0");
    // Different weights, different answers.
    assert_ne!(
        by_alias["choices"][0]["message"],
        llama["choices"][0]["message"]
    );
    // No `model`: the first.
    let (_, default) = s.post("/v1/chat/completions", greedy(None)).await;
    assert_eq!(default["model"], "qwen");
    assert_eq!(
        default["choices"][0]["message"],
        by_alias["choices"][0]["message"]
    );
    // Endpoints without a model field take one too.
    let (_, props) = s.get("/props?model=llama-Q8_0").await;
    assert!(props.contains("\"model_alias\":\"llama-Q8_0\""), "{props}");
    let tokenize = |m: &str| json!({"content": "Hello world", "model": m});
    let (st, a) = s.post("/tokenize", tokenize("llama-Q8_0")).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let (st, body) = s.post("/tokenize", tokenize("nope")).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "nope");
    unknown_models_are_404_in_each_api_shape(&s).await;
    metrics_are_labelled_by_model(&s).await;
    s.shutdown().await;
}

async fn unknown_models_are_404_in_each_api_shape(s: &Running) {
    let (st, body) = s.post("/v1/chat/completions", greedy(Some("gpt-4"))).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "gpt-4");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'llama-Q8_0'"));
    let anthropic = json!({"model": "claude", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi"}]});
    let (st, body) = s.post("/v1/messages", anthropic).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    let (st, _) = s.get("/v1/models/gpt-4").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, m) = s.get("/v1/models/q").await;
    assert_eq!(st, StatusCode::OK, "{m}");
}

async fn metrics_are_labelled_by_model(s: &Running) {
    let (_, text) = s.get("/metrics").await;
    for series in [
        "frugal_requests_finished_total{model_name=\"qwen\"}",
        "frugal_requests_finished_total{model_name=\"llama-Q8_0\"}",
        "frugal_time_to_first_token_seconds_count{model_name=\"llama-Q8_0\"}",
        "frugal_model_loaded{model_name=\"qwen\"} 1",
        "frugal_model_loads_total{model_name=\"llama-Q8_0\"} 1",
        "frugal_connections_open ",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // Every family is described once, however many models.
    assert_eq!(
        text.matches("# TYPE frugal_generation_tokens_total ")
            .count(),
        1
    );
    assert!(
        s.metric("frugal_generation_tokens_total{model_name=\"qwen\"}")
            .await
            >= 16.0
    );
}

/// A model loads on first use: requests that arrive meanwhile wait for the same load and are
/// answered; `/v1/models` shows it unloaded, loading, then loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_a_model_loading_on_first_use() {
    let s = start(|cfg| {
        two_models(cfg);
        cfg.load_delay = Duration::from_millis(600);
    })
    .await;
    let (st, _) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK, "no model is pinned: up at once");
    assert_eq!(state_of(&s, "llama-Q8_0").await, "unloaded");
    let t0 = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .json(&greedy(Some("llama-Q8_0")))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut seen_loading = false;
    while t0.elapsed() < Duration::from_secs(5) && !seen_loading {
        seen_loading = state_of(&s, "llama-Q8_0").await == "loading";
    }
    assert!(seen_loading, "the model never showed as loading");
    let mut answers = Vec::new();
    for r in requests {
        let (st, body) = r.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{body}");
        answers.push(body["choices"][0]["message"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert!(t0.elapsed() >= Duration::from_millis(600));
    assert_eq!(state_of(&s, "llama-Q8_0").await, "loaded");
    assert_eq!(state_of(&s, "qwen").await, "unloaded");
    assert_eq!(
        s.metric("frugal_model_loads_total{model_name=\"llama-Q8_0\"}")
            .await,
        1.0
    );
    s.shutdown().await;
}

/// At most `--max-waiting` requests wait for a load; more get a 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_load_is_bounded() {
    let s = start(|cfg| {
        two_models(cfg);
        cfg.load_delay = Duration::from_millis(800);
        cfg.max_waiting = 2;
    })
    .await;
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .json(&greedy(Some("q")))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        let (st, text) = r.await.unwrap();
        if st == StatusCode::SERVICE_UNAVAILABLE {
            assert!(text.contains("already wait"), "{text}");
        }
        statuses.push(st);
    }
    let ok = statuses.iter().filter(|&&st| st == StatusCode::OK).count();
    assert_eq!(ok, 2, "{statuses:?}");
    s.shutdown().await;
}

/// A load that takes longer than the timeout answers 503; the load goes on and serves later
/// requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_past_the_timeout_is_a_503_and_goes_on() {
    let s = start(|cfg| {
        two_models(cfg);
        cfg.load_delay = Duration::from_millis(800);
        cfg.model_load_timeout = Duration::from_millis(200);
    })
    .await;
    let (st, body) = s.post("/v1/chat/completions", greedy(Some("q"))).await;
    assert_error(st, &body, StatusCode::SERVICE_UNAVAILABLE, "still loading");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (st, body) = s.post("/v1/chat/completions", greedy(Some("q"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    s.shutdown().await;
}

/// Each model's footprint as the server reserves it (weights and KV cache).
async fn footprints(models: Vec<ModelSpec>) -> Vec<u64> {
    let names: Vec<String> = models.iter().map(|m| m.names()[0].clone()).collect();
    let s = start(move |cfg| {
        cfg.models = models;
        cfg.kv_tokens = Some(512);
    })
    .await;
    let mut bytes = Vec::new();
    for name in &names {
        let (st, body) = s.post("/v1/chat/completions", greedy(Some(name))).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let (_, m) = s.get(&format!("/v1/models/{name}")).await;
        let m: Value = serde_json::from_str(&m).unwrap();
        bytes.push(m["memory_bytes"].as_u64().unwrap());
    }
    s.shutdown().await;
    bytes
}

fn busy_request(s: &Running, model: &str) -> tokio::task::JoinHandle<StatusCode> {
    let body = json!({"model": model, "prompt": "Hi", "n_predict": 60, "ignore_eos": true,
        "user": "frugal-fault-injection:slow"});
    let (client, url) = (s.client.clone(), s.url("/completion"));
    tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
}

/// Under `--models-memory`, loading a model unloads the least recently used unpinned one with
/// no request in flight; a pinned model stays, and so does a busy one (then the load is a 503
/// until it is idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_unloads_the_least_recently_used_idle_model() {
    let models = vec![
        ModelSpec {
            pinned: true,
            ..spec("qwen2-Q8_0.gguf", &["pinned"])
        },
        spec("llama-Q8_0.gguf", &["a"]),
        spec("qwen2-Q4_0.gguf", &["b"]),
        spec("llama-Q4_K_M.gguf", &["c"]),
    ];
    let bytes = footprints(models.clone()).await;
    // Room for the pinned model and any one other, never two others.
    let budget = bytes[0] + bytes[1..].iter().max().unwrap();
    let s = start(move |cfg| {
        cfg.models = models;
        cfg.kv_tokens = Some(512);
        cfg.models_memory = Some(budget);
    })
    .await;
    assert_eq!(state_of(&s, "pinned").await, "loaded");
    let ok = |m: &str| greedy(Some(m));
    for name in ["a", "b", "a", "c"] {
        let (st, body) = s.post("/v1/chat/completions", ok(name)).await;
        assert_eq!(st, StatusCode::OK, "{name}: {body}");
        let loaded: Vec<String> = states(&s)
            .await
            .into_iter()
            .filter(|(_, st)| st == "loaded")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(loaded, ["pinned", name], "after {name}");
    }
    assert_eq!(
        s.metric("frugal_model_unloads_total{model_name=\"a\"}")
            .await,
        2.0
    );
    assert_eq!(
        s.metric("frugal_model_unloads_total{model_name=\"pinned\"}")
            .await,
        0.0
    );
    // `c` is busy: loading `a` finds no room and says so; `c` stays and finishes.
    let busy = busy_request(&s, "c");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, body) = s.post("/v1/chat/completions", ok("a")).await;
    assert_error(
        st,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "--models-memory",
    );
    assert_eq!(state_of(&s, "a").await, "unloaded");
    assert_eq!(busy.await.unwrap(), StatusCode::OK);
    let (st, body) = s.post("/v1/chat/completions", ok("a")).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(state_of(&s, "c").await, "unloaded");
    s.shutdown().await;
}

/// A model whose file is not a model fails with the reason, stays listed as failed, and the
/// server and its other model go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_is_an_error_not_an_outage() {
    let dir = std::env::temp_dir().join(format!("frugal-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.gguf");
    std::fs::write(&broken, b"GGUF but not really a model file").unwrap();
    let s = start(move |cfg| {
        cfg.models = vec![spec("qwen2-Q8_0.gguf", &["good"]), ModelSpec::new(broken)];
    })
    .await;
    for _ in 0..2 {
        let (st, body) = s.post("/v1/chat/completions", greedy(Some("broken"))).await;
        assert_error(st, &body, StatusCode::INTERNAL_SERVER_ERROR, "broken.gguf");
    }
    let (_, text) = s.get("/v1/models").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let failed = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "broken")
        .unwrap();
    assert_eq!(failed["status"]["value"], "failed", "{failed}");
    assert!(failed["status"]["error"]
        .as_str()
        .unwrap()
        .contains("broken.gguf"));
    let (st, body) = s.post("/v1/chat/completions", greedy(Some("good"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        s.metric("frugal_model_load_failures_total{model_name=\"broken\"}")
            .await,
        2.0
    );
    let (st, _) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Startup refuses what cannot work: a missing file, a name given to two models, `--spec
/// draft` with several models; a pinned model that cannot load stops the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_lists_are_refused_at_startup() {
    let bind = |models: Vec<ModelSpec>| async move {
        let mut cfg = ServerConfig::new(fixture("qwen2-Q8_0.gguf"));
        cfg.port = 0;
        cfg.models = models;
        frugal_server::Server::bind(cfg)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = bind(vec![
        spec("qwen2-Q8_0.gguf", &[]),
        spec("no-such.gguf", &[]),
    ])
    .await;
    assert!(e.contains("no-such.gguf"), "{e}");
    let e = bind(vec![
        spec("qwen2-Q8_0.gguf", &["x"]),
        spec("llama-Q8_0.gguf", &["x"]),
    ])
    .await;
    assert!(e.contains("'x'"), "{e}");
    let dir = std::env::temp_dir().join(format!("frugal-pinned-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.gguf");
    std::fs::write(&broken, b"not a model").unwrap();
    let pinned_broken = ModelSpec {
        pinned: true,
        ..ModelSpec::new(broken)
    };
    let e = bind(vec![spec("qwen2-Q8_0.gguf", &[]), pinned_broken]).await;
    assert!(e.contains("broken.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Shutdown is bounded by its deadline even while a model loads: the load is not waited for,
/// and the request waiting on it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_load() {
    let s = start(|cfg| {
        two_models(cfg);
        cfg.load_delay = Duration::from_secs(4);
        cfg.shutdown_timeout = Duration::from_millis(300);
    })
    .await;
    let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
    let waiting = tokio::spawn(async move {
        let r = client.post(url).json(&greedy(Some("q"))).send().await;
        r.map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    s.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let answer = waiting.await.unwrap();
    assert!(
        answer.as_ref().map_or(true, |st| *st != StatusCode::OK),
        "{answer:?}"
    );
}
