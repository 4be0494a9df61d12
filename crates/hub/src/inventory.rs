//! What the cache holds (`frugal list`) and taking models out of it (`frugal rm`): snapshot
//! entries first, then the blobs no snapshot points at any more, then refs to emptied snapshots.

use crate::cache::Cache;
use crate::error::HubError;
use crate::reference::{HubRef, RepoFile};
use crate::resolve::pick;
use frugal_formats::split::split_part;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// One model in the cache: a GGUF file or split set, or a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CachedModel {
    pub repo: String,
    pub commit: String,
    /// The branches and tags last fetched at this commit.
    pub revisions: Vec<String>,
    /// The path inside the repository (a split set's first part; empty for a checkpoint).
    pub file: String,
    /// Files it is made of (the parts of a split set, a checkpoint's files).
    pub files: usize,
    pub size: u64,
    /// What to load: the file, or the checkpoint's snapshot directory.
    pub path: PathBuf,
    /// The quant tag its file name carries (`Q4_K_M`, `BF16`, …), if any.
    pub quant: Option<String>,
}

/// Every model in the cache, by repository, commit and file.
pub fn list(cache: &Cache) -> Vec<CachedModel> {
    let mut models = Vec::new();
    for (repo, repo_dir) in repos(cache) {
        let refs = refs_by_commit(&repo_dir);
        for commit in dir_names(&repo_dir.join("snapshots")) {
            let files = cache.snapshot_files(&repo, &commit);
            let revisions = refs.get(&commit).cloned().unwrap_or_default();
            let entry = |file: String, parts: Vec<&String>, path: PathBuf| CachedModel {
                repo: repo.clone(),
                commit: commit.clone(),
                revisions: revisions.clone(),
                quant: quant_of_name(&file),
                files: parts.len(),
                size: parts
                    .iter()
                    .map(|p| file_size(&cache.pointer_path(&repo, &commit, p)))
                    .sum(),
                file,
                path,
            };
            for (first, parts) in gguf_models(&files) {
                let path = cache.pointer_path(&repo, &commit, &first);
                models.push(entry(first, parts, path));
            }
            if !files.iter().any(|f| f.ends_with(".gguf")) && !files.is_empty() {
                let all: Vec<&String> = files.iter().collect();
                models.push(entry(
                    String::new(),
                    all,
                    cache.snapshot_dir(&repo, &commit),
                ));
            }
        }
    }
    models
}

/// The GGUF models of a snapshot: each single file, and each split set once (by its first part).
fn gguf_models(files: &[String]) -> BTreeMap<String, Vec<&String>> {
    let mut models: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for f in files
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
    {
        let (dir, base) = f.rsplit_once('/').map_or(("", f.as_str()), |(d, b)| (d, b));
        let key = match split_part(base) {
            Some(p) => {
                let first = frugal_formats::split::part_name(&p.prefix, 1, p.count);
                if dir.is_empty() {
                    first
                } else {
                    format!("{dir}/{first}")
                }
            }
            None => f.clone(),
        };
        models.entry(key).or_default().push(f);
    }
    models
}

/// `(ORG/REPO, folder)` for every repository folder of the cache.
fn repos(cache: &Cache) -> Vec<(String, PathBuf)> {
    dir_names(cache.root())
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix("models--")?;
            let repo = rest.replacen("--", "/", 1);
            Some((repo, cache.root().join(&name)))
        })
        .collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Commit → the refs (branches, tags, `refs/pr/N`) recorded at it.
fn refs_by_commit(repo_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let refs = repo_dir.join("refs");
    let mut names = Vec::new();
    walk_files(&refs, "", &mut names);
    for name in names {
        if let Ok(commit) = std::fs::read_to_string(refs.join(&name)) {
            out.entry(commit.trim().to_string()).or_default().push(name);
        }
    }
    out
}

