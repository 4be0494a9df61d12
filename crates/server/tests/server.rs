//! The server on a fixture model, over real HTTP on 127.0.0.1: every endpoint, the parameters,
//! the error shapes, disconnects, batch invariance and a bounded load test.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_parameters() {
    // One server for every check, in this order: the prefix-cache checks count on earlier requests.
    let s = start(|_| {}).await;
    health_and_models(&s).await;
    greedy_chat_and_the_prefix_cache(&s).await;
    completions_parameters(&s).await;
    logprobs(&s).await;
    stop_strings(&s).await;
    streaming_chat_with_usage(&s).await;
    streaming_completions_with_n(&s).await;
    metrics(&s).await;
    s.shutdown().await;
}

/// `/health`, `/v1/models` and one model.
async fn health_and_models(s: &Running) {
    let (st, body) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = s.get("/v1/models").await;
    assert_eq!(st, StatusCode::OK);
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["data"][0]["id"], "qwen2-Q8_0");
    let (st, _) = s.get("/v1/models/qwen2-Q8_0").await;
    assert_eq!(st, StatusCode::OK);
}

/// Greedy chat with every sampling field present, twice: the same answer, the prompt from the
/// prefix cache the second time.
async fn greedy_chat_and_the_prefix_cache(s: &Running) {
    let chat = json!({
        "model": "qwen2-Q8_0",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "max_tokens": 12, "temperature": 0, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "presence_penalty": 0.1, "frequency_penalty": 0.1, "repetition_penalty": 1.1,
        "seed": 7, "user": "tests", "logit_bias": {"0": -100},
    });
    let (st, a) = s.post("/v1/chat/completions", chat.clone()).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    assert!(a["choices"][0]["message"]["content"].is_string());
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    usage_ok(&a["usage"]);
    assert_eq!(a["usage"]["completion_tokens"], 12);
    // The same prompt again: its full blocks come from the prefix cache, and greedy is greedy.
    let (_, b) = s.post("/v1/chat/completions", chat.clone()).await;
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert!(
        b["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap() >= 16,
        "{b}"
    );
    usage_ok(&b["usage"]);
    // `cache_prompt: false` neither reuses the prefix nor leaves one; a salt shares only with
    // its own (vLLM's `cache_salt`); an empty salt is refused.
    let hits = |body: &Value| body["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap();
    let with = |extra: Value| {
        let mut c = chat.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let (_, c) = s
        .post("/v1/chat/completions", with(json!({"cache_prompt": false})))
        .await;
    assert_eq!(hits(&c), 0, "{c}");
    assert_eq!(a["choices"][0]["message"], c["choices"][0]["message"]);
    let salted = with(json!({"cache_salt": "tenant-a"}));
    let (_, d) = s.post("/v1/chat/completions", salted.clone()).await;
    assert_eq!(hits(&d), 0, "a salt does not see the shared cache: {d}");
    let (_, e) = s.post("/v1/chat/completions", salted).await;
    assert!(hits(&e) >= 16, "the same salt shares: {e}");
    let (_, f) = s
        .post(
            "/v1/chat/completions",
            with(json!({"cache_salt": "tenant-b"})),
        )
        .await;
    assert_eq!(hits(&f), 0, "{f}");
    let (st, g) = s
        .post("/v1/chat/completions", with(json!({"cache_salt": ""})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{g}");
    assert_eq!(g["error"]["param"], "cache_salt");
}

/// `max_completion_tokens`, seeds, `n`, token-id prompts, several prompts, `echo`.
async fn completions_parameters(s: &Running) {
    // max_completion_tokens wins over max_tokens.
    let (_, r) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 3, "temperature": 0}),
        )
        .await;
    assert_eq!(r["usage"]["completion_tokens"], 3);

    // Seeds reproduce sampled output; n > 1 gives n choices with distinct indices.
    let sampled = json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 1.0, "seed": 42, "n": 3});
    let (st, x) = s.post("/v1/completions", sampled.clone()).await;
    assert_eq!(st, StatusCode::OK, "{x}");
    let (_, y) = s.post("/v1/completions", sampled).await;
    assert_eq!(x["choices"], y["choices"]);
    let idx: Vec<u64> = x["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(x["object"], "text_completion");
    assert_eq!(x["usage"]["completion_tokens"], 30);
    usage_ok(&x["usage"]);

    // Token-id prompts, several prompts, echo.
    let (st, r) = s
        .post(
            "/v1/completions",
            json!({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 2, "echo": true, "temperature": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["choices"].as_array().unwrap().len(), 2);
    assert_eq!(r["usage"]["prompt_tokens"], 5);
}

/// Log-probabilities of completions and of chat.
async fn logprobs(s: &Running) {
    // Completions logprobs: the sampled token's logprob is the top one under greedy.
    let (_, r) = s
        .post(
            "/v1/completions",
            json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 3}),
        )
        .await;
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3);
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(
            (best - chosen).abs() < 1e-5,
            "greedy picks the most likely token"
        );
        assert!(chosen <= 0.0);
    }
    assert_eq!(lp["text_offset"][0], 0);

    // Chat logprobs.
    let (_, r) = s
        .post(
            "/v1/chat/completions",
            // Greedy: a sampled end-of-text token would end the answer early (CI saw 2 of 3).
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0, "logprobs": true, "top_logprobs": 2}),
        )
        .await;
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert_eq!(content.len(), 3);
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert!(content[0]["bytes"].is_array());
}

