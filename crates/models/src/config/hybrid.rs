//! The hybrid architectures' own hyper-parameters (Qwen3.5, Qwen3.5 MoE, Qwen3-Next): the Gated
//! DeltaNet layers' shapes, which layers are recurrent, the rotary sections, and the check that
//! refuses a metadata key of theirs that frugal does not know.

use super::{Arch, ArchKeys, BasicDims};
use crate::ModelError;
use frugal_formats::Value;

/// Gated DeltaNet linear attention: per layer a short causal convolution over the q/k/v channels
/// and a `head_dim × head_dim` state per value head.
#[derive(Debug, Clone)]
pub struct DeltaNetConfig {
    /// Taps of the causal convolution (`ssm.conv_kernel`).
    pub conv_kernel: usize,
    /// Query/key heads (`ssm.group_count`).
    pub n_k_heads: usize,
    /// Value heads (`ssm.time_step_rank`); a multiple of `n_k_heads`.
    pub n_v_heads: usize,
    /// Width of every query, key and value head (`ssm.state_size`).
    pub head_dim: usize,
    /// Value head `h` reads query/key head `h / (n_v_heads / n_k_heads)` (Qwen3-Next), instead
    /// of `h % n_k_heads` (Qwen3.5, whose converter reorders the value heads to that layout).
    pub grouped_heads: bool,
    /// Per trunk layer: Gated DeltaNet (true) or gated full attention (false).
    pub recurrent: Vec<bool>,
}

impl DeltaNetConfig {
    /// Width of all query (or key) heads together.
    pub fn key_dim(&self) -> usize {
        self.n_k_heads * self.head_dim
    }

    /// Width of all value heads together (`ssm.inner_size`).
    pub fn value_dim(&self) -> usize {
        self.n_v_heads * self.head_dim
    }

    /// Channels of the causal convolution: queries, keys and values.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }

    /// Values of one layer's delta-rule state.
    pub fn ssm_len(&self) -> usize {
        self.n_v_heads * self.head_dim * self.head_dim
    }

    /// Values of one layer's convolution history.
    pub fn conv_len(&self) -> usize {
        (self.conv_kernel - 1) * self.conv_dim()
    }

    pub fn n_recurrent(&self) -> usize {
        self.recurrent.iter().filter(|&&r| r).count()
    }

    /// Bytes of one sequence's state over all layers (f32).
    pub fn state_bytes(&self) -> usize {
        self.n_recurrent() * (self.ssm_len() + self.conv_len()) * 4
    }
}

/// Reads the Gated DeltaNet shapes and the recurrent layer pattern.
pub(super) fn read(keys: &ArchKeys, dims: &BasicDims) -> Result<DeltaNetConfig, ModelError> {
    let conv_kernel = keys.req_usize("ssm.conv_kernel")?;
    let inner = keys.req_usize("ssm.inner_size")?;
    let head_dim = keys.req_usize("ssm.state_size")?;
    let n_v_heads = keys.req_usize("ssm.time_step_rank")?;
    let n_k_heads = keys.req_usize("ssm.group_count")?;
    if conv_kernel == 0 || head_dim == 0 || n_k_heads == 0 || n_v_heads == 0 {
        return Err(keys.bad("ssm.* sizes must be positive".into()));
    }
    if !n_v_heads.is_multiple_of(n_k_heads) || inner != n_v_heads * head_dim {
        return Err(keys.bad(format!(
            "ssm.inner_size {inner} must be ssm.time_step_rank {n_v_heads} × ssm.state_size {head_dim}, \
             and ssm.group_count {n_k_heads} must divide ssm.time_step_rank"
        )));
    }
    Ok(DeltaNetConfig {
        conv_kernel,
        n_k_heads,
        n_v_heads,
        head_dim,
        grouped_heads: keys.arch == Arch::Qwen3Next,
        recurrent: recurrent_layers(keys, dims.n_layer)?,
    })
}

