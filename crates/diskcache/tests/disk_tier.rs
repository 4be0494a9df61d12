//! The disk tier as a user of it sees it: blocks survive a restart, damaged or foreign files are
//! never used, the directory stays within its budget (least recently used out first), two
//! processes can share it, and a full disk pauses writing without failing anything.

use frugal_diskcache::{fingerprint, DiskCache};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const BS: usize = 4;

fn tokens(hash: u64) -> Vec<u32> {
    (0..BS as u32).map(|i| hash as u32 ^ i).collect()
}

fn payload(hash: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (hash as usize * 31 + i) as u8).collect()
}

fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("frugal-diskcache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(root: &Path, max_bytes: u64) -> DiskCache {
    DiskCache::open(
        root,
        fingerprint(&[b"model", b"f16"]),
        "test model",
        max_bytes,
    )
    .unwrap()
}

fn store(c: &DiskCache, hash: u64, len: usize) {
    assert!(c.wants(hash, len));
    c.store(hash, tokens(hash), payload(hash, len));
}

fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        if sub.path().is_dir() {
            out.extend(
                std::fs::read_dir(sub.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
    }
    out
}

#[test]
fn blocks_are_read_back_after_a_restart() {
    let root = temp_root("restart");
    let c = open(&root, 1 << 20);
    for h in 1..=5 {
        store(&c, h, 1000);
    }
    c.flush();
    assert!(!c.wants(3, 1000), "a block on disk is not written again");
    let dir = c.dir().to_path_buf();
    drop(c);
    let c = open(&root, 1 << 20);
    assert_eq!(c.dir(), dir);
    for h in 1..=5 {
        assert_eq!(c.load(h, &tokens(h), 1000), Some(payload(h, 1000)));
    }
    assert_eq!(c.load(6, &tokens(6), 1000), None);
    let s = c.stats();
    assert_eq!((s.blocks_read, s.files), (5, 5));
    // Files are the user's alone.
    for f in block_files(&dir) {
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Another model (or KV type) has a directory of its own.
    let other = DiskCache::open(&root, fingerprint(&[b"model", b"bf16"]), "", 1 << 20).unwrap();
    assert_eq!(other.load(1, &tokens(1), 1000), None);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn damaged_truncated_and_foreign_files_are_removed_never_used() {
    let root = temp_root("damage");
    let c = open(&root, 1 << 20);
    for h in 1..=4 {
        store(&c, h, 500);
    }
    c.flush();
    let mut files = block_files(c.dir());
    files.sort();
    // Flip a byte, cut a file short, empty one, and copy one block's file over another's name.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&files[0], bytes).unwrap();
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() - 9]).unwrap();
    std::fs::write(&files[2], b"").unwrap();
    std::fs::copy(&files[3], &files[2]).unwrap();
    let mut used = 0;
    for h in 1..=4 {
        if let Some(p) = c.load(h, &tokens(h), 500) {
            assert_eq!(p, payload(h, 500));
            used += 1;
        }
    }
    assert_eq!(used, 1, "only the untouched block is used");
    assert_eq!(c.stats().blocks_rejected, 3);
    assert_eq!(block_files(c.dir()).len(), 1, "rejected files are removed");
    // Tokens other than the block's (a hash collision) are refused too.
    store(&c, 9, 500);
    c.flush();
    assert_eq!(c.load(9, &[7, 7, 7, 7], 500), None);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_directory_keeps_to_its_budget_least_recently_used_out_first() {
    let root = temp_root("lru");
    let len = 10_000;
    let c = open(&root, 20 * len as u64);
    for h in 0..10 {
        store(&c, h, len);
    }
    c.flush();
    // Block 0 is read, so it is younger than 1..10.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(c.load(0, &tokens(0), len).is_some());
    for h in 10..40 {
        store(&c, h, len);
        c.flush();
    }
    let s = c.stats();
    assert!(s.bytes <= 20 * len as u64 + 200, "{s:?}");
    assert!(
        c.load(39, &tokens(39), len).is_some(),
        "the newest block stays"
    );
    assert!(
        c.load(1, &tokens(1), len).is_none(),
        "an old unused block went"
    );
    // On disk as the index says.
    let on_disk: u64 = block_files(c.dir())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(on_disk, c.stats().bytes);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn two_processes_sharing_a_directory_only_ever_read_whole_blocks() {
    let root = temp_root("shared");
    let len = 4096;
    let (a, b) = (open(&root, 30 * len as u64), open(&root, 30 * len as u64));
    std::thread::scope(|s| {
        for (c, seed) in [(&a, 1u64), (&b, 2)] {
            s.spawn(move || {
                for i in 0..300u64 {
                    let h = (i * 7 + seed) % 64;
                    if c.wants(h, len) {
                        c.store(h, tokens(h), payload(h, len));
                    }
                    if let Some(p) = c.load((h + 3) % 64, &tokens((h + 3) % 64), len) {
                        assert_eq!(p, payload((h + 3) % 64, len));
                    }
                }
                c.flush();
            });
        }
    });
    assert_eq!(a.stats().blocks_rejected + b.stats().blocks_rejected, 0);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_writer_killed_mid_file_leaves_nothing_that_is_used() {
    let root = temp_root("killed");
    let c = open(&root, 1 << 20);
    store(&c, 1, 100);
    c.flush();
    let sub = block_files(c.dir())[0].parent().unwrap().to_path_buf();
    drop(c);
    // What a process killed during a write leaves: a temporary file of a dead pid.
    let stale = sub.join(".tmp.999999999.0");
    std::fs::write(&stale, b"half a block").unwrap();
    let c = open(&root, 1 << 20);
    assert!(!stale.exists(), "a dead writer's temporary file is removed");
    assert_eq!(c.load(1, &tokens(1), 100), Some(payload(1, 100)));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_full_disk_pauses_writing_and_fails_nothing() {
    let Some(fs) = frugal_fixtures::Tmpfs::mount("full-disk", "256k") else {
        eprintln!("skipped: this machine cannot mount a tmpfs (not root)");
        return;
    };
    let len = 16 << 10;
    // A budget far beyond the disk: the disk fills first.
    let c = open(fs.path(), 1 << 30);
    let mut offered = 0;
    for h in 0..64 {
        if c.wants(h, len) {
            c.store(h, tokens(h), payload(h, len));
            offered += 1;
        }
        c.flush();
    }
    let s = c.stats();
    assert!(s.write_errors > 0 && !c.is_writing(), "{s:?}");
    assert!(offered < 64, "offers stop while writing is paused");
    // What was written is still read back whole.
    let mut read = 0;
    for h in 0..64 {
        if let Some(p) = c.load(h, &tokens(h), len) {
            assert_eq!(p, payload(h, len));
            read += 1;
        }
    }
    assert_eq!(read as u64, s.blocks_written);
    assert!(read > 0);
}
