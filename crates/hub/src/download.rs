//! One file of a repository into the cache: its metadata, the blob downloaded under the blob's
//! lock file into `<etag>.incomplete` (resumed from its length), checked (size, and SHA-256 when
//! the etag is the LFS sha256), renamed into place and linked from the snapshot.

use crate::cache::Cache;
use crate::client::{FileMetadata, Hub, Subject};
use crate::error::HubError;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// How far the download of one file is.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The path inside the repository.
    pub file: &'a str,
    pub done: u64,
    pub total: u64,
}

/// Told of every file's progress (from the downloading thread).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress<'_>) + Sync);

/// Makes `snapshots/<commit>/<file>` point at the file's blob, downloading the blob unless some
/// snapshot already has it. Returns the snapshot path.
pub(crate) fn fetch_file(
    hub: &Hub,
    cache: &Cache,
    repo: &str,
    commit: &str,
    file: &str,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, HubError> {
    let pointer = cache.pointer_path(repo, commit, file);
    if pointer.exists() {
        return Ok(pointer);
    }
    let meta = hub.block_on(hub.file_metadata(repo, commit, file))?;
    let blob = cache.blob_path(repo, &meta.etag);
    for dir in [blob.parent(), pointer.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(HubError::io(dir))?;
    }
    let _lock = lock(&cache.lock_path(repo, &meta.etag))?;
    // Whoever held the lock before us may have fetched it.
    if !blob.exists() {
        let subject = Subject {
            repo,
            revision: commit,
            file: Some(file),
        };
        let incomplete = cache.incomplete_path(repo, &meta.etag);
        download_blob(hub, &meta, &incomplete, subject, progress)?;
        std::fs::rename(&incomplete, &blob).map_err(HubError::io(&blob))?;
    }
    cache.link(repo, commit, file, &meta.etag)?;
    Ok(pointer)
}

/// An exclusive `flock` on `path`, as `huggingface_hub`'s `filelock` takes it (released when the
/// file closes); waits for the holder.
fn lock(path: &Path) -> Result<File, HubError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(HubError::io(dir))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(HubError::io(path))?;
    file.lock().map_err(HubError::io(path))?;
    Ok(file)
}