/// Which trunk layers are recurrent: `attention.recurrent_layers` if present (its MTP entries
/// beyond the trunk are ignored), else every layer but each `full_attention_interval`-th.
fn recurrent_layers(keys: &ArchKeys, n_layer: usize) -> Result<Vec<bool>, ModelError> {
    let key = keys.key("attention.recurrent_layers");
    if let Some(arr) = keys.gguf.opt_array(&key)? {
        if arr.len() < n_layer {
            return Err(keys.bad(format!(
                "{key} has {} entries for {n_layer} layers",
                arr.len()
            )));
        }
        return arr[..n_layer]
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                other => v
                    .as_u64()
                    .map(|x| x != 0)
                    .ok_or_else(|| keys.bad(format!("{key}: {other:?} is not a boolean"))),
            })
            .collect();
    }
    let interval = keys.opt_usize("full_attention_interval")?.unwrap_or(4);
    if interval == 0 {
        return Err(keys.bad("full_attention_interval must be positive".into()));
    }
    Ok((0..n_layer).map(|i| (i + 1) % interval != 0).collect())
}

/// The multiplier of the attention scores' `1/√head_dim`: from `attention.scale` when the file
/// sets one (llama.cpp then uses it instead of `1/√head_dim`).
pub(super) fn attention_scale(keys: &ArchKeys, head_dim: usize) -> Result<f32, ModelError> {
    Ok(match keys.opt_f32("attention.scale")? {
        Some(s) if s != 0.0 => s * (head_dim as f32).sqrt(),
        _ => 1.0,
    })
}

/// The `{arch}.*` keys frugal reads (or that change nothing it computes) for the hybrids.
const KNOWN: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "vocab_size",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.scale",
    "attention.recurrent_layers",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.dimension_sections",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.attn_factor",
    "rope.scaling.original_context_length",
    "rope.scaling.yarn_ext_factor",
    "rope.scaling.yarn_attn_factor",
    "rope.scaling.yarn_beta_fast",
    "rope.scaling.yarn_beta_slow",
    "rope.scaling.yarn_log_multiplier",
    "ssm.conv_kernel",
    "ssm.inner_size",
    "ssm.state_size",
    "ssm.time_step_rank",
    "ssm.group_count",
    "full_attention_interval",
    "nextn_predict_layers",
    "expert_count",
    "expert_used_count",
    "expert_feed_forward_length",
    "expert_shared_feed_forward_length",
    "expert_weights_scale",
    "expert_weights_norm",
    "expert_gating_func",
];

/// Refuses a hyper-parameter key under the architecture's prefix that frugal does not know: it
/// may set a choice frugal would silently get wrong. Keys of other prefixes are ignored, as
/// llama.cpp ignores them.
pub(super) fn refuse_unknown_keys(keys: &ArchKeys) -> Result<(), ModelError> {
    let prefix = format!("{}.", keys.arch.name());
    for (key, _) in keys.gguf.metadata() {
        if let Some(name) = key.strip_prefix(&prefix) {
            if !KNOWN.contains(&name) {
                return Err(keys.bad(format!(
                    "unknown hyper-parameter key '{key}': this build of frugal does not know what \
                     it sets, so it refuses the file rather than compute something else"
                )));
            }
        }
    }
    Ok(())
}

/// Checks the rotary sections: Qwen3.5 rotates with interleaved multi-axis RoPE, which for text
/// (all axes at the token's position) is NeoX RoPE over `n_rot` dims, provided every rotated
/// pair falls in a text axis's section.
pub(super) fn check_rope_sections(keys: &ArchKeys, n_rot: usize) -> Result<(), ModelError> {
    let key = keys.key("rope.dimension_sections");
    let Some(arr) = keys.gguf.opt_array(&key)? else {
        return Ok(());
    };
    let s: Vec<u64> = arr.iter().filter_map(Value::as_u64).collect();
    if s.len() != arr.len() || s.len() < 3 {
        return Err(keys.bad(format!("{key} must hold at least 3 non-negative integers")));
    }
    let total: u64 = s.iter().sum();
    // ggml's interleaved sections: pair `p` reads axis `p % 3` while `p < 3 × section`; the
    // fourth axis (position 0 for text) would leave a pair unrotated.
    let pairs = (n_rot / 2) as u64;
    let text_axis = |p: u64| {
        let sector = p % total.max(1);
        let axis = (sector % 3) as usize;
        sector < 3 * s[axis]
    };
    if total == 0 || !(0..pairs).all(text_axis) {
        return Err(keys.bad(format!(
            "{key} {s:?} leaves some of the {pairs} rotated pairs outside the text axes"
        )));
    }
    Ok(())
}
