//! Hugging Face tensor names → GGUF tensor names (llama.cpp's `gguf-py/gguf/tensor_mapping.py`,
//! for the architectures of [`crate::config::Arch`]).

use crate::config::Arch;

/// What a checkpoint tensor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One GGUF tensor of this name, data as stored (dims reversed into ggml order).
    Tensor(String),
    /// Expert `expert` of layer `layer`'s stacked `ffn_{kind}_exps.weight` (`kind`: gate, up,
    /// down).
    Expert {
        layer: usize,
        expert: usize,
        kind: &'static str,
    },
    /// DeepSeek's `kv_b_proj` of layer `layer`: split into `attn_k_b` (transposed) and `attn_v_b`.
    KvB { layer: usize },
    /// ERNIE's fused projections of layer `layer`, split by rows: `qkv_proj` into Q, K and V,
    /// `up_gate_proj` into gate and up (`qkv` true for the first).
    Fused { layer: usize, qkv: bool },
    /// Qwen3-Next's `in_proj_qkvz` of layer `layer` (per key head: q, k, v, z rows), regrouped
    /// into `attn_qkv` (all q, all k, all v) and `attn_gate` (all z).
    Qkvz { layer: usize },
    /// Not part of the model (rotary caches, multi-token-prediction layers llama.cpp skips).
    Skip,
}

/// Names of global tensors.
const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer names after `model.layers.N.` (without `.weight`/`.bias`).
const LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("self_attn.q_a_proj", "attn_q_a"),
    ("self_attn.q_a_layernorm", "attn_q_a_norm"),
    ("self_attn.q_b_proj", "attn_q_b"),
    ("self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa"),
    ("self_attn.kv_a_layernorm", "attn_kv_a_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.gate", "ffn_gate_inp"),
    ("mlp.gate.e_score_correction", "exp_probs_b"),
    ("mlp.shared_expert.gate_proj", "ffn_gate_shexp"),
    ("mlp.shared_expert.up_proj", "ffn_up_shexp"),
    ("mlp.shared_expert.down_proj", "ffn_down_shexp"),
    ("mlp.shared_expert_gate", "ffn_gate_inp_shexp"),
    ("mlp.shared_experts.gate_proj", "ffn_gate_shexp"),
    ("mlp.shared_experts.up_proj", "ffn_up_shexp"),
    ("mlp.shared_experts.down_proj", "ffn_down_shexp"),
    // transformers 5 stores a layer's experts fused: [n_expert, 2 * n_ff, n_embd] (each expert's
    // gate rows, then its up rows: the layout of ggml's `ffn_gate_up_exps`) and
    // [n_expert, n_embd, n_ff].
    ("mlp.experts.gate_up_proj", "ffn_gate_up_exps"),
    ("mlp.experts.down_proj", "ffn_down_exps"),
];

/// Per-layer names that differ by architecture: the norm HF calls `post_attention_layernorm` is
/// the FFN's input norm in most models but a norm of the attention's output in GLM-4.5's and
/// Gemma 3's GGUF names.
fn arch_layer_names(arch: Arch) -> &'static [(&'static str, &'static str)] {
    match arch {
        Arch::Gemma3 => &[
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ],
        Arch::Glm4Moe => &[
            ("post_attention_layernorm", "post_attention_norm"),
            ("eh_proj", "nextn.eh_proj"),
            ("enorm", "nextn.enorm"),
            ("hnorm", "nextn.hnorm"),
            ("shared_head.norm", "nextn.shared_head_norm"),
            ("shared_head.head", "nextn.shared_head_head"),
            ("embed_tokens", "nextn.embed_tokens"),
        ],
        Arch::Ernie45Moe => &[("mlp.moe_statics.e_score_correction", "exp_probs_b")],
        Arch::Qwen35 | Arch::Qwen35Moe | Arch::Qwen3Next => &[
            ("post_attention_layernorm", "post_attention_norm"),
            ("linear_attn.in_proj_qkv", "attn_qkv"),
            ("linear_attn.in_proj_z", "attn_gate"),
            ("linear_attn.in_proj_a", "ssm_alpha"),
            ("linear_attn.in_proj_b", "ssm_beta"),
            ("linear_attn.in_proj_ba", "ssm_ba"),
            ("linear_attn.conv1d", "ssm_conv1d"),
            ("linear_attn.norm", "ssm_norm"),
            ("linear_attn.out_proj", "ssm_out"),
            ("eh_proj", "nextn.eh_proj"),
            ("enorm", "nextn.enorm"),
            ("hnorm", "nextn.hnorm"),
            ("shared_head.norm", "nextn.shared_head_norm"),
        ],
        _ => &[],
    }
}

