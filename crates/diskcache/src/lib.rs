//! The prefix cache's disk tier: full KV blocks kept in files, so that a prompt prefix seen
//! before (also before a restart) is read back instead of computed again.
//!
//! A cache root holds one directory per model fingerprint (see [`fingerprint`]: the model
//! file's header and tensor table, its size, and every setting that changes what a block
//! holds), and that directory one file per block, named by the block's prefix hash (the
//! chained hash of `frugal_kvcache`, which also covers the cache salt). Blocks are written by one
//! background thread, to a temporary name first and then renamed, so a reader (this process or
//! another sharing the directory) only ever sees whole files; each file carries its tokens and a
//! checksum and is used only when every check passes ([`file`]); one that fails is removed. The
//! directory is kept under its size budget by removing the least recently used files, under a
//! lock file, after a fresh look at what every process wrote. A full disk pauses writing, never
//! the caller.

#![forbid(unsafe_code)]

mod file;
mod index;

use index::{block_path, Index, TMP_PREFIX};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Bytes of blocks waiting for the writer at most; blocks offered beyond it are dropped rather
/// than held in memory (the engine never waits for the disk).
const MAX_BACKLOG: u64 = 256 << 20;
/// How long writing pauses after the disk said it is full.
const FULL_PAUSE: Duration = Duration::from_secs(60);

/// A fingerprint of everything that decides what a cached block holds, from its parts (each
/// part length-prefixed, so that no two different lists of parts collide by concatenation).
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&file::VERSION.to_le_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.digest()
}

/// Counters of the tier, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks read back (every check passed).
    pub blocks_read: u64,
    pub blocks_written: u64,
    /// Block files found damaged, foreign or truncated, and removed.
    pub blocks_rejected: u64,
    /// Blocks not written because the writer was behind or paused.
    pub blocks_dropped: u64,
    pub write_errors: u64,
    /// What this process knows the directory to hold.
    pub files: u64,
    pub bytes: u64,
}

