//! Model hyper-parameters read from GGUF metadata, with llama.cpp's defaults where a key is absent.

use crate::ModelError;
use frugal_formats::GgufFile;
use frugal_kernels::ops::{Rope, Yarn};

mod hybrid;

/// Architecture families frugal can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen2Moe,
    Qwen3Moe,
    /// DeepSeek-V2/V2-Lite/V3/R1: multi-head latent attention and MoE with shared experts.
    Deepseek2,
    /// Qwen3.5 dense: Gated DeltaNet linear attention in three layers of four, gated full
    /// attention in the others.
    Qwen35,
    /// Qwen3.5 MoE: the same layers with routed and shared experts.
    Qwen35Moe,
    /// Qwen3-Next: Qwen3.5 MoE's forerunner (grouped value heads, fused beta/alpha projection).
    Qwen3Next,
    /// GLM-4.5/4.6/4.7 (Zhipu): q/k/v bias, partial rotary, leading dense layers, then sigmoid-
    /// routed experts with a selection bias and a shared expert.
    Glm4Moe,
    /// ERNIE 4.5 dense (Baidu).
    Ernie45,
    /// ERNIE 4.5 MoE: softmax-routed experts with a selection bias and shared experts.
    Ernie45Moe,
    /// Gemma 3 (Google): five sliding-window layers to one global, pre- and post-norms, GELU FFN,
    /// scaled embeddings.
    Gemma3,
}

impl Arch {
    pub const SUPPORTED: &'static [&'static str] = &[
        "llama",
        "qwen2",
        "qwen3",
        "qwen2moe",
        "qwen3moe",
        "deepseek2",
        "qwen35",
        "qwen35moe",
        "qwen3next",
        "glm4moe",
        "ernie4_5",
        "ernie4_5-moe",
        "gemma3",
    ];

    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "qwen2moe" => Some(Arch::Qwen2Moe),
            "qwen3moe" => Some(Arch::Qwen3Moe),
            "deepseek2" => Some(Arch::Deepseek2),
            "qwen35" => Some(Arch::Qwen35),
            "qwen35moe" => Some(Arch::Qwen35Moe),
            "qwen3next" => Some(Arch::Qwen3Next),
            "glm4moe" => Some(Arch::Glm4Moe),
            "ernie4_5" => Some(Arch::Ernie45),
            "ernie4_5-moe" => Some(Arch::Ernie45Moe),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    /// The GGUF name, also the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen2Moe => "qwen2moe",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Deepseek2 => "deepseek2",
            Arch::Qwen35 => "qwen35",
            Arch::Qwen35Moe => "qwen35moe",
            Arch::Qwen3Next => "qwen3next",
            Arch::Glm4Moe => "glm4moe",
            Arch::Ernie45 => "ernie4_5",
            Arch::Ernie45Moe => "ernie4_5-moe",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Whether rotary embeddings rotate pairs `(i, i + n_rot/2)` (NeoX) instead of `(2i, 2i+1)`.
    fn rope_neox(self) -> bool {
        matches!(
            self,
            Arch::Qwen2
                | Arch::Qwen3
                | Arch::Qwen2Moe
                | Arch::Qwen3Moe
                | Arch::Glm4Moe
                | Arch::Gemma3
        ) || self.is_hybrid()
    }

    /// Gated DeltaNet layers beside full attention ones (recurrent state per sequence).
    pub fn is_hybrid(self) -> bool {
        matches!(self, Arch::Qwen35 | Arch::Qwen35Moe | Arch::Qwen3Next)
    }

    /// Query/key/value projections carry biases.
    pub(crate) fn qkv_bias(self) -> bool {
        matches!(self, Arch::Qwen2 | Arch::Qwen2Moe | Arch::Glm4Moe)
    }

    /// Per-head RMS norm of queries and keys before RoPE (GLM-4.5's largest model has them too,
    /// optionally).
    pub(crate) fn qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3) || self.is_hybrid()
    }

    /// The norm before the feed-forward is stored as `post_attention_norm` (it follows the
    /// attention's residual add), not `ffn_norm`.
    pub(crate) fn ffn_norm_is_post_attention(self) -> bool {
        self.is_hybrid() || self == Arch::Glm4Moe
    }
}

