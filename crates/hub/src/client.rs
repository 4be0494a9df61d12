//! The Hub's HTTP API as `huggingface_hub` uses it: a repository's commit
//! (`GET /api/models/{repo}/revision/{rev}`), its files with sizes
//! (`GET /api/models/{repo}/tree/{commit}?recursive=true`, paged by `Link` headers), a file's
//! metadata (`HEAD /{repo}/resolve/{rev}/{file}`, following only relative redirects, so that the
//! CDN's address comes back as `Location`), and the bytes (`GET` of that location, from an offset).
//! Error responses are read through their `X-Error-Code` header.

use crate::error::HubError;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, ETAG, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};
use std::time::Duration;

/// Where the Hub is and how to talk to it.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, without a trailing `/` (`https://huggingface.co` by default).
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: resolve from the cache only, never a request.
    pub offline: bool,
    /// Connection and metadata requests (`HF_HUB_ETAG_TIMEOUT`, 10 s by default).
    pub request_timeout: Duration,
    /// The longest wait for the next bytes of a download (`HF_HUB_DOWNLOAD_TIMEOUT`, 10 s).
    pub read_timeout: Duration,
    /// How often a download that broke off is resumed without any progress in between.
    pub retries: u32,
    /// The pause before such a retry.
    pub retry_delay: Duration,
}

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubConfig {
    /// The configuration `huggingface_hub` would use in this environment.
    pub fn from_env() -> HubConfig {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secs = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
        let truthy = |name: &str| {
            env(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        HubConfig {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
                .trim_end_matches('/')
                .to_string(),
            token: env("HF_TOKEN")
                .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
                .or_else(token_from_file)
                .map(|t| t.trim().to_string()),
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
            request_timeout: Duration::from_secs(secs("HF_HUB_ETAG_TIMEOUT").unwrap_or(10)),
            read_timeout: Duration::from_secs(secs("HF_HUB_DOWNLOAD_TIMEOUT").unwrap_or(10)),
            retries: 5,
            retry_delay: Duration::from_secs(1),
        }
    }
}

fn token_from_file() -> Option<String> {
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::cache::hf_home().join("token"));
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// A file of a repository as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    /// Its size (for LFS files the real file's, not the pointer's).
    pub size: u64,
}

/// What the resolve endpoint says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    pub commit: String,
    /// The blob's name in the cache: the LFS sha256, or the git blob id.
    pub etag: String,
    pub size: u64,
    /// Where the bytes are: the CDN's address, or the resolve URL itself.
    pub location: String,
}

/// Which request an error answers, for the message.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

