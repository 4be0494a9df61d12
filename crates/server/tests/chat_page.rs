//! The chat page at `/`: served with the right types, and driven in a real headless Chromium over
//! the W3C WebDriver protocol (chromedriver, spoken to with reqwest), so streaming, rendering,
//! localStorage and the API-key path run as they do for a user.
//!
//! Without chromium and chromedriver the browser test passes with a note, unless
//! `FRUGAL_REQUIRE_BROWSER=1` (scripts/test.sh sets it where it could install them).

mod common;
use common::*;

use futures_util::FutureExt;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn page_is_served_without_a_key() {
    // With a key configured: the page must load before the user has entered it.
    let s = start(|cfg| cfg.api_keys = vec!["secret".into()]).await;
    for (path, ty, needle) in [
        ("/", "text/html", r#"id="input""#),
        ("/index.html", "text/html", r#"src="/chat.js""#),
        ("/chat.js", "text/javascript", "/v1/chat/completions"),
        ("/chat.css", "text/css", "prefers-color-scheme"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
        assert!(header("content-type").starts_with(ty), "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert!(header("content-security-policy").contains("script-src 'self'"));
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    // The API behind it still wants the key.
    let (status, _) = s.get("/v1/models").await;
    assert_eq!(status, 401);
    s.shutdown().await;
}

/// The assistant's answer as the page shows it.
#[derive(Debug)]
struct Answer {
    text: String,
    stats: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_a_browser() {
    let Some((driver, chromium)) = browser() else {
        return;
    };
    let t0 = Instant::now();
    let driver = Driver::start(&driver).await;
    let wd = driver.session(&chromium).await;
    // The session is deleted (closing Chromium) whatever happens; the panic, if any, comes after.
    let steps = AssertUnwindSafe(async {
        chat_without_a_key(&wd).await;
        chat_with_a_key(&wd).await;
        reasoning_is_folded(&wd).await;
    });
    let result = steps.catch_unwind().await;
    wd.delete().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    eprintln!("browser test: {:.1}s", t0.elapsed().as_secs_f64());
}

/// Settings, a streamed answer with its stats, the sidebar, and all of it again after a reload.
async fn chat_without_a_key(wd: &Session) {
    let s = start(|_| {}).await;
    wd.goto(&s.url("/")).await;
    let model = wait_model(wd).await;
    assert_eq!(model, "qwen2-Q8_0");

    // Greedy and short, through the settings dialog.
    wd.click("#open-settings").await;
    wd.type_into("#temperature", "0").await;
    wd.type_into("#max-tokens", "24").await;
    wd.click("#settings-save").await;
    let saved = wd
        .js("return JSON.parse(localStorage.getItem('frugal.settings'))")
        .await;
    assert_eq!(saved, json!({"temperature": 0, "max_tokens": 24}));

    wd.type_into("#input", "What is Rust?").await;
    wd.click("#send").await;
    let answer = wait_answer(wd, 1).await;
    assert!(answer.stats.contains("24 tokens"), "{answer:?}");
    assert!(answer.stats.contains("tokens/s"), "{answer:?}");
    let shot = wd.screenshot("chat-page.png").await;
    eprintln!("screenshot: {}", shot.display());

    let sidebar = wd.js(SIDEBAR).await;
    assert_eq!(sidebar, json!(["What is Rust?"]));

    // Everything above lives in localStorage: a reload shows the same.
    wd.refresh().await;
    wait_model(wd).await;
    assert_eq!(wd.js(SIDEBAR).await, sidebar);
    let again = wait_answer(wd, 1).await;
    assert_eq!(again.text, answer.text);
    assert_eq!(again.stats, answer.stats);
    let user = wd
        .js("return document.querySelector('[data-role=user]').textContent")
        .await;
    assert_eq!(user, "What is Rust?");
    markdown_is_safe(wd).await;
    s.shutdown().await;
}

/// Markdown in an answer (put into localStorage, as if the model had written it): rendered, with
/// the code block's label and copy button, while HTML and non-http links stay text.
async fn markdown_is_safe(wd: &Session) {
    let content = "# Title\n\nSome **bold**, *italic* and `<b>code</b>`.\n\n\
                   - [ok](https://example.com/a_b)\n- [bad](javascript:alert(1))\n\n\
                   ```rust\nfn main() {}\n```\n\n<img src=x onerror=\"window.pwned=1\">";
    let chat = json!([{"id": "md", "title": "Markdown", "created": 1, "updated": 1, "messages": [
        {"role": "user", "content": "Show me markdown"},
        {"role": "assistant", "content": content, "reasoning": "", "state": "done"},
    ]}]);
    let set = format!(
        "localStorage.setItem('frugal.chats', {0}); localStorage.setItem('frugal.current', '\"md\"');",
        serde_json::to_string(&chat.to_string()).unwrap()
    );
    wd.js(&set).await;
    wd.refresh().await;
    wait_model(wd).await;
    let seen = wd
        .js("const a = document.querySelector('[data-role=assistant] .content'); return { \
               h1: a.querySelector('h1')?.textContent, strong: a.querySelector('strong')?.textContent, \
               em: a.querySelector('em')?.textContent, code: a.querySelector('p code')?.textContent, \
               lang: a.querySelector('.code .lang')?.textContent, \
               block: a.querySelector('.code pre code')?.textContent, \
               links: [...a.querySelectorAll('a')].map(l => l.href), \
               elements: a.querySelectorAll('img, b, script').length, pwned: window.pwned ?? null, \
               text: a.innerText }")
        .await;
    assert_eq!(seen["h1"], "Title", "{seen}");
    assert_eq!(seen["strong"], "bold", "{seen}");
    assert_eq!(seen["em"], "italic", "{seen}");
    assert_eq!(seen["code"], "<b>code</b>", "{seen}");
    assert_eq!(seen["lang"], "rust", "{seen}");
    assert_eq!(seen["block"], "fn main() {}", "{seen}");
    assert_eq!(seen["links"], json!(["https://example.com/a_b"]), "{seen}");
    assert_eq!(seen["elements"], 0, "{seen}");
    assert_eq!(seen["pwned"], Value::Null, "{seen}");
    let text = seen["text"].as_str().unwrap();
    assert!(text.contains("[bad](javascript:alert(1))"), "{seen}");
    assert!(text.contains("<img src=x"), "{seen}");
    let shot = wd.screenshot("chat-page-markdown.png").await;
    eprintln!("screenshot: {}", shot.display());
    wd.click(".code button.copy").await;
    let label = wd
        .wait(
            "the copy button",
            5,
            "const b = document.querySelector('.code button.copy'); \
               return b.textContent === 'Copied' && b.textContent",
        )
        .await;
    assert_eq!(label, "Copied");
}

/// A server with a key: the page asks for it, a request without it shows the server's error, and
/// with it (sent by Enter this time) the answer streams.
async fn chat_with_a_key(wd: &Session) {
    let s = start(|cfg| cfg.api_keys = vec!["sesame".into()]).await;
    wd.goto(&s.url("/")).await;
    wd.wait("the settings to open for the key", 10, SETTINGS_OPEN)
        .await;
    wd.click("#settings-cancel").await;

    wd.type_into("#input", "Without a key").await;
    wd.click("#send").await;
    let state = wd
        .wait("the refusal", 20, "return document.querySelector('[data-role=assistant][data-state=error] .error')?.textContent")
        .await;
    assert!(state.as_str().unwrap().contains("API key"), "{state}");
    wd.wait("the settings to open again", 10, SETTINGS_OPEN)
        .await;
    wd.type_into("#api-key", "sesame").await;
    wd.type_into("#temperature", "0").await;
    wd.type_into("#max-tokens", "12").await;
    wd.click("#settings-save").await;
    wait_model(wd).await;

    // A new chat (the failed one stays in the sidebar); U+E007 is WebDriver's Enter key.
    wd.click("#new-chat").await;
    wd.type_into("#input", "What is Rust?\u{E007}").await;
    let answer = wait_answer(wd, 1).await;
    assert!(answer.stats.contains("12 tokens"), "{answer:?}");
    assert_eq!(
        wd.js(SIDEBAR).await,
        json!(["What is Rust?", "Without a key"])
    );
    s.shutdown().await;
}

/// A reasoning model (the R1 template, whose prompt opens `<think>`, with thinking switched on in
/// the settings; the server's reasoning budget ends the block): the reasoning shows in a fold
/// above the answer, folded once the answer has started.
async fn reasoning_is_folded(wd: &Session) {
    let s = start(|cfg| {
        let f = frugal_fixtures::dir();
        cfg.model = f.join("models/qwen3-Q8_0.gguf");
        cfg.ctx_size = Some(1024);
        let template = f.join("templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
        cfg.chat_template = Some(std::fs::read_to_string(template).unwrap());
        cfg.reasoning_budget = Some(8);
    })
    .await;
    wd.goto(&s.url("/")).await;
    wait_model(wd).await;
    wd.click("#open-settings").await;
    wd.click("#thinking option[value=on]").await;
    wd.type_into("#temperature", "0").await;
    wd.type_into("#max-tokens", "24").await;
    wd.click("#settings-save").await;

    wd.type_into("#input", "Why is the sky blue?").await;
    wd.click("#send").await;
    let answer = wait_answer(wd, 1).await;
    let fold = wd
        .js("const d = document.querySelector('[data-role=assistant] details.reasoning'); \
             return { hidden: d.hidden, open: d.open, text: d.querySelector('.reasoning-text').textContent }")
        .await;
    assert_eq!(fold["hidden"], false, "{fold}");
    assert_eq!(fold["open"], false, "{fold}");
    assert!(!fold["text"].as_str().unwrap().is_empty(), "{fold}");
    assert!(!answer.text.is_empty());
    // A reader can open it again.
    wd.click("[data-role=assistant] details.reasoning summary")
        .await;
    let open = wd
        .js("return document.querySelector('details.reasoning').open")
        .await;
    assert_eq!(open, true);
    let shot = wd.screenshot("chat-page-reasoning.png").await;
    eprintln!("screenshot: {}", shot.display());
    s.shutdown().await;
}

const SIDEBAR: &str =
    "return [...document.querySelectorAll('#conversations .open-chat')].map(b => b.textContent)";
const SETTINGS_OPEN: &str = "return document.querySelector('#settings').open \
     && document.querySelector('#settings-notice').textContent.includes('API key')";

/// The model name, once the header shows it.
async fn wait_model(wd: &Session) -> String {
    let js = "const m = document.querySelector('#model'); \
              return m.dataset.state === 'ready' && m.textContent";
    let v = wd.wait("the model name", 20, js).await;
    v.as_str().unwrap().to_string()
}

/// Waits until the `n`th assistant message has finished, and checks that it finished well.
async fn wait_answer(wd: &Session, n: usize) -> Answer {
    let js = format!(
        "const a = document.querySelectorAll('[data-role=assistant]')[{}]; \
         return a && a.dataset.state !== 'streaming' && {{ state: a.dataset.state, \
           text: a.querySelector('.content').innerText, stats: a.querySelector('.stats').innerText }}",
        n - 1
    );
    let v = wd.wait("the answer", 60, &js).await;
    assert_eq!(v["state"], "done", "{v}");
    let answer = Answer {
        text: v["text"].as_str().unwrap().to_string(),
        stats: v["stats"].as_str().unwrap().to_string(),
    };
    assert!(!answer.text.trim().is_empty(), "{answer:?}");
    answer
}

// ---------------------------------------------------------------------------------------------
// Finding the browser

/// chromedriver and chromium, or None (after saying so) where the test may be skipped.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let driver = find_program(&["chromedriver"]);
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ if std::env::var("FRUGAL_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("FRUGAL_REQUIRE_BROWSER=1 but chromium/chromedriver not installed")
        }
        _ => {
            eprintln!("skipped: chromium/chromedriver not installed");
            None
        }
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Where the screenshot goes: the workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

// ---------------------------------------------------------------------------------------------
// WebDriver

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(program: &PathBuf) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        driver.wait_ready().await;
        driver
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/status", self.base)).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not become ready in 20 s");
    }

    /// A new headless Chromium. Its sandbox and background services are off: they need a user
    /// namespace and the network, which test machines and containers often lack.
    async fn session(&self, chromium: &PathBuf) -> Session {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let r = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .unwrap();
        let v = webdriver_value(r).await;
        let id = v["sessionId"].as_str().expect("a session id");
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
        }
    }
}

/// The `value` of a WebDriver response; a WebDriver error panics with its message.
async fn webdriver_value(r: reqwest::Response) -> Value {
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "WebDriver {status}: {}", v["value"]);
    v["value"].clone()
}

/// The W3C name of an element reference in a response.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.url)).json(&body);
        webdriver_value(r.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.url));
        webdriver_value(r.send().await.unwrap()).await
    }

    async fn delete(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    async fn refresh(&self) {
        self.post("/refresh", json!({})).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.post(&format!("/element/{el}/click"), json!({})).await;
    }

    /// Clicks into the field, clears it and types `text` as key presses. The click is what a
    /// user does; without it, chromedriver types into nothing when the field already has the
    /// document's focus but not the keyboard's (as after a modal dialog closes).
    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.post(&format!("/element/{el}/click"), json!({})).await;
        self.post(&format!("/element/{el}/clear"), json!({})).await;
        self.post(&format!("/element/{el}/value"), json!({"text": text}))
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Polls `script` until it returns something truthy, for at most `secs` seconds.
    async fn wait(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.body.innerText").await;
                panic!("waited {secs} s for {what}; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the window under the target directory and returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.get("/screenshot").await;
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = target_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path.canonicalize().unwrap_or(path)
    }
}

/// Standard base64 (the screenshot), so the test needs no crate for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