/// Hyper-parameters of a dense transformer.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of queries and keys.
    pub head_dim_k: usize,
    /// Per-head width of values.
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: Rope,
    /// Multiplies the attention scores' `1/sqrt(head size)` (DeepSeek2 with YaRN: mscale²).
    pub kq_scale_mult: f32,
    /// Mixture-of-experts feed-forward, for the MoE architectures.
    pub moe: Option<MoeConfig>,
    /// Multi-head latent attention (deepseek2).
    pub mla: Option<MlaConfig>,
    /// Gated DeltaNet linear attention and which layers use it (the hybrid architectures).
    pub delta_net: Option<DeltaNetConfig>,
    /// Multi-token-prediction layers stored after the `n_layer` trunk layers (`nextn`): loaded,
    /// not run by the forward pass (they are a draft head for speculative decoding).
    pub n_nextn: usize,
    /// Sliding-window attention (Gemma 3): which layers see only the last `window` positions,
    /// and their own RoPE base.
    pub sliding: Option<SlidingConfig>,
    /// Token embeddings are multiplied by this (Gemma: `sqrt(n_embd)`; 1 otherwise).
    pub embd_scale: f32,
}

/// Sliding-window attention: a token at position `p` of a sliding layer attends to positions
/// `p - window + 1 ..= p` only.
#[derive(Debug, Clone)]
pub struct SlidingConfig {
    pub window: usize,
    /// Per layer: whether it slides (else it attends to the whole context).
    pub layers: Vec<bool>,
    /// RoPE of the sliding layers (their own frequency base).
    pub rope: Rope,
}

/// Multi-head latent attention: keys and values are reconstructed from a per-token latent of
/// `kv_lora` values plus a `qk_rope`-wide RoPE key shared by all heads; the cache holds only those.
#[derive(Debug, Clone)]
pub struct MlaConfig {
    /// Rank of the query down-projection; `None` when queries are projected directly (V2-Lite).
    pub q_lora: Option<usize>,
    pub kv_lora: usize,
    pub qk_nope: usize,
    pub qk_rope: usize,
    pub v_head: usize,
}

pub use hybrid::DeltaNetConfig;

/// How router logits become expert probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    Softmax,
    Sigmoid,
}

/// Routing of a mixture-of-experts feed-forward layer.
#[derive(Debug, Clone)]
pub struct MoeConfig {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Hidden width of each routed expert.
    pub n_ff_exp: usize,
    /// Hidden width of the shared expert (qwen2moe), if any.
    pub n_ff_shared: Option<usize>,
    /// Renormalize the selected experts' weights to sum to 1 (qwen3moe).
    pub norm_weights: bool,
    /// Multiply the selected weights by this (0 or 1: unchanged).
    pub weights_scale: f32,
    pub gating: Gating,
    /// Leading layers with a dense feed-forward instead of experts (deepseek2).
    pub n_dense_lead: usize,
    /// How the shared expert's output is scaled.
    pub shared_gate: SharedGate,
    /// Grouped selection (DeepSeek-V3): experts in `n_group` groups, only the best `n_group_used`
    /// groups (by the sum of their top-2 scores) compete.
    pub n_group: usize,
    pub n_group_used: usize,
}

/// How the shared expert's output is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedGate {
    /// Added as is (deepseek2).
    None,
    /// Times `sigmoid(w · x)`, computed as llama.cpp's qwen2moe graph does: `silu(g) / g`.
    SiluRatio,
    /// Times `sigmoid(w · x)` (qwen35moe, qwen3next).
    Sigmoid,
}

/// One architecture's metadata: its keys are `{arch}.{name}`. Errors name the file.
pub(crate) struct ArchKeys<'a> {
    gguf: &'a GgufFile,
    arch: Arch,
}

