//! A local stand-in for the Hugging Face Hub, enough of it to download from: the API's revision
//! and tree endpoints (paged), the resolve endpoint (LFS files redirected to a CDN-like path with
//! `X-Linked-Etag`/`X-Linked-Size`/`X-Repo-Commit`, small files served directly, renamed
//! repositories redirected relatively), `Range`, gated repositories, and 404s with
//! `X-Error-Code`. It counts requests and bytes served and can misbehave on demand (cut a
//! download short, ignore `Range`, serve corrupt bytes, go slowly). Plain std, one thread per
//! connection, `Connection: close`.

#![allow(dead_code)] // each test binary uses a part of it

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A file's bytes: in memory, or a file on disk (the throughput bench's gigabyte).
#[derive(Clone)]
pub enum Content {
    Memory(Arc<Vec<u8>>),
    Disk(PathBuf),
}

#[derive(Clone)]
pub struct Blob {
    pub content: Content,
    pub size: u64,
    pub sha256: String,
    /// Stored with git LFS: redirected to the CDN, named by its sha256.
    pub lfs: bool,
}

impl Blob {
    pub fn memory(bytes: Vec<u8>, lfs: bool) -> Blob {
        Blob {
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            content: Content::Memory(Arc::new(bytes)),
            lfs,
        }
    }

    /// An LFS blob read from `path` (hashed once, here).
    pub fn disk(path: PathBuf) -> std::io::Result<Blob> {
        let mut f = std::fs::File::open(&path)?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Blob {
            content: Content::Disk(path),
            size,
            sha256: hex(&sha.finalize()),
            lfs: true,
        })
    }

    /// The git blob id stand-in of a small file (the Hub's ETag for non-LFS files).
    pub fn git_etag(&self) -> String {
        self.sha256[..40].to_string()
    }
}

#[derive(Clone, Default)]
pub struct Repo {
    /// Commit → path → blob.
    pub commits: BTreeMap<String, BTreeMap<String, Blob>>,
    /// Branch or tag → commit.
    pub refs: HashMap<String, String>,
    pub gated: bool,
}

impl Repo {
    /// A repository with one commit (`main` at it) holding these files.
    pub fn with_files(commit: &str, files: Vec<(&str, Blob)>) -> Repo {
        let mut repo = Repo::default();
        repo.add_commit(commit, files);
        repo.refs.insert("main".into(), commit.into());
        repo
    }

    pub fn add_commit(&mut self, commit: &str, files: Vec<(&str, Blob)>) {
        let files = files.into_iter().map(|(p, b)| (p.to_string(), b)).collect();
        self.commits.insert(commit.into(), files);
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    repos: Mutex<HashMap<String, Repo>>,
    renamed: Mutex<HashMap<String, String>>,
    token: Mutex<Option<String>>,
    seen: Mutex<Vec<Seen>>,
    /// Body bytes of files sent (GETs of file contents only).
    bytes_served: AtomicU64,
    /// The next file GET stops after this many body bytes (once).
    cut_after: Mutex<Option<u64>>,
    ignore_range: AtomicBool,
    /// Serve bytes that do not hash to the etag.
    corrupt: AtomicBool,
    /// A pause after each 64 KiB of a file, to make downloads overlap.
    slow: AtomicBool,
    /// Accept connections but never answer (a stalled server).
    stall: AtomicBool,
    page_size: AtomicU64,
}

/// The running server; it stops with the process.
#[derive(Clone)]
pub struct FakeHub {
    pub url: String,
    /// The CDN LFS files are redirected to: another host, as the Hub's CDN is (a client must not
    /// follow that redirect for the metadata, nor send the token there).
    pub cdn_url: String,
    state: Arc<State>,
}

impl FakeHub {
    pub fn start() -> FakeHub {
        FakeHub::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> FakeHub {
        let listener = TcpListener::bind(addr).expect("bind the fake Hub");
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Another loopback address is another host (Linux answers on all of 127/8).
        let cdn = TcpListener::bind("127.0.0.2:0").ok();
        let cdn_url = match &cdn {
            Some(l) => format!("http://{}", l.local_addr().unwrap()),
            None => url.replace("127.0.0.1", "localhost"),
        };
        let state = Arc::new(State::default());
        state.page_size.store(3, Ordering::SeqCst);
        let hub = FakeHub {
            url,
            cdn_url,
            state,
        };
        for listener in std::iter::once(listener).chain(cdn) {
            let server = hub.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let server = server.clone();
                    std::thread::spawn(move || server.serve(stream));
                }
            });
        }
        hub
    }

    pub fn add_repo(&self, name: &str, repo: Repo) {
        self.state.repos.lock().unwrap().insert(name.into(), repo);
    }

    pub fn rename(&self, old: &str, new: &str) {
        self.state
            .renamed
            .lock()
            .unwrap()
            .insert(old.into(), new.into());
    }

    /// The token gated repositories accept.
    pub fn require_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = Some(token.into());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    pub fn bytes_served(&self) -> u64 {
        self.state.bytes_served.load(Ordering::SeqCst)
    }

    pub fn cut_next_download_after(&self, bytes: u64) {
        *self.state.cut_after.lock().unwrap() = Some(bytes);
    }

    pub fn set_ignore_range(&self, on: bool) {
        self.state.ignore_range.store(on, Ordering::SeqCst);
    }

    pub fn set_corrupt(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
    }

    pub fn set_slow(&self, on: bool) {
        self.state.slow.store(on, Ordering::SeqCst);
    }

    pub fn set_stall(&self, on: bool) {
        self.state.stall.store(on, Ordering::SeqCst);
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        });
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        self.state.seen.lock().unwrap().push(request.clone());
        if self.state.stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let mut out = stream;
        let reply = self.route(&request);
        let _ = self.send(&mut out, &request, reply);
    }
}

