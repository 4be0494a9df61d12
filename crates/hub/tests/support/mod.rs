//! What the download tests share: the fake Hub, a temporary cache, options pointing at both.

pub mod fake_hub;

use frugal_hub::{Cache, HubConfig, Options};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("frugal-hub-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for `endpoint` with the cache in `cache`: short timeouts, quick retries.
pub fn options(endpoint: &str, cache: &Path) -> Options {
    Options {
        cache: Cache::new(cache),
        hub: HubConfig {
            endpoint: endpoint.to_string(),
            token: None,
            offline: false,
            request_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(2),
            retries: 2,
            retry_delay: Duration::from_millis(10),
        },
    }
}

/// `len` bytes that differ from file to file (`seed`).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
