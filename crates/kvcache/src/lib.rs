//! Which KV-cache blocks belong to which sequence, as plain data: a pool of fixed-size blocks,
//! reference counts, automatic prefix caching (full blocks keyed by a hash of the whole token
//! prefix up to and including them, shared between sequences) and least-recently-used eviction
//! of cached blocks nobody uses. No tensors: the numbers live in `frugal_models::KvStore`,
//! addressed by the block ids handed out here.
//!
//! Models with sliding-window layers keep those layers' blocks in a second group
//! ([`WindowBlocks`]) that gives back the blocks leaving the window, so its memory follows the
//! window rather than the context.

#![forbid(unsafe_code)]

mod state;
mod window;

pub use state::{SlotId, StateSlots};
pub use window::{SplitAllocation, WindowBlocks};

use std::collections::{BTreeSet, HashMap};
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub type BlockId = u32;

/// The block-table entry of a block a sliding-window sequence has given back (it lies wholly
/// before every window still to be computed, so the model never reads it).
pub const RELEASED: BlockId = BlockId::MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("out of KV blocks: {needed} needed, {available} available")]
pub struct OutOfBlocks {
    pub needed: usize,
    pub available: usize,
}

/// The blocks of one sequence, in order, and how many tokens they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    /// Entry `i` holds positions `i * block_size..(i + 1) * block_size`; [`RELEASED`] for blocks
    /// a sliding-window sequence gave back.
    blocks: Vec<BlockId>,
    n_tokens: usize,
    /// Prefix hashes of the leading full blocks that are registered in the cache (or were, for
    /// released ones: the chain continues through them).
    hashes: Vec<u64>,
    /// Leading entries already released (sliding-window groups).
    n_released: usize,
    /// Where the chain of prefix hashes starts: 0 for the shared cache, else a salt's
    /// ([`cache_seed`]) or one sequence's own ([`private_seed`]).
    seed: u64,
}

impl SeqBlocks {
    /// The block table, for the model's forward pass.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Blocks this sequence holds (entries not released).
    pub fn n_held(&self) -> usize {
        self.blocks.iter().filter(|&&b| b != RELEASED).count()
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// The prefix hash of the last leading full block registered so far (shared at allocation
    /// or committed since), if any.
    pub fn last_hash(&self) -> Option<u64> {
        self.hashes.last().copied()
    }
}

#[derive(Debug, Clone)]
struct Block {
    refs: u32,
    /// Set while the block is registered in the prefix cache.
    hash: Option<u64>,
    last_used: u64,
}

/// The block pool.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// Unreferenced blocks that hold nothing worth keeping.
    free: Vec<BlockId>,
    /// Unreferenced cached blocks, oldest first: reusable by a matching prefix, evicted when the
    /// free list runs dry.
    evictable: BTreeSet<(u64, BlockId)>,
    /// Prefix hash → block, with the block's tokens to rule out hash collisions.
    cache: HashMap<u64, (BlockId, Vec<u32>)>,
    clock: u64,
    /// Blocks registered since the last [`BlockManager::take_commits`], when logging.
    commits: Option<Vec<Committed>>,
    /// What entered and left the cache since the last [`BlockManager::take_events`], when
    /// logging (for KV-cache events published to a router).
    events: Option<Vec<CacheEvent>>,
}

/// Hash of a block's tokens chained to the hash of everything before it. A stable hash (xxh3 of
/// the tokens' little-endian bytes, seeded with the parent), because the disk tier keys files
/// by it across restarts and builds.
fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    xxh3_64_with_seed(&bytes, parent)
}

/// The prefix-cache hash of `tokens` (whole blocks of `block_size`; a partial tail is ignored):
/// the key of the block that ends the prefix, and of a state snapshot taken there. `seed` starts
/// the chain (0: the cache every request shares).
pub fn prefix_hash(seed: u64, block_size: usize, tokens: &[u32]) -> u64 {
    tokens.chunks_exact(block_size).fold(seed, chain_hash)
}

/// The prefix hash after each full block of `tokens`, in order ([`prefix_hash`] of every
/// block-aligned prefix).
pub fn chain_hashes(seed: u64, block_size: usize, tokens: &[u32]) -> Vec<u64> {
    let mut parent = seed;
    tokens
        .chunks_exact(block_size)
        .map(|c| {
            parent = chain_hash(parent, c);
            parent
        })
        .collect()
}

/// The seed of the prefix cache of requests that carry `salt` (vLLM's `cache_salt`): only
/// requests with the same salt share cached blocks.
pub fn cache_seed(salt: &str) -> u64 {
    xxh3_64_with_seed(salt.as_bytes(), 1)
}