/// A connection to the Hub, with a runtime of its own: call it only from a thread that is not
/// running async code (`resolve` makes one).
pub struct Hub {
    pub config: HubConfig,
    runtime: tokio::runtime::Runtime,
    /// Follows redirects (API calls and downloads); drops the token on a redirect to another host.
    http: reqwest::Client,
    /// Follows none, so that a redirect's headers (the CDN's address, the LFS etag) can be read.
    head: reqwest::Client,
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Hub, HubError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HubError::Other(format!("cannot start the download runtime: {e}")))?;
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(config.request_timeout)
                .read_timeout(config.read_timeout)
                .user_agent(concat!("frugal/", env!("CARGO_PKG_VERSION")))
        };
        let build_error = |e: reqwest::Error| HubError::Other(format!("HTTP client: {e}"));
        let http = builder()
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(build_error)?;
        let head = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(build_error)?;
        Ok(Hub {
            config,
            runtime,
            http,
            head,
        })
    }

    /// Runs a future of this client's to completion.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// The commit a branch, tag or commit of `repo` is at.
    pub async fn commit_of(&self, repo: &str, revision: &str) -> Result<String, HubError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.config.endpoint,
            quote(revision, false)
        );
        let subject = Subject {
            repo,
            revision,
            file: None,
        };
        let body: serde_json::Value = self.get_json(&url, subject).await?.0;
        match body.get("sha").and_then(|s| s.as_str()) {
            Some(sha) if !sha.is_empty() => Ok(sha.to_string()),
            _ => Err(bad(&url, "the repository info has no 'sha'")),
        }
    }

    /// Every file of `repo` at `commit`, with sizes.
    pub async fn list_files(&self, repo: &str, commit: &str) -> Result<Vec<RemoteFile>, HubError> {
        let subject = Subject {
            repo,
            revision: commit,
            file: None,
        };
        let mut next = Some(format!(
            "{}/api/models/{repo}/tree/{}?recursive=true&expand=false",
            self.config.endpoint,
            quote(commit, false)
        ));
        let mut files = Vec::new();
        while let Some(url) = next.take() {
            let (page, headers) = self.get_json(&url, subject).await?;
            let entries = page
                .as_array()
                .ok_or_else(|| bad(&url, "the file listing is not a JSON array"))?;
            files.extend(entries.iter().filter_map(remote_file));
            next = next_page(&headers);
        }
        Ok(files)
    }

    async fn get_json(
        &self,
        url: &str,
        subject: Subject<'_>,
    ) -> Result<(serde_json::Value, HeaderMap), HubError> {
        let response = self
            .request(&self.http, Method::GET, url, true)
            .timeout(self.config.request_timeout)
            .send()
            .await
            .map_err(network(url))?;
        let response = self.check(response, subject)?;
        let headers = response.headers().clone();
        let json = response
            .json()
            .await
            .map_err(|e| bad(url, &format!("not the JSON the Hub answers: {e}")))?;
        Ok((json, headers))
    }

    /// `HEAD` of the file's resolve URL, following redirects on the Hub's host (a renamed
    /// repository) but not to another host (the CDN, whose redirect carries the metadata), as
    /// `huggingface_hub`'s `get_hf_file_metadata` does.
    pub async fn file_metadata(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<FileMetadata, HubError> {
        let subject = Subject {
            repo,
            revision,
            file: Some(file),
        };
        let mut url = self.resolve_url(repo, revision, file);
        for _ in 0..10 {
            let response = self
                .request(&self.head, Method::HEAD, &url, true)
                .header("Accept-Encoding", "identity")
                .timeout(self.config.request_timeout)
                .send()
                .await
                .map_err(network(&url))?;
            let response = self.check(response, subject)?;
            let headers = response.headers();
            let location = header(headers, LOCATION.as_str());
            if response.status().is_redirection() {
                if let Some(next) = location.as_deref().and_then(|l| hub_redirect(&url, l)) {
                    url = next;
                    continue;
                }
            }
            return metadata(&url, headers, response.status().is_redirection());
        }
        Err(bad(&url, "more than 10 redirects on the Hub"))
    }

    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.config.endpoint,
            quote(revision, false),
            quote(file, true)
        )
    }

    /// `GET` of a file's bytes from `offset` on.
    pub async fn get_from(
        &self,
        url: &str,
        offset: u64,
        subject: Subject<'_>,
    ) -> Result<reqwest::Response, HubError> {
        let mut request = self
            .request(&self.http, Method::GET, url, self.same_origin(url))
            .header("Accept-Encoding", "identity");
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = request.send().await.map_err(network(url))?;
        self.check(response, subject)
    }

    /// The token goes to the Hub (or the mirror) only, never to a CDN another host serves.
    fn same_origin(&self, url: &str) -> bool {
        match (Url::parse(url), Url::parse(&self.config.endpoint)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        }
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        url: &str,
        with_token: bool,
    ) -> reqwest::RequestBuilder {
        let request = client.request(method, url);
        match (&self.config.token, with_token) {
            (Some(token), true) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            _ => request,
        }
    }

    /// The response if it succeeded (redirects included), else the error its status and
    /// `X-Error-Code` say.
    fn check(
        &self,
        response: reqwest::Response,
        subject: Subject<'_>,
    ) -> Result<reqwest::Response, HubError> {
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            return Ok(response);
        }
        Err(status_error(
            &self.config,
            status,
            response.headers(),
            response.url().as_str(),
            subject,
        ))
    }
}

/// The error an unsuccessful response means, as `huggingface_hub`'s `hf_raise_for_status` reads
/// it: `X-Error-Code` first; a 401 without a code is a missing (or private) repository.
fn status_error(
    config: &HubConfig,
    status: StatusCode,
    headers: &HeaderMap,
    url: &str,
    subject: Subject<'_>,
) -> HubError {
    let code = header(headers, "x-error-code");
    let message = header(headers, "x-error-message");
    let repo = subject.repo.to_string();
    let endpoint = config.endpoint.clone();
    match code.as_deref() {
        Some("RevisionNotFound") => HubError::RevisionNotFound {
            repo,
            revision: subject.revision.into(),
        },
        Some("EntryNotFound") => HubError::EntryNotFound {
            repo,
            revision: subject.revision.into(),
            file: subject.file.unwrap_or_default().into(),
        },
        Some("GatedRepo") => HubError::Gated {
            repo,
            endpoint,
            token_sent: config.token.is_some(),
        },
        Some("RepoNotFound") => HubError::RepoNotFound { repo, endpoint },
        _ if status == StatusCode::UNAUTHORIZED
            && message.as_deref() != Some("Invalid credentials in Authorization header") =>
        {
            HubError::RepoNotFound { repo, endpoint }
        }
        _ => HubError::Http {
            url: url.into(),
            status: status.as_u16(),
            message,
        },
    }
}