/// What to answer.
enum Reply {
    Json(u16, String, Vec<(String, String)>),
    Empty(u16, Vec<(String, String)>),
    File(Blob, Vec<(String, String)>),
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::Empty(
        status,
        vec![
            ("X-Error-Code".into(), code.into()),
            ("X-Error-Message".into(), message.into()),
        ],
    )
}

impl FakeHub {
    fn route(&self, req: &Seen) -> Reply {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let parts: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(unquote)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        if let ["api", "models", org, name, rest @ ..] = parts.as_slice() {
            if let Some(new) = self
                .state
                .renamed
                .lock()
                .unwrap()
                .get(&format!("{org}/{name}"))
            {
                let target = format!("/api/models/{new}/{}?{query}", rest.join("/"));
                return Reply::Empty(307, vec![("Location".into(), target)]);
            }
        }
        match parts.as_slice() {
            ["api", "models", org, name, "revision", rev] => {
                self.api_revision(&format!("{org}/{name}"), rev)
            }
            ["api", "models", org, name, "tree", rev] => {
                self.api_tree(&format!("{org}/{name}"), rev, query)
            }
            ["cdn", sha] => self.cdn(sha),
            [org, name, "resolve", rev, file @ ..] if !file.is_empty() => {
                self.resolve(req, &format!("{org}/{name}"), rev, &file.join("/"))
            }
            _ => error(404, "", "no such route"),
        }
    }

    /// `(repo, commit, files)` of a reference, or the error reply.
    fn lookup(&self, repo: &str, rev: &str) -> Result<(Repo, String), Reply> {
        let repos = self.state.repos.lock().unwrap();
        let Some(r) = repos.get(repo) else {
            return Err(error(404, "RepoNotFound", "Repository not found"));
        };
        let commit = r.refs.get(rev).cloned().unwrap_or_else(|| rev.to_string());
        if !r.commits.contains_key(&commit) {
            return Err(error(404, "RevisionNotFound", "Invalid rev id"));
        }
        Ok((r.clone(), commit))
    }

    fn api_revision(&self, repo: &str, rev: &str) -> Reply {
        match self.lookup(repo, rev) {
            Err(reply) => reply,
            Ok((r, commit)) => {
                let siblings: Vec<_> = r.commits[&commit]
                    .keys()
                    .map(|p| serde_json::json!({ "rfilename": p }))
                    .collect();
                let body = serde_json::json!({ "id": repo, "sha": commit, "siblings": siblings });
                Reply::Json(200, body.to_string(), vec![])
            }
        }
    }

