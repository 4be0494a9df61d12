//! The tensors behind the cache: keys and values of every attention layer, in fixed-size blocks,
//! and for hybrid models the recurrent state of every linear-attention layer, in slots.
//!
//! Which block or slot belongs to which sequence (or prefix snapshot) is decided elsewhere (a
//! sequence's block table and state slot); this store only holds the numbers, addressed by
//! (layer, block id, position in block) and (layer, slot).

use crate::config::ModelConfig;
use frugal_kernels::kv_quant::{KvQuant, QuantRows, QK};
use frugal_kernels::KvElem;
use half::{bf16, f16};

/// How the cache stores keys and values. f32 is exact (what the parity tests use); f16 halves
/// the memory (llama.cpp's default); bf16 keeps f32's range with f16's size; q8_0 and q4_0 are
/// ggml's 8- and 4-bit blocks of 32 (a quarter and an eighth of f32, plus scales), for heads
/// whose size is a multiple of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub const ALL: [KvType; 5] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8_0,
        KvType::Q4_0,
    ];

    /// Bytes of `n` stored values (a multiple of 32 for the quantized types), scales included.
    pub fn bytes_for(self, n: usize) -> usize {
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 | KvType::Bf16 => 2 * n,
            KvType::Q8_0 | KvType::Q4_0 => self.quant().expect("quantized").bytes_for(n),
        }
    }

    /// The block format, for the quantized types.
    pub fn quant(self) -> Option<KvQuant> {
        match self {
            KvType::Q8_0 => Some(KvQuant::Q8_0),
            KvType::Q4_0 => Some(KvQuant::Q4_0),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown KV type '{s}' (f32, f16, bf16, q8_0, q4_0)"))
    }
}

/// One layer's keys or values in the store's type.
pub(crate) enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Quant(QuantRows),
}

impl Rows {
    fn new(ty: KvType, n: usize) -> Rows {
        match ty.quant() {
            Some(q) => Rows::Quant(QuantRows::new(q, n)),
            None => match ty {
                KvType::F32 => Rows::F32(vec![0.0; n]),
                KvType::Bf16 => Rows::Bf16(vec![bf16::ZERO; n]),
                _ => Rows::F16(vec![f16::ZERO; n]),
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
            Rows::Bf16(v) => v.len(),
            Rows::Quant(q) => q.len(),
        }
    }

    fn n_bytes(&self) -> usize {
        match self {
            Rows::F32(v) => 4 * v.len(),
            Rows::F16(v) => 2 * v.len(),
            Rows::Bf16(v) => 2 * v.len(),
            Rows::Quant(q) => q.n_bytes(),
        }
    }

    /// Values `range` as byte runs (native order): one, or a quantized type's quants and scales.
    fn bytes(&self, range: std::ops::Range<usize>) -> [&[u8]; 2] {
        match self {
            Rows::F32(v) => [bytemuck::cast_slice(&v[range]), &[]],
            Rows::F16(v) => [bytemuck::cast_slice(&v[range]), &[]],
            Rows::Bf16(v) => [bytemuck::cast_slice(&v[range]), &[]],
            Rows::Quant(q) => {
                let (q, d) = q.bytes(range.start, range.end);
                [q, bytemuck::cast_slice(d)]
            }
        }
    }

    fn bytes_mut(&mut self, range: std::ops::Range<usize>) -> [&mut [u8]; 2] {
        match self {
            Rows::F32(v) => [bytemuck::cast_slice_mut(&mut v[range]), &mut []],
            Rows::F16(v) => [bytemuck::cast_slice_mut(&mut v[range]), &mut []],
            Rows::Bf16(v) => [bytemuck::cast_slice_mut(&mut v[range]), &mut []],
            Rows::Quant(q) => {
                let (q, d) = q.bytes_mut(range.start, range.end);
                [q, bytemuck::cast_slice_mut(d)]
            }
        }
    }

    /// Stores `x[i]` at `at + i * stride` for every `i`, rounded to the store's type. A
    /// quantized type shares a scale among 32 values of `x`: a row (`stride` 1) or a column of
    /// a transposed block (`stride` lanes, the scales laid out as the values, 32 rows to one).
    fn write(&mut self, at: usize, stride: usize, x: &[f32]) {
        fn put<E: KvElem>(v: &mut [E], at: usize, stride: usize, x: &[f32]) {
            for (i, &x) in x.iter().enumerate() {
                v[at + i * stride] = E::from_f32(x);
            }
        }
        match self {
            Rows::F32(v) => put(v, at, stride, x),
            Rows::F16(v) => put(v, at, stride, x),
            Rows::Bf16(v) => put(v, at, stride, x),
            Rows::Quant(q) if stride == 1 => q.write_row(at, x),
            Rows::Quant(q) => {
                let j = at % stride;
                q.write_col(at, stride, (at - j) / QK + j, x)
            }
        }
    }
}

/// The two block pools of a store: the full-attention layers', and the sliding-window layers'
/// (empty for a model without them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockGroup {
    Full,
    Window,
}