/// A seed no other sequence shares (a request that does not use the cache: `cache_prompt:
/// false`), from a number unique to it.
pub fn private_seed(n: u64) -> u64 {
    xxh3_64_with_seed(&n.to_le_bytes(), 2)
}

/// A block that entered the prefix cache, for a tier below RAM to keep (see
/// [`BlockManager::log_commits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The seed its sequence's hash chain started from.
    pub seed: u64,
    /// The prefix hash of the block before it (the seed for a sequence's first block).
    pub parent: u64,
    pub hash: u64,
    pub block: BlockId,
    pub tokens: Vec<u32>,
}

/// A change to the set of cached blocks (see [`BlockManager::log_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// A block entered the cache: computed by a sequence, or filled from a lower tier.
    Stored(Committed),
    /// The block cached under this prefix hash was evicted.
    Removed { hash: u64 },
}

impl BlockManager {
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        assert!(n_blocks <= BlockId::MAX as usize, "too many blocks");
        BlockManager {
            block_size,
            blocks: vec![
                Block {
                    refs: 0,
                    hash: None,
                    last_used: 0,
                };
                n_blocks
            ],
            free: (0..n_blocks as BlockId).rev().collect(),
            evictable: BTreeSet::new(),
            cache: HashMap::new(),
            clock: 0,
            commits: None,
            events: None,
        }
    }

    /// From now on, keeps a list of the blocks that enter and leave the cache, emptied by
    /// [`BlockManager::take_events`].
    pub fn log_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }

    /// What entered and left the cache since the last call, in order (empty unless logging).
    pub fn take_events(&mut self) -> Vec<CacheEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Registers a block in the cache and logs it; for the disk tier too unless it came from
    /// there (`from_below`).
    fn register(&mut self, block: Committed, from_below: bool) {
        self.cache
            .insert(block.hash, (block.block, block.tokens.clone()));
        self.blocks[block.block as usize].hash = Some(block.hash);
        if let Some(log) = &mut self.events {
            log.push(CacheEvent::Stored(block.clone()));
        }
        match &mut self.commits {
            Some(log) if !from_below => log.push(block),
            _ => {}
        }
    }

    /// From now on, keeps a list of the blocks registered in the cache (for a disk tier to
    /// copy before they can be evicted), emptied by [`BlockManager::take_commits`].
    pub fn log_commits(&mut self) {
        self.commits.get_or_insert_with(Vec::new);
    }

    /// The blocks registered since the last call (empty unless logging).
    pub fn take_commits(&mut self) -> Vec<Committed> {
        self.commits
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that can be handed out now (free or evictable).
    pub fn n_available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn n_used(&self) -> usize {
        self.blocks.len() - self.n_available()
    }

    /// Cached blocks (referenced or not).
    pub fn n_cached(&self) -> usize {
        self.cache.len()
    }

    fn blocks_for(&self, n_tokens: usize) -> usize {
        n_tokens.div_ceil(self.block_size)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Takes a fresh block: a free one, else the least recently used cached one (uncached).
    fn take(&mut self) -> Option<BlockId> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        let (_, b) = self.evictable.pop_first()?;
        let hash = self.blocks[b as usize]
            .hash
            .take()
            .expect("evictable blocks are cached");
        self.cache.remove(&hash);
        if let Some(log) = &mut self.events {
            log.push(CacheEvent::Removed { hash });
        }
        Some(b)
    }

    /// Adds a reference to block `b`, taking it off the evictable list if needed.
    fn retain(&mut self, b: BlockId) {
        let now = self.tick();
        let blk = &mut self.blocks[b as usize];
        if blk.refs == 0 {
            self.evictable.remove(&(blk.last_used, b));
        }
        blk.refs += 1;
        blk.last_used = now;
    }

    /// Number of leading prompt tokens whose blocks are cached (a multiple of the block size).
    pub fn cached_prefix_len(&self, tokens: &[u32]) -> usize {
        self.cached_blocks(tokens, 0).len() * self.block_size
    }

    /// Blocks for a new sequence whose first tokens are `prompt`: cached full blocks matching the
    /// prompt's prefix are shared, the rest are fresh. Returns the blocks and how many leading
    /// tokens are already computed. At least the last prompt token is always left to compute, so
    /// the caller gets logits for it.
    pub fn allocate(&mut self, prompt: &[u32]) -> Result<(SeqBlocks, usize), OutOfBlocks> {
        let (seq, cached, _) = self.allocate_where(prompt, 0, &|_| true)?;
        Ok((seq, cached))
    }

    /// [`BlockManager::allocate`], sharing cached blocks only up to the longest prefix whose
    /// hash `resumable` accepts (for hybrid models: one with a state snapshot at its end), so
    /// that the tokens after it, which must be recomputed, get fresh blocks. Also returns how
    /// many leading tokens the cached blocks covered before that cut.
    pub fn allocate_with(
        &mut self,
        prompt: &[u32],
        seed: u64,
        resumable: &dyn Fn(u64) -> bool,
    ) -> Result<(SeqBlocks, usize, usize), OutOfBlocks> {
        self.allocate_where(prompt, seed, &|hashes| {
            hashes.last().is_some_and(|&h| resumable(h))
        })
    }

    /// The general form of [`BlockManager::allocate_with`]: `usable` gets the prefix hashes of
    /// the leading cached blocks of a candidate prefix (one per block, in order) and says
    /// whether the computation may resume after them; the longest usable one is shared (none
    /// when no prefix is usable; the empty prefix always is). The sequence's hashes chain from
    /// `seed` ([`prefix_hash`]).
    pub fn allocate_where(
        &mut self,
        prompt: &[u32],
        seed: u64,
        usable: &dyn Fn(&[u64]) -> bool,
    ) -> Result<(SeqBlocks, usize, usize), OutOfBlocks> {
        let prefix = &prompt[..prompt.len().saturating_sub(1)];
        let mut shared = self.cached_blocks(prefix, seed);
        let cached_blocks = shared.len() * self.block_size;
        let hashes: Vec<u64> = shared.iter().map(|&(_, h)| h).collect();
        let usable = (1..=hashes.len()).rev().find(|&k| usable(&hashes[..k]));
        shared.truncate(usable.unwrap_or(0));
        let needed_total = self.blocks_for(prompt.len());
        let fresh = needed_total - shared.len();
        // Shared blocks that are evictable stop being available once retained.
        let shared_evictable = shared
            .iter()
            .filter(|(b, _)| self.blocks[*b as usize].refs == 0)
            .count();
        let available = self.n_available() - shared_evictable;
        if fresh > available {
            return Err(OutOfBlocks {
                needed: fresh,
                available,
            });
        }
        let mut seq = SeqBlocks {
            seed,
            ..SeqBlocks::default()
        };
        for (b, h) in shared {
            self.retain(b);
            seq.blocks.push(b);
            seq.hashes.push(h);
        }
        let cached_tokens = seq.blocks.len() * self.block_size;
        for _ in 0..fresh {
            let b = self.take().expect("availability was checked");
            self.retain(b);
            seq.blocks.push(b);
        }
        seq.n_tokens = prompt.len();
        Ok((seq, cached_tokens, cached_blocks))
    }

    /// The cached blocks of the leading full blocks of `tokens` (hashes chained from `seed`),
    /// with their prefix hashes.
    fn cached_blocks(&self, tokens: &[u32], seed: u64) -> Vec<(BlockId, u64)> {
        let mut parent = seed;
        let mut shared = Vec::new();
        for chunk in tokens.chunks_exact(self.block_size) {
            let h = chain_hash(parent, chunk);
            match self.cache.get(&h) {
                Some((b, t)) if t == chunk => {
                    shared.push((*b, h));
                    parent = h;
                }
                _ => break,
            }
        }
        shared
    }

    /// The cached block of the prefix with hash `hash` whose last block holds `tokens`.
    fn cached_block(&self, hash: u64, tokens: &[u32]) -> Option<BlockId> {
        match self.cache.get(&hash) {
            Some((b, t)) if t == tokens => Some(*b),
            _ => None,
        }
    }

    /// Fills the prefix cache from a tier below RAM for a prompt about to be queued: walking the
    /// full blocks of the prompt's prefix from block `from` (those [`BlockManager::allocate_where`]
    /// would share, the last token excluded), a block cached here is kept, and one that is not is
    /// offered to `load(prefix hash, its tokens, a fresh block)`, which fills it and says true, or
    /// says false (not there: the walk stops). Filled blocks are registered as cached and
    /// unreferenced, so the prompt's allocation shares them. The walked blocks are kept from
    /// eviction while more are taken. Returns (leading blocks from `from` cached before, blocks
    /// filled).
    pub fn import(
        &mut self,
        prompt: &[u32],
        seed: u64,
        from: usize,
        load: &mut dyn FnMut(u64, &[u32], BlockId) -> bool,
    ) -> (usize, usize) {
        let prefix = &prompt[..prompt.len().saturating_sub(1)];
        let (mut parent, mut pinned) = (seed, Vec::new());
        let (mut n_cached, mut filled) = (0, 0);
        for (i, chunk) in prefix.chunks_exact(self.block_size).enumerate() {
            let h = chain_hash(parent, chunk);
            let chunk_parent = std::mem::replace(&mut parent, h);
            if i < from {
                continue;
            }
            if let Some(b) = self.cached_block(h, chunk) {
                self.retain(b);
                pinned.push(b);
                n_cached += usize::from(filled == 0);
                continue;
            }
            let Some(b) = self.take() else { break };
            self.retain(b);
            if !load(h, chunk, b) {
                self.release(b);
                break;
            }
            let block = Committed {
                seed,
                parent: chunk_parent,
                hash: h,
                block: b,
                tokens: chunk.to_vec(),
            };
            self.register(block, true);
            pinned.push(b);
            filled += 1;
        }
        // Last blocks first, so that the prefix's first blocks are evicted last.
        pinned.into_iter().rev().for_each(|b| self.release(b));
        (n_cached, filled)
    }

    /// Makes room for `n_tokens` in total (appending), taking fresh blocks as needed.
    pub fn grow(&mut self, seq: &mut SeqBlocks, n_tokens: usize) -> Result<(), OutOfBlocks> {
        let needed = self.blocks_for(n_tokens).saturating_sub(seq.blocks.len());
        if needed > self.n_available() {
            return Err(OutOfBlocks {
                needed,
                available: self.n_available(),
            });
        }
        for _ in 0..needed {
            let b = self.take().expect("availability was checked");
            self.retain(b);
            seq.blocks.push(b);
        }
        seq.n_tokens = seq.n_tokens.max(n_tokens);
        Ok(())
    }

    /// Registers the sequence's full blocks in the prefix cache once their keys and values are
    /// computed. `tokens` are the sequence's tokens so far (at least as many as computed).
    pub fn commit(&mut self, seq: &mut SeqBlocks, tokens: &[u32], n_computed: usize) {
        let n_full = n_computed.min(tokens.len()) / self.block_size;
        let mut parent = seq.hashes.last().copied().unwrap_or(seq.seed);
        for i in seq.hashes.len()..n_full.min(seq.blocks.len()) {
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let h = chain_hash(parent, chunk);
            let b = seq.blocks[i];
            // A block with the same prefix may already be cached (two sequences computed it at
            // once); keep the first and leave this one uncached. A released block is no longer
            // this sequence's to register; the hash chain goes on through it.
            if b != RELEASED
                && !self.cache.contains_key(&h)
                && self.blocks[b as usize].hash.is_none()
            {
                let block = Committed {
                    seed: seq.seed,
                    parent,
                    hash: h,
                    block: b,
                    tokens: chunk.to_vec(),
                };
                self.register(block, false);
            }
            seq.hashes.push(h);
            parent = h;
        }
    }

    /// Releases a sequence's blocks: cached blocks nobody uses become evictable, others free.
    /// The last blocks go first, so that a prefix's first blocks are evicted last.
    pub fn free(&mut self, seq: SeqBlocks) {
        for b in seq.blocks.into_iter().rev() {
            if b != RELEASED {
                self.release(b);
            }
        }
    }

    /// Drops one reference to block `b`: once nobody uses it, it becomes evictable if cached,
    /// free otherwise.
    fn release(&mut self, b: BlockId) {
        let now = self.tick();
        let blk = &mut self.blocks[b as usize];
        assert!(blk.refs > 0, "block {b} freed more often than taken");
        blk.refs -= 1;
        if blk.refs == 0 {
            blk.last_used = now;
            if blk.hash.is_some() {
                self.evictable.insert((now, b));
            } else {
                self.free.push(b);
            }
        }
    }

    /// Checks the internal invariants (for tests): every block is exactly one of referenced,
    /// evictable or free; cache entries and block hashes agree.
    pub fn check(&self) -> Result<(), String> {
        let mut state = vec![0u8; self.blocks.len()];
        for &b in &self.free {
            state[b as usize] += 1;
            if self.blocks[b as usize].refs != 0 || self.blocks[b as usize].hash.is_some() {
                return Err(format!("free block {b} is referenced or cached"));
            }
        }
        for &(t, b) in &self.evictable {
            state[b as usize] += 1;
            let blk = &self.blocks[b as usize];
            if blk.refs != 0 || blk.hash.is_none() || blk.last_used != t {
                return Err(format!("evictable block {b} is inconsistent"));
            }
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            if blk.refs > 0 {
                state[i] += 1;
            }
            if state[i] != 1 {
                return Err(format!("block {i} is in {} states", state[i]));
            }
            if let Some(h) = blk.hash {
                if self.cache.get(&h).map(|e| e.0) != Some(i as BlockId) {
                    return Err(format!("block {i} hash is not in the cache"));
                }
            }
        }
        for (h, (b, _)) in &self.cache {
            if self.blocks[*b as usize].hash != Some(*h) {
                return Err(format!("cache entry for block {b} is stale"));
            }
        }
        Ok(())
    }

    /// Reference count of a block (for tests and metrics).
    pub fn refs(&self, b: BlockId) -> u32 {
        self.blocks[b as usize].refs
    }
}
