//! `frugal serve` as a process: SIGTERM during a streaming request stops it with status 0 within
//! the shutdown timeout, and a model file it cannot open fails with one line and status 1. Plain
//! HTTP/1.1 over `TcpStream`; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn model(name: &str) -> String {
    frugal_fixtures::dir()
        .join("models")
        .join(name)
        .display()
        .to_string()
}

/// A running `frugal serve`, killed on drop; its stderr lines arrive on `log`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(model: &str, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args([
                "serve",
                model,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "-t",
                "2",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Serve {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        // The port the OS picked, from "frugal: listening on http://ADDR (...)".
        let deadline = Instant::now() + STARTUP;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match s.log.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        s.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                        break;
                    }
                    seen.push(line);
                }
                Err(e) => panic!("no 'listening on' line ({e:?}); stderr: {seen:#?}"),
            }
        }
        while Instant::now() < deadline {
            if matches!(get(s.addr, "/health"), Ok((200, _))) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("/health did not answer 200 within {STARTUP:?}");
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// `GET path` with `Connection: close`: the status code and the raw rest of the response.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends a raw request; returns the status code and the whole response.
fn exchange(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut s = connect(addr)?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
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
    let (first_tx, first_rx) = mpsc::channel();
    let client = std::thread::spawn(move || -> std::io::Result<String> {
        let mut s = connect(addr)?;
        let body = r#"{"prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": true}"#;
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
    first_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the stream sent no chunk");

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
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
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(client.join());
    });
    let text = done_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the client thread hangs")
        .expect("the client thread panicked")
        .expect("reading the stream failed");
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["serve", model, "--host", "127.0.0.1", "-t", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STARTUP;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("frugal serve {model} still running after {STARTUP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// `POST path` with a JSON body and `Connection: close`: the status and the body.
fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let (status, text) = exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )?;
    Ok((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

/// `frugal run` and the server share one generation loop: the same prompt, sampling settings and
/// seed give the same text.
#[test]
fn run_and_serve_give_the_same_tokens_for_the_same_seed() {
    let m = model("qwen2-Q8_0.gguf");
    let prompt = "Once upon a time";
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
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
    let (status, body) = post(serve.addr, "/v1/completions", &body).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], cli);
}
