//! The tensors behind the KV cache: keys and values of every layer, in fixed-size blocks.
//!
//! Which block belongs to which sequence is decided elsewhere (a sequence's block table); this store
//! only holds the numbers, addressed by (layer, block id, slot).

use crate::config::ModelConfig;

/// Keys and values for `n_blocks` blocks of `block_size` positions, per layer, as f32.
pub struct KvStore {
    block_size: usize,
    n_blocks: usize,
    kv_dim: usize,
    /// Width of a value row; 0 when values live inside the keys (MLA's latent).
    v_dim: usize,
    /// Per layer: `[n_blocks][block_size][kv_dim]`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvStore {
    pub fn new(c: &ModelConfig, n_blocks: usize, block_size: usize) -> KvStore {
        assert!(block_size > 0, "block size must be positive");
        let (kv_dim, v_dim) = (c.kv_dim(), c.kv_v_dim());
        let slots = n_blocks * block_size;
        KvStore {
            block_size,
            n_blocks,
            kv_dim,
            v_dim,
            k: (0..c.n_layer).map(|_| vec![0.0; slots * kv_dim]).collect(),
            v: (0..c.n_layer).map(|_| vec![0.0; slots * v_dim]).collect(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Bytes of memory the store holds.
    pub fn n_bytes(&self) -> usize {
        self.k.len() * self.n_blocks * self.block_size * (self.kv_dim + self.v_dim) * 4
    }

    fn slot(&self, blocks: &[u32], pos: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        block * self.block_size + pos % self.block_size
    }

    /// Stores the key and value rows of position `pos` of the sequence whose blocks are `blocks`
    /// (`v` is empty when values live inside the keys).
    pub(crate) fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let s = self.slot(blocks, pos);
        self.k[layer][s * self.kv_dim..(s + 1) * self.kv_dim].copy_from_slice(k);
        self.v[layer][s * self.v_dim..(s + 1) * self.v_dim].copy_from_slice(v);
    }

    /// The key and value rows (all KV heads) of position `pos`; the value row is empty when
    /// values live inside the keys.
    pub(crate) fn read(&self, layer: usize, blocks: &[u32], pos: usize) -> (&[f32], &[f32]) {
        let s = self.slot(blocks, pos);
        (
            &self.k[layer][s * self.kv_dim..(s + 1) * self.kv_dim],
            &self.v[layer][s * self.v_dim..(s + 1) * self.v_dim],
        )
    }

    /// Copies the first `n_pos` positions of one sequence's blocks into another's (used when a
    /// sequence forks, e.g. n > 1 completions sharing a prompt with a partial last block).
    pub fn copy_positions(&mut self, from: &[u32], to: &[u32], n_pos: usize) {
        for layer in 0..self.k.len() {
            for p in 0..n_pos {
                let (a, b) = (self.slot(from, p), self.slot(to, p));
                if a != b {
                    let (k, v) = (self.kv_dim, self.v_dim);
                    self.k[layer].copy_within(a * k..(a + 1) * k, b * k);
                    self.v[layer].copy_within(a * v..(a + 1) * v, b * v);
                }
            }
        }
    }
}
