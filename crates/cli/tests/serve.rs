//! `frugal serve` as a process: SIGTERM during a streaming request stops it with status 0 within
//! the shutdown timeout, and a model file it cannot open fails with one line and status 1. Plain
//! HTTP/1.1 over `TcpStream`; every wait is bounded.

mod common;

use common::{connect, model, request, serve_command, Serve, STARTUP};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the stream tests wait for the server to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A client thread; it returns the raw response.
type Client = std::thread::JoinHandle<std::io::Result<String>>;

/// `POST /v1/completions` with `body` (a streaming request) on a thread that says on the returned
/// channel when the first chunk has arrived, and returns the raw response once the server closes
/// the connection.
fn stream_completion(addr: SocketAddr, body: &'static str) -> (Client, mpsc::Receiver<()>) {
    let (first_tx, first_rx) = mpsc::channel();
    let client = std::thread::spawn(move || -> std::io::Result<String> {
        let mut s = connect(addr)?;
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(text);
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !told && text.contains("data: {") {
                told = true;
                let _ = first_tx.send(());
            }
        }
    });
    (client, first_rx)
}

/// The response `client` read, waiting at most `IO_TIMEOUT` for it (a hung thread fails the test
/// instead of hanging it).
fn response_of(client: Client) -> String {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(client.join());
    });
    done_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the client thread hangs")
        .expect("the client thread panicked")
        .expect("reading the stream failed")
}

#[test]
fn sigterm_during_a_stream_exits_0_within_the_shutdown_timeout() {
    let shutdown_timeout = 1;
    let mut server = Serve::start(
        &model("qwen2-Q8_0.gguf"),
        &[
            "-c",
            "4096",
            "--shutdown-timeout",
            &shutdown_timeout.to_string(),
        ],
    );
    let addr = server.addr;

    // A stream that would run far past the shutdown timeout.
    let (client, first_rx) = stream_completion(
        addr,
        r#"{"prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": true}"#,
    );
    first_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the stream sent no chunk");

    let sent = Instant::now();
    server.sigterm();
    let limit = Duration::from_secs(shutdown_timeout + 10);
    let status = server
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("frugal serve still running {limit:?} after SIGTERM"));
    let took = sent.elapsed();
    let log: Vec<String> = server.log.try_iter().collect();
    assert_eq!(status.code(), Some(0), "stderr: {log:#?}");
    assert!(
        log.iter().any(|l| l.contains("frugal: stopped")),
        "stderr: {log:#?}"
    );

    // The stream was cut at the deadline and ended properly.
    let text = response_of(client);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("data: [DONE]"),
        "the stream did not end: {text}"
    );
    // Normally it is still running at the deadline and is cut, saying why; on a very fast machine
    // it may have finished first.
    if text.contains("shutting down") {
        assert!(
            took >= Duration::from_millis(shutdown_timeout * 1000 - 100),
            "exited after {took:?}, before the running stream's deadline"
        );
    } else {
        assert!(text.contains("finish_reason\":\"length"), "{text}");
    }

    // Nothing listens any more.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "{addr} still accepts connections"
    );
}

/// Runs `frugal serve` expecting a startup failure: status 1 and one line on stderr.
fn serve_fails(model: &str, extra: &[&str]) -> String {
    let mut child = serve_command(model, 1)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = common::wait_exit(&mut child, STARTUP) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("frugal serve {model} still running after {STARTUP:?}");
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let errors = err.lines().filter(|l| l.starts_with("error")).count();
    assert!(
        errors == 1
            && err.lines().last().unwrap_or("").starts_with("error: ")
            && !err.contains("panicked"),
        "want one 'error: ' line, last: {err}"
    );
    err
}

#[test]
fn a_model_or_port_it_cannot_use_fails_with_one_line() {
    let missing =
        std::env::temp_dir().join(format!("frugal-serve-missing-{}.gguf", std::process::id()));
    let err = serve_fails(&missing.display().to_string(), &["--port", "0"]);
    assert!(
        err.contains("frugal-serve-missing") && err.lines().count() == 1,
        "{err}"
    );

    let bytes = std::fs::read(model("qwen2-Q4_0.gguf")).unwrap();
    let corrupt =
        std::env::temp_dir().join(format!("frugal-serve-bad-{}.gguf", std::process::id()));
    for (len, what) in [
        (3usize, "not a GGUF"),
        (bytes.len() / 2, "outside the file"),
    ] {
        std::fs::write(&corrupt, &bytes[..len]).unwrap();
        let err = serve_fails(&corrupt.display().to_string(), &["--port", "0"]);
        assert!(err.contains(what) && err.lines().count() == 1, "{err}");
    }
    std::fs::remove_file(&corrupt).ok();

    // A port that is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = serve_fails(&model("qwen2-Q4_0.gguf"), &["--port", &port]);
    assert!(err.contains("cannot listen"), "{err}");
}

/// `frugal run` and the server share one generation loop: the same prompt, sampling settings and
/// seed give the same text.
#[test]
fn run_and_serve_give_the_same_tokens_for_the_same_seed() {
    let m = model("qwen2-Q8_0.gguf");
    let prompt = "Once upon a time";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["run", &m, "-p", prompt, "-n", "12", "-t", "2"])
        .args(["--temp", "0.9", "--top-k", "40", "--top-p", "0.95"])
        .args(["--min-p", "0.05", "--seed", "7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let cli = stdout
        .strip_prefix(prompt)
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap();

    let serve = Serve::start(&m, &[]);
    let body = format!(
        r#"{{"prompt": "{prompt}", "max_tokens": 12, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 7}}"#
    );
    let (status, raw) = request(serve.addr, "POST", "/v1/completions", &body).unwrap();
    let body = common::body_of(&raw);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["choices"][0]["text"], cli);
}