/// A stop string taken from a greedy answer cuts that answer before it.
async fn stop_strings(s: &Running) {
    // Stop strings: the text ends before the stop string, finish_reason "stop".
    let (_, free) = s
        .post(
            "/v1/completions",
            json!({"prompt": "The", "max_tokens": 16, "temperature": 0}),
        )
        .await;
    let text = free["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = text.char_indices().nth(3).map(|(i, _)| i).unwrap_or(0);
    if cut > 0 {
        let stop: String = text[cut..].chars().take(2).collect();
        let (_, r) = s
            .post("/v1/completions", json!({"prompt": "The", "max_tokens": 16, "temperature": 0, "stop": [stop.clone()]}))
            .await;
        let got = r["choices"][0]["text"].as_str().unwrap();
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
        assert_eq!(got, &text[..text.find(&stop).unwrap()]);
    }
}

/// Streamed chat chunks in order, and the same text as unstreamed.
async fn streaming_chat_with_usage(s: &Running) {
    // Streaming chat with usage: role first, then content, then finish, then usage, then [DONE].
    let events = s
        .stream(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0,
                   "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk"));
    let finish: Vec<&Value> = events
        .iter()
        .filter(|e| !e["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    let last = events.last().unwrap();
    assert!(last["choices"].as_array().unwrap().is_empty());
    assert_eq!(last["usage"]["completion_tokens"], 5);
    usage_ok(&last["usage"]);
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let (_, whole) = s
        .post("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}))
        .await;
    assert_eq!(whole["choices"][0]["message"]["content"], streamed.as_str());
}

/// Streamed completions with `n` = 2 finish both choices.
async fn streaming_completions_with_n(s: &Running) {
    // Streaming completions with n = 2.
    let events = s
        .stream(
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 4, "n": 2, "stream": true, "seed": 1}),
        )
        .await;
    let mut finished = [false; 2];
    for e in &events {
        assert_eq!(e["object"], "text_completion");
        let c = &e["choices"][0];
        if !c["finish_reason"].is_null() {
            finished[c["index"].as_u64().unwrap() as usize] = true;
        }
    }
    assert_eq!(finished, [true, true]);
}

/// Every metric is listed; the prefix-cache hits of earlier requests are counted.
async fn metrics(s: &Running) {
    let (st, m) = s.get("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    for name in [
        "frugal_requests_running",
        "frugal_requests_waiting",
        "frugal_prompt_tokens_total",
        "frugal_generation_tokens_total",
        "frugal_time_to_first_token_seconds_bucket",
        "frugal_time_per_output_token_seconds_bucket",
        "frugal_kv_blocks_used",
        "frugal_kv_blocks_total",
        "frugal_kv_window_blocks_used",
        "frugal_kv_window_blocks_total",
        "frugal_prefix_cache_hit_tokens_total",
        "frugal_preemptions_total",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    assert!(s.metric("frugal_prefix_cache_hit_tokens_total").await >= 16.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_openai_shape_and_status() {
    let s = start(|c| c.body_limit = 4096).await;
    malformed_and_mistyped_bodies(&s).await;
    out_of_range_values(&s).await;
    unknown_models(&s).await;
    sizes_over_the_limits_and_unknown_routes(&s).await;
    // After all that the server still serves.
    let (st, _) = s
        .post("/v1/completions", json!({"prompt": "ok", "max_tokens": 2}))
        .await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
}

/// Malformed JSON, and wrong types that name the field.
async fn malformed_and_mistyped_bodies(s: &Running) {
    let chat = "/v1/chat/completions";
    // Malformed JSON.
    let r = s
        .client
        .post(s.url(chat))
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    let st = r.status();
    let body: Value = r.json().await.unwrap();
    assert_error(st, &body, StatusCode::BAD_REQUEST, "JSON");
    // Wrong types name the field.
    let (st, body) = s
        .post(
            chat,
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "temperature");
    let (st, body) = s.post(chat, json!({"messages": "hello"})).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "messages");
    let (st, body) = s.post(chat, json!({"model": "qwen2-Q8_0"})).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "messages");
}

/// Values out of range name their field; token ids out of the vocabulary say so.
async fn out_of_range_values(s: &Running) {
    let chat = "/v1/chat/completions";
    for (field, v) in [
        ("temperature", json!(-1)),
        ("top_p", json!(0)),
        ("n", json!(0)),
        ("max_tokens", json!(0)),
        ("presence_penalty", json!(5)),
    ] {
        let mut req = json!({"messages": [{"role": "user", "content": "x"}]});
        req[field] = v;
        let (st, body) = s.post(chat, req).await;
        assert_error(st, &body, StatusCode::BAD_REQUEST, field);
        assert_eq!(body["error"]["param"], field);
    }
    let (st, body) = s
        .post(
            chat,
            json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999999": 1}}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "vocabulary");
    let (st, body) = s
        .post(
            "/v1/completions",
            json!({"prompt": [999999999], "max_tokens": 1}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "vocabulary");
}

/// With one model served, any model name is answered by it (the response names it); with
/// `strict_model_name`, an unknown one is 404 `model_not_found`. Aliases are all listed.
async fn unknown_models(s: &Running) {
    let chat = "/v1/chat/completions";
    let body =
        json!({"model": "gpt-4", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]});
    let (st, r) = s.post(chat, body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["model"], "qwen2-Q8_0");
    let (st, _) = s.get("/v1/models/gpt-4").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let strict = start(|cfg| {
        cfg.strict_model_name = true;
        cfg.model_aliases = vec!["tiny".into(), "qwen-toy".into()];
    })
    .await;
    let (st, r) = strict.post(chat, body).await;
    assert_error(st, &r, StatusCode::NOT_FOUND, "gpt-4");
    assert_eq!(r["error"]["code"], "model_not_found");
    let aliased = json!({"model": "qwen-toy", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]});
    let (st, r) = strict.post(chat, aliased).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["model"], "tiny", "responses carry the first name");
    let (_, list) = strict.get("/v1/models").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "qwen-toy"]);
    strict.shutdown().await;
}