fn walk_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_files(&e.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The quant tag a GGUF file name carries: a `-`/`.`/`/`-separated word that is a ggml type
/// name (`Q4_K_M`, `IQ2_XXS`, `TQ1_0`, `F16`, `BF16`, `MXFP4`, …).
pub fn quant_of_name(path: &str) -> Option<String> {
    path.split(['-', '.', '/'])
        .rev()
        .map(str::to_ascii_uppercase)
        .find(|w| is_quant_word(w))
}

fn is_quant_word(w: &str) -> bool {
    if matches!(w, "F16" | "F32" | "BF16" | "MXFP4" | "MXFP4_MOE") {
        return true;
    }
    let core = w
        .strip_prefix("IQ")
        .or_else(|| w.strip_prefix("TQ"))
        .or_else(|| w.strip_prefix('Q'));
    core.is_some_and(|c| {
        c.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// What `remove` took out of the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// `COMMIT/PATH` of every snapshot entry removed (or the repository folder, when all of it).
    pub entries: Vec<String>,
    /// Blobs deleted, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    /// Whether the repository is gone from the cache altogether.
    pub repo_gone: bool,
}

/// Removes a whole repository from the cache.
pub fn remove_repo(cache: &Cache, repo: &str) -> Result<Removed, HubError> {
    let dir = cache.repo_dir(repo);
    if !dir.is_dir() {
        return Err(not_cached(cache, repo.to_string()));
    }
    let blob_paths = list_blobs(&dir);
    let bytes = blob_paths.iter().map(|b| file_size(b)).sum();
    std::fs::remove_dir_all(&dir).map_err(HubError::io(&dir))?;
    let _ = std::fs::remove_dir_all(
        cache
            .root()
            .join(".locks")
            .join(Cache::repo_folder_name(repo)),
    );
    Ok(Removed {
        entries: vec![dir.display().to_string()],
        blobs: blob_paths.len(),
        bytes,
        repo_gone: true,
    })
}

/// Removes the files a quant tag or file path names: from every snapshot when the reference is
/// at `main` (the default), else from the snapshot of its revision.
pub fn remove_files(cache: &Cache, reference: &HubRef) -> Result<Removed, HubError> {
    let repo = &reference.repo;
    let dir = cache.repo_dir(repo);
    let commits = if reference.revision == "main" {
        dir_names(&dir.join("snapshots"))
    } else {
        cache
            .commit_of(repo, &reference.revision)
            .into_iter()
            .collect()
    };
    let mut removed = Removed::default();
    for commit in &commits {
        let files = cache.snapshot_files(repo, commit);
        let Ok((chosen, _)) = pick(reference, &files) else {
            continue;
        };
        for file in chosen {
            let pointer = cache.pointer_path(repo, commit, &file);
            std::fs::remove_file(&pointer).map_err(HubError::io(&pointer))?;
            removed.entries.push(format!("{commit}/{file}"));
        }
        prune_snapshot(cache, repo, commit)?;
    }
    if removed.entries.is_empty() {
        return Err(not_cached(cache, crate::resolve::describe(reference)));
    }
    collect_garbage(cache, repo, &mut removed)?;
    Ok(removed)
}

fn not_cached(cache: &Cache, what: String) -> HubError {
    HubError::Other(format!(
        "{what} is not in the cache {}",
        cache.root().display()
    ))
}

/// Removes the empty folders of a snapshot; an empty snapshot goes with the refs to it.
fn prune_snapshot(cache: &Cache, repo: &str, commit: &str) -> Result<(), HubError> {
    let snapshot = cache.snapshot_dir(repo, commit);
    remove_empty_dirs(&snapshot);
    if snapshot.exists() {
        return Ok(());
    }
    let refs = cache.repo_dir(repo).join("refs");
    for (at, names) in refs_by_commit(&cache.repo_dir(repo)) {
        if at == commit {
            for name in names {
                let path = refs.join(&name);
                std::fs::remove_file(&path).map_err(HubError::io(&path))?;
            }
        }
    }
    remove_empty_dirs(&refs);
    Ok(())
}

/// Removes `dir` and the folders under it that hold no files (bottom up).
fn remove_empty_dirs(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir); // fails, as it should, when something is left
}

/// Deletes the blobs no snapshot points at; the repository folder too when no snapshot is left.
fn collect_garbage(cache: &Cache, repo: &str, removed: &mut Removed) -> Result<(), HubError> {
    let dir = cache.repo_dir(repo);
    let mut used = HashSet::new();
    for commit in dir_names(&dir.join("snapshots")) {
        for file in cache.snapshot_files(repo, &commit) {
            let pointer = cache.pointer_path(repo, &commit, &file);
            if let Ok(target) = std::fs::canonicalize(&pointer) {
                used.insert(target);
            }
        }
    }
    for blob in list_blobs(&dir) {
        let real = std::fs::canonicalize(&blob).unwrap_or(blob.clone());
        if !used.contains(&real) {
            removed.bytes += file_size(&blob);
            removed.blobs += 1;
            std::fs::remove_file(&blob).map_err(HubError::io(&blob))?;
        }
    }
    if dir_names(&dir.join("snapshots")).is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(
            cache
                .root()
                .join(".locks")
                .join(Cache::repo_folder_name(repo)),
        );
        removed.repo_gone = true;
    }
    Ok(())
}

/// The finished blobs of a repository folder (downloads in progress are not blobs yet).
fn list_blobs(repo_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo_dir.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|x| x != "incomplete"))
        .collect()
}

/// Whether `reference` names a whole repository: no quant tag and no file.
pub fn names_whole_repo(text: &str, reference: &HubRef) -> bool {
    let before_rev = text.rsplit_once('@').map_or(text, |(r, _)| r);
    matches!(reference.file, RepoFile::Quant(_)) && !before_rev.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_tags_from_file_names() {
        assert_eq!(
            quant_of_name("Qwen3-8B-Q4_K_M.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(
            quant_of_name("Q8_0/m-Q8_0-00001-of-00002.gguf").as_deref(),
            Some("Q8_0")
        );
        assert_eq!(
            quant_of_name("x-UD-IQ2_XXS.gguf").as_deref(),
            Some("IQ2_XXS")
        );
        assert_eq!(quant_of_name("gemma-bf16.gguf").as_deref(), Some("BF16"));
        assert_eq!(quant_of_name("model.gguf"), None);
        assert_eq!(quant_of_name("Qwen3-8B.gguf"), None);
    }
}