/// The name llama.cpp's converter maps from: a multimodal wrapper's language-model prefix and
/// ERNIE's `ernie.` prefix as `model.`, and the Qwen
/// hybrids' MTP block (`mtp.*`) as the layers after the trunk's `n_main` (`mtp.layers.J.*` as
/// layer `n_main + J`; `mtp.fc`, `mtp.pre_fc_norm_embedding`, `mtp.pre_fc_norm_hidden` and
/// `mtp.norm` as layer `n_main`'s `eh_proj`, `enorm`, `hnorm`, `shared_head.norm`).
pub fn canonical(name: &str, n_main: usize) -> String {
    // Multimodal wrappers: the language model's tensors under `model.language_model.` (or, in
    // older transformers, `language_model.model.` and `language_model.lm_head.`).
    for (wrapped, plain) in [
        ("model.language_model.", "model."),
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
        ("ernie.", "model."),
    ] {
        if let Some(rest) = name.strip_prefix(wrapped) {
            return format!("{plain}{rest}");
        }
    }
    let Some(rest) = name
        .strip_prefix("model.mtp.")
        .or(name.strip_prefix("mtp."))
    else {
        return name.to_string();
    };
    if let Some((j, tail)) = rest.strip_prefix("layers.").and_then(|r| r.split_once('.')) {
        if let Ok(j) = j.parse::<usize>() {
            return format!("model.layers.{}.{tail}", n_main + j);
        }
    }
    let renamed = [
        ("fc.", "eh_proj."),
        ("pre_fc_norm_embedding.", "enorm."),
        ("pre_fc_norm_hidden.", "hnorm."),
        ("norm.", "shared_head.norm."),
    ];
    match renamed.iter().find(|(from, _)| rest.starts_with(from)) {
        Some((from, to)) => format!("model.layers.{n_main}.{to}{}", &rest[from.len()..]),
        None => name.to_string(),
    }
}

/// A multimodal checkpoint's vision encoder and projector: not part of the language model
/// (llama.cpp converts them into a separate projector file).
const VISION: &[&str] = &[
    "model.visual.",
    "visual.",
    "model.vision_tower.",
    "vision_tower.",
    "model.multi_modal_projector.",
    "multi_modal_projector.",
];

/// 1-D parameters of the hybrids' linear attention, whose names carry no `.weight`/`.bias`.
const BARE: &[(&str, &str)] = &[
    ("linear_attn.A_log", "ssm_a"),
    ("linear_attn.dt_bias", "ssm_dt.bias"),
];

