//! The transport limits in-process: authentication's scheme, encodings and chunked bodies, the
//! header, body, idle and write timeouts, the connection cap, cheap rejection of oversized
//! prompts and a shutdown that does not wait for idle or half-open connections. Raw sockets where
//! a client must misbehave; every wait is bounded.

mod common;

use common::{assert_error, start};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// Reads until the server closes the connection (or `WAIT` passes): what it sent.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {WAIT:?}"),
        }
    }
}

/// Reads one response with a `content-length` body on a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn json_body(raw: &str) -> Value {
    let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {raw}"))
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_401_names_it() {
    let s = start(|c| c.api_keys = vec!["sk-test".into()]).await;
    for value in ["Bearer sk-test", "bearer sk-test", "BEARER  sk-test "] {
        let r = s
            .client
            .get(s.url("/v1/models"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{value}");
    }
    for value in [
        None,
        Some("Basic sk-test"),
        Some("Bearer wrong"),
        Some("Bearer"),
        Some("sk-test"),
    ] {
        let mut req = s.client.get(s.url("/v1/models"));
        if let Some(v) = value {
            req = req.header("authorization", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{value:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{value:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn compressed_bodies_get_415_and_chunked_bodies_meet_the_limit() {
    let s = start(|c| c.body_limit = 4096).await;
    let body = json!({"prompt": "Hello", "max_tokens": 2}).to_string();
    let post = || {
        s.client
            .post(s.url("/v1/completions"))
            .header("content-type", "application/json")
    };
    let r = post()
        .header("content-encoding", "gzip")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_error(
        status,
        &r.json().await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "gzip",
    );

    // Chunked (no content-length): a small body is served, one over the limit gets 413.
    let chunked = |text: String| {
        let chunks = text
            .into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let r = post().body(chunked(body)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let big = json!({"prompt": "x".repeat(10_000), "max_tokens": 2}).to_string();
    let r = post().body(chunked(big)).send().await.unwrap();
    let status = r.status();
    assert_error(
        status,
        &r.json().await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "4096 bytes",
    );
    s.shutdown().await;
}

#[tokio::test]
async fn slow_heads_slow_bodies_and_idle_connections_are_closed() {
    let s = start(|c| {
        c.header_timeout = Duration::from_millis(400);
        c.body_timeout = Duration::from_millis(400);
        c.idle_timeout = Duration::from_millis(800);
    })
    .await;
    let a = addr(&s.base);
    let t0 = Instant::now();
    // Nothing sent, half a request line, a head that never ends: closed at the header timeout.
    let mut silent = TcpStream::connect(a).await.unwrap();
    let mut half_line = TcpStream::connect(a).await.unwrap();
    half_line.write_all(b"GET /hea").await.unwrap();
    let mut half_head = TcpStream::connect(a).await.unwrap();
    half_head
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for c in [&mut silent, &mut half_line, &mut half_head] {
        assert_eq!(read_to_close(c).await, "");
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // A body that stops short: 408.
    let mut slow_body = TcpStream::connect(a).await.unwrap();
    slow_body
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
        .await
        .unwrap();
    let raw = read_to_close(&mut slow_body).await;
    assert_eq!(status_of(&raw), 408, "{raw}");
    assert_eq!(json_body(&raw)["error"]["code"], "request_timeout");

    // Keep-alive: answered, then closed after the idle timeout, not the header timeout.
    let mut idle = TcpStream::connect(a).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&read_response(&mut idle).await), 200);
    let t1 = Instant::now();
    assert_eq!(read_to_close(&mut idle).await, "");
    let idle_took = t1.elapsed();
    assert!(
        idle_took >= Duration::from_millis(700) && idle_took < Duration::from_secs(5),
        "{idle_took:?}"
    );
    assert!(s.metric("frugal_connections_timed_out_total").await >= 4.0);
    s.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_in_openai_shape() {
    let s = start(|c| c.max_connections = 4).await;
    let a = addr(&s.base);
    let mut held = Vec::new();
    let mut refused = None;
    // The harness's client may hold a pooled connection too: open until one is refused.
    for _ in 0..6 {
        let mut c = TcpStream::connect(a).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let raw = read_response(&mut c).await;
        if status_of(&raw) == 503 {
            refused = Some(raw);
            break;
        }
        assert_eq!(status_of(&raw), 200, "{raw}");
        held.push(c);
    }
    let raw = refused.expect("no connection was refused over the cap");
    assert!(
        held.len() <= 4,
        "{} connections served over a cap of 4",
        held.len()
    );
    let body = json_body(&raw);
    assert_eq!(body["error"]["code"], "too_many_connections", "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    drop(held);
    // Once they close, connections are served again and the gauge comes down.
    let deadline = Instant::now() + WAIT;
    loop {
        let open = s.metric("frugal_connections_open").await;
        if open <= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.metric("frugal_connections_rejected_total").await >= 1.0);
    s.shutdown().await;
}

/// A client that stops reading its stream: after the write timeout its sequence is cancelled and
/// its connection closed, while it still holds the socket.
#[tokio::test]
async fn a_stream_nobody_reads_is_cancelled() {
    let s = start(|c| {
        c.ctx_size = Some(16384);
        c.write_timeout = Duration::from_millis(500);
    })
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket.connect(addr(&s.base)).await.unwrap();
    // Top logprobs make each event several hundred bytes: the socket buffers (128 KiB on the
    // server side, 4 KiB here) fill long before the end, and the tiny model cannot finish
    // 16,000 tokens within the write timeout after that.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 16000, "temperature": 0,
        "stream": true, "logprobs": 5})
    .to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(WAIT, c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Now read nothing more.
    let deadline = Instant::now() + WAIT;
    loop {
        let running = s.metric("frugal_requests_running").await;
        let aborted = s.metric("frugal_requests_aborted_total").await;
        let closed = s.metric("frugal_connections_timed_out_total").await;
        if running == 0.0 && aborted >= 1.0 && closed >= 1.0 {
            break;
        }
        let generated = s.metric("frugal_generation_tokens_total").await;
        assert!(
            Instant::now() < deadline,
            "running {running}, aborted {aborted}, closed {closed}, generated {generated}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.metric("frugal_kv_blocks_used").await, 0.0);
    drop(c);
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_prompts_are_rejected_before_tokenizing() {
    let s = start(|_| {}).await;
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(150_000);
    let t0 = Instant::now();
    let (status, body) = s
        .post(
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 1}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "at least");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let (status, body) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "maximum context length",
    );
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    println!("two 6.7 MB prompts rejected in {:?}", t0.elapsed());
    // A prompt under the bound but over the context is still caught after tokenizing.
    let (status, body) = s
        .post(
            "/v1/completions",
            json!({"prompt": "word ".repeat(300), "max_tokens": 1}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "maximum context length",
    );
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_or_half_open_connections() {
    let s = start(|c| c.shutdown_timeout = Duration::from_secs(20)).await;
    let a = addr(&s.base);
    let mut conns = Vec::new();
    for i in 0..60 {
        let mut c = TcpStream::connect(a).await.unwrap();
        match i % 3 {
            0 => {}
            1 => c
                .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
                .await
                .unwrap(),
            _ => {
                c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                assert_eq!(status_of(&read_response(&mut c).await), 200);
            }
        }
        conns.push(c);
    }
    let t0 = Instant::now();
    tokio::time::timeout(WAIT, s.shutdown())
        .await
        .expect("shutdown hangs");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    for c in &mut conns {
        assert_eq!(read_to_close(c).await, "");
    }
}
