//! `frugal serve` as a child process for the CLI's tests: start it on a free loopback port, talk
//! plain HTTP/1.1 to it over std sockets, read its metrics and memory, wait for it to exit. Every
//! wait is bounded.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const STARTUP: Duration = Duration::from_secs(60);
/// Bounds a hang, not a speed: a loaded machine can make a 224-token answer take tens of seconds.
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);

pub fn model(name: &str) -> String {
    frugal_fixtures::dir()
        .join("models")
        .join(name)
        .display()
        .to_string()
}

/// `frugal serve MODEL --host 127.0.0.1 -t THREADS`, no stdin or stdout.
pub fn serve_command(model: &str, threads: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_frugal"));
    c.args(["serve", model, "--host", "127.0.0.1", "-t"])
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// A running `frugal serve`, killed on drop; its stderr lines arrive on `log`.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts on a port the OS picks and returns once `/health` answers 200.
    pub fn start(model: &str, extra: &[&str]) -> Serve {
        let mut child = serve_command(model, 2)
            .args(["--port", "0"])
            .args(extra)
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
        let deadline = Instant::now() + STARTUP;
        let addr = listening_addr(&log, deadline);
        let s = Serve { child, addr, log };
        wait_healthy(addr, deadline, || None);
        s
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        sigterm(&self.child);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// RssAnon of the server process, in KiB.
    pub fn rss_anon(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// A counter or gauge from `/metrics`: the first series of `name` (per-model series carry a
    /// `model_name` label).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = request(self.addr, "GET", "/metrics", "").unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let rest = l.strip_prefix(name)?;
                match rest.strip_prefix('{') {
                    Some(labelled) => Some(labelled.split_once("} ")?.1.to_string()),
                    None => Some(rest.strip_prefix(' ')?.to_string()),
                }
            })
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    }
}

/// The port the OS picked, from "frugal: listening on http://ADDR (...)".
fn listening_addr(log: &mpsc::Receiver<String>, deadline: Instant) -> SocketAddr {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
                seen.push(line);
            }
            Err(e) => panic!("no 'listening on' line ({e:?}); stderr: {seen:#?}"),
        }
    }
}

/// Waits for `/health` to answer 200; `exited` says why the server will never answer.
pub fn wait_healthy(
    addr: SocketAddr,
    deadline: Instant,
    mut exited: impl FnMut() -> Option<String>,
) {
    while !matches!(request(addr, "GET", "/health", ""), Ok((200, _))) {
        if let Some(why) = exited() {
            panic!("the server exited while starting: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "/health did not answer 200 within {STARTUP:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sigterm(child: &Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// The exit status, or `None` if the process is still running after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One request with a JSON body and `Connection: close`: the status and the whole raw response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = connect(addr)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// The body of a raw response.
pub fn body_of(raw: &str) -> &str {
    raw.split("\r\n\r\n").nth(1).unwrap_or("")
}
