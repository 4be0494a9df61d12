//! A server that speculates answers exactly as one that does not: the same text, log-
//! probabilities, stop strings and finish reasons for every request, with `/metrics` counting
//! the guesses; a request may opt out; a method the server cannot run is refused at start.

mod common;

use common::{start, Running};
use frugal_server::{Server, ServerConfig, SpecConfig, SpecMethod, Speculation};
use serde_json::{json, Value};

fn speculation(method: SpecMethod) -> Option<Speculation> {
    Some(Speculation {
        method,
        config: SpecConfig {
            max: 4,
            fixed: true,
            ..SpecConfig::default()
        },
    })
}

/// Requests that repeat themselves (so that guesses come), greedy and seeded, with
/// log-probabilities and a stop string.
fn requests() -> Vec<Value> {
    let text = "one two three four five one two three four five one two three";
    vec![
        json!({"prompt": text, "max_tokens": 40, "temperature": 0, "logprobs": 2}),
        json!({"prompt": text, "max_tokens": 30, "temperature": 0.8, "seed": 5}),
        json!({"prompt": "a b c a b c a b", "max_tokens": 24, "temperature": 0, "stop": ["c a"]}),
        json!({"prompt": [5, 6, 7, 5, 6, 7, 5, 6], "max_tokens": 32, "temperature": 0, "n": 2}),
    ]
}

async fn answers(s: &Running) -> Vec<Value> {
    let mut out = Vec::new();
    let sent = requests().into_iter().map(|r| s.post("/v1/completions", r));
    for (status, body) in futures_util::future::join_all(sent).await {
        assert!(status.is_success(), "{body}");
        out.push(json!([body["choices"], body["usage"]["completion_tokens"]]));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speculating_server_answers_as_a_plain_one() {
    let plain = start(|_| {}).await;
    let expected = answers(&plain).await;
    plain.shutdown().await;
    let draft = frugal_fixtures::dir().join("models/qwen2-Q4_0.gguf");
    for method in [SpecMethod::Ngram, SpecMethod::Draft(draft)] {
        let s = start(|c| c.speculation = speculation(method.clone())).await;
        assert_eq!(answers(&s).await, expected, "{method:?}");
        let proposed = s.metric("frugal_spec_draft_tokens_total").await;
        let accepted = s.metric("frugal_spec_accepted_tokens_total").await;
        assert!(
            proposed > 0.0 && accepted > 0.0,
            "{method:?}: {accepted} of {proposed}"
        );
        assert!(s.metric("frugal_spec_mean_accepted_tokens").await > 0.0);
        // A request that opts out verifies nothing.
        let body = json!({"prompt": "x y x y x y", "max_tokens": 16, "temperature": 0, "speculative": false});
        let (status, _) = s.post("/v1/completions", body).await;
        assert!(status.is_success());
        assert_eq!(s.metric("frugal_spec_draft_tokens_total").await, proposed);
        s.shutdown().await;
    }
}

/// GLM-4.5's MTP head (the labs fixture) as the draft: the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_guessing_with_the_mtp_head_answers_as_a_plain_one() {
    let glm = frugal_fixtures::labs_dir().join("models/glm4moe-Q4_K_M.gguf");
    let plain = start(|c| c.model = glm.clone()).await;
    let expected = answers(&plain).await;
    plain.shutdown().await;
    let s = start(|c| {
        c.model = glm.clone();
        c.speculation = speculation(SpecMethod::Mtp);
        if let Some(s) = &mut c.speculation {
            s.config.p_min = 0.0;
        }
    })
    .await;
    assert_eq!(answers(&s).await, expected);
    assert!(s.metric("frugal_spec_draft_tokens_total").await > 0.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_server_cannot_run_is_refused_at_start() {
    let model = frugal_fixtures::dir().join(common::MODEL);
    for (method, needle) in [
        (SpecMethod::Mtp, "multi-token-prediction"),
        (
            SpecMethod::Draft("/nonexistent/draft.gguf".into()),
            "draft.gguf",
        ),
    ] {
        let mut cfg = ServerConfig::new(model.clone());
        cfg.port = 0;
        cfg.speculation = speculation(method);
        let err = Server::bind(cfg).await.err().expect("refused").to_string();
        assert!(err.contains(needle), "{err}");
    }
}
