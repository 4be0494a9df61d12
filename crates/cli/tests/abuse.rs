//! The abuse suite: the real `frugal serve` binary on 127.0.0.1 with a fixture model, against
//! clients that misbehave: slowloris (half request lines), 8 concurrent 8 MB prompts, a streaming
//! client that stops reading, connections over the cap, and SIGTERM with 1,000 half-open
//! connections. Meanwhile `/health` is probed; every probe must answer within 2 s (the p99 is
//! printed). Afterwards the gauges must be back to idle and RssAnon near its level after one
//! warm-up request. Loopback only, bounded in time and traffic; plain HTTP/1.1 over std sockets.

mod common;

use common::{connect, model, request, serve_command, sigterm, wait_exit, wait_healthy, Serve};
use common::{IO_TIMEOUT, STARTUP};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_LIMIT: Duration = Duration::from_secs(2);
const HEADER_TIMEOUT_S: u64 = 2;
const WRITE_TIMEOUT_S: u64 = 1;
const SHUTDOWN_TIMEOUT_S: u64 = 5;
const MODEL: &str = "qwen2-Q8_0.gguf";

/// Waits until every gauge is back to idle: no sequence, no KV block, no connection but the
/// one asking.
fn wait_idle(server: &Serve, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let gauges = [
            server.metric("frugal_requests_running"),
            server.metric("frugal_requests_waiting"),
            server.metric("frugal_kv_blocks_used"),
            server.metric("frugal_connections_open") - 1.0,
        ];
        if gauges.iter().all(|&g| g <= 0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not idle after {limit:?}: {gauges:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the server has closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Probes `/health` every 50 ms until stopped; the latencies (a failed probe counts as infinite).
fn start_prober(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut latencies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            let ok = matches!(request(addr, "GET", "/health", ""), Ok((200, _)));
            latencies.push(if ok { t0.elapsed() } else { Duration::MAX });
            std::thread::sleep(Duration::from_millis(50));
        }
        latencies
    })
}

fn soft_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// Slowloris: connections that send half a request line and stop are closed at the header
/// timeout.
fn slowloris(addr: SocketAddr) {
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut c = connect(addr).unwrap();
            let partial: &[u8] = if i % 2 == 0 {
                b"GET /hea"
            } else {
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le"
            };
            c.write_all(partial).unwrap();
            c
        })
        .collect();
    let t0 = Instant::now();
    let limit = Duration::from_secs(HEADER_TIMEOUT_S + 5);
    let mut open = 0;
    for c in &mut conns {
        let left = limit
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(10));
        if !closed_within(c, left) {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} slowloris connections still open after {limit:?}"
    );
    println!(
        "slowloris: 200 half-sent requests closed after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Eight concurrent 8 MB prompts: each a 400 `context_length_exceeded`, quickly.
fn huge_prompts(addr: SocketAddr) {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(8_000_000 / 45);
    let body = format!(r#"{{"messages": [{{"role": "user", "content": "{text}"}}]}}"#);
    let body = Arc::new(body);
    let t0 = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                request(addr, "POST", "/v1/chat/completions", &body).unwrap()
            })
        })
        .collect();
    for c in clients {
        let (status, text) = c.join().unwrap();
        assert_eq!(status, 400, "{}", &text[..text.len().min(500)]);
        assert!(text.contains("context_length_exceeded"), "{text}");
    }
    println!(
        "8 concurrent {:.1} MB prompts rejected in {:.2} s",
        body.len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
}

/// A streaming client that reads its headers and then nothing: its sequence is cancelled after
/// the write timeout while it still holds the connection.
fn slow_reader(server: &Serve) {
    // A small receive window: the server's buffers fill after a few dozen events, so the
    // sequence stalls early (and touches few KV-cache pages, which the RSS check counts).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&server.addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut c: TcpStream = socket.into();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let body = r#"{"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 224, "temperature": 0, "stream": true, "logprobs": true, "top_logprobs": 20}"#;
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = [0u8; 64];
    c.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let aborted_before = server.metric("frugal_requests_aborted_total");
    let closed_before = server.metric("frugal_connections_timed_out_total");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let running = server.metric("frugal_requests_running");
        let closed = server.metric("frugal_connections_timed_out_total");
        if running == 0.0 && closed > closed_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unread stream still holds its slot or connection after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // On a fast machine the sequence may have finished before the stall was noticed.
    let cancelled = server.metric("frugal_requests_aborted_total") > aborted_before;
    println!(
        "slow SSE reader: connection closed after {:.1} s, sequence {}",
        t0.elapsed().as_secs_f64(),
        if cancelled {
            "cancelled"
        } else {
            "had finished"
        }
    );
    drop(c);
}

/// Every `/health` probe answered within the limit; the p99 is reported.
fn check_probes(mut latencies: Vec<Duration>) {
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let worst = *latencies.last().unwrap();
    println!(
        "/health during the abuse: {} probes, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        p99.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    assert!(
        worst <= PROBE_LIMIT,
        "a /health probe took {worst:?} (or failed)"
    );
}

