//! A model reference to a local path: an existing path as it is; a Hub reference to its files in
//! the cache, downloaded first unless offline. A GGUF model is its file, or its split set's first
//! part; a Hugging Face checkpoint (no GGUF, `config.json` with `*.safetensors`) is its snapshot
//! directory.

use crate::cache::{is_commit, Cache};
use crate::client::{Hub, HubConfig, RemoteFile};
use crate::download::{fetch_file, ProgressFn};
use crate::error::HubError;
use crate::quant::choose_files;
use crate::reference::{HubRef, ModelRef, RepoFile, DEFAULT_QUANT};
use frugal_formats::split::{part_name, split_part};
use std::path::PathBuf;

/// Where the cache is and how to reach the Hub.
#[derive(Debug, Clone)]
pub struct Options {
    pub cache: Cache,
    pub hub: HubConfig,
}

impl Options {
    /// As `huggingface_hub` would have them in this environment.
    pub fn from_env() -> Options {
        Options {
            cache: Cache::from_env(),
            hub: HubConfig::from_env(),
        }
    }
}

/// The files of a checkpoint repository that loading it needs (those that exist), besides its
/// `*.safetensors`.
pub const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// What a Hub reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The file to load (a split set's first part), or a checkpoint's snapshot directory.
    pub path: PathBuf,
    pub repo: String,
    pub commit: String,
    /// The repository's files it took, in load order.
    pub files: Vec<String>,
}

/// The local path `reference` names (see the module's documentation).
pub fn resolve(
    reference: &str,
    options: &Options,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, HubError> {
    match ModelRef::parse(reference)? {
        ModelRef::Local(path) => Ok(path),
        ModelRef::Hub(hub_ref) => Ok(resolve_hub(&hub_ref, options, progress)?.path),
    }
}

/// A Hub reference's files in the cache: from the cache alone when offline, else listed on the
/// Hub and downloaded where missing. The downloads run on a thread of their own, so this may be
/// called from async code too.
pub fn resolve_hub(
    reference: &HubRef,
    options: &Options,
    progress: ProgressFn<'_>,
) -> Result<Resolved, HubError> {
    if options.hub.offline {
        return resolve_cached(reference, &options.cache);
    }
    let online = std::thread::scope(|scope| {
        scope
            .spawn(|| download(reference, options, progress))
            .join()
            .map_err(|_| HubError::Other("the download thread panicked".into()))?
    });
    match online {
        // The Hub out of reach (or failing): what the cache has will do, as huggingface_hub
        // falls back to it.
        Err(e @ (HubError::Network { .. } | HubError::Http { status: 500.., .. })) => {
            resolve_cached(reference, &options.cache).map_err(|_| e)
        }
        other => other,
    }
}

fn download(
    reference: &HubRef,
    options: &Options,
    progress: ProgressFn<'_>,
) -> Result<Resolved, HubError> {
    let hub = Hub::new(options.hub.clone())?;
    let (repo, revision) = (reference.repo.as_str(), reference.revision.as_str());
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        hub.block_on(hub.commit_of(repo, revision))?
    };
    let listing = hub.block_on(hub.list_files(repo, &commit))?;
    let names: Vec<String> = listing.iter().map(|f| f.path.clone()).collect();
    let (files, is_checkpoint) = pick(reference, &names)?;
    let cache = &options.cache;
    cache.tag_cache_dir();
    cache.write_ref(repo, revision, &commit)?;
    check_space_for(cache, repo, &commit, &files, &listing)?;
    for file in &files {
        fetch_file(&hub, cache, repo, &commit, file, progress)?;
    }
    Ok(resolved(cache, reference, commit, files, is_checkpoint))
}

/// The repository files `reference` names among `files`, and whether they are a checkpoint.
pub(crate) fn pick(reference: &HubRef, files: &[String]) -> Result<(Vec<String>, bool), HubError> {
    let repo = &reference.repo;
    match &reference.file {
        RepoFile::Path(path) => {
            if !files.contains(path) {
                return Err(HubError::EntryNotFound {
                    repo: repo.clone(),
                    revision: reference.revision.clone(),
                    file: path.clone(),
                });
            }
            Ok((with_split_parts(repo, path, files)?, false))
        }
        RepoFile::Quant(tag) => {
            let has_gguf = files
                .iter()
                .any(|f| f.to_ascii_lowercase().ends_with(".gguf"));
            if !has_gguf && is_checkpoint(files) {
                if !tag.eq_ignore_ascii_case(DEFAULT_QUANT) {
                    return Err(HubError::Other(format!(
                        "{repo} is a safetensors checkpoint, not GGUF files: it has no quant '{tag}' (name it without ':{tag}')"
                    )));
                }
                return Ok((checkpoint_files(files), true));
            }
            if !has_gguf {
                return Err(HubError::NothingToLoad {
                    repo: repo.clone(),
                    revision: reference.revision.clone(),
                    files: files.to_vec(),
                });
            }
            Ok((choose_files(repo, files, tag)?, false))
        }
    }
}