    fn api_tree(&self, repo: &str, rev: &str, query: &str) -> Reply {
        let (r, commit) = match self.lookup(repo, rev) {
            Err(reply) => return reply,
            Ok(found) => found,
        };
        let entries: Vec<serde_json::Value> = tree_entries(&r.commits[&commit]);
        let page = self.state.page_size.load(Ordering::SeqCst) as usize;
        let start: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("cursor="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let end = (start + page).min(entries.len());
        let mut headers = vec![];
        if end < entries.len() {
            let next = format!(
                "{}/api/models/{repo}/tree/{rev}?recursive=true&expand=false&cursor={end}",
                self.url
            );
            headers.push(("Link".into(), format!("<{next}>; rel=\"next\"")));
        }
        let body = serde_json::Value::Array(entries[start..end].to_vec()).to_string();
        Reply::Json(200, body, headers)
    }

    fn resolve(&self, req: &Seen, repo: &str, rev: &str, file: &str) -> Reply {
        if let Some(new) = self.state.renamed.lock().unwrap().get(repo) {
            let target = format!("/{new}/resolve/{rev}/{file}");
            return Reply::Empty(307, vec![("Location".into(), target)]);
        }
        let (r, commit) = match self.lookup(repo, rev) {
            Err(reply) => return reply,
            Ok(found) => found,
        };
        let Some(blob) = r.commits[&commit].get(file).cloned() else {
            return error(404, "EntryNotFound", "Entry not found");
        };
        if r.gated {
            let token = self.state.token.lock().unwrap().clone();
            let expected = token.map(|t| format!("Bearer {t}"));
            if req.authorization.is_none() || req.authorization != expected {
                return error(401, "GatedRepo", "Access to this model is restricted");
            }
        }
        let mut headers = vec![("X-Repo-Commit".to_string(), commit.clone())];
        if !blob.lfs {
            headers.push(("ETag".into(), format!("\"{}\"", blob.git_etag())));
            return Reply::File(blob, headers);
        }
        headers.extend([
            ("ETag".to_string(), format!("\"{}\"", blob.git_etag())),
            ("X-Linked-Etag".into(), format!("\"{}\"", blob.sha256)),
            ("X-Linked-Size".into(), blob.size.to_string()),
            (
                "Location".into(),
                format!("{}/cdn/{}?signed=1", self.cdn_url, blob.sha256),
            ),
        ]);
        Reply::Empty(302, headers)
    }

    fn cdn(&self, sha: &str) -> Reply {
        let repos = self.state.repos.lock().unwrap();
        let blob = repos
            .values()
            .flat_map(|r| r.commits.values())
            .flat_map(|files| files.values())
            .find(|b| b.sha256 == sha)
            .cloned();
        match blob {
            Some(b) => Reply::File(b, vec![("ETag".into(), format!("\"{sha}\""))]),
            None => error(404, "", "no such object"),
        }
    }

    fn send(&self, out: &mut TcpStream, req: &Seen, reply: Reply) -> std::io::Result<()> {
        match reply {
            Reply::Json(status, body, headers) => {
                let mut h = headers;
                h.push(("Content-Type".into(), "application/json".into()));
                write_head(out, status, &h, body.len() as u64)?;
                if req.method != "HEAD" {
                    out.write_all(body.as_bytes())?;
                }
                Ok(())
            }
            Reply::Empty(status, headers) => write_head(out, status, &headers, 0),
            Reply::File(blob, headers) => self.send_file(out, req, &blob, headers),
        }
    }

    fn send_file(
        &self,
        out: &mut TcpStream,
        req: &Seen,
        blob: &Blob,
        mut headers: Vec<(String, String)>,
    ) -> std::io::Result<()> {
        let start = match (&req.range, self.state.ignore_range.load(Ordering::SeqCst)) {
            (Some(r), false) => r
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n < blob.size),
            _ => None,
        };
        let status = match start {
            Some(s) => {
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {s}-{}/{}", blob.size - 1, blob.size),
                ));
                206
            }
            None => 200,
        };
        let start = start.unwrap_or(0);
        headers.push(("Accept-Ranges".into(), "bytes".into()));
        write_head(out, status, &headers, blob.size - start)?;
        if req.method == "HEAD" {
            return Ok(());
        }
        let limit = self.state.cut_after.lock().unwrap().take();
        self.stream_body(out, blob, start, limit)
    }

    fn stream_body(
        &self,
        out: &mut TcpStream,
        blob: &Blob,
        start: u64,
        limit: Option<u64>,
    ) -> std::io::Result<()> {
        let mut source: Box<dyn Read> = match &blob.content {
            Content::Memory(bytes) => {
                Box::new(std::io::Cursor::new(bytes[start as usize..].to_vec()))
            }
            Content::Disk(path) => {
                let mut f = std::fs::File::open(path)?;
                f.seek(std::io::SeekFrom::Start(start))?;
                Box::new(f)
            }
        };
        let corrupt = self.state.corrupt.load(Ordering::SeqCst);
        let chunk = if self.state.slow.load(Ordering::SeqCst) {
            64 << 10
        } else {
            1 << 20
        };
        let mut buf = vec![0u8; chunk];
        let mut sent = 0u64;
        loop {
            let want =
                limit.map_or(buf.len() as u64, |l| (l - sent).min(buf.len() as u64)) as usize;
            if want == 0 {
                // Cut: drop the connection mid-body.
                let _ = out.flush();
                let _ = out.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            let n = source.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(());
            }
            if corrupt {
                buf[0] ^= 0xff;
            }
            // Counted before the write: the client may be done before this thread runs again.
            self.state
                .bytes_served
                .fetch_add(n as u64, Ordering::SeqCst);
            out.write_all(&buf[..n])?;
            sent += n as u64;
            if self.state.slow.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn tree_entries(files: &BTreeMap<String, Blob>) -> Vec<serde_json::Value> {
    let mut dirs: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for (path, blob) in files {
        if let Some((dir, _)) = path.rsplit_once('/') {
            if !dirs.contains(&dir.to_string()) {
                dirs.push(dir.to_string());
                entries.push(
                    serde_json::json!({ "type": "directory", "oid": "0", "size": 0, "path": dir }),
                );
            }
        }
        let mut entry = serde_json::json!({
            "type": "file", "oid": blob.git_etag(), "size": if blob.lfs { 134 } else { blob.size }, "path": path,
        });
        if blob.lfs {
            entry["lfs"] =
                serde_json::json!({ "oid": blob.sha256, "size": blob.size, "pointerSize": 134 });
        }
        entries.push(entry);
    }
    entries
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    length: u64,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut authorization, mut range) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_string()),
                "range" => range = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(Seen {
        method,
        target,
        authorization,
        range,
    })
}

fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