/// The element types the store holds, with their rows.
pub(crate) trait Stored: KvElem {
    fn rows(r: &Rows) -> &[Self];
}

impl Stored for f32 {
    fn rows(r: &Rows) -> &[f32] {
        match r {
            Rows::F32(v) => v,
            _ => panic!("the KV store holds another type"),
        }
    }
}

impl Stored for f16 {
    fn rows(r: &Rows) -> &[f16] {
        match r {
            Rows::F16(v) => v,
            _ => panic!("the KV store holds another type"),
        }
    }
}

impl Stored for bf16 {
    fn rows(r: &Rows) -> &[bf16] {
        match r {
            Rows::Bf16(v) => v,
            _ => panic!("the KV store holds another type"),
        }
    }
}

/// Keys and values for `n_blocks` blocks of `block_size` positions per attention layer
/// (`n_window_blocks` in sliding-window layers, a pool of their own), in one [`KvType`], and
/// `n_states` recurrent-state slots per linear-attention layer, as f32.
///
/// Keys are kept transposed per block (`[kv_dim][block_size]`), so attention scores of
/// consecutive positions sit in consecutive lanes; values as rows. Where values live inside the
/// keys (MLA's latent), the keys are kept as rows too, and those rows are the values.
pub struct KvStore {
    kv_type: KvType,
    block_size: usize,
    n_blocks: usize,
    n_window_blocks: usize,
    kv_dim: usize,
    /// Width of a value row; 0 when values live inside the keys (MLA's latent).
    v_dim: usize,
    /// Per layer: keys transposed per block, `[n_blocks][kv_dim][block_size]`.
    kt: Vec<Rows>,
    /// Per layer: whether it is a sliding-window layer (its blocks in the window pool).
    sliding: Vec<bool>,
    /// Per layer: `[n_blocks][block_size][v_dim]`, or the key rows `[..][kv_dim]` when values
    /// live inside the keys.
    v: Vec<Rows>,
    n_states: usize,
    /// Values of one slot of one layer: the delta-rule state, then the convolution history.
    state_len: usize,
    /// Per layer: `[n_states][state_len]`; empty for attention layers.
    states: Vec<Vec<f32>>,
}

