//! What Kubernetes' Gateway API Inference Extension reads of a model server: vLLM's
//! model-server metrics against the scheduler's state under load, readiness and liveness through
//! a drain, and request ids.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

mod common;

use common::*;

const NAME: &str = "qwen2-Q8_0";

/// A scrape: each `# TYPE` family's type, and each series (name with labels) with its value.
struct Scrape {
    types: HashMap<String, String>,
    series: HashMap<String, f64>,
}

impl Scrape {
    async fn of(s: &Running) -> Scrape {
        let (st, text) = s.get("/metrics").await;
        assert_eq!(st, StatusCode::OK);
        let mut types = HashMap::new();
        let mut series = HashMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') {
                let (name, value) = line.rsplit_once(' ').unwrap();
                series.insert(name.to_string(), value.parse().unwrap());
            }
        }
        Scrape { types, series }
    }

    /// The model's series of `family` (labelled `model_name` only).
    fn model(&self, family: &str) -> f64 {
        let key = format!("{family}{{model_name=\"{NAME}\"}}");
        *self
            .series
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    /// `(running, waiting)` as vLLM's gauges say.
    fn queue(&self) -> (f64, f64) {
        (
            self.model("vllm:num_requests_running"),
            self.model("vllm:num_requests_waiting"),
        )
    }

    /// Names, types and labels, and the KV usage consistent with frugal's own block gauges.
    fn check_families(&self) -> f64 {
        for family in [
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:cache_config_info",
        ] {
            assert_eq!(self.types[family], "gauge", "{family}");
        }
        let total = self.model("frugal_kv_blocks_total");
        let info = format!(
            "vllm:cache_config_info{{model_name=\"{NAME}\",block_size=\"16\",num_gpu_blocks=\"{total}\",enable_prefix_caching=\"True\"}}"
        );
        assert_eq!(self.series.get(&info), Some(&1.0), "{info}");
        let usage = self.model("vllm:kv_cache_usage_perc");
        let used = self.model("frugal_kv_blocks_used");
        assert!(
            (usage - used / total).abs() < 1e-9,
            "{usage} vs {used}/{total}"
        );
        assert_eq!(usage, self.model("frugal_kv_cache_usage_ratio"));
        usage
    }
}

/// Scrapes until `done` holds (bounded), returning that scrape.
async fn scrape_until(s: &Running, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..1000 {
        let m = Scrape::of(s).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_server_metrics_follow_the_scheduler_under_load() {
    let s = start(|c| {
        c.max_seqs = 2;
        c.ctx_size = Some(2048);
        c.kv_tokens = Some(4096);
        c.block_size = 16;
    })
    .await;
    let idle = Scrape::of(&s).await;
    assert_eq!(idle.queue(), (0.0, 0.0));
    assert_eq!(idle.check_families(), 0.0);
    // Four long streams on two sequence slots: two run, two wait.
    let prompt = |i: usize| format!("{}{i}", "one two three four ".repeat(12));
    let sends = (0..4).map(|i| {
        let body =
            json!({"prompt": prompt(i), "max_tokens": 1900, "stream": true, "temperature": 0});
        s.client.post(s.url("/v1/completions")).json(&body).send()
    });
    let streams: Vec<reqwest::Response> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(streams.iter().all(|r| r.status() == StatusCode::OK));
    let busy = scrape_until(&s, "2 running and 2 waiting", |m| m.queue() == (2.0, 2.0)).await;
    assert!(busy.check_families() > 0.0);
    // The clients leave: the sequences end, their prompt blocks stay cached but count as free.
    drop(streams);
    let after = scrape_until(&s, "an idle engine", |m| {
        m.queue() == (0.0, 0.0) && m.model("frugal_kv_blocks_used") == 0.0
    })
    .await;
    assert_eq!(after.check_families(), 0.0);
    let body = json!({"prompt": prompt(0), "max_tokens": 1, "temperature": 0});
    let (st, r) = s.post("/v1/completions", body).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert!(r["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() >= Some(32));
    s.shutdown().await;
}

/// A client that opens a connection per request, as probes do (no idle connection to lose to
/// the shutdown).
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, s: &Running, path: &str) -> (StatusCode, Value) {
    let r = client.get(s.url(path)).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_during_the_drain_while_liveness_holds() {
    let mut s = start(|c| {
        c.ctx_size = Some(4096);
        c.shutdown_timeout = Duration::from_secs(60);
    })
    .await;
    let probe = probe_client();
    for path in ["/health", "/v1/health", "/health/live", "/v1/health/live"] {
        assert_eq!(status(&probe, &s, path).await.0, StatusCode::OK, "{path}");
    }
    let body = json!({"prompt": "a", "max_tokens": 4000, "stream": true, "temperature": 0});
    let mut running = probe
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(running.chunk().await.unwrap().is_some());
    s.begin_shutdown();
    let mut draining = false;
    for _ in 0..400 {
        // A probe whose connection was accepted just before the shutdown, its request not yet
        // read, sees it closed (as a kubelet would: one failed probe); later ones are answered.
        let Ok(r) = probe.get(s.url("/health")).send().await else {
            continue;
        };
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.json::<Value>().await.unwrap()["status"], "draining");
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(draining, "/health stays 200 during the drain");
    assert_eq!(
        status(&probe, &s, "/health/live").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );
    // New work is refused while the running request goes on.
    let r = probe
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "b", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(running.chunk().await.unwrap().is_some());
    // A connection opened during the drain that never finishes its request does not hold the
    // exit back (it is closed within a second, well before the 10 s header timeout).
    let host = s.base.trim_start_matches("http://").to_string();
    let mut half_open = tokio::net::TcpStream::connect(host).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half_open, b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Its client leaves: nothing runs, and the server exits without waiting for the timeout.
    drop(running);
    tokio::time::timeout(Duration::from_secs(5), s.finished())
        .await
        .expect("the drain ends once nothing runs");
    drop(half_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_end_openai_ids() {
    let s = start(|_| {}).await;
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-request-id", "gw-7f3a/42")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "gw-7f3a/42");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "chatcmpl-gw-7f3a/42");
    // Without one, the server's own id, the same in the header and the response.
    let body = json!({"prompt": "a", "max_tokens": 2});
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], format!("cmpl-{made}"));
    // Anthropic's ids stay its own; the header is echoed all the same.
    let msg =
        json!({"model": NAME, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
    let r = s
        .client
        .post(s.url("/v1/messages"))
        .header("x-request-id", "gw-8")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "gw-8");
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .header("x-request-id", "has space")
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_error(
        st,
        &r.json().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "x-request-id",
    );
    let r = s
        .client
        .post(s.url("/v1/messages"))
        .header("x-request-id", "")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-request-id"));
    s.shutdown().await;
}