/// A split set's part named directly brings every part of its set (the loader opens the first).
fn with_split_parts(repo: &str, path: &str, files: &[String]) -> Result<Vec<String>, HubError> {
    let (dir, base) = path.rsplit_once('/').map_or(("", path), |(d, b)| (d, b));
    let Some(part) = split_part(base) else {
        return Ok(vec![path.to_string()]);
    };
    (1..=part.count)
        .map(|i| {
            let name = part_name(&part.prefix, i, part.count);
            let full = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if files.contains(&full) {
                Ok(full)
            } else {
                Err(crate::quant::QuantChoiceError::IncompleteSplit {
                    repo: repo.into(),
                    first: path.into(),
                    missing: i,
                    count: part.count,
                }
                .into())
            }
        })
        .collect()
}

fn is_checkpoint(files: &[String]) -> bool {
    files.iter().any(|f| f == "config.json") && files.iter().any(|f| is_top_safetensors(f))
}

fn is_top_safetensors(f: &str) -> bool {
    !f.contains('/') && f.ends_with(".safetensors")
}

fn checkpoint_files(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter(|f| CHECKPOINT_FILES.contains(&f.as_str()) || is_top_safetensors(f))
        .cloned()
        .collect()
}

fn resolved(
    cache: &Cache,
    reference: &HubRef,
    commit: String,
    files: Vec<String>,
    is_checkpoint: bool,
) -> Resolved {
    let path = if is_checkpoint {
        cache.snapshot_dir(&reference.repo, &commit)
    } else {
        cache.pointer_path(&reference.repo, &commit, &files[0])
    };
    Resolved {
        path,
        repo: reference.repo.clone(),
        commit,
        files,
    }
}

/// Refuses to start downloads that the disk cannot hold (what is not cached yet, in all).
fn check_space_for(
    cache: &Cache,
    repo: &str,
    commit: &str,
    files: &[String],
    listing: &[RemoteFile],
) -> Result<(), HubError> {
    let needed: u64 = listing
        .iter()
        .filter(|f| files.contains(&f.path) && !cache.pointer_path(repo, commit, &f.path).exists())
        .map(|f| f.size)
        .sum();
    let blobs = cache.repo_dir(repo).join("blobs");
    std::fs::create_dir_all(&blobs).map_err(HubError::io(&blobs))?;
    crate::download::check_space(&blobs.join("x"), needed)
}

/// A reference from the cache alone (`HF_HUB_OFFLINE`): the commit from `refs/<revision>`, the
/// files from that snapshot; an error naming what is missing.
pub fn resolve_cached(reference: &HubRef, cache: &Cache) -> Result<Resolved, HubError> {
    let (repo, revision) = (&reference.repo, &reference.revision);
    let missing = |what: String| HubError::NotCached {
        what,
        cache: cache.root().to_path_buf(),
    };
    let commit = cache.commit_of(repo, revision).ok_or_else(|| {
        missing(format!(
            "{repo}@{revision} (no refs/{revision} in {})",
            cache.repo_dir(repo).display()
        ))
    })?;
    let cached = cache.snapshot_files(repo, &commit);
    let (files, is_checkpoint) = pick(reference, &cached).map_err(|e| {
        missing(format!(
            "{} ({e}, in the snapshot of {commit})",
            describe(reference)
        ))
    })?;
    if let Some(absent) = files
        .iter()
        .find(|f| !cache.pointer_path(repo, &commit, f).exists())
    {
        return Err(missing(format!(
            "{repo}@{revision}: {absent} (its snapshot link is broken)"
        )));
    }
    Ok(resolved(cache, reference, commit, files, is_checkpoint))
}

/// The reference as the user wrote it.
pub fn describe(reference: &HubRef) -> String {
    let at = if reference.revision == "main" {
        String::new()
    } else {
        format!("@{}", reference.revision)
    };
    match &reference.file {
        RepoFile::Quant(tag) => format!("{}:{tag}{at}", reference.repo),
        RepoFile::Path(path) => format!("{}/{path}{at}", reference.repo),
    }
}