/// The GGUF target of checkpoint tensor `name` of an `arch` model with `n_layer` layers (its
/// multi-token-prediction layers included where llama.cpp keeps them), `None` if it has no known
/// mapping. Layers past `n_layer` (DeepSeek's MTP layers) are skipped, as llama.cpp does.
pub fn target(name: &str, arch: Arch, n_layer: usize) -> Option<Target> {
    if name.ends_with("rotary_emb.inv_freq") || VISION.iter().any(|p| name.starts_with(p)) {
        return Some(Target::Skip);
    }
    if let Some(&(_, g)) = GLOBAL.iter().find(|(h, _)| *h == name) {
        return Some(Target::Tensor(g.to_string()));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if layer >= n_layer {
        return Some(Target::Skip);
    }
    match rest {
        "self_attn.kv_b_proj.weight" => return Some(Target::KvB { layer }),
        "self_attn.qkv_proj.weight" => return Some(Target::Fused { layer, qkv: true }),
        "mlp.up_gate_proj.weight" => return Some(Target::Fused { layer, qkv: false }),
        "linear_attn.in_proj_qkvz.weight" => return Some(Target::Qkvz { layer }),
        _ => {}
    }
    if let Some((_, g)) = BARE.iter().find(|(h, _)| *h == rest) {
        return Some(Target::Tensor(format!("blk.{layer}.{g}")));
    }
    if let Some(expert) = per_expert(rest) {
        let (expert, kind) = expert?;
        return Some(Target::Expert {
            layer,
            expert,
            kind,
        });
    }
    // `e_score_correction_bias` has no `.bias` suffix of its own.
    let (stem, suffix) = match rest.strip_suffix("_bias") {
        Some(s) if s.ends_with("e_score_correction") => (s, "bias"),
        _ => match rest.rsplit_once('.') {
            Some((s, suf @ ("weight" | "bias"))) => (s, suf),
            // transformers 5's fused experts have no suffix.
            _ => (rest, "weight"),
        },
    };
    let (_, g) = arch_layer_names(arch)
        .iter()
        .chain(LAYER)
        .find(|(h, _)| *h == stem)?;
    Some(Target::Tensor(format!("blk.{layer}.{g}.{suffix}")))
}

/// `mlp.experts.E.{gate,up,down}_proj.weight`: `Some(Some((E, kind)))`; another name under
/// `mlp.experts.E.`: `Some(None)`; anything else: `None`.
fn per_expert(rest: &str) -> Option<Option<(usize, &'static str)>> {
    let tail = rest.strip_prefix("mlp.experts.")?;
    let (e, proj) = tail.split_once('.')?;
    let e: usize = e.parse().ok()?;
    let kind = match proj {
        "gate_proj.weight" => "gate",
        "up_proj.weight" => "up",
        "down_proj.weight" => "down",
        _ => return Some(None),
    };
    Some(Some((e, kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_llama_cpp_maps_them() {
        let t = |n: &str| target(n, Arch::Qwen3Moe, 2);
        let named = |s: &str| Some(Target::Tensor(s.into()));
        assert_eq!(t("model.embed_tokens.weight"), named("token_embd.weight"));
        assert_eq!(
            t("model.layers.1.self_attn.q_proj.bias"),
            named("blk.1.attn_q.bias")
        );
        assert_eq!(
            t("model.layers.0.mlp.gate.weight"),
            named("blk.0.ffn_gate_inp.weight")
        );
        assert_eq!(
            t("model.layers.0.mlp.gate.e_score_correction_bias"),
            named("blk.0.exp_probs_b.bias")
        );
        assert_eq!(
            t("model.layers.1.mlp.experts.3.down_proj.weight"),
            Some(Target::Expert {
                layer: 1,
                expert: 3,
                kind: "down"
            })
        );
        assert_eq!(
            t("model.layers.1.mlp.experts.gate_up_proj"),
            named("blk.1.ffn_gate_up_exps.weight")
        );
        assert_eq!(t("model.layers.2.mlp.gate.weight"), Some(Target::Skip));
        assert_eq!(
            t("model.layers.0.self_attn.kv_b_proj.weight"),
            Some(Target::KvB { layer: 0 })
        );
        assert_eq!(t("model.layers.0.mlp.experts.0.w9.weight"), None);
        assert_eq!(t("vision_tower.patch.weight"), Some(Target::Skip));
        assert_eq!(t("speech_encoder.patch.weight"), None);
        assert_eq!(
            canonical("model.language_model.layers.1.mlp.up_proj.weight", 2),
            "model.layers.1.mlp.up_proj.weight"
        );
        assert_eq!(
            canonical("language_model.lm_head.weight", 2),
            "lm_head.weight"
        );
    }

    #[test]
    fn architecture_names_and_prefixes() {
        let named = |s: &str| Some(Target::Tensor(s.into()));
        let glm = |n: &str| target(n, Arch::Glm4Moe, 4);
        assert_eq!(
            glm("model.layers.3.shared_head.norm.weight"),
            named("blk.3.nextn.shared_head_norm.weight")
        );
        assert_eq!(
            glm("model.layers.0.post_attention_layernorm.weight"),
            named("blk.0.post_attention_norm.weight")
        );
        assert_eq!(
            target(
                &canonical("ernie.layers.0.self_attn.qkv_proj.weight", 2),
                Arch::Ernie45,
                2
            ),
            Some(Target::Fused {
                layer: 0,
                qkv: true
            })
        );
        assert_eq!(
            canonical("mtp.layers.0.mlp.gate.weight", 4),
            "model.layers.4.mlp.gate.weight"
        );
        assert_eq!(
            canonical("mtp.fc.weight", 4),
            "model.layers.4.eh_proj.weight"
        );
        assert_eq!(
            canonical("model.mtp.norm.weight", 4),
            "model.layers.4.shared_head.norm.weight"
        );
        let q35 = |n: &str| target(n, Arch::Qwen35, 5);
        assert_eq!(
            q35("model.layers.0.linear_attn.A_log"),
            named("blk.0.ssm_a")
        );
        assert_eq!(
            q35("model.layers.0.linear_attn.dt_bias"),
            named("blk.0.ssm_dt.bias")
        );
        assert_eq!(
            q35("model.layers.4.eh_proj.weight"),
            named("blk.4.nextn.eh_proj.weight")
        );
    }
}