/// Whether an etag is an LFS object id (a sha256 in hex), which the bytes must hash to.
fn is_sha256(etag: &str) -> bool {
    etag.len() == 64 && etag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Downloads the blob into `incomplete`, resuming what is there, until it has `meta.size` bytes
/// that hash to the etag (when it is a sha256). A bad download is removed.
fn download_blob(
    hub: &Hub,
    meta: &FileMetadata,
    incomplete: &Path,
    subject: Subject<'_>,
    progress: ProgressFn<'_>,
) -> Result<(), HubError> {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(incomplete)
        .map_err(HubError::io(incomplete))?;
    let have = out.metadata().map_err(HubError::io(incomplete))?.len();
    let have = if have > meta.size {
        out.set_len(0).map_err(HubError::io(incomplete))?;
        0
    } else {
        have
    };
    check_space(incomplete, meta.size - have)?;
    let mut hasher = is_sha256(&meta.etag).then(|| Hasher::start(incomplete, have));
    let result = fill(
        hub,
        meta,
        &mut out,
        incomplete,
        subject,
        hasher.as_mut(),
        progress,
    );
    let file = subject.file.unwrap_or_default();
    let checked = result.and_then(|got| {
        if got != meta.size {
            return Err(HubError::Size {
                file: file.into(),
                expected: meta.size,
                got,
            });
        }
        match hasher.map(Hasher::finish).transpose()? {
            Some(actual) if actual != meta.etag => Err(HubError::Checksum {
                file: file.into(),
                expected: meta.etag.clone(),
                actual,
            }),
            _ => Ok(()),
        }
    });
    if matches!(
        checked,
        Err(HubError::Checksum { .. } | HubError::Size { .. })
    ) {
        let _ = std::fs::remove_file(incomplete);
    }
    checked
}

/// Appends the rest of the file to `out`, resuming after a broken connection (up to
/// `retries` times without progress). Returns the length reached.
fn fill(
    hub: &Hub,
    meta: &FileMetadata,
    out: &mut File,
    path: &Path,
    subject: Subject<'_>,
    mut hasher: Option<&mut Hasher>,
    progress: ProgressFn<'_>,
) -> Result<u64, HubError> {
    let mut retries_left = hub.config.retries;
    loop {
        let have = out.metadata().map_err(HubError::io(path))?.len();
        progress(Progress {
            file: subject.file.unwrap_or_default(),
            done: have,
            total: meta.size,
        });
        if have >= meta.size {
            return Ok(have);
        }
        let before = have;
        match hub.block_on(stream_into(
            hub,
            meta,
            out,
            path,
            have,
            subject,
            hasher.as_deref_mut(),
            progress,
        )) {
            Ok(done) => return Ok(done),
            Err(e @ HubError::Network { .. }) => {
                let now = out.metadata().map_err(HubError::io(path))?.len();
                if now > before {
                    retries_left = hub.config.retries;
                }
                if retries_left == 0 {
                    return Err(e);
                }
                retries_left -= 1;
                std::thread::sleep(hub.config.retry_delay);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One `GET` from `offset`, its body appended to `out`. A server that ignores the range (200)
/// starts the file over.
#[allow(clippy::too_many_arguments)]
async fn stream_into(
    hub: &Hub,
    meta: &FileMetadata,
    out: &mut File,
    path: &Path,
    offset: u64,
    subject: Subject<'_>,
    mut hasher: Option<&mut Hasher>,
    progress: ProgressFn<'_>,
) -> Result<u64, HubError> {
    let response = hub.get_from(&meta.location, offset, subject).await?;
    let mut done = offset;
    if offset > 0 && response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        out.set_len(0).map_err(HubError::io(path))?;
        out.rewind().map_err(HubError::io(path))?;
        if let Some(h) = hasher.as_deref_mut() {
            h.reset();
        }
        done = 0;
    }
    let file = subject.file.unwrap_or_default();
    let mut body = response.bytes_stream();
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                writer.flush().map_err(HubError::io(path))?;
                if let Some(h) = hasher {
                    h.flush();
                }
                return Err(HubError::Network {
                    url: meta.location.clone(),
                    source: e,
                });
            }
        };
        if done + chunk.len() as u64 > meta.size {
            return Err(HubError::Size {
                file: file.into(),
                expected: meta.size,
                got: done + chunk.len() as u64,
            });
        }
        writer.write_all(&chunk).map_err(HubError::io(path))?;
        done += chunk.len() as u64;
        if let Some(h) = hasher.as_deref_mut() {
            h.feed(&chunk);
        }
        progress(Progress {
            file,
            done,
            total: meta.size,
        });
    }
    writer.flush().map_err(HubError::io(path))?;
    if let Some(h) = hasher {
        h.flush();
    }
    Ok(done)
}

/// SHA-256 on a thread of its own, so that hashing overlaps the download: it first reads
/// what an earlier attempt left in the file, then hashes what it is fed. The bytes are copied
/// into a few reused buffers of a few megabytes (handing over the network's chunks instead would
/// keep them alive, so that every read needed fresh memory), and the thread wakes once per
/// buffer, not once per read.
struct Hasher {
    sender: mpsc::SyncSender<HashInput>,
    /// Buffers the thread has hashed, back for reuse.
    spare: mpsc::Receiver<Vec<u8>>,
    batch: Vec<u8>,
    thread: std::thread::JoinHandle<Result<String, HubError>>,
}

enum HashInput {
    Bytes(Vec<u8>),
    /// The file starts over (the server ignored the range).
    Reset,
}

const HASH_BATCH: usize = 4 << 20;

impl Hasher {
    /// Hashes the first `have` bytes of `path` (an earlier attempt's), then what it is fed.
    fn start(path: &Path, have: u64) -> Hasher {
        let (sender, receiver) = mpsc::sync_channel::<HashInput>(4);
        let (give_back, spare) = mpsc::channel::<Vec<u8>>();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            let mut prefix = File::open(&path).map_err(HubError::io(&path))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut reader = (&mut prefix).take(have);
            loop {
                let n = reader.read(&mut buf).map_err(HubError::io(&path))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
            }
            for input in receiver {
                match input {
                    HashInput::Bytes(mut bytes) => {
                        sha.update(&bytes);
                        bytes.clear();
                        let _ = give_back.send(bytes);
                    }
                    HashInput::Reset => sha = Sha256::new(),
                }
            }
            Ok(hex(&sha.finalize()))
        });
        Hasher {
            sender,
            spare,
            batch: Vec::with_capacity(HASH_BATCH),
            thread,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.batch.extend_from_slice(bytes);
        if self.batch.len() >= HASH_BATCH {
            self.flush();
        }
    }

    /// Hands the batch over.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HASH_BATCH));
        let full = std::mem::replace(&mut self.batch, next);
        // A hasher that stopped (it failed reading) reports why in `finish`.
        let _ = self.sender.send(HashInput::Bytes(full));
    }

    fn reset(&mut self) {
        self.batch.clear();
        let _ = self.sender.send(HashInput::Reset);
    }

    fn finish(mut self) -> Result<String, HubError> {
        self.flush();
        drop(self.sender);
        self.thread
            .join()
            .map_err(|_| HubError::Other("the SHA-256 thread panicked".into()))?
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a download the disk cannot hold (`needed` more bytes next to `path`).
pub(crate) fn check_space(path: &Path, needed: u64) -> Result<(), HubError> {
    let dir = path.parent().unwrap_or(path);
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(()); // not knowable here: let the write fail if it must
    };
    // fsblkcnt_t and c_ulong are narrower than u64 on some platforms.
    #[allow(clippy::useless_conversion)]
    let available =
        u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    if available < needed {
        return Err(HubError::DiskFull {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_the_disk_cannot_hold_is_refused_before_it_starts() {
        let here = std::env::temp_dir().join("x");
        let e = check_space(&here, u64::MAX).unwrap_err();
        assert!(matches!(e, HubError::DiskFull { .. }), "{e}");
        assert!(e.to_string().contains("not enough disk space"), "{e}");
        check_space(&here, 1).unwrap();
    }

    #[test]
    fn only_lfs_etags_are_checksums() {
        assert!(is_sha256(&"ab".repeat(32)));
        assert!(!is_sha256(&"ab".repeat(20)));
        assert!(!is_sha256(&"AB".repeat(32)));
    }
}
