//! The block group of a model's sliding-window layers (Gemma 3's local layers): each token sees
//! only the last `window` positions, itself included, so a sequence needs only the blocks that
//! overlap the window of the next chunk. Before each chunk the blocks that lie wholly before it
//! are given back ([`WindowBlocks::release_before`]): the group's memory follows the window, not
//! the context.
//!
//! The group shares the block size and the chained prefix hash of the full-attention group, so a
//! block here and a block there holding the same positions of the same prefix have the same key.
//! A cached prefix is resumable only if the full group has all its blocks and this group still has
//! the ones the next token's window reads; this group then shares those and leaves the earlier
//! entries [`RELEASED`].

use crate::{BlockId, BlockManager, OutOfBlocks, SeqBlocks, RELEASED};

/// A new sequence's blocks in both groups.
#[derive(Debug)]
pub struct SplitAllocation {
    /// The full-attention layers' blocks: the whole prompt.
    pub full: SeqBlocks,
    /// The sliding-window layers' blocks: the shared ones the first chunk reads, nothing else yet
    /// (the caller grows it chunk by chunk).
    pub window: SeqBlocks,
    /// Leading prompt tokens already computed (a multiple of the block size).
    pub cached: usize,
    /// Leading prompt tokens the full group's cached blocks covered before any cut.
    pub cached_blocks: usize,
}

/// The sliding-window layers' block pool and the window it serves.
#[derive(Debug)]
pub struct WindowBlocks {
    pool: BlockManager,
    window: usize,
}

impl WindowBlocks {
    /// A pool of `n_blocks` blocks of `block_size` positions for layers that see the last
    /// `window` positions (at least 1).
    pub fn new(n_blocks: usize, block_size: usize, window: usize) -> Self {
        WindowBlocks {
            pool: BlockManager::new(n_blocks, block_size),
            window: window.max(1),
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// The pool, for counts and checks.
    pub fn pool(&self) -> &BlockManager {
        &self.pool
    }

    /// The first block a chunk starting at `pos` reads: the one holding position
    /// `pos + 1 - window`, the oldest key in the window of the chunk's first token.
    pub fn first_needed_block(&self, pos: usize) -> usize {
        (pos + 1).saturating_sub(self.window) / self.pool.block_size()
    }

    /// Blocks a sequence holds while it runs a chunk of `n` tokens starting at `pos`, at most.
    pub fn blocks_for_chunk(&self, pos: usize, n: usize) -> usize {
        (pos + n).div_ceil(self.pool.block_size()) - self.first_needed_block(pos)
    }

    /// Whether this group holds the blocks the next token's window reads after the prefix of
    /// `prompt` whose leading blocks have prefix hashes `hashes` (one per block).
    pub fn holds(&self, prompt: &[u32], hashes: &[u64]) -> bool {
        let bs = self.pool.block_size();
        let first = self.first_needed_block(hashes.len() * bs);
        (first..hashes.len()).all(|i| {
            prompt
                .get(i * bs..(i + 1) * bs)
                .and_then(|tokens| self.pool.cached_block(hashes[i], tokens))
                .is_some()
        })
    }

    /// Blocks in both groups for a new sequence whose first tokens are `prompt`: the longest
    /// cached prefix that the full group holds wholly, that this group holds the window of, and
    /// that `resumable` accepts by its hash (hybrid models: a state snapshot there) is shared.
    /// Nothing is taken when either group is short.
    pub fn allocate(
        &mut self,
        full: &mut BlockManager,
        prompt: &[u32],
        seed: u64,
        resumable: &dyn Fn(u64) -> bool,
    ) -> Result<SplitAllocation, OutOfBlocks> {
        assert_eq!(
            full.block_size(),
            self.pool.block_size(),
            "both groups share the block size"
        );
        let usable = |hashes: &[u64]| {
            hashes.last().is_some_and(|&h| resumable(h)) && self.holds(prompt, hashes)
        };
        let (full_seq, cached, cached_blocks) = full.allocate_where(prompt, seed, &usable)?;
        let window = self.share(prompt, &full_seq.hashes, seed);
        Ok(SplitAllocation {
            full: full_seq,
            window,
            cached,
            cached_blocks,
        })
    }

    /// This group's table for a sequence resuming after the prefix with `hashes`: the cached
    /// blocks its window reads, retained, and [`RELEASED`] before them.
    fn share(&mut self, prompt: &[u32], hashes: &[u64], seed: u64) -> SeqBlocks {
        let bs = self.pool.block_size();
        let first = self.first_needed_block(hashes.len() * bs);
        let mut seq = SeqBlocks {
            blocks: vec![RELEASED; first],
            n_tokens: hashes.len() * bs,
            hashes: hashes.to_vec(),
            n_released: first,
            seed,
        };
        for (i, &h) in hashes.iter().enumerate().skip(first) {
            let b: BlockId = self
                .pool
                .cached_block(h, &prompt[i * bs..(i + 1) * bs])
                .expect("the window's blocks were checked to be cached");
            self.pool.retain(b);
            seq.blocks.push(b);
        }
        seq
    }

    /// Gives back the blocks that lie wholly before the window of a chunk starting at `pos`:
    /// cached ones become evictable (a later prompt may still resume from them), others free.
    /// Their entries become [`RELEASED`].
    pub fn release_before(&mut self, seq: &mut SeqBlocks, pos: usize) {
        let end = self.first_needed_block(pos).min(seq.blocks.len());
        for i in seq.n_released..end {
            let b = std::mem::replace(&mut seq.blocks[i], RELEASED);
            if b != RELEASED {
                self.pool.release(b);
            }
        }
        seq.n_released = seq.n_released.max(end);
    }

    /// Fills this group's cache from a tier below RAM with the blocks the window of the token
    /// after the first `n_blocks` full blocks of `prompt` reads (see [`BlockManager::import`]).
    pub fn import(
        &mut self,
        prompt: &[u32],
        seed: u64,
        n_blocks: usize,
        load: &mut dyn FnMut(u64, &[u32], BlockId) -> bool,
    ) -> (usize, usize) {
        let n = (n_blocks * self.pool.block_size()).min(prompt.len().saturating_sub(1));
        let from = self.first_needed_block(n);
        self.pool.import(&prompt[..n + 1], seed, from, load)
    }

    /// Logs the blocks registered in this group's cache (see [`BlockManager::log_commits`]).
    pub fn log_commits(&mut self) {
        self.pool.log_commits();
    }

    /// This group's blocks registered since the last call.
    pub fn take_commits(&mut self) -> Vec<crate::Committed> {
        self.pool.take_commits()
    }

    /// Makes room for `n_tokens` in total (appending), taking fresh blocks as needed.
    pub fn grow(&mut self, seq: &mut SeqBlocks, n_tokens: usize) -> Result<(), OutOfBlocks> {
        self.pool.grow(seq, n_tokens)
    }

    /// Registers the full blocks the sequence still holds in the prefix cache.
    pub fn commit(&mut self, seq: &mut SeqBlocks, tokens: &[u32], n_computed: usize) {
        self.pool.commit(seq, tokens, n_computed);
    }

    /// Gives back a sequence's blocks (released entries are skipped).
    pub fn free(&mut self, seq: SeqBlocks) {
        self.pool.free(seq);
    }
}
