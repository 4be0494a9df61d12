//! What llama.cpp- and vLLM-style clients send: routes without `/v1`, llama-server's native
//! `/completion`, `/infill` and `/props`, `/tokenize` and `/detokenize` in both shapes, CORS, and
//! the server's token limits.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_completion_plain_and_streamed() {
    let s = start(|_| {}).await;
    let body = json!({"prompt": "Hello", "n_predict": 5, "temperature": 0, "ignore_eos": true,
        "return_tokens": true, "n_probs": 2});
    let (status, r) = s.post("/completion", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["stop"], true);
    assert_eq!(r["stop_type"], "limit");
    assert_eq!(r["tokens_predicted"], 5);
    assert_eq!(r["timings"]["predicted_n"], 5);
    assert_eq!(r["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(r["completion_probabilities"].as_array().unwrap().len(), 5);
    assert_eq!(
        r["completion_probabilities"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(r["generation_settings"]["n_predict"], 5);
    assert_eq!(r["model"], "qwen2-Q8_0");
    assert!(r["has_new_line"].is_boolean() && r["prompt"].is_string());

    // Streamed: a chunk per token, then the final object; the same text.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let resp = s
        .client
        .post(s.url("/completion"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let (last, tokens) = chunks.split_last().unwrap();
    assert_eq!(tokens.len(), 5);
    assert!(tokens
        .iter()
        .all(|c| c["stop"] == false && c["tokens"].as_array().unwrap().len() == 1));
    assert_eq!(last["stop"], true);
    assert_eq!(last["timings"]["predicted_n"], 5);
    let content: String = chunks
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, r["content"].as_str().unwrap());

    stop_words_token_prompts_and_infill(&s, r["content"].as_str().unwrap()).await;
    s.shutdown().await;
}

/// A stop word gives `stop_type` "word" and the word; token-id prompts work; bad ones and a
/// model without FIM tokens are 400s.
async fn stop_words_token_prompts_and_infill(s: &Running, free: &str) {
    // A stop word: `stop_type` "word", and the word that stopped it.
    if let Some((cut, _)) = free.char_indices().nth(2) {
        let word: String = free[cut..].chars().take(2).collect();
        let (_, r) = s
            .post(
                "/completion",
                json!({"prompt": "Hello", "n_predict": 5, "temperature": 0,
                "ignore_eos": true, "stop": [word.clone()]}),
            )
            .await;
        assert_eq!(r["stop_type"], "word", "{r}");
        assert_eq!(r["stopping_word"], word.as_str());
    }
    // Token-id prompts; ids outside the vocabulary and n_predict 0 are 400s.
    let (status, _) = s
        .post("/completion", json!({"prompt": [1, 2, 3], "n_predict": 2}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = s
        .post("/completion", json!({"prompt": [99999999], "n_predict": 2}))
        .await;
    assert_error(status, &e, StatusCode::BAD_REQUEST, "vocabulary");
    // A model without FIM tokens cannot infill.
    let (status, e) = s
        .post(
            "/infill",
            json!({"input_prefix": "def f(", "input_suffix": "return x"}),
        )
        .await;
    assert_error(
        status,
        &e,
        StatusCode::BAD_REQUEST,
        "Infill is not supported",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_v1_props_and_tokenizing() {
    let s = start(|_| {}).await;
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let (status, r) = s.post("/chat/completions", chat).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (status, r) = s
        .post("/completions", json!({"prompt": "Hi", "max_tokens": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let (status, _) = s.get("/models").await;
    assert_eq!(status, StatusCode::OK);
    let (status, props) = s.get("/props").await;
    assert_eq!(status, StatusCode::OK);
    let props: Value = serde_json::from_str(&props).unwrap();
    assert_eq!(props["default_generation_settings"]["n_ctx"], 256);
    assert!(props["chat_template"]
        .as_str()
        .unwrap()
        .contains("im_start"));

    // llama.cpp's shape: no BOS unless asked; pieces on request.
    let text = "Hello world, 媽 🤗";
    let (status, t) = s.post("/tokenize", json!({"content": text})).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let ids = t["tokens"].clone();
    assert_eq!(t["count"], ids.as_array().unwrap().len());
    let (_, d) = s.post("/detokenize", json!({"tokens": ids})).await;
    assert_eq!(d["content"], text);
    assert_eq!(d["prompt"], text, "vLLM's field too");
    let (_, p) = s
        .post("/tokenize", json!({"content": text, "with_pieces": true}))
        .await;
    let pieces = p["tokens"].as_array().unwrap();
    assert_eq!(pieces.len(), t["count"].as_u64().unwrap() as usize);
    assert!(pieces
        .iter()
        .all(|p| p["id"].is_u64() && (p["piece"].is_string() || p["piece"].is_array())));
    // vLLM's shapes: `prompt` with token strings, and `messages` through the template.
    let (_, v) = s
        .post(
            "/v1/tokenize",
            json!({"model": "x", "prompt": "Hello", "return_token_strs": true}),
        )
        .await;
    assert_eq!(v["max_model_len"], 256);
    assert_eq!(
        v["token_strs"].as_array().unwrap().len(),
        v["count"].as_u64().unwrap() as usize
    );
    let (_, m) = s
        .post(
            "/tokenize",
            json!({"messages": [{"role": "user", "content": "Hello"}]}),
        )
        .await;
    assert!(m["count"].as_u64().unwrap() > v["count"].as_u64().unwrap());
    let (status, e) = s.post("/detokenize", json!({"tokens": [99999999]})).await;
    assert_error(status, &e, StatusCode::BAD_REQUEST, "vocabulary");
    rendering_without_generating(&s).await;
    s.shutdown().await;
}

/// `/apply-template` renders as chat would; `add_generation_prompt` and `continue_final_message`
/// (vLLM's) change where the prompt ends.
async fn rendering_without_generating(s: &Running) {
    let user = json!({"role": "user", "content": "Hello"});
    let (status, r) = s.post("/apply-template", json!({"messages": [user]})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let prompt = r["prompt"].as_str().unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let (_, r) = s
        .post(
            "/apply-template",
            json!({"messages": [user], "add_generation_prompt": false}),
        )
        .await;
    assert!(
        r["prompt"].as_str().unwrap().ends_with("Hello<|im_end|>\n"),
        "{r}"
    );
    let partial = json!({"role": "assistant", "content": "Hi th"});
    let (_, r) = s
        .post(
            "/apply-template",
            json!({"messages": [user, partial], "continue_final_message": true,
            "add_generation_prompt": false}),
        )
        .await;
    assert!(
        r["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<|im_start|>assistant\nHi th"),
        "{r}"
    );
    let (status, e) = s
        .post(
            "/apply-template",
            json!({"messages": [user, partial], "continue_final_message": true,
            "add_generation_prompt": true}),
        )
        .await;
    assert_error(
        status,
        &e,
        StatusCode::BAD_REQUEST,
        "continue_final_message",
    );
}

/// A preflight request and the answer's CORS headers.
async fn preflight(s: &Running, origin: &str) -> reqwest::Response {
    s.client
        .request(Method::OPTIONS, s.url("/v1/chat/completions"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_closed_by_default_and_answers_preflights_when_open() {
    let s = start(|_| {}).await;
    let r = preflight(&s, "http://app.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.shutdown().await;

    let s = start(|cfg| {
        cfg.cors_origins = vec!["http://app.example".into()];
        cfg.api_keys = vec!["k".into()];
    })
    .await;
    let r = preflight(&s, "http://app.example").await;
    assert_eq!(r.status(), StatusCode::OK, "preflights need no key");
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("OPTIONS"),
        "{methods}"
    );
    assert_eq!(h["access-control-allow-headers"], "*");
    let r = preflight(&s, "http://elsewhere.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The actual request carries the header too (here a 401: no key).
    let r = s
        .client
        .post(s.url("/v1/models"))
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    s.shutdown().await;

    // llama-server's `localhost`: any port of this machine, nothing else.
    let s = start(|cfg| cfg.cors_origins = vec!["localhost".into()]).await;
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1",
        "http://[::1]:3000",
    ] {
        let r = preflight(&s, origin).await;
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
    }
    let r = preflight(&s, "http://localhost.evil.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.shutdown().await;

    let s = start(|cfg| cfg.cors_origins = vec!["*".into()]).await;
    let r = preflight(&s, "http://anything.example").await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_default_to_16_tokens_and_max_tokens_caps_every_request() {
    let s = start(|_| {}).await;
    let (_, r) = s
        .post("/v1/completions", json!({"prompt": "Hi", "temperature": 0}))
        .await;
    let n = r["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n <= 16, "{r}");
    if r["choices"][0]["finish_reason"] == "length" {
        assert_eq!(n, 16);
    }
    s.shutdown().await;

    let s = start(|cfg| cfg.max_tokens = Some(3)).await;
    for (path, body) in [
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 50, "temperature": 0}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "temperature": 0}),
        ),
    ] {
        let (_, r) = s.post(path, body).await;
        assert!(
            r["usage"]["completion_tokens"].as_u64().unwrap() <= 3,
            "{r}"
        );
    }
    let (_, r) = s
        .post(
            "/completion",
            json!({"prompt": "Hi", "n_predict": -1, "ignore_eos": true}),
        )
        .await;
    assert_eq!(r["tokens_predicted"], 3, "{r}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grammars_and_json_schemas_shape_every_kind_of_completion() {
    let s = start(|_| {}).await;
    let yes_no = "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\" | [0-9]{2,3}\n";
    let valid = |t: &str| {
        let t = t.strip_suffix('.').unwrap_or_else(|| panic!("{t:?}"));
        t == "yes"
            || t == "no"
            || ((2..=3).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
    };
    for seed in 0..4 {
        let (_, r) = s
            .post(
                "/completion",
                json!({"prompt": "Answer:", "n_predict": 8, "seed": seed, "grammar": yes_no}),
            )
            .await;
        assert!(valid(r["content"].as_str().unwrap()), "{r}");
        let (_, r) = s
            .post(
                "/v1/completions",
                json!({"prompt": "Answer:", "max_tokens": 8, "seed": seed, "grammar": yes_no}),
            )
            .await;
        assert!(valid(r["choices"][0]["text"].as_str().unwrap()), "{r}");
        let (_, r) = s
            .post(
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "Answer"}],
                "max_tokens": 8, "seed": seed, "grammar": yes_no}),
            )
            .await;
        assert!(
            valid(r["choices"][0]["message"]["content"].as_str().unwrap()),
            "{r}"
        );
    }
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
        "required": ["n"], "additionalProperties": false});
    let (_, r) = s
        .post(
            "/completion",
            json!({"prompt": "JSON:", "n_predict": 40, "seed": 1, "json_schema": schema}),
        )
        .await;
    let doc: Value = serde_json::from_str(r["content"].as_str().unwrap()).expect("JSON");
    assert!(doc["n"].is_i64(), "{doc}");
    // `json_object` with a `schema` beside it (llama.cpp's and vLLM's form) follows the schema.
    let (_, r) = s
        .post("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "JSON"}],
            "max_tokens": 40, "seed": 2, "response_format": {"type": "json_object", "schema": schema}}))
        .await;
    let doc: Value = serde_json::from_str(r["choices"][0]["message"]["content"].as_str().unwrap())
        .expect("JSON");
    assert!(
        doc["n"].is_i64() && doc.as_object().unwrap().len() == 1,
        "{doc}"
    );
    // What cannot be converted, or compiled, is a 400 naming the field and the construct.
    let (status, e) = s
        .post(
            "/completion",
            json!({"prompt": "x", "grammar": "root ::= <[1000]> \"a\""}),
        )
        .await;
    assert_error(status, &e, StatusCode::BAD_REQUEST, "token reference");
    assert_eq!(e["error"]["param"], "grammar");
    let (status, e) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "grammar": "root ::= missing"}),
        )
        .await;
    assert_error(status, &e, StatusCode::BAD_REQUEST, "missing");
    assert_eq!(e["error"]["param"], "grammar");
    let (status, e) = s
        .post(
            "/v1/completions",
            json!({"prompt": "x", "grammar": yes_no, "json_schema": schema}),
        )
        .await;
    assert_error(status, &e, StatusCode::BAD_REQUEST, "at most one");
    s.shutdown().await;
}

/// `--chat-template-kwargs` / `--reasoning off` apply to every request; a request's own
/// `chat_template_kwargs` win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_template_variables_apply_under_the_request_s_own() {
    let s = start(|cfg| {
        with_template("templates/Qwen-Qwen3-0.6B.jinja")(cfg);
        cfg.chat_template_kwargs
            .insert("enable_thinking".into(), json!(false));
    })
    .await;
    let user = json!([{"role": "user", "content": "Hi"}]);
    let (_, r) = s.post("/apply-template", json!({"messages": user})).await;
    let off = r["prompt"].as_str().unwrap();
    assert!(
        off.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        "{off:?}"
    );
    let (_, r) = s
        .post(
            "/apply-template",
            json!({"messages": user,
            "chat_template_kwargs": {"enable_thinking": true}}),
        )
        .await;
    assert!(
        r["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<|im_start|>assistant\n"),
        "{r}"
    );
    s.shutdown().await;
}

/// vLLM's `ignore_eos` on OpenAI's routes: an end-of-generation token forced by `logit_bias`
/// ends the sequence, unless the request ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_ignore_eos_keeps_generating_past_the_end_token() {
    let s = start(|_| {}).await;
    // The fixture's end-of-sequence token (`frugal info --json`: eos_token_id).
    let forced = json!({"model": "m", "prompt": "Hi", "max_tokens": 6, "temperature": 0,
        "logit_bias": {"512": 100}});
    let (status, r) = s.post("/v1/completions", forced.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 1);
    let mut ignoring = forced;
    ignoring["ignore_eos"] = json!(true);
    let (status, r) = s.post("/v1/completions", ignoring).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 6);
}