impl ArchKeys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch.name())
    }

    fn req_usize(&self, name: &str) -> Result<usize, ModelError> {
        Ok(self.gguf.req_u32(&self.key(name))? as usize)
    }

    fn opt_usize(&self, name: &str) -> Result<Option<usize>, ModelError> {
        Ok(self.gguf.opt_u32(&self.key(name))?.map(|v| v as usize))
    }

    fn opt_f32(&self, name: &str) -> Result<Option<f32>, ModelError> {
        Ok(self.gguf.opt_f32(&self.key(name))?)
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, ModelError> {
        Ok(self.gguf.opt_bool(&self.key(name))?)
    }

    fn opt_str(&self, name: &str) -> Result<Option<&str>, ModelError> {
        Ok(self.gguf.opt_str(&self.key(name))?)
    }

    fn bad(&self, msg: String) -> ModelError {
        ModelError::BadConfig {
            file: self.gguf.name().to_string(),
            msg,
        }
    }
}

/// The sizes every architecture has.
pub(crate) struct BasicDims {
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    n_ff: usize,
    n_ctx_train: usize,
    rms_eps: f32,
}

impl ModelConfig {
    pub fn from_gguf(gguf: &GgufFile) -> Result<ModelConfig, ModelError> {
        let keys = ArchKeys {
            gguf,
            arch: read_arch(gguf)?,
        };
        let arch = keys.arch;
        if arch.is_hybrid() {
            hybrid::refuse_unknown_keys(&keys)?;
        }
        let n_nextn = keys.opt_usize("nextn_predict_layers")?.unwrap_or(0);
        let mut dims = read_basic_dims(&keys)?;
        if n_nextn >= dims.n_layer {
            return Err(keys.bad(format!(
                "nextn_predict_layers {n_nextn} leaves no trunk layers of {}",
                dims.n_layer
            )));
        }
        dims.n_layer -= n_nextn;
        let delta_net = match arch.is_hybrid() {
            true => Some(hybrid::read(&keys, &dims)?),
            false => None,
        };
        let (rope, kq_scale_mult) = read_rope(&keys, &dims)?;
        let n_vocab = read_vocab_size(gguf, dims.n_embd)?;
        let mla = match arch {
            Arch::Deepseek2 => Some(read_mla(&keys, &dims, rope.n_rot)?),
            _ => None,
        };
        let moe = match arch {
            Arch::Qwen2Moe
            | Arch::Qwen3Moe
            | Arch::Deepseek2
            | Arch::Qwen35Moe
            | Arch::Qwen3Next
            | Arch::Glm4Moe
            | Arch::Ernie45Moe => Some(read_moe(&keys, dims.n_ff)?),
            _ => None,
        };
        let sliding = match arch {
            Arch::Gemma3 => read_sliding(&keys, &dims, &rope)?,
            _ => None,
        };
        Ok(ModelConfig {
            arch,
            moe,
            mla,
            delta_net,
            n_nextn,
            n_layer: dims.n_layer,
            n_embd: dims.n_embd,
            n_head: dims.n_head,
            n_head_kv: dims.n_head_kv,
            head_dim_k: dims.head_dim_k,
            head_dim_v: dims.head_dim_v,
            n_ff: dims.n_ff,
            n_vocab,
            n_ctx_train: dims.n_ctx_train,
            rms_eps: dims.rms_eps,
            rope,
            // Only DeepSeek2's graph scales its scores by YaRN's mscale²; the hybrids may set
            // the scale itself.
            kq_scale_mult: match arch {
                Arch::Deepseek2 => kq_scale_mult,
                a if a.is_hybrid() => hybrid::attention_scale(&keys, dims.head_dim_k)?,
                Arch::Gemma3 => gemma3_attention_scale(&dims) * (dims.head_dim_k as f32).sqrt(),
                _ => 1.0,
            },
            sliding,
            embd_scale: match arch {
                Arch::Gemma3 => (dims.n_embd as f32).sqrt(),
                _ => 1.0,
            },
        })
    }

    /// The dense feed-forward gates with GELU (Gemma) rather than SiLU.
    pub(crate) fn ffn_gelu(&self) -> bool {
        self.arch == Arch::Gemma3
    }

    /// Whether layer `il` attends through a sliding window.
    pub fn is_sliding(&self, il: usize) -> bool {
        self.sliding.as_ref().is_some_and(|s| s.layers[il])
    }

