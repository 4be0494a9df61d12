//! What a cache directory holds, for keeping it under its size budget: each block file's size
//! and last use (its modification time, set again when it is read), the least recently used
//! removed first.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the file of the block with prefix hash `hash` lives: 256 subdirectories by the top
/// byte, so that no directory grows huge.
pub fn block_path(dir: &Path, hash: u64) -> PathBuf {
    dir.join(format!("{:02x}", hash >> 56))
        .join(format!("{hash:016x}.kv"))
}

/// The hash a block file's name says, if it is one.
fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".kv")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Prefix of the temporary files blocks are written to before their rename:
/// `.tmp.<pid>.<writer>.<n>`.
pub const TMP_PREFIX: &str = ".tmp.";

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    used: SystemTime,
}

#[derive(Debug, Default)]
pub struct Index {
    files: HashMap<u64, Entry>,
    total: u64,
}

impl Index {
    /// What `dir` holds now. Temporary files that a dead process left behind (killed while
    /// writing) are removed; other processes' files in progress are left alone.
    pub fn scan(dir: &Path) -> Index {
        let mut index = Index::default();
        let Ok(subdirs) = fs::read_dir(dir) else {
            return index;
        };
        for sub in subdirs.flatten().filter(|e| e.path().is_dir()) {
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Ok(meta) = f.metadata() else { continue };
                if let Some(hash) = parse_name(&name) {
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    index.insert(hash, meta.len(), used);
                } else if name.starts_with(TMP_PREFIX) && abandoned(&name, &meta) {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        index
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.files.contains_key(&hash)
    }

    pub fn insert(&mut self, hash: u64, size: u64, used: SystemTime) {
        self.remove(hash);
        self.files.insert(hash, Entry { size, used });
        self.total += size;
    }

    pub fn touch(&mut self, hash: u64, used: SystemTime) {
        if let Some(e) = self.files.get_mut(&hash) {
            e.used = used;
        }
    }

    pub fn remove(&mut self, hash: u64) {
        if let Some(e) = self.files.remove(&hash) {
            self.total -= e.size;
        }
    }

    /// Bytes of the block files.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Removes least recently used files until at most `target` bytes remain; returns how
    /// many went.
    pub fn evict_to(&mut self, dir: &Path, target: u64) -> usize {
        if self.total <= target {
            return 0;
        }
        let mut by_age: Vec<(SystemTime, u64)> =
            self.files.iter().map(|(&h, e)| (e.used, h)).collect();
        by_age.sort_unstable();
        let mut n = 0;
        for (_, hash) in by_age {
            if self.total <= target {
                break;
            }
            // Already gone (another process evicted it) is as good as removed.
            let _ = fs::remove_file(block_path(dir, hash));
            self.remove(hash);
            n += 1;
        }
        n
    }
}

/// Whether a temporary file's writer is gone: its process no longer exists (Linux), or, where
/// that cannot be told, it has not been touched for an hour.
fn abandoned(name: &str, meta: &fs::Metadata) -> bool {
    let pid = name[TMP_PREFIX.len()..].split('.').next().unwrap_or("");
    let proc = Path::new("/proc");
    if proc.join("self").exists() && !pid.is_empty() {
        return !proc.join(pid).exists();
    }
    meta.modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hash in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let p = block_path(Path::new("/x"), hash);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_name(name), Some(hash));
        }
        assert_eq!(parse_name("zz.kv"), None);
        assert_eq!(parse_name(".tmp.1.2.3"), None);
    }
}