/// The disk tier of one model's prefix cache.
pub struct DiskCache {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

enum Job {
    Store {
        hash: u64,
        tokens: Vec<u32>,
        payload: Vec<u8>,
    },
    Flush(mpsc::Sender<()>),
}

struct Shared {
    dir: PathBuf,
    fingerprint: u64,
    max_bytes: u64,
    state: Mutex<State>,
    backlog: AtomicU64,
    writing: AtomicBool,
    read: AtomicU64,
    written: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
}

struct State {
    index: Index,
    /// Blocks queued for the writer.
    pending: HashSet<u64>,
    /// Bytes written since the directory was last looked at as a whole.
    since_scan: u64,
    paused_until: Option<Instant>,
}

impl DiskCache {
    /// Opens (creating it, mode 0700) the directory of the model with `fingerprint` under
    /// `root`, keeping it under `max_bytes`. `about` is written beside the blocks for whoever
    /// looks at the directory (which model and settings it is for).
    pub fn open(root: &Path, fingerprint: u64, about: &str, max_bytes: u64) -> io::Result<Self> {
        let dir = root.join(format!("{fingerprint:016x}"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let about_path = dir.join("about.txt");
        if !about_path.exists() {
            write_atomically(&dir, &about_path, about.as_bytes())?;
        }
        let _lock = DirLock::take(&dir)?;
        let mut index = Index::scan(&dir);
        index.evict_to(&dir, max_bytes);
        let shared = Arc::new(Shared {
            dir,
            fingerprint,
            max_bytes,
            state: Mutex::new(State {
                index,
                pending: HashSet::new(),
                since_scan: 0,
                paused_until: None,
            }),
            backlog: AtomicU64::new(0),
            writing: AtomicBool::new(true),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("frugal-diskcache".into())
            .spawn(move || writer_shared.run(rx))?;
        Ok(DiskCache {
            shared,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// The model's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether a block of `len` payload bytes with prefix hash `hash` would be written if
    /// offered now (not on disk or queued already, writing not paused, room in the backlog):
    /// asked before copying a block out of the KV store.
    pub fn wants(&self, hash: u64, len: usize) -> bool {
        let mut st = self.shared.lock();
        if st.index.contains(hash) || st.pending.contains(&hash) {
            return false;
        }
        if st.paused_until.is_some_and(|t| Instant::now() < t) {
            self.shared.dropped.fetch_add(1, Relaxed);
            return false;
        }
        st.paused_until = None;
        if self.shared.backlog.load(Relaxed) + len as u64 > MAX_BACKLOG {
            self.shared.dropped.fetch_add(1, Relaxed);
            return false;
        }
        true
    }

    /// Whether this process knows of a file for `hash` (written or found at the last scan; it
    /// may still fail its checks when read).
    pub fn contains(&self, hash: u64) -> bool {
        self.shared.lock().index.contains(hash)
    }

    /// Queues a block for writing: `tokens` are the block's own, `payload` its keys and values.
    pub fn store(&self, hash: u64, tokens: Vec<u32>, payload: Vec<u8>) {
        let Some(jobs) = &self.jobs else { return };
        if !self.shared.lock().pending.insert(hash) {
            return;
        }
        self.shared.backlog.fetch_add(payload.len() as u64, Relaxed);
        let _ = jobs.send(Job::Store {
            hash,
            tokens,
            payload,
        });
    }

    /// The payload of the block with prefix hash `hash` whose tokens are `tokens`, if its file
    /// is there and passes every check (a file that does not is removed).
    pub fn load(&self, hash: u64, tokens: &[u32], payload_len: usize) -> Option<Vec<u8>> {
        let sh = &self.shared;
        let path = block_path(&sh.dir, hash);
        let Ok(bytes) = fs::read(&path) else {
            sh.lock().index.remove(hash);
            return None;
        };
        let want = file::Expected {
            fingerprint: sh.fingerprint,
            hash,
            tokens,
            payload_len,
        };
        match file::decode(&bytes, &want) {
            Ok(payload) => {
                let now = SystemTime::now();
                // The file's time is its place in the LRU order, across restarts too.
                let _ = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(now));
                sh.lock().index.touch(hash, now);
                sh.read.fetch_add(1, Relaxed);
                Some(payload.to_vec())
            }
            Err(why) => {
                tracing::warn!("disk cache: {}: {why}; removed", path.display());
                let _ = fs::remove_file(&path);
                sh.lock().index.remove(hash);
                sh.rejected.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Waits until every block queued so far is written (or given up on).
    pub fn flush(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (tx, rx) = mpsc::channel();
        if jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    pub fn stats(&self) -> Stats {
        let sh = &self.shared;
        let st = sh.lock();
        Stats {
            blocks_read: sh.read.load(Relaxed),
            blocks_written: sh.written.load(Relaxed),
            blocks_rejected: sh.rejected.load(Relaxed),
            blocks_dropped: sh.dropped.load(Relaxed),
            write_errors: sh.write_errors.load(Relaxed),
            files: st.index.len() as u64,
            bytes: st.index.total(),
        }
    }

    /// Whether blocks are being written (false while a full disk pauses writing).
    pub fn is_writing(&self) -> bool {
        self.shared.writing.load(Relaxed)
    }
}

impl Drop for DiskCache {
    /// Writes what is queued, then stops the writer.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the index inconsistent in a way that matters: at
        // worst it is off by a file until the next scan.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, jobs: mpsc::Receiver<Job>) {
        for job in jobs {
            match job {
                Job::Store {
                    hash,
                    tokens,
                    payload,
                } => {
                    self.write(hash, &tokens, &payload);
                    self.backlog.fetch_sub(payload.len() as u64, Relaxed);
                    self.lock().pending.remove(&hash);
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn write(&self, hash: u64, tokens: &[u32], payload: &[u8]) {
        if self.lock().paused_until.is_some_and(|t| Instant::now() < t) {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let bytes = file::encode(self.fingerprint, hash, tokens, payload);
        let path = block_path(&self.dir, hash);
        let sub = path.parent().expect("block files live in a subdirectory");
        let result = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(sub)
            .and_then(|()| write_atomically(sub, &path, &bytes));
        match result {
            Ok(()) => {
                self.writing.store(true, Relaxed);
                self.written.fetch_add(1, Relaxed);
                let over = {
                    let mut st = self.lock();
                    st.index.insert(hash, bytes.len() as u64, SystemTime::now());
                    st.since_scan += bytes.len() as u64;
                    st.index.total() > self.max_bytes || st.since_scan > self.max_bytes / 8
                };
                if over {
                    self.trim();
                }
            }
            Err(e) => self.write_failed(&path, &e),
        }
    }

    fn write_failed(&self, path: &Path, e: &io::Error) {
        self.write_errors.fetch_add(1, Relaxed);
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
        );
        if full {
            if self.writing.swap(false, Relaxed) {
                tracing::warn!(
                    "disk cache: {} is full ({e}); writing pauses (reading goes on)",
                    self.dir.display()
                );
            }
            self.lock().paused_until = Some(Instant::now() + FULL_PAUSE);
        } else {
            tracing::warn!("disk cache: writing {}: {e}", path.display());
        }
    }

    /// Looks at the whole directory again (other processes write to it too) and removes the
    /// least recently used blocks down to 90 % of the budget, under the directory's lock.
    fn trim(&self) {
        let Ok(_lock) = DirLock::take(&self.dir) else {
            return;
        };
        let mut index = Index::scan(&self.dir);
        index.evict_to(&self.dir, self.max_bytes / 10 * 9);
        let mut st = self.lock();
        st.index = index;
        st.since_scan = 0;
    }
}

/// Writes `bytes` to `path` through a temporary file in `dir` (mode 0600) and a rename, so the
/// file is either absent or whole.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// An exclusive lock on a cache directory (its `lock` file), held while the directory is
/// scanned and trimmed, so that two processes never trim at once.
struct DirLock(File);

impl DirLock {
    fn take(dir: &Path) -> io::Result<DirLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))?;
        f.lock()?;
        Ok(DirLock(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