/// RssAnon comes back to at most 1.5 x its level after the warm-up request.
fn check_memory_returned(server: &Serve, rss_warm: u64) {
    // The allocator purges freed pages after about a second; idle blocking-pool threads (their
    // stacks and caches) exit after 10 s.
    let t_idle = Instant::now();
    let deadline = t_idle + Duration::from_secs(20);
    let rss_after = loop {
        let rss = server.rss_anon();
        if rss * 2 <= rss_warm * 3 || Instant::now() >= deadline {
            break rss;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "RssAnon: {rss_warm} KiB after warm-up, {rss_after} KiB after the abuse ({:.1} s after it)",
        t_idle.elapsed().as_secs_f64()
    );
    assert!(
        rss_after * 2 <= rss_warm * 3,
        "RssAnon {rss_after} KiB > 1.5 x {rss_warm} KiB"
    );
}

#[test]
fn abuse_suite() {
    let half_open = 1000.min(soft_file_limit().saturating_sub(200) / 2);
    if half_open < 1000 {
        println!(
            "open-file limit {}: {half_open} half-open connections instead of 1000",
            soft_file_limit()
        );
    }
    let t_suite = Instant::now();
    let header = HEADER_TIMEOUT_S.to_string();
    let write = WRITE_TIMEOUT_S.to_string();
    let shutdown = SHUTDOWN_TIMEOUT_S.to_string();
    // The KV cache is one context of 256 tokens, filled by the warm-up request: its pages are
    // then in the warm-up RSS, and what the abuse leaves is what the check measures.
    let mut server = Serve::start(
        &model(MODEL),
        &[
            "-c",
            "256",
            "--kv-tokens",
            "256",
            "--header-timeout",
            &header,
            "--write-timeout",
            &write,
            "--idle-timeout",
            "5",
            "--shutdown-timeout",
            &shutdown,
            "--max-connections",
            "1500",
        ],
    );
    let addr = server.addr;
    let warm_up = r#"{"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 224, "temperature": 0}"#;
    let (status, text) = request(addr, "POST", "/v1/chat/completions", warm_up).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""finish_reason":"length""#), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    let rss_warm = server.rss_anon();

    let stop = Arc::new(AtomicBool::new(false));
    let prober = start_prober(addr, stop.clone());
    slowloris(addr);
    println!("RssAnon after slowloris: {} KiB", server.rss_anon());
    huge_prompts(addr);
    println!("RssAnon after the huge prompts: {} KiB", server.rss_anon());
    slow_reader(&server);
    println!(
        "RssAnon after the slow reader: {} KiB ({} tokens generated in all)",
        server.rss_anon(),
        server.metric("frugal_generation_tokens_total")
    );
    stop.store(true, Ordering::Relaxed);
    check_probes(prober.join().unwrap());
    wait_idle(&server, Duration::from_secs(30));
    check_memory_returned(&server, rss_warm);

    sigterm_with_half_open_connections(&mut server, half_open);
    over_the_cap();
    println!("abuse suite: {:.1} s", t_suite.elapsed().as_secs_f64());
}

/// SIGTERM while `n` connections are open and idle or half-sent: exit 0 within the shutdown
/// timeout.
fn sigterm_with_half_open_connections(server: &mut Serve, n: usize) {
    let addr = server.addr;
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut c = connect(addr).unwrap();
            if i % 2 == 1 {
                c.write_all(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
                )
                .unwrap();
            }
            c
        })
        .collect();
    let t0 = Instant::now();
    server.sigterm();
    let limit = Duration::from_secs(SHUTDOWN_TIMEOUT_S);
    let status = server.wait_exit(limit).unwrap_or_else(|| {
        panic!("still running {limit:?} after SIGTERM with {n} half-open connections")
    });
    assert_eq!(status.code(), Some(0));
    println!(
        "SIGTERM with {n} half-open connections: exited 0 in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    drop(conns);
}

/// Connections over `--max-connections` get a 503 in OpenAI's error shape; once the others close,
/// requests are served again.
fn over_the_cap() {
    let server = Serve::start(
        &model(MODEL),
        &["--max-connections", "8", "--header-timeout", "30"],
    );
    let held: Vec<TcpStream> = (0..8).map(|_| connect(server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, text) = request(server.addr, "GET", "/health", "").unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains(r#""code":"too_many_connections""#)
            && text.contains(r#""type":"server_error""#),
        "{text}"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(request(server.addr, "GET", "/health", ""), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "still refused after the connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_idle(&server, Duration::from_secs(10));
    assert!(server.metric("frugal_connections_rejected_total") >= 1.0);
    println!("connection cap: the 9th of 8 got 503; served again once they closed");
}

/// `frugal serve 2>/dev/full`: a log it cannot write neither stops nor panics the server.
#[test]
fn a_log_it_cannot_write_does_not_stop_the_server() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        println!("no /dev/full here; skipped");
        return;
    };
    // A free port (the address cannot be read from a log that goes nowhere).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = serve_command(&model(MODEL), 1)
        .args(["--port", &port.to_string()])
        .env("FRUGAL_LOG", "debug")
        .stderr(full)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(addr, Instant::now() + STARTUP, || {
        child.try_wait().unwrap().map(|st| st.to_string())
    });
    let body = r#"{"prompt": "Hello", "max_tokens": 4}"#;
    assert_eq!(
        request(addr, "POST", "/v1/completions", body).unwrap().0,
        200
    );
    sigterm(&child);
    let Some(status) = wait_exit(&mut child, Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("still running 20 s after SIGTERM");
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