fn metadata(url: &str, headers: &HeaderMap, redirected: bool) -> Result<FileMetadata, HubError> {
    let commit = header(headers, "x-repo-commit").ok_or_else(|| {
        bad(
            url,
            "no X-Repo-Commit header: not a Hugging Face Hub answer",
        )
    })?;
    let etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, ETAG.as_str()))
        .map(|e| normalize_etag(&e))
        .filter(|e| !e.is_empty())
        .ok_or_else(|| bad(url, "no ETag header: cannot name the file in the cache"))?;
    if etag.contains(['/', '\\']) || etag.starts_with('.') {
        return Err(bad(url, &format!("the ETag '{etag}' is not a file name")));
    }
    let size = header(headers, "x-linked-size")
        .or_else(|| (!redirected).then(|| header(headers, CONTENT_LENGTH.as_str()))?)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            bad(
                url,
                "no X-Linked-Size or Content-Length: the file's size is unknown",
            )
        })?;
    let location = match header(headers, LOCATION.as_str()) {
        Some(l) => Url::parse(url)
            .and_then(|base| base.join(&l))
            .map_err(|e| bad(url, &format!("bad Location '{l}': {e}")))?
            .to_string(),
        None => url.to_string(),
    };
    Ok(FileMetadata {
        commit,
        etag,
        size,
        location,
    })
}

/// `huggingface_hub`'s `_normalize_etag`: `etag.lstrip("W/").strip('"')` (a character set, not a
/// prefix, as Python's `lstrip` takes it).
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_start_matches(['W', '/'])
        .trim_matches('"')
        .to_string()
}

/// Hosts that are the Hub whatever the endpoint (`huggingface_hub`'s `HF_URL_HOSTS`).
const HUB_HOSTS: &[&str] = &["huggingface.co", "hf.co"];

/// A redirect's target when it stays on the Hub (the same host, or a Hub host); `None` for one
/// to another host (the CDN).
fn hub_redirect(url: &str, location: &str) -> Option<String> {
    let base = Url::parse(url).ok()?;
    let target = base.join(location).ok()?;
    let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
    let to = host(&target)?;
    (Some(&to) == host(&base).as_ref() || HUB_HOSTS.contains(&to.as_str()))
        .then(|| target.to_string())
}

fn remote_file(entry: &serde_json::Value) -> Option<RemoteFile> {
    if entry.get("type")?.as_str()? != "file" {
        return None;
    }
    let size = entry
        .get("lfs")
        .and_then(|l| l.get("size"))
        .or_else(|| entry.get("size"))?
        .as_u64()?;
    Some(RemoteFile {
        path: entry.get("path")?.as_str()?.to_string(),
        size,
    })
}

/// The `rel="next"` URL of a `Link` header.
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = header(headers, "link")?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        let target = target.trim();
        is_next.then(|| {
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(crate) fn bad(url: &str, why: &str) -> HubError {
    HubError::BadResponse {
        url: url.into(),
        why: why.into(),
    }
}

pub(crate) fn network(url: &str) -> impl FnOnce(reqwest::Error) -> HubError + '_ {
    move |source| HubError::Network {
        url: url.into(),
        source,
    }
}

/// Percent-encodes `text` as Python's `urllib.parse.quote` does (`/` kept when `keep_slash`).
fn quote(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'.' | b'-' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_normalized_as_huggingface_hub_does() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn quoting_and_links() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a dir/f.gguf", true), "a%20dir/f.gguf");
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "<http://h/api/models/a/b/tree/c?cursor=x>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&h).unwrap(),
            "http://h/api/models/a/b/tree/c?cursor=x"
        );
        assert_eq!(
            hub_redirect("http://h:1/a/b/resolve/main/f", "/c/d/resolve/main/f").unwrap(),
            "http://h:1/c/d/resolve/main/f"
        );
        assert!(hub_redirect("http://h/a", "https://cdn/x").is_none());
        assert!(hub_redirect("http://h/a", "https://hf.co/x").is_some());
    }
}
