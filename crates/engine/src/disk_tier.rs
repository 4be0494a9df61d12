//! The engine's side of the prefix cache's disk tier ([`frugal_diskcache`]): before a prompt is
//! queued, the blocks of its prefix that RAM lacks but the disk has are read into the KV store
//! and registered in the RAM cache (so admission finds them there); after each step, the blocks
//! that entered the RAM cache, and the recurrent-state snapshots the step took (hybrid models),
//! are copied out for the disk writer before anything can reuse their memory.
//!
//! A hybrid model resumes a prefix only where a state snapshot ends it, so its prompts read
//! blocks only up to the longest prefix whose snapshot is in RAM or on disk; a model with
//! sliding-window layers also needs those layers' blocks of the window before the resume point,
//! which are kept and read like the others, under keys of their own. Requests that opt
//! out of caching (`cache_prompt: false`) neither read nor write. A draft model's or MTP head's
//! keys for a block read from disk are not restored: its guesses there are worse, never wrong
//! (verification decides).

use frugal_diskcache::DiskCache;
use frugal_models::BlockGroup::{Full, Window};
use frugal_models::KvStore;
use frugal_scheduler::{chain_hashes, private_seed, Scheduler, SeqId, Step};
use std::collections::HashSet;

pub(crate) struct DiskTier {
    cache: DiskCache,
    /// Seeds of running sequences that opted out: their blocks are never written.
    private: HashSet<u64>,
}

/// Prompt tokens a fill found in RAM and read from disk.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Filled {
    pub in_ram: usize,
    pub from_disk: usize,
}

/// The disk key of the state snapshot after the prefix `hash` (block files use the hash itself).
fn state_key(hash: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&hash.to_le_bytes(), 0x5354)
}

/// The disk key of the sliding-window layers' block of the prefix `hash`.
fn window_key(hash: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&hash.to_le_bytes(), 0x574e)
}

impl DiskTier {
    pub fn new(cache: DiskCache) -> DiskTier {
        DiskTier {
            cache,
            private: HashSet::new(),
        }
    }

    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// A sequence with `seed` that opted out of caching starts (`true`) or ends.
    pub fn set_private(&mut self, seed: u64, running: bool) {
        if running {
            self.private.insert(seed);
        } else {
            self.private.remove(&seed);
        }
    }

    /// Reads into `kv` (and the RAM cache) the blocks of `prompt`'s prefix that only the disk
    /// has, up to the first it lacks or the first that fails its checks (for hybrid models, up
    /// to the longest prefix with a state snapshot, which is read too).
    pub fn fill(
        &self,
        scheduler: &mut Scheduler,
        kv: &mut KvStore,
        prompt: &[u32],
        seed: u64,
    ) -> Filled {
        let bs = kv.block_size();
        // A hybrid model's prompt is read only up to the snapshot it can resume from (the
        // prefix plus one token: `import_prefix` leaves the last token out).
        let end = match kv.has_states() {
            true => {
                let hashes = chain_hashes(seed, bs, &prompt[..prompt.len().saturating_sub(1)]);
                let n = self.restore_snapshot(scheduler, kv, &hashes);
                (n * bs + 1).min(prompt.len())
            }
            false => prompt.len(),
        };
        let len = kv.block_bytes(Full);
        let prefix = &prompt[..end];
        let (in_ram, from_disk) = scheduler.import_prefix(prefix, seed, &mut |hash, tokens, b| {
            self.cache
                .load(hash, tokens, len)
                .is_some_and(|payload| kv.write_block(Full, b, &payload))
        });
        let len = kv.block_bytes(Window);
        scheduler.import_window(prompt, seed, in_ram + from_disk, &mut |hash, tokens, b| {
            self.cache
                .load(window_key(hash), tokens, len)
                .is_some_and(|payload| kv.write_block(Window, b, &payload))
        });
        Filled {
            in_ram: in_ram * bs,
            from_disk: from_disk * bs,
        }
    }

    /// Makes sure the longest prefix (of blocks with `hashes`) that has a state snapshot in RAM
    /// or on disk has it in RAM; returns its length in blocks (0: none).
    fn restore_snapshot(
        &self,
        scheduler: &mut Scheduler,
        kv: &mut KvStore,
        hashes: &[u64],
    ) -> usize {
        let len = kv.state_bytes();
        for (i, &h) in hashes.iter().enumerate().rev() {
            if scheduler.has_snapshot(h) {
                return i + 1;
            }
            let key = state_key(h);
            if !self.cache.contains(key) {
                continue;
            }
            let restored = scheduler.import_snapshot(h, &mut |slot| {
                self.cache
                    .load(key, &[], len)
                    .is_some_and(|payload| kv.write_state(slot, &payload))
            });
            if restored {
                return i + 1;
            }
        }
        0
    }

    /// Hands the blocks that entered the RAM cache since the last call, and the state snapshots
    /// `step` took, to the disk writer.
    pub fn keep(&self, scheduler: &mut Scheduler, kv: &KvStore, step: &Step) {
        let (full, window) = scheduler.take_commits();
        for (group, commits) in [(Full, full), (Window, window)] {
            let len = kv.block_bytes(group);
            for c in commits {
                let key = match group {
                    Full => c.hash,
                    Window => window_key(c.hash),
                };
                if self.private.contains(&c.seed) || !self.cache.wants(key, len) {
                    continue;
                }
                let mut payload = Vec::with_capacity(len);
                kv.read_block(group, c.block, &mut payload);
                self.cache.store(key, c.tokens, payload);
            }
        }
        let len = kv.state_bytes();
        for (id, hash, slot) in step.snapshots_taken() {
            let key = state_key(hash);
            if self.is_private(id) || !self.cache.wants(key, len) {
                continue;
            }
            let mut payload = Vec::with_capacity(len);
            kv.read_state(slot, &mut payload);
            self.cache.store(key, Vec::new(), payload);
        }
    }

    fn is_private(&self, id: SeqId) -> bool {
        self.private.contains(&private_seed(id))
    }
}