/// Prompts beyond the context (256), a body over the limit (4096), unknown routes and methods.
async fn sizes_over_the_limits_and_unknown_routes(s: &Running) {
    // Prompt plus max_tokens beyond the context (256): both sizes in the message.
    let (st, body) = s
        .post(
            "/v1/completions",
            json!({"prompt": "hello", "max_tokens": 1000}),
        )
        .await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "256");
    assert!(body["error"]["message"].as_str().unwrap().contains("1000"));
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let long = "word ".repeat(400);
    let (st, body) = s.post("/v1/completions", json!({"prompt": long})).await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "context length");
    // Body over the limit.
    let big = "x".repeat(10_000);
    let (st, body) = s.post("/v1/completions", json!({"prompt": big})).await;
    assert_error(st, &body, StatusCode::PAYLOAD_TOO_LARGE, "4096");
    // Unknown route and method.
    let (st, body) = s.get("/v1/nothing").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _) = s.get("/v1/chat/completions").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_when_set() {
    let s = start(|c| c.api_keys = vec!["sekret".into()]).await;
    let body = json!({"prompt": "x", "max_tokens": 1});
    let (st, b) = s.post("/v1/completions", body.clone()).await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, "API key");
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .bearer_auth("sekret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Health and metrics stay open for probes.
    let (st, _) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let s = start(|c| {
        c.max_seqs = 1;
        c.max_waiting = 1;
        c.ctx_size = Some(4096);
    })
    .await;
    let req = json!({"prompt": "a", "max_tokens": 3000, "temperature": 1.0, "seed": 1});
    let sends: Vec<_> = (0..4)
        .map(|_| s.client.post(s.url("/v1/completions")).json(&req).send())
        .collect();
    let results = futures_util::future::join_all(sends).await;
    let mut saw_429 = false;
    for r in results {
        let r = r.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.headers()["retry-after"], "1");
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["error"]["type"], "rate_limit_error");
            saw_429 = true;
        } else {
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    assert!(
        saw_429,
        "four requests on one slot and one waiting place must overflow"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_output_is_the_same_alone_and_in_a_batch() {
    let s = start(|_| {}).await;
    let req = |p: &str| json!({"prompt": p, "max_tokens": 24, "temperature": 0});
    let (_, alone) = s
        .post("/v1/completions", req("The capital of France is"))
        .await;
    let others = [
        "Once",
        "A B C D E F G",
        "1 2 3",
        "Rust is",
        "hello hello",
        "zzz",
    ];
    let mut futs = vec![s.post("/v1/completions", req("The capital of France is"))];
    for o in others {
        futs.push(s.post("/v1/completions", req(o)));
    }
    let results = futures_util::future::join_all(futs).await;
    assert_eq!(
        results[0].1["choices"][0]["text"],
        alone["choices"][0]["text"]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_test_with_disconnects_leaves_every_block_free() {
    let s = start(|c| {
        c.max_seqs = 8;
        c.kv_tokens = Some(1024); // small enough that 16 concurrent streams preempt
        c.block_size = 16;
    })
    .await;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let client = s.client.clone();
        let url = s.url("/v1/chat/completions");
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let body = json!({
                "messages": [{"role": "system", "content": "You are a test."}, {"role": "user", "content": format!("request {i}")}],
                "max_tokens": 64 + (i % 5) * 16, "stream": true, "seed": i,
            });
            let mut r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let disconnect = i % 4 == 0;
            let mut chunks = 0;
            while let Some(c) = r.chunk().await.unwrap() {
                chunks += 1;
                if disconnect && chunks == 3 {
                    return false; // drops the response: the client goes away mid-stream
                }
                let _ = c;
            }
            true
        }));
    }
    let mut completed = 0;
    for t in tasks {
        if t.await.unwrap() {
            completed += 1;
        }
    }
    assert_eq!(completed, 48);
    // The engine notices the disconnects within a step or two.
    let mut idle = false;
    for _ in 0..200 {
        if s.metric("frugal_requests_running").await == 0.0
            && s.metric("frugal_requests_waiting").await == 0.0
            && s.metric("frugal_kv_blocks_used").await == 0.0
        {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(idle, "all blocks free after the load test");
    let finished = s.metric("frugal_requests_finished_total").await;
    let aborted = s.metric("frugal_requests_aborted_total").await;
    assert_eq!(finished + aborted, 64.0);
    assert!(aborted >= 1.0 && finished >= 48.0);
    assert!(s.metric("frugal_prefix_cache_hit_tokens_total").await > 0.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_requests_finish() {
    let s = start(|_| {}).await;
    let client = s.client.clone();
    let url = s.url("/v1/completions");
    let running = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"prompt": "a", "max_tokens": 200, "temperature": 0}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.shutdown().await;
    let r = running.await.unwrap();
    assert!(r["choices"][0]["text"].is_string(), "{r}");
}
