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
    /// The same keys transposed per block, `[n_blocks][kv_dim][block_size]`, so attention scores
    /// of consecutive positions sit in consecutive lanes.
    kt: Vec<Vec<f32>>,
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
            kt: (0..c.n_layer).map(|_| vec![0.0; slots * kv_dim]).collect(),
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
        self.k.len() * self.n_blocks * self.block_size * (2 * self.kv_dim + self.v_dim) * 4
    }

    fn slot(&self, blocks: &[u32], pos: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        block * self.block_size + pos % self.block_size
    }

    /// Writes key row `k` at `slot` into the transposed copy of layer `layer`.
    fn write_kt(&mut self, layer: usize, slot: usize, k: &[f32]) {
        let bs = self.block_size;
        let (block, j) = (slot / bs, slot % bs);
        let kt = &mut self.kt[layer][block * bs * self.kv_dim..(block + 1) * bs * self.kv_dim];
        for (d, &x) in k.iter().enumerate() {
            kt[d * bs + j] = x;
        }
    }

    /// Stores the key and value rows of position `pos` of the sequence whose blocks are `blocks`
    /// (`v` is empty when values live inside the keys).
    pub(crate) fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let s = self.slot(blocks, pos);
        self.k[layer][s * self.kv_dim..(s + 1) * self.kv_dim].copy_from_slice(k);
        self.v[layer][s * self.v_dim..(s + 1) * self.v_dim].copy_from_slice(v);
        self.write_kt(layer, s, k);
    }

    /// The key and value rows (all KV heads) of position `pos`; the value row is empty when
    /// values live inside the keys.
    #[allow(dead_code)]
    pub(crate) fn read(&self, layer: usize, blocks: &[u32], pos: usize) -> (&[f32], &[f32]) {
        let s = self.slot(blocks, pos);
        (
            &self.k[layer][s * self.kv_dim..(s + 1) * self.kv_dim],
            &self.v[layer][s * self.v_dim..(s + 1) * self.v_dim],
        )
    }

    /// The keys of block `block` of layer `layer`, transposed: `[kv_dim][block_size]`.
    pub(crate) fn keys_t(&self, layer: usize, block: u32) -> &[f32] {
        let n = self.block_size * self.kv_dim;
        &self.kt[layer][block as usize * n..(block as usize + 1) * n]
    }

    /// Whether values have rows of their own (else they live inside the keys).
    pub(crate) fn has_values(&self) -> bool {
        self.v_dim > 0
    }

    /// The value rows of block `block` of layer `layer` (`[block_size][stride]`) and their
    /// stride; the key rows when values live inside the keys.
    pub(crate) fn values(&self, layer: usize, block: u32) -> (&[f32], usize) {
        let (rows, w) = if self.v_dim == 0 {
            (&self.k[layer], self.kv_dim)
        } else {
            (&self.v[layer], self.v_dim)
        };
        let n = self.block_size * w;
        (&rows[block as usize * n..(block as usize + 1) * n], w)
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
                    let row = self.k[layer][b * k..(b + 1) * k].to_vec();
                    self.write_kt(layer, b, &row);
                }
            }
        }
    }
}
