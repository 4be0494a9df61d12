//! The engine's side of the prefix cache's disk tier ([`frugal_diskcache`]): before a prompt is
//! queued, the blocks of its prefix that RAM lacks but the disk has are read into the KV store
//! and registered in the RAM cache (so admission finds them there); after each step, the blocks
//! that entered the RAM cache are copied out for the disk writer, before anything can evict
//! them.
//!
//! Requests that opt out of caching (`cache_prompt: false`) neither read nor write. A draft
//! model's or MTP head's keys for a block read from disk are not restored: its guesses there
//! are worse, never wrong (verification decides).

use frugal_diskcache::DiskCache;
use frugal_models::{KvStore, Model};
use frugal_scheduler::Scheduler;
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

impl DiskTier {
    /// The tier for `model`'s engine, or why the model cannot use one: a block alone does not
    /// resume a model with recurrent state (that needs a state snapshot) or sliding-window
    /// layers (their own block pool).
    pub fn new(model: &Model, cache: DiskCache) -> Result<DiskTier, String> {
        if model.state_bytes_per_seq() > 0 {
            return Err("the disk tier does not yet keep recurrent-state snapshots".into());
        }
        if model.sliding_window().is_some() {
            return Err("the disk tier does not yet keep sliding-window layers' blocks".into());
        }
        Ok(DiskTier {
            cache,
            private: HashSet::new(),
        })
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
    /// has, up to the first it lacks or the first that fails its checks.
    pub fn fill(
        &self,
        scheduler: &mut Scheduler,
        kv: &mut KvStore,
        prompt: &[u32],
        seed: u64,
    ) -> Filled {
        let len = kv.block_bytes();
        let (in_ram, from_disk) = scheduler.import_prefix(prompt, seed, &mut |hash, tokens, b| {
            self.cache
                .load(hash, tokens, len)
                .is_some_and(|payload| kv.write_block(b, &payload))
        });
        let bs = kv.block_size();
        Filled {
            in_ram: in_ram * bs,
            from_disk: from_disk * bs,
        }
    }

    /// Hands the blocks that entered the RAM cache since the last call to the disk writer.
    pub fn keep(&self, scheduler: &mut Scheduler, kv: &KvStore) {
        let len = kv.block_bytes();
        for c in scheduler.take_commits() {
            if self.private.contains(&c.seed) || !self.cache.wants(c.hash, len) {
                continue;
            }
            let mut payload = Vec::with_capacity(len);
            kv.read_block(c.block, &mut payload);
            self.cache.store(c.hash, c.tokens, payload);
        }
    }
}
