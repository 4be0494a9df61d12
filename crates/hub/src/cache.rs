//! The Hugging Face cache, laid out exactly as `huggingface_hub` lays it out, so that files
//! `hf download` or `transformers` fetched are reused here and the other way round:
//!
//! ```text
//! <cache>/models--ORG--REPO/blobs/<etag>                  the bytes (etag: LFS sha256 or git sha1)
//! <cache>/models--ORG--REPO/blobs/<etag>.incomplete       a download in progress (resumable)
//! <cache>/models--ORG--REPO/snapshots/<commit>/<path>     relative symlink to ../../blobs/<etag>
//! <cache>/models--ORG--REPO/refs/<revision>               the commit a branch or tag was at
//! <cache>/.locks/models--ORG--REPO/<etag>.lock            one download of a blob at a time
//! ```

use crate::error::HubError;
use std::path::{Path, PathBuf};

/// A Hugging Face cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// The environment variables that decide where things are, as `huggingface_hub` reads them.
pub fn hf_home() -> PathBuf {
    if let Some(home) = non_empty_env("HF_HOME") {
        return expand_home(&home);
    }
    let xdg = non_empty_env("XDG_CACHE_HOME")
        .map(|x| expand_home(&x))
        .unwrap_or_else(|| home_dir().join(".cache"));
    xdg.join("huggingface")
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_dir() -> PathBuf {
    non_empty_env("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `~` and `~/…` as Python's `os.path.expanduser` reads them.
fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix('~') {
        Some("") => home_dir(),
        Some(rest) if rest.starts_with('/') => home_dir().join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

/// Whether `revision` is a full commit hash (40 hex digits), which never moves.
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE` (the legacy name), else `$HF_HOME/hub`.
    pub fn from_env() -> Cache {
        let root = non_empty_env("HF_HUB_CACHE")
            .or_else(|| non_empty_env("HUGGINGFACE_HUB_CACHE"))
            .map_or_else(|| hf_home().join("hub"), |p| expand_home(&p));
        Cache { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--ORG--REPO`.
    pub fn repo_folder_name(repo: &str) -> String {
        format!("models--{}", repo.replace('/', "--"))
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(Cache::repo_folder_name(repo))
    }

    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    pub fn incomplete_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(Cache::repo_folder_name(repo))
            .join(format!("{etag}.lock"))
    }

    pub fn snapshot_dir(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// Where `file` (a path inside the repository) of `commit` is: a symlink to its blob.
    pub fn pointer_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        let mut p = self.snapshot_dir(repo, commit);
        p.extend(file.split('/'));
        p
    }

    /// The commit `revision` names here: itself if it is a commit, else what `refs/<revision>`
    /// recorded when it was last fetched.
    pub fn commit_of(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let commit = text.trim();
        (!commit.is_empty()).then(|| commit.to_string())
    }

    /// Records that `revision` is at `commit` (nothing for a commit itself), written to a
    /// temporary name and renamed so that a concurrent reader never sees half of it.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == commit) {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&path).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(HubError::io(&dir))?;
        // Unique per writer (process and call), as huggingface_hub's uuid suffix is.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_file_name(format!(
            "{}.{}-{n}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&tmp, commit).map_err(HubError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(HubError::io(&path))
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink, as
    /// `huggingface_hub` does (a cache moved elsewhere keeps working).
    pub fn link(&self, repo: &str, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.pointer_path(repo, commit, file);
        let dir = pointer.parent().unwrap_or(&pointer).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(HubError::io(&dir))?;
        // From snapshots/<commit>/<dirs…>/ back up to the repository folder.
        let depth = 2 + file.split('/').count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        match std::fs::remove_file(&pointer) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(HubError::io(&pointer)(e))
            }
            _ => {}
        }
        match symlink(&target, &pointer) {
            // Another process linked it between our remove and our link: the same blob is fine.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let same = std::fs::read_link(&pointer).is_ok_and(|t| t == target);
                if same {
                    Ok(())
                } else {
                    Err(HubError::io(&pointer)(e))
                }
            }
            other => other.map_err(HubError::io(&pointer)),
        }
    }

    /// Tags the cache folder so that backup tools skip it (the CACHEDIR.TAG standard), as
    /// `huggingface_hub` does; best effort.
    pub fn tag_cache_dir(&self) {
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = std::fs::create_dir_all(&self.root);
            let _ = std::fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n\
                 # This file is a cache directory tag created by huggingface_hub.\n\
                 # For information about cache directory tags see https://bford.info/cachedir/\n",
            );
        }
    }

    /// Every file of a snapshot, as paths inside the repository (`/`-separated), sorted.
    pub fn snapshot_files(&self, repo: &str, commit: &str) -> Vec<String> {
        let mut files = Vec::new();
        walk(&self.snapshot_dir(repo, commit), "", &mut files);
        files.sort();
        files
    }
}

/// Collects the file paths under `dir` (symlinks to files count as files).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel = format!("{prefix}{name}");
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // No symlinks: a copy of the blob, as huggingface_hub falls back to.
    let blob = link.parent().unwrap_or(link).join(target);
    std::fs::copy(blob, link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = Cache::new("/c");
        assert_eq!(
            Cache::repo_folder_name("Qwen/Qwen3-8B-GGUF"),
            "models--Qwen--Qwen3-8B-GGUF"
        );
        assert_eq!(
            c.blob_path("a/b", "e"),
            Path::new("/c/models--a--b/blobs/e")
        );
        assert_eq!(
            c.incomplete_path("a/b", "e"),
            Path::new("/c/models--a--b/blobs/e.incomplete")
        );
        assert_eq!(
            c.lock_path("a/b", "e"),
            Path::new("/c/.locks/models--a--b/e.lock")
        );
        assert_eq!(
            c.pointer_path("a/b", "c0", "d/f.gguf"),
            Path::new("/c/models--a--b/snapshots/c0/d/f.gguf")
        );
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }

    #[test]
    fn home_expansion() {
        assert_eq!(expand_home("/x/y"), Path::new("/x/y"));
        assert_eq!(expand_home("~/x"), home_dir().join("x"));
    }
}
