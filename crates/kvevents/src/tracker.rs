//! From frugal's prefix cache to vLLM's events: frugal keys cached blocks by its own chained
//! xxh3 (which the disk tier depends on), so each stored block's vLLM hash is computed here
//! from its parent's, and remembered until the block leaves the cache.

use crate::event::{KvEvent, MEDIUM_CPU};
use crate::hash::{self, BlockHash, HashAlgo};
use frugal_kvcache::{cache_seed, CacheEvent, Committed};
use std::collections::{HashMap, VecDeque};

/// Recent salts and evicted blocks remembered (a salted prefix's first block commits soon
/// after its request arrives; a child block soon after its parent).
const RECENT: usize = 4096;

/// One model's prefix cache, seen through vLLM's hashes.
pub struct Tracker {
    algo: HashAlgo,
    none_hash: BlockHash,
    block_size: usize,
    /// The `cache_salt` behind a hash chain's seed, for requests that sent one.
    salts: HashMap<u64, String>,
    salt_order: VecDeque<u64>,
    /// frugal's prefix hash → vLLM's, for blocks in the cache.
    live: HashMap<u64, BlockHash>,
    /// The same for blocks recently evicted: a block may commit after its parent left (two
    /// sequences computed the parent at once and the copy in the cache went first).
    gone: VecDeque<(u64, BlockHash)>,
}

impl Tracker {
    /// `seed` is what vLLM derives `NONE_HASH` from (`PYTHONHASHSEED`, else
    /// [`hash::DEFAULT_SEED`]).
    pub fn new(algo: HashAlgo, seed: &str, block_size: usize) -> Self {
        Tracker {
            algo,
            none_hash: hash::none_hash(algo, seed),
            block_size,
            salts: HashMap::new(),
            salt_order: VecDeque::new(),
            live: HashMap::new(),
            gone: VecDeque::new(),
        }
    }

    /// A request with this `cache_salt` arrived: its blocks' chain starts from the salt's seed.
    pub fn note_salt(&mut self, salt: &str) {
        let seed = cache_seed(salt);
        if self.salts.insert(seed, salt.to_string()).is_none() {
            self.salt_order.push_back(seed);
            if self.salt_order.len() > RECENT {
                let old = self.salt_order.pop_front().expect("non-empty");
                self.salts.remove(&old);
            }
        }
    }

    /// The events for what entered and left the cache, in order; consecutive blocks of one
    /// prefix stored together make one `BlockStored`. Blocks of a chain no other request can
    /// share (a request that opted out of the cache) are not announced.
    pub fn translate(&mut self, changes: Vec<CacheEvent>) -> Vec<KvEvent> {
        let mut out: Vec<KvEvent> = Vec::new();
        let mut last_stored: Option<u64> = None;
        for change in changes {
            match change {
                CacheEvent::Stored(block) => {
                    let Some((parent, salt)) = self.parent_of(&block) else {
                        last_stored = None;
                        continue;
                    };
                    let h = hash::block_hash(self.algo, &parent.1, &block.tokens, salt.as_deref());
                    self.live.insert(block.hash, h);
                    let ext = hash::external(&h);
                    match out.last_mut() {
                        Some(KvEvent::BlockStored {
                            block_hashes,
                            token_ids,
                            extra_keys,
                            ..
                        }) if last_stored == Some(block.parent) => {
                            block_hashes.push(ext);
                            token_ids.extend_from_slice(&block.tokens);
                            extra_keys.push(salt);
                        }
                        _ => out.push(KvEvent::BlockStored {
                            block_hashes: vec![ext],
                            parent_block_hash: parent.0.then(|| hash::external(&parent.1)),
                            token_ids: block.tokens,
                            block_size: self.block_size,
                            medium: MEDIUM_CPU,
                            extra_keys: vec![salt],
                        }),
                    }
                    last_stored = Some(block.hash);
                }
                CacheEvent::Removed { hash } => {
                    last_stored = None;
                    let Some(h) = self.live.remove(&hash) else {
                        continue;
                    };
                    self.gone.push_back((hash, h));
                    if self.gone.len() > RECENT {
                        self.gone.pop_front();
                    }
                    out.push(KvEvent::BlockRemoved {
                        block_hashes: vec![hash::external(&h)],
                        medium: MEDIUM_CPU,
                    });
                }
            }
        }
        out
    }

    /// The vLLM hash a block chains from (and whether it is a real block rather than
    /// `NONE_HASH`), and the salt mixed into it; `None` for a chain not announced.
    fn parent_of(&self, block: &Committed) -> Option<((bool, BlockHash), Option<String>)> {
        if block.parent == block.seed {
            if block.seed == 0 {
                return Some(((false, self.none_hash), None));
            }
            let salt = self.salts.get(&block.seed)?;
            return Some(((false, self.none_hash), Some(salt.clone())));
        }
        let parent = self.live.get(&block.parent).copied().or_else(|| {
            self.gone
                .iter()
                .rev()
                .find(|(k, _)| *k == block.parent)
                .map(|(_, h)| *h)
        })?;
        Some(((true, parent), None))
    }
}
