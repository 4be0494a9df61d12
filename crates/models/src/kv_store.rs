//! The tensors behind the cache: keys and values of every attention layer, in fixed-size blocks,
//! and for hybrid models the recurrent state of every linear-attention layer, in slots.
//!
//! Which block or slot belongs to which sequence (or prefix snapshot) is decided elsewhere (a
//! sequence's block table and state slot); this store only holds the numbers, addressed by
//! (layer, block id, position in block) and (layer, slot).

use crate::config::ModelConfig;

/// Keys and values for `n_blocks` blocks of `block_size` positions per attention layer
/// (`n_window_blocks` in sliding-window layers, a pool of their own), and `n_states`
/// recurrent-state slots per linear-attention layer, as f32.
pub struct KvStore {
    block_size: usize,
    n_blocks: usize,
    n_window_blocks: usize,
    kv_dim: usize,
    /// Width of a value row; 0 when values live inside the keys (MLA's latent).
    v_dim: usize,
    /// Per layer: `[n_blocks][block_size][kv_dim]`.
    k: Vec<Vec<f32>>,
    /// The same keys transposed per block, `[n_blocks][kv_dim][block_size]`, so attention scores
    /// of consecutive positions sit in consecutive lanes.
    kt: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    n_states: usize,
    /// Values of one slot of one layer: the delta-rule state, then the convolution history.
    state_len: usize,
    /// Per layer: `[n_states][state_len]`; empty for attention layers.
    states: Vec<Vec<f32>>,
}

impl KvStore {
    /// A store of `n_blocks` KV blocks (`n_window_blocks` for the sliding-window layers, if the
    /// model has any) and, if the model has recurrent layers, `n_states` state slots (one per
    /// sequence that runs at once, plus any prefix snapshots).
    pub fn new(
        c: &ModelConfig,
        n_blocks: usize,
        n_window_blocks: usize,
        block_size: usize,
        n_states: usize,
    ) -> KvStore {
        assert!(block_size > 0, "block size must be positive");
        let (kv_dim, v_dim) = (c.kv_dim(), c.kv_v_dim());
        let per_kv_layer = |width: usize| -> Vec<Vec<f32>> {
            (0..c.n_layer)
                .map(|il| match (c.has_kv(il), c.is_sliding(il)) {
                    (true, false) => vec![0.0; n_blocks * block_size * width],
                    (true, true) => vec![0.0; n_window_blocks * block_size * width],
                    (false, _) => Vec::new(),
                })
                .collect()
        };
        let state_len = c
            .delta_net
            .as_ref()
            .map_or(0, |d| d.ssm_len() + d.conv_len());
        KvStore {
            block_size,
            n_blocks,
            n_window_blocks,
            kv_dim,
            v_dim,
            k: per_kv_layer(kv_dim),
            kt: per_kv_layer(kv_dim),
            v: per_kv_layer(v_dim),
            n_states,
            state_len,
            states: (0..c.n_layer)
                .map(|il| match c.has_kv(il) {
                    true => Vec::new(),
                    false => vec![0.0; n_states * state_len],
                })
                .collect(),
        }
    }

    /// Recurrent-state slots (meaningful only for models with recurrent layers).
    pub fn n_states(&self) -> usize {
        self.n_states
    }

    /// Whether the store holds recurrent state (the model has linear-attention layers).
    pub fn has_states(&self) -> bool {
        self.state_len > 0
    }

    /// Layer `layer`'s state slots, `[n_states][state_len]`, and `state_len`.
    pub(crate) fn states_mut(&mut self, layer: usize) -> (&mut [f32], usize) {
        (&mut self.states[layer], self.state_len)
    }

    /// Zeroes slot `slot` in every layer: the state before a sequence's first token.
    pub fn clear_state(&mut self, slot: u32) {
        let (s, len) = (slot as usize, self.state_len);
        for layer in self.states.iter_mut().filter(|l| !l.is_empty()) {
            layer[s * len..(s + 1) * len].fill(0.0);
        }
    }

    /// Copies slot `from` into slot `to` in every layer (restoring a prefix snapshot into a
    /// sequence's slot, or taking one).
    pub fn copy_state(&mut self, from: u32, to: u32) {
        let (a, b, len) = (from as usize, to as usize, self.state_len);
        if a == b {
            return;
        }
        for layer in self.states.iter_mut().filter(|l| !l.is_empty()) {
            layer.copy_within(a * len..(a + 1) * len, b * len);
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Blocks of the sliding-window layers' own pool.
    pub fn n_window_blocks(&self) -> usize {
        self.n_window_blocks
    }

    /// Bytes of memory the store holds (keys, their transposed copy, values, and states).
    pub fn n_bytes(&self) -> usize {
        let floats: usize = [&self.k, &self.kt, &self.v, &self.states]
            .iter()
            .flat_map(|layers| layers.iter())
            .map(Vec::len)
            .sum();
        floats * 4
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
}