impl KvStore {
    /// A store of `n_blocks` KV blocks (`n_window_blocks` for the sliding-window layers, if the
    /// model has any) in `kv_type` and, if the model has recurrent layers, `n_states` state
    /// slots (one per sequence that runs at once, plus any prefix snapshots).
    pub fn new(
        c: &ModelConfig,
        kv_type: KvType,
        n_blocks: usize,
        n_window_blocks: usize,
        block_size: usize,
        n_states: usize,
    ) -> KvStore {
        assert!(block_size > 0, "block size must be positive");
        let kv_dim = c.kv_dim();
        let v_dim = c.kv_v_dim();
        let per_kv_layer = |width: usize| -> Vec<Rows> {
            (0..c.n_layer)
                .map(|il| match (c.has_kv(il), c.is_sliding(il)) {
                    (true, false) => Rows::new(kv_type, n_blocks * block_size * width),
                    (true, true) => Rows::new(kv_type, n_window_blocks * block_size * width),
                    (false, _) => Rows::new(kv_type, 0),
                })
                .collect()
        };
        let state_len = c
            .delta_net
            .as_ref()
            .map_or(0, |d| d.ssm_len() + d.conv_len());
        KvStore {
            kv_type,
            block_size,
            n_blocks,
            n_window_blocks,
            kv_dim,
            v_dim,
            kt: per_kv_layer(kv_dim),
            sliding: (0..c.n_layer)
                .map(|il| c.has_kv(il) && c.is_sliding(il))
                .collect(),
            v: per_kv_layer(if v_dim == 0 { kv_dim } else { v_dim }),
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

    /// How keys and values are stored.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
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

    /// Bytes of memory the store holds (keys, values, and states).
    pub fn n_bytes(&self) -> usize {
        let kv: usize = self.kt.iter().chain(&self.v).map(Rows::n_bytes).sum();
        let states: usize = self.states.iter().map(Vec::len).sum();
        kv + states * 4
    }

    /// Width of a value row (the key width when values live inside the keys).
    pub(crate) fn value_width(&self) -> usize {
        if self.v_dim == 0 {
            self.kv_dim
        } else {
            self.v_dim
        }
    }

    /// The attention layers whose blocks are in `group`'s pool, with the element ranges of
    /// block `block` in their keys and values.
    fn block_ranges(
        &self,
        group: BlockGroup,
        block: u32,
    ) -> impl Iterator<Item = (usize, std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
        let (bs, b) = (self.block_size, block as usize);
        let (nk, nv) = (bs * self.kv_dim, bs * self.value_width());
        let window = group == BlockGroup::Window;
        (0..self.kt.len())
            .filter(move |&l| self.kt[l].len() > 0 && self.sliding[l] == window)
            .map(move |l| (l, b * nk..(b + 1) * nk, b * nv..(b + 1) * nv))
    }

    /// Bytes of one block's keys and values over the layers of `group`'s pool: what
    /// [`KvStore::read_block`] gives and [`KvStore::write_block`] takes (for the prefix cache's
    /// disk tier).
    pub fn block_bytes(&self, group: BlockGroup) -> usize {
        self.block_ranges(group, 0)
            .map(|(_, k, v)| self.kv_type.bytes_for(k.len() + v.len()))
            .sum()
    }

    /// Appends block `block` of `group`'s keys and values, layer by layer, to `out`.
    pub fn read_block(&self, group: BlockGroup, block: u32, out: &mut Vec<u8>) {
        for (l, k, v) in self.block_ranges(group, block) {
            for run in self.kt[l].bytes(k).into_iter().chain(self.v[l].bytes(v)) {
                out.extend_from_slice(run);
            }
        }
    }

    /// Overwrites block `block`'s keys and values with what [`KvStore::read_block`] gave (for a
    /// store of the same model, type and block size). Returns false, changing nothing, when
    /// `bytes` is not one block's length.
    pub fn write_block(&mut self, group: BlockGroup, block: u32, bytes: &[u8]) -> bool {
        if bytes.len() != self.block_bytes(group) {
            return false;
        }
        let ranges: Vec<_> = self.block_ranges(group, block).collect();
        let mut rest = bytes;
        for (l, k, v) in ranges {
            let (kt, vs) = (&mut self.kt[l], &mut self.v[l]);
            for dst in kt.bytes_mut(k).into_iter().chain(vs.bytes_mut(v)) {
                let (src, tail) = rest.split_at(dst.len());
                dst.copy_from_slice(src);
                rest = tail;
            }
        }
        true
    }

    /// Bytes of one state slot over every recurrent layer: what [`KvStore::read_state`] gives
    /// and [`KvStore::write_state`] takes.
    pub fn state_bytes(&self) -> usize {
        let layers = self.states.iter().filter(|l| !l.is_empty()).count();
        layers * self.state_len * 4
    }

    /// Appends slot `slot`'s recurrent state, layer by layer, to `out`.
    pub fn read_state(&self, slot: u32, out: &mut Vec<u8>) {
        let (s, len) = (slot as usize, self.state_len);
        for layer in self.states.iter().filter(|l| !l.is_empty()) {
            out.extend_from_slice(bytemuck::cast_slice(&layer[s * len..(s + 1) * len]));
        }
    }

    /// Overwrites slot `slot`'s state with what [`KvStore::read_state`] gave. Returns false,
    /// changing nothing, when `bytes` is not one slot's length.
    pub fn write_state(&mut self, slot: u32, bytes: &[u8]) -> bool {
        if bytes.len() != self.state_bytes() || self.state_len == 0 {
            return bytes.is_empty();
        }
        let (s, len) = (slot as usize, self.state_len);
        let layers = self.states.iter_mut().filter(|l| !l.is_empty());
        for (layer, src) in layers.zip(bytes.chunks_exact(len * 4)) {
            bytemuck::cast_slice_mut(&mut layer[s * len..(s + 1) * len]).copy_from_slice(src);
        }
        true
    }

    fn slot(&self, blocks: &[u32], pos: usize) -> usize {
        let block = blocks[pos / self.block_size] as usize;
        block * self.block_size + pos % self.block_size
    }

    /// Stores the key and value rows of position `pos` of the sequence whose blocks are `blocks`
    /// (`v` is empty when values live inside the keys).
    pub(crate) fn write(&mut self, layer: usize, blocks: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let s = self.slot(blocks, pos);
        let bs = self.block_size;
        let (block, j) = (s / bs, s % bs);
        self.kt[layer].write(block * bs * self.kv_dim + j, bs, k);
        match self.v_dim {
            0 => self.v[layer].write(s * self.kv_dim, 1, k),
            w => self.v[layer].write(s * w, 1, v),
        }
    }

    /// The keys of block `block` of layer `layer`, transposed: `[kv_dim][block_size]`.
    /// A layer's keys and values when they are quantized (else `None`): the transposed keys and
    /// the value rows (the key rows when values live inside the keys).
    pub(crate) fn quantized(&self, layer: usize) -> Option<(&QuantRows, &QuantRows)> {
        match (&self.kt[layer], &self.v[layer]) {
            (Rows::Quant(k), Rows::Quant(v)) => Some((k, v)),
            _ => None,
        }
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    pub(crate) fn keys_t<E: Stored>(&self, layer: usize, block: u32) -> &[E] {
        let n = self.block_size * self.kv_dim;
        &E::rows(&self.kt[layer])[block as usize * n..(block as usize + 1) * n]
    }

    /// Whether values have rows of their own (else they live inside the keys).
    pub(crate) fn has_values(&self) -> bool {
        self.v_dim > 0
    }

    /// The value rows of block `block` of layer `layer` (`[block_size][stride]`) and their
    /// stride; the key rows when values live inside the keys.
    pub(crate) fn values<E: Stored>(&self, layer: usize, block: u32) -> (&[E], usize) {
        let w = self.value_width();
        let n = self.block_size * w;
        let rows = E::rows(&self.v[layer]);
        (&rows[block as usize * n..(block as usize + 1) * n], w)
    }
}
