//! The one error type of the hub crate: what went wrong, naming the repository, file, revision or
//! cache path involved.

use crate::quant::QuantChoiceError;
use crate::reference::RefError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error(transparent)]
    Quant(#[from] QuantChoiceError),
    #[error("repository {repo} not found at {endpoint} (or it is private and no valid token was sent: set HF_TOKEN or log in with `hf auth login`)")]
    RepoNotFound { repo: String, endpoint: String },
    #[error("{repo} is a gated repository: accept its conditions at {endpoint}/{repo} and set HF_TOKEN to a token of that account{}", if *.token_sent { " (the token sent was refused)" } else { " (no token was sent)" })]
    Gated {
        repo: String,
        endpoint: String,
        token_sent: bool,
    },
    #[error("{repo} has no revision '{revision}' (branch, tag or commit)")]
    RevisionNotFound { repo: String, revision: String },
    #[error("{repo}@{revision} has no file '{file}'")]
    EntryNotFound {
        repo: String,
        revision: String,
        file: String,
    },
    #[error("{repo}@{revision}: no GGUF files and no Hugging Face checkpoint (config.json with *.safetensors); files: {}", .files.join(", "))]
    NothingToLoad {
        repo: String,
        revision: String,
        files: Vec<String>,
    },
    #[error("{url}: HTTP {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        url: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{url}: {source}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {why}")]
    BadResponse { url: String, why: String },
    #[error("offline (HF_HUB_OFFLINE is set) and {what} is not in the cache {}", .cache.display())]
    NotCached { what: String, cache: PathBuf },
    #[error("{file}: the download's SHA-256 is {actual}, the Hub says {expected}; the bad download was removed, try again")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: {got} bytes downloaded, the Hub says {expected}")]
    Size {
        file: String,
        expected: u64,
        got: u64,
    },
    #[error("not enough disk space in {}: {needed} bytes needed, {available} available", .dir.display())]
    DiskFull {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl HubError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
        let path = path.into();
        move |source| HubError::Io { path, source }
    }
}