    /// The sliding window in positions, for models with sliding-window layers.
    pub fn sliding_window(&self) -> Option<usize> {
        self.sliding.as_ref().map(|s| s.window)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Width of all key heads of one position.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of the cached values of one position; 0 with MLA, whose values are the first
    /// `kv_lora` dims of the cached key (the latent).
    pub fn kv_v_dim(&self) -> usize {
        if self.mla.is_some() {
            0
        } else {
            self.n_head_kv * self.head_dim_v
        }
    }

    /// Values the KV store keeps per token and attention layer: the keys and the values (with
    /// MLA, the latent plus the RoPE key, kept twice: transposed for the scores and as rows for
    /// the weighted sums).
    fn kv_values_per_layer(&self) -> usize {
        match self.kv_v_dim() {
            0 => 2 * self.kv_dim(),
            v => self.kv_dim() + v,
        }
    }

    /// Bytes of KV cache per token (all layers) stored as `ty`. With MLA this is the latent
    /// plus the RoPE key, not the full per-head keys and values.
    pub fn kv_bytes_per_token(&self, ty: crate::KvType) -> usize {
        self.n_kv_layers() * ty.bytes_for(self.kv_values_per_layer())
    }

    /// Bytes of KV cache per token (stored as `ty`) of the layers that attend to the whole
    /// context, and of the sliding-window layers (which keep at most a window of positions per
    /// sequence).
    pub fn kv_bytes_per_token_split(&self, ty: crate::KvType) -> (usize, usize) {
        let per_layer = ty.bytes_for(self.kv_values_per_layer());
        let sliding = (0..self.n_layer)
            .filter(|&il| self.has_kv(il) && self.is_sliding(il))
            .count();
        (
            (self.n_kv_layers() - sliding) * per_layer,
            sliding * per_layer,
        )
    }

    /// Whether keys and values can be stored as `ty`: the quantized types keep blocks of 32
    /// values, so every key and value head must be whole blocks.
    pub fn check_kv_type(&self, ty: crate::KvType) -> Result<(), String> {
        let v = self.mla.as_ref().map_or(self.head_dim_v, |m| m.kv_lora);
        if ty.quant().is_none() || (self.head_dim_k.is_multiple_of(32) && v.is_multiple_of(32)) {
            return Ok(());
        }
        Err(format!(
            "KV type {ty} stores blocks of 32 values, but this model's key and value heads are \
             {} and {v} wide; use f16, bf16 or f32",
            self.head_dim_k
        ))
    }

    /// Whether layer `il` keeps keys and values (full attention), rather than recurrent state.
    pub fn has_kv(&self, il: usize) -> bool {
        self.delta_net.as_ref().is_none_or(|d| !d.recurrent[il])
    }

    /// Layers with keys and values.
    pub fn n_kv_layers(&self) -> usize {
        (0..self.n_layer).filter(|&il| self.has_kv(il)).count()
    }

    /// Bytes of recurrent state per sequence (f32, all linear-attention layers): 0 for models
    /// without any.
    pub fn state_bytes_per_seq(&self) -> usize {
        self.delta_net.as_ref().map_or(0, |d| d.state_bytes())
    }

    /// What full per-head keys and values would take per token (as `ty`), for comparison with
    /// MLA.
    pub fn kv_bytes_per_token_unabsorbed(&self, ty: crate::KvType) -> usize {
        match &self.mla {
            Some(m) => {
                let per_head = m.qk_nope + m.qk_rope + m.v_head;
                self.n_kv_layers() * ty.bytes_for(self.n_head * per_head)
            }
            None => self.kv_bytes_per_token(ty),
        }
    }
}

/// `general.architecture`, if frugal supports it.
fn read_arch(gguf: &GgufFile) -> Result<Arch, ModelError> {
    let arch_name = gguf.req_str("general.architecture")?;
    Arch::from_name(arch_name).ok_or_else(|| ModelError::UnsupportedArch {
        file: gguf.name().to_string(),
        arch: arch_name.to_string(),
        supported: Arch::SUPPORTED.join(", "),
    })
}

/// Layer, embedding, head and feed-forward sizes, checked to be positive and consistent.
fn read_basic_dims(keys: &ArchKeys) -> Result<BasicDims, ModelError> {
    let n_layer = keys.req_usize("block_count")?;
    let n_embd = keys.req_usize("embedding_length")?;
    let n_head = keys.req_usize("attention.head_count")?;
    let n_head_kv = keys.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
    // MoE models without dense layers may leave the dense width out.
    let n_ff = match keys.arch {
        Arch::Qwen35Moe | Arch::Qwen3Next => keys.opt_usize("feed_forward_length")?.unwrap_or(1),
        _ => keys.req_usize("feed_forward_length")?,
    };
    let n_ctx_train = keys.req_usize("context_length")?;
    if n_layer == 0 || n_embd == 0 || n_head == 0 || n_head_kv == 0 || n_ff == 0 {
        return Err(keys.bad(
            "block_count, embedding_length, head counts and feed_forward_length must be positive"
                .into(),
        ));
    }
    if !n_head.is_multiple_of(n_head_kv) {
        return Err(keys.bad(format!(
            "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
        )));
    }
    let default_head = n_embd / n_head;
    let head_dim_k = keys
        .opt_usize("attention.key_length")?
        .unwrap_or(default_head);
    let head_dim_v = keys
        .opt_usize("attention.value_length")?
        .unwrap_or(default_head);
    if head_dim_k == 0
        || head_dim_v == 0
        || (head_dim_k != head_dim_v && keys.arch != Arch::Deepseek2)
    {
        return Err(keys.bad(format!(
            "key_length {head_dim_k} and value_length {head_dim_v} must be equal and positive"
        )));
    }
    let rms_eps = keys
        .opt_f32("attention.layer_norm_rms_epsilon")?
        .unwrap_or(1e-6);
    Ok(BasicDims {
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim_k,
        head_dim_v,
        n_ff,
        n_ctx_train,
        rms_eps,
    })
}

/// The vocabulary size, from the token embedding's shape.
fn read_vocab_size(gguf: &GgufFile, n_embd: usize) -> Result<usize, ModelError> {
    match gguf.tensor("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => Ok(t.dims[1] as usize),
        Some(t) => Err(ModelError::BadShape {
            file: gguf.name().to_string(),
            name: t.name.clone(),
            expected: vec![n_embd as u64, 0],
            actual: t.dims.clone(),
        }),
        None => Err(ModelError::MissingTensor {
            file: gguf.name().to_string(),
            name: "token_embd.weight".into(),
        }),
    }
}

/// Rotary embeddings (with their scaling) and the attention-score multiplier that comes with
/// YaRN.
fn read_rope(keys: &ArchKeys, dims: &BasicDims) -> Result<(Rope, f32), ModelError> {
    let head_dim_k = dims.head_dim_k;
    let n_rot = keys
        .opt_usize("rope.dimension_count")?
        .unwrap_or(head_dim_k);
    if n_rot == 0 || n_rot > head_dim_k || !n_rot.is_multiple_of(2) {
        return Err(keys.bad(format!(
            "rope.dimension_count {n_rot} must be even and at most the head size {head_dim_k}"
        )));
    }
    if keys.arch.is_hybrid() {
        hybrid::check_rope_sections(keys, n_rot)?;
    }
    let freq_base = keys.opt_f32("rope.freq_base")?.unwrap_or(10000.0);
    let (freq_scale, yarn, kq_scale_mult) = rope_scaling(keys, n_rot, freq_base, dims.n_ctx_train)?;
    let rope = Rope {
        n_rot,
        freq_base,
        freq_scale,
        neox: keys.arch.rope_neox(),
        // Filled in from the `rope_freqs` tensor by the loader, if the file has one.
        freq_factors: None,
        yarn,
    };
    Ok((rope, kq_scale_mult))
}

/// Gemma 3's query scale: `1/sqrt(head_dim)`, except for the 27B model (62 layers), which
/// scales by the hidden size per head (as llama.cpp and gemma_pytorch do).
fn gemma3_attention_scale(dims: &BasicDims) -> f32 {
    let per_head = match dims.n_layer {
        62 => dims.n_embd / dims.n_head,
        _ => dims.head_dim_k,
    };
    1.0 / (per_head as f32).sqrt()
}

/// Gemma 3's sliding-window layers: the window, which layers slide (the pattern key, a count
/// or a per-layer array, else llama.cpp's built-in five sliding layers to one global), and
/// their RoPE base. `None` without a window.
fn read_sliding(
    keys: &ArchKeys,
    dims: &BasicDims,
    rope: &Rope,
) -> Result<Option<SlidingConfig>, ModelError> {
    let window = keys.opt_usize("attention.sliding_window")?.unwrap_or(0);
    if window == 0 {
        return Ok(None);
    }
    let pattern_key = keys.key("attention.sliding_window_pattern");
    let layers: Vec<bool> = match keys.gguf.get(&pattern_key) {
        Some(frugal_formats::Value::Array(a)) => {
            let flags: Option<Vec<bool>> = a
                .iter()
                .map(|v| match v {
                    frugal_formats::Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect();
            match flags {
                Some(f) if f.len() >= dims.n_layer => f[..dims.n_layer].to_vec(),
                _ => {
                    return Err(keys.bad(format!(
                        "{pattern_key} must be one bool per layer ({} layers)",
                        dims.n_layer
                    )))
                }
            }
        }
        _ => {
            let n = keys
                .opt_usize("attention.sliding_window_pattern")?
                .unwrap_or(6);
            (0..dims.n_layer)
                .map(|il| n == 0 || il % n < n - 1)
                .collect()
        }
    };
    let freq_base = keys.opt_f32("rope.freq_base_swa")?.unwrap_or(10000.0);
    Ok(Some(SlidingConfig {
        window,
        layers,
        rope: Rope {
            freq_base,
            ..rope.clone()
        },
    }))
}

/// Multi-head latent attention (deepseek2): latent ranks and per-head widths, checked against
/// the key and value lengths.
fn read_mla(keys: &ArchKeys, dims: &BasicDims, n_rot: usize) -> Result<MlaConfig, ModelError> {
    let (head_dim_k, head_dim_v) = (dims.head_dim_k, dims.head_dim_v);
    let kv_lora = keys.req_usize("attention.kv_lora_rank")?;
    let q_lora = keys.opt_usize("attention.q_lora_rank")?.filter(|&r| r > 0);
    let k_mla = keys
        .opt_usize("attention.key_length_mla")?
        .unwrap_or(head_dim_k);
    let v_head = keys
        .opt_usize("attention.value_length_mla")?
        .unwrap_or(head_dim_v);
    if n_rot >= k_mla || head_dim_k != kv_lora + n_rot || head_dim_v != kv_lora {
        return Err(keys.bad(format!(
            "MLA shapes do not fit: key_length {head_dim_k}, value_length {head_dim_v}, kv_lora_rank {kv_lora}, rope {n_rot}, key_length_mla {k_mla}"
        )));
    }
    Ok(MlaConfig {
        q_lora,
        kv_lora,
        qk_nope: k_mla - n_rot,
        qk_rope: n_rot,
        v_head,
    })
}

/// Mixture-of-experts routing: expert counts, groups, shared expert, gating and weighting.
fn read_moe(keys: &ArchKeys, n_ff: usize) -> Result<MoeConfig, ModelError> {
    let arch = keys.arch;
    let n_expert = keys.req_usize("expert_count")?;
    let n_expert_used = keys.req_usize("expert_used_count")?;
    if n_expert == 0 || n_expert_used == 0 || n_expert_used > n_expert {
        return Err(keys.bad(format!(
            "expert_used_count {n_expert_used} must be between 1 and expert_count {n_expert}"
        )));
    }
    let n_ff_exp = keys
        .opt_usize("expert_feed_forward_length")?
        .unwrap_or(if arch.is_hybrid() {
            n_ff / n_expert_used
        } else {
            n_ff
        });
    let (n_group, n_group_used) = read_expert_groups(keys, n_expert)?;
    if arch == Arch::Ernie45Moe && keys.opt_usize("interleave_moe_layer_step")?.unwrap_or(1) != 1 {
        // llama.cpp loads experts into every layer after the dense ones but runs them only in
        // every step-th: such files do not load consistently anywhere.
        return Err(keys.bad("interleave_moe_layer_step other than 1 is not supported".into()));
    }
    Ok(MoeConfig {
        n_expert,
        n_expert_used,
        n_ff_exp,
        n_ff_shared: read_shared_expert_width(keys, n_ff, n_ff_exp)?,
        gating: match keys.opt_usize("expert_gating_func")? {
            // GLM-4.5 scores experts with a sigmoid when the key is absent (llama.cpp's default).
            None | Some(0) if arch == Arch::Glm4Moe => Gating::Sigmoid,
            None | Some(0) | Some(1) => Gating::Softmax,
            Some(2) => Gating::Sigmoid,
            Some(other) => {
                return Err(keys.bad(format!("expert_gating_func {other} is not supported")))
            }
        },
        n_dense_lead: keys.opt_usize("leading_dense_block_count")?.unwrap_or(0),
        shared_gate: match arch {
            Arch::Qwen2Moe => SharedGate::SiluRatio,
            Arch::Qwen35Moe | Arch::Qwen3Next => SharedGate::Sigmoid,
            _ => SharedGate::None,
        },
        n_group,
        n_group_used,
        norm_weights: keys.opt_bool("expert_weights_norm")?.unwrap_or(matches!(
            arch,
            Arch::Qwen3Moe | Arch::Qwen35Moe | Arch::Qwen3Next | Arch::Ernie45Moe
        )),
        weights_scale: keys.opt_f32("expert_weights_scale")?.unwrap_or(0.0),
    })
}

/// Expert groups (DeepSeek-V3) and how many of them compete; one group by default.
fn read_expert_groups(keys: &ArchKeys, n_expert: usize) -> Result<(usize, usize), ModelError> {
    let n_group = keys.opt_usize("expert_group_count")?.unwrap_or(1);
    let n_group_used = keys
        .opt_usize("expert_group_used_count")?
        .unwrap_or(n_group);
    if n_group == 0
        || !n_expert.is_multiple_of(n_group)
        || n_group_used == 0
        || n_group_used > n_group
    {
        return Err(keys.bad(format!(
            "expert groups {n_group} (using {n_group_used}) do not divide {n_expert} experts"
        )));
    }
    Ok((n_group, n_group_used))
}

/// Hidden width of the shared expert: its own key (qwen2moe), or the routed width times the
/// number of shared experts (deepseek2); `None` when there is none.
fn read_shared_expert_width(
    keys: &ArchKeys,
    n_ff: usize,
    n_ff_exp: usize,
) -> Result<Option<usize>, ModelError> {
    Ok(match keys.arch {
        Arch::Qwen2Moe | Arch::Qwen35Moe | Arch::Qwen3Next => Some(
            keys.opt_usize("expert_shared_feed_forward_length")?
                .unwrap_or(n_ff),
        ),
        Arch::Deepseek2 | Arch::Glm4Moe => {
            let n_shared = keys.opt_usize("expert_shared_count")?.unwrap_or(0);
            (n_shared > 0).then_some(n_ff_exp * n_shared)
        }
        Arch::Ernie45Moe => keys
            .opt_usize("expert_shared_feed_forward_length")?
            .filter(|&ff| ff > 0),
        _ => None,
    })
}

/// RoPE scaling from metadata, as llama.cpp sets it up: returns `freq_scale`, the YaRN
/// parameters (also used for a plain `rope.scaling.attn_factor`), and the multiplier DeepSeek2
/// applies to its attention scores (`mscale²`).
fn rope_scaling(
    keys: &ArchKeys,
    n_rot: usize,
    freq_base: f32,
    n_ctx_train: usize,
) -> Result<(f32, Option<Yarn>, f32), ModelError> {
    let kind = keys.opt_str("rope.scaling.type")?.unwrap_or("none");
    let factor = keys
        .opt_f32("rope.scaling.factor")?
        .or(keys.opt_f32("rope.scale_linear")?);
    let rope_attn = keys.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0);
    if let Some(f) = factor {
        if !(f > 0.0 && f.is_finite()) {
            return Err(keys.bad(format!("rope scaling factor {f} must be positive")));
        }
    }
    let plain = |fs: f32| {
        let yarn = (rope_attn != 1.0).then_some(Yarn {
            ext_factor: 0.0,
            attn_factor: rope_attn,
            corr_dims: [0.0, 0.0],
        });
        (fs, yarn, rope_attn * rope_attn)
    };
    match kind {
        "none" => Ok(plain(1.0)),
        "linear" => Ok(plain(1.0 / factor.unwrap_or(1.0))),
        "yarn" => {
            let yarn = YarnInputs {
                factor: factor.unwrap_or(1.0),
                rope_attn,
                n_rot,
                freq_base,
                n_ctx_train,
            };
            yarn_scaling(keys, &yarn)
        }
        other => Err(keys.bad(format!(
            "rope scaling type '{other}' is not supported (supported: none, linear, yarn)"
        ))),
    }
}

/// What YaRN scaling needs besides its own `rope.scaling.yarn_*` keys.
struct YarnInputs {
    factor: f32,
    /// `rope.scaling.attn_factor`.
    rope_attn: f32,
    n_rot: usize,
    freq_base: f32,
    n_ctx_train: usize,
}

/// YaRN: `freq_scale`, the YaRN parameters and the attention-score multiplier (`mscale²`).
fn yarn_scaling(
    keys: &ArchKeys,
    inputs: &YarnInputs,
) -> Result<(f32, Option<Yarn>, f32), ModelError> {
    let factor = inputs.factor;
    let fs = 1.0 / factor;
    let n_ctx_orig = keys
        .opt_usize("rope.scaling.original_context_length")?
        .unwrap_or(inputs.n_ctx_train);
    let ext_factor = keys
        .opt_f32("rope.scaling.yarn_ext_factor")?
        .filter(|v| *v >= 0.0)
        .unwrap_or(1.0);
    let beta_fast = keys.opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0);
    let beta_slow = keys.opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0);
    let mut log_mul = keys
        .opt_f32("rope.scaling.yarn_log_multiplier")?
        .unwrap_or(0.0);
    if keys.arch == Arch::Deepseek2 {
        // The converter stores DeepSeek's value times 0.1; llama.cpp undoes that.
        log_mul /= 0.1;
    }
    let mut attn_factor = keys
        .opt_f32("rope.scaling.yarn_attn_factor")?
        .unwrap_or(1.0);
    if ext_factor != 0.0 {
        attn_factor = yarn_attn_factor(keys.arch, factor, log_mul);
    }
    attn_factor *= inputs.rope_attn;
    let attn_org = attn_factor * (1.0 + 0.1 * (1.0 / fs).ln());
    let mscale = attn_org * (1.0 + 0.1 * log_mul * (1.0 / fs).ln());
    let corr_dims = Yarn::corr_dims(
        inputs.n_rot,
        n_ctx_orig,
        inputs.freq_base,
        beta_fast,
        beta_slow,
    );
    let yarn = Yarn {
        ext_factor,
        attn_factor,
        corr_dims,
    };
    Ok((fs, Some(yarn), mscale * mscale))
}

/// YaRN's attention factor as llama.cpp derives it from the scaling factor and the log
/// multiplier, divided by what ggml multiplies back in when it applies YaRN.
fn yarn_attn_factor(arch: Arch, factor: f32, log_mul: f32) -> f32 {
    let get_mscale = |s: f32, m: f32| {
        if s <= 1.0 {
            1.0
        } else {
            0.1 * m * s.ln() + 1.0
        }
    };
    let attn_factor = if log_mul != 0.0 {
        let m = if arch == Arch::Deepseek2 && log_mul != 1.0 {
            log_mul
        } else {
            1.0
        };
        get_mscale(factor, m) / get_mscale(factor, log_mul)
    } else {
        get_mscale(factor, 1.0)
    };
    attn_factor / (1.0 + 0.1 * factor.ln())
}
