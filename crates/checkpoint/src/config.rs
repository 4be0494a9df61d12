//! `config.json` → GGUF metadata, as llama.cpp's `convert_hf_to_gguf.py` writes it for each
//! architecture (its `TextModel.set_gguf_parameters` and the model classes' additions).

use crate::CheckpointError;
use frugal_formats::Value;
use serde_json::Value as Json;

/// An architecture frugal runs, as a checkpoint names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen2Moe,
    Qwen3Moe,
    Deepseek2,
    Glm4Moe,
    Ernie45,
    Ernie45Moe,
    Gemma3,
    Qwen35,
    Qwen35Moe,
    Qwen3Next,
}

/// `model_type` → architecture, and the GGUF name of each.
const ARCHES: &[(&str, Arch, &str)] = &[
    ("llama", Arch::Llama, "llama"),
    ("qwen2", Arch::Qwen2, "qwen2"),
    ("qwen3", Arch::Qwen3, "qwen3"),
    ("qwen2_moe", Arch::Qwen2Moe, "qwen2moe"),
    ("qwen3_moe", Arch::Qwen3Moe, "qwen3moe"),
    ("deepseek_v2", Arch::Deepseek2, "deepseek2"),
    ("deepseek_v3", Arch::Deepseek2, "deepseek2"),
    ("kimi_k2", Arch::Deepseek2, "deepseek2"),
    ("glm4_moe", Arch::Glm4Moe, "glm4moe"),
    ("ernie4_5", Arch::Ernie45, "ernie4_5"),
    ("ernie4_5_moe", Arch::Ernie45Moe, "ernie4_5-moe"),
    ("gemma3_text", Arch::Gemma3, "gemma3"),
    ("qwen3_5_text", Arch::Qwen35, "qwen35"),
    ("qwen3_5_moe_text", Arch::Qwen35Moe, "qwen35moe"),
    ("qwen3_next", Arch::Qwen3Next, "qwen3next"),
];

impl Arch {
    pub fn gguf_name(self) -> &'static str {
        ARCHES.iter().find(|a| a.1 == self).map_or("?", |a| a.2)
    }

    /// Whether llama.cpp keeps the checkpoint's multi-token-prediction layers (as extra blocks).
    pub fn keeps_mtp(self) -> bool {
        self == Arch::Glm4Moe || self.is_hybrid()
    }

    /// Gated DeltaNet hybrids (Qwen3.5, Qwen3-Next).
    pub fn is_hybrid(self) -> bool {
        matches!(self, Arch::Qwen35 | Arch::Qwen35Moe | Arch::Qwen3Next)
    }
}

/// Multimodal checkpoints whose language model this build converts: the wrapper's `model_type`
/// and its `text_config`'s.
const WRAPPERS: &[(&str, &str)] = &[
    ("gemma3", "gemma3_text"),
    ("qwen3_5", "qwen3_5_text"),
    ("qwen3_5_moe", "qwen3_5_moe_text"),
];

/// The `model_type` values this build converts.
pub fn supported_model_types() -> String {
    ARCHES.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
}

/// A parsed `config.json`, with typed look-ups whose errors name the file and the key.
pub struct HfConfig {
    pub(crate) file: String,
    pub(crate) json: Json,
    /// MTP layers the checkpoint's tensors hold (`mtp.layers.N`), for configs that do not say.
    pub(crate) mtp_found: u64,
}

impl HfConfig {
    pub fn new(file: String, json: Json) -> Result<HfConfig, CheckpointError> {
        let Json::Object(mut top) = json else {
            return Err(CheckpointError::Config {
                file,
                msg: "is not a JSON object".into(),
            });
        };
        // A multimodal wrapper (Gemma 3, Qwen3.5): the language model's settings are its
        // `text_config`, read over the top level as the converter reads them.
        let wrapper = top.get("model_type").and_then(Json::as_str);
        let text_type = WRAPPERS.iter().find(|w| Some(w.0) == wrapper).map(|w| w.1);
        if let (Some(text_type), Some(Json::Object(text))) = (text_type, top.get("text_config")) {
            let text = text.clone();
            top.extend(text);
            top.insert("model_type".into(), Json::String(text_type.into()));
        }
        let json = Json::Object(top);
        Ok(HfConfig {
            file,
            json,
            mtp_found: 0,
        })
    }

    fn err(&self, msg: String) -> CheckpointError {
        CheckpointError::Config {
            file: self.file.clone(),
            msg,
        }
    }

    /// A key's value; JSON `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// The first of `keys` present, as a non-negative integer.
    pub fn opt_u64(&self, keys: &[&str]) -> Result<Option<u64>, CheckpointError> {
        let Some((key, v)) = keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) else {
            return Ok(None);
        };
        v.as_u64()
            .map(Some)
            .ok_or_else(|| self.err(format!("'{key}' is {v}, expected a non-negative integer")))
    }

    pub fn req_u64(&self, keys: &[&str]) -> Result<u64, CheckpointError> {
        self.opt_u64(keys)?
            .ok_or_else(|| self.err(format!("missing key '{}'", keys.join("' or '"))))
    }

    pub fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>, CheckpointError> {
        let Some((key, v)) = keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) else {
            return Ok(None);
        };
        v.as_f64()
            .map(Some)
            .ok_or_else(|| self.err(format!("'{key}' is {v}, expected a number")))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, CheckpointError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("'{key}' is {v}, expected true or false"))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, CheckpointError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(format!("'{key}' is {v}, expected a string"))),
        }
    }

    /// The architecture `model_type` (or, without one, `architectures[0]`) names.
    pub fn arch(&self) -> Result<Arch, CheckpointError> {
        let model_type = self.opt_str("model_type")?;
        let architectures = self.get("architectures").map(Json::to_string);
        let found = model_type.and_then(|m| ARCHES.iter().find(|a| a.0 == m));
        found
            .map(|a| a.1)
            .ok_or_else(|| CheckpointError::UnsupportedArch {
                file: self.file.clone(),
                model_type: model_type.unwrap_or("(none)").to_string(),
                architectures: architectures.unwrap_or_else(|| "(none)".into()),
                supported: supported_model_types(),
            })
    }

    /// `rope_parameters` (transformers 5) or `rope_scaling` (earlier), `Null` if neither; with
    /// per-layer-type parameters (Gemma 3), those of the full-attention layers.
    fn rope_params(&self) -> &Json {
        let all = self.all_rope_params();
        all.get("full_attention").unwrap_or(all)
    }

    fn all_rope_params(&self) -> &Json {
        static NONE: Json = Json::Null;
        self.get("rope_parameters")
            .or_else(|| self.get("rope_scaling"))
            .unwrap_or(&NONE)
    }

    /// The number of blocks the GGUF has: the layers, and the MTP layers llama.cpp keeps.
    pub fn n_blocks(&self, arch: Arch) -> Result<usize, CheckpointError> {
        let n = self.req_u64(&["num_hidden_layers", "n_layer"])?;
        let said = self.opt_u64(&["num_nextn_predict_layers", "mtp_num_hidden_layers"])?;
        let mtp = match arch.keeps_mtp() {
            true => said.filter(|&n| n > 0).unwrap_or(self.mtp_found),
            false => 0,
        };
        Ok((n + mtp) as usize)
    }

    pub fn tie_word_embeddings(&self) -> Result<bool, CheckpointError> {
        Ok(self.opt_bool("tie_word_embeddings")?.unwrap_or(false))
    }
}

/// GGUF metadata under construction: `{arch}.`-prefixed keys and whole keys.
struct Meta {
    arch: &'static str,
    kv: Vec<(String, Value)>,
}

impl Meta {
    /// Sets `{arch}.{key}` (replacing an earlier value, as a converter subclass overrides).
    fn set(&mut self, key: &str, v: Value) {
        let key = format!("{}.{key}", self.arch);
        self.kv.retain(|(k, _)| *k != key);
        self.kv.push((key, v));
    }

    fn u32(&mut self, key: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.set(key, Value::U32(v as u32));
        }
    }

    fn f32(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.set(key, Value::F32(v as f32));
        }
    }
}

/// The metadata `convert_hf_to_gguf.py` writes for this config (tokenizer keys aside: the
/// tokenizer is read from `tokenizer.json`).
pub fn metadata(c: &HfConfig, arch: Arch) -> Result<Vec<(String, Value)>, CheckpointError> {
    let mut m = Meta {
        arch: arch.gguf_name(),
        kv: vec![(
            "general.architecture".into(),
            Value::String(arch.gguf_name().into()),
        )],
    };
    base_keys(c, &mut m)?;
    match arch {
        Arch::Llama => {
            m.u32("vocab_size", c.opt_u64(&["vocab_size"])?);
            let head_dim = match c.opt_u64(&["head_dim"])? {
                Some(d) => d,
                None => c.req_u64(&["hidden_size"])? / c.req_u64(&["num_attention_heads"])?.max(1),
            };
            m.u32("rope.dimension_count", Some(head_dim));
        }
        Arch::Qwen2 | Arch::Qwen3 => {}
        Arch::Qwen2Moe | Arch::Qwen3Moe => {
            m.u32(
                "expert_feed_forward_length",
                c.opt_u64(&["moe_intermediate_size"])?,
            );
            let shared = c.opt_u64(&["shared_expert_intermediate_size"])?;
            m.u32("expert_shared_feed_forward_length", shared);
        }
        Arch::Deepseek2 => deepseek2_keys(c, &mut m)?,
        Arch::Glm4Moe => glm4moe_keys(c, &mut m)?,
        Arch::Ernie45 => {}
        Arch::Ernie45Moe => ernie45moe_keys(c, &mut m)?,
        Arch::Gemma3 => gemma3_keys(c, &mut m)?,
        Arch::Qwen35 | Arch::Qwen35Moe | Arch::Qwen3Next => hybrid_keys(c, arch, &mut m)?,
    }
    m.u32("block_count", Some(c.n_blocks(arch)? as u64));
    Ok(m.kv)
}

/// `TextModel.set_gguf_parameters`: the keys every architecture shares.
fn base_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    let ctx = c.opt_u64(&[
        "max_position_embeddings",
        "n_ctx",
        "n_positions",
        "max_length",
        "max_sequence_length",
        "model_max_length",
    ])?;
    m.u32("context_length", ctx);
    m.u32(
        "embedding_length",
        Some(c.req_u64(&["hidden_size", "n_embd", "dim"])?),
    );
    let ffn = c.opt_u64(&["intermediate_size", "n_inner", "hidden_dim"])?;
    m.u32("feed_forward_length", ffn);
    let heads = c.opt_u64(&["num_attention_heads", "n_head", "n_heads"])?;
    m.u32("attention.head_count", heads);
    m.u32(
        "attention.head_count_kv",
        c.opt_u64(&["num_key_value_heads", "n_kv_heads"])?,
    );
    rope_keys(c, m)?;
    m.f32(
        "attention.layer_norm_rms_epsilon",
        c.opt_f64(&["rms_norm_eps", "norm_eps"])?,
    );
    let experts = c.opt_u64(&["num_local_experts", "num_experts", "n_routed_experts"])?;
    m.u32("expert_count", experts);
    m.u32(
        "expert_used_count",
        c.opt_u64(&["num_experts_per_tok", "num_experts_per_token"])?,
    );
    m.u32("expert_group_count", c.opt_u64(&["n_group"])?);
    m.u32("expert_group_used_count", c.opt_u64(&["topk_group"])?);
    match c.opt_str("scoring_func")? {
        None => {}
        Some("softmax") => m.set("expert_gating_func", Value::U32(1)),
        Some("sigmoid") => m.set("expert_gating_func", Value::U32(2)),
        Some(other) => {
            return Err(c.err(format!(
                "'scoring_func' \"{other}\" is not supported (softmax, sigmoid)"
            )))
        }
    }
    let head_dim = c.opt_u64(&["head_dim"])?;
    m.u32("attention.key_length", head_dim);
    m.u32("attention.value_length", head_dim);
    Ok(())
}

/// RoPE base and scaling (linear, YaRN) from `rope_parameters` / `rope_scaling` / `rope_theta`.
fn rope_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    let p = c.rope_params();
    let num = |k: &str| p.get(k).and_then(Json::as_f64);
    let theta = num("rope_theta").or(c.opt_f64(&["rope_theta"])?);
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Json::as_str);
    match (kind, num("factor")) {
        (Some("linear"), Some(f)) => {
            m.set("rope.scaling.type", Value::String("linear".into()));
            m.f32("rope.scaling.factor", Some(f));
        }
        (Some("yarn"), Some(f)) => {
            m.set("rope.scaling.type", Value::String("yarn".into()));
            m.f32("rope.scaling.factor", Some(f));
            let orig = p
                .get("original_max_position_embeddings")
                .and_then(Json::as_u64);
            let orig = orig.ok_or_else(|| {
                c.err("YaRN rope scaling without 'original_max_position_embeddings'".into())
            })?;
            m.u32("rope.scaling.original_context_length", Some(orig));
            m.f32("rope.scaling.yarn_ext_factor", num("extrapolation_factor"));
            let attn = num("attention_factor").or(num("attn_factor"));
            m.f32("rope.scaling.yarn_attn_factor", attn);
            m.f32("rope.scaling.yarn_beta_fast", num("beta_fast"));
            m.f32("rope.scaling.yarn_beta_slow", num("beta_slow"));
        }
        // Llama 3's frequency factors are a tensor (`rope_freqs.weight`, `llama3_rope_factors`).
        (None | Some("default") | Some("llama3"), _) => {}
        (Some(other), _) => {
            return Err(c.err(format!(
                "rope scaling '{other}' is not supported for checkpoints yet (linear, yarn)"
            )))
        }
    }
    m.f32("rope.freq_base", theta);
    let swa = c.all_rope_params().get("sliding_attention");
    m.f32(
        "rope.freq_base_swa",
        swa.and_then(|p| p.get("rope_theta")?.as_f64()),
    );
    Ok(())
}

/// Llama 3.1's RoPE frequency factors (`rope_type: llama3`), one per rotated pair, computed as
/// `LlamaModel.generate_extra_tensors` computes them (in f32, as torch does there); `None` for
/// other RoPE types.
pub fn llama3_rope_factors(c: &HfConfig) -> Result<Option<Vec<f32>>, CheckpointError> {
    let p = c.rope_params();
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Json::as_str);
    if !kind.is_some_and(|k| k.eq_ignore_ascii_case("llama3")) {
        return Ok(None);
    }
    let num = |k: &str, default: f64| p.get(k).and_then(Json::as_f64).unwrap_or(default);
    let base = p.get("rope_theta").and_then(Json::as_f64);
    let base = base.or(c.opt_f64(&["rope_theta"])?).unwrap_or(10000.0);
    let dim = match c.opt_u64(&["head_dim"])? {
        Some(d) => d,
        None => c.req_u64(&["hidden_size"])? / c.req_u64(&["num_attention_heads"])?.max(1),
    } as usize;
    let (factor, low, high) = (
        num("factor", 8.0),
        num("low_freq_factor", 1.0),
        num("high_freq_factor", 4.0),
    );
    let old = num("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    let factors = (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / (base as f32).powf(i as f32 / dim as f32);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if f64::from(wavelen) < high_wavelen {
                1.0
            } else if f64::from(wavelen) > low_wavelen {
                factor as f32
            } else {
                let smooth = (old as f32 / wavelen - low as f32) / (high - low) as f32;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect();
    Ok(Some(factors))
}

/// `Glm4MoeModel.set_gguf_parameters`: partial rotary, sigmoid routing, the MTP layers.
fn glm4moe_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    let head_dim = match c.opt_u64(&["head_dim"])? {
        Some(d) => d,
        None => c.req_u64(&["hidden_size"])? / c.req_u64(&["num_attention_heads"])?.max(1),
    };
    let all = c.all_rope_params();
    let partial = all.get("partial_rotary_factor").and_then(Json::as_f64);
    let partial = partial
        .or(c.opt_f64(&["partial_rotary_factor"])?)
        .unwrap_or(0.5);
    m.u32(
        "rope.dimension_count",
        Some((head_dim as f64 * partial) as u64),
    );
    m.u32("expert_count", c.opt_u64(&["n_routed_experts"])?);
    m.u32(
        "expert_feed_forward_length",
        c.opt_u64(&["moe_intermediate_size"])?,
    );
    m.u32("expert_shared_count", c.opt_u64(&["n_shared_experts"])?);
    m.u32(
        "leading_dense_block_count",
        c.opt_u64(&["first_k_dense_replace"])?,
    );
    m.set("expert_gating_func", Value::U32(2));
    m.f32(
        "expert_weights_scale",
        c.opt_f64(&["routed_scaling_factor"])?,
    );
    if let Some(norm) = c.opt_bool("norm_topk_prob")? {
        m.set("expert_weights_norm", Value::Bool(norm));
    }
    m.u32(
        "nextn_predict_layers",
        c.opt_u64(&["num_nextn_predict_layers"])?,
    );
    Ok(())
}

/// `Qwen3NextModel.set_gguf_parameters` (and Qwen3.5's multi-axis RoPE sections): the Gated
/// DeltaNet shapes, which layers are recurrent, the MTP layers.
fn hybrid_keys(c: &HfConfig, arch: Arch, m: &mut Meta) -> Result<(), CheckpointError> {
    m.u32(
        "expert_feed_forward_length",
        c.opt_u64(&["moe_intermediate_size"])?,
    );
    let shared = c.opt_u64(&["shared_expert_intermediate_size"])?;
    m.u32("expert_shared_feed_forward_length", shared);
    let n_layer = c.req_u64(&["num_hidden_layers"])? as usize;
    let n_blocks = c.n_blocks(arch)?;
    if n_blocks > n_layer {
        m.u32("nextn_predict_layers", Some((n_blocks - n_layer) as u64));
    }
    m.u32(
        "ssm.conv_kernel",
        Some(c.req_u64(&["linear_conv_kernel_dim"])?),
    );
    let (dk, nk) = (
        c.req_u64(&["linear_key_head_dim"])?,
        c.req_u64(&["linear_num_key_heads"])?,
    );
    let (dv, nv) = (
        c.req_u64(&["linear_value_head_dim"])?,
        c.req_u64(&["linear_num_value_heads"])?,
    );
    m.u32("ssm.state_size", Some(dk));
    m.u32("ssm.group_count", Some(nk));
    m.u32("ssm.time_step_rank", Some(nv));
    m.u32("ssm.inner_size", Some(dv * nv));
    if let Some(types) = c.get("layer_types").and_then(Json::as_array) {
        if types.len() != n_layer {
            return Err(c.err(format!(
                "layer_types has {} entries for {n_layer} layers",
                types.len()
            )));
        }
        let mut recurrent: Vec<Value> = types
            .iter()
            .map(|t| Value::Bool(t == "linear_attention"))
            .collect();
        recurrent.resize(n_blocks, Value::Bool(false));
        m.set("attention.recurrent_layers", Value::Array(recurrent));
    }
    let interval = c.opt_u64(&["full_attention_interval"])?.unwrap_or(4);
    m.u32("full_attention_interval", Some(interval));
    let head_dim = match c.opt_u64(&["head_dim"])? {
        Some(d) => d,
        None => c.req_u64(&["hidden_size"])? / c.req_u64(&["num_attention_heads"])?.max(1),
    };
    let partial = c
        .all_rope_params()
        .get("partial_rotary_factor")
        .and_then(Json::as_f64);
    m.u32(
        "rope.dimension_count",
        Some((head_dim as f64 * partial.unwrap_or(0.25)) as u64),
    );
    if arch != Arch::Qwen3Next {
        let given = c
            .all_rope_params()
            .get("mrope_section")
            .and_then(Json::as_array);
        let mut sections: Vec<Value> = match given {
            Some(s) => s
                .iter()
                .filter_map(Json::as_i64)
                .map(|v| Value::I32(v as i32))
                .collect(),
            None => [11, 11, 10].map(Value::I32).to_vec(),
        };
        sections.resize(4, Value::I32(0));
        m.set("rope.dimension_sections", Value::Array(sections));
    }
    Ok(())
}

/// `Ernie4_5MoeModel.set_gguf_parameters`.
fn ernie45moe_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    m.u32("expert_count", Some(c.req_u64(&["moe_num_experts"])?));
    m.u32("expert_used_count", Some(c.req_u64(&["moe_k"])?));
    m.u32(
        "interleave_moe_layer_step",
        Some(c.req_u64(&["moe_layer_interval"])?),
    );
    m.u32(
        "leading_dense_block_count",
        Some(c.req_u64(&["moe_layer_start_index"])?),
    );
    m.u32(
        "expert_feed_forward_length",
        c.opt_u64(&["moe_intermediate_size"])?,
    );
    if let Some(shared) = c.opt_u64(&["moe_num_shared_experts"])? {
        m.u32("expert_shared_count", Some(shared));
        let ff = c.opt_u64(&["intermediate_size"])?;
        let kv = c.opt_u64(&["num_key_value_heads"])?;
        if let (true, Some(ff), Some(kv)) = (shared > 0, ff, kv) {
            // As the converter writes it (the shared experts' width over the KV heads).
            m.u32("expert_shared_feed_forward_length", Some(ff / kv.max(1)));
        }
    }
    Ok(())
}

/// `Gemma3Model.set_gguf_parameters`: Gemma's defaults, the sliding window.
fn gemma3_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    let ctx = c.opt_u64(&["max_position_embeddings"])?.unwrap_or(131_072);
    m.u32("context_length", Some(ctx));
    m.u32(
        "attention.head_count",
        Some(c.opt_u64(&["num_attention_heads"])?.unwrap_or(8)),
    );
    let eps = c.opt_f64(&["rms_norm_eps"])?.unwrap_or(1e-6);
    m.f32("attention.layer_norm_rms_epsilon", Some(eps));
    let head_dim = c.opt_u64(&["head_dim"])?.unwrap_or(256);
    m.u32("attention.key_length", Some(head_dim));
    m.u32("attention.value_length", Some(head_dim));
    let theta = c.rope_params().get("rope_theta").and_then(Json::as_f64);
    m.f32("rope.freq_base", Some(theta.unwrap_or(1_000_000.0)));
    if c.get("attn_logit_softcapping").is_some() {
        return Err(c.err("'attn_logit_softcapping' is Gemma 2's, not Gemma 3's".into()));
    }
    let softcap = c
        .opt_f64(&["final_logit_softcapping"])?
        .filter(|&v| v != 0.0);
    m.f32("final_logit_softcapping", softcap);
    if c.opt_u64(&["sliding_window_pattern"])? != Some(1) {
        m.u32(
            "attention.sliding_window",
            Some(c.req_u64(&["sliding_window"])?),
        );
    }
    let kv = c.opt_u64(&["num_key_value_heads"])?.unwrap_or(4);
    m.u32("attention.head_count_kv", Some(kv));
    Ok(())
}

/// `DeepseekV2Model.set_gguf_parameters`: multi-head latent attention stored as MQA over the
/// latent, and the MoE keys.
fn deepseek2_keys(c: &HfConfig, m: &mut Meta) -> Result<(), CheckpointError> {
    m.u32("attention.head_count_kv", Some(1));
    let has_moe = c.get("n_routed_experts").is_some();
    let n_layer = c.req_u64(&["num_hidden_layers"])?;
    let dense = c
        .opt_u64(&["first_k_dense_replace"])?
        .unwrap_or(if has_moe { 0 } else { n_layer });
    m.u32("leading_dense_block_count", Some(dense));
    m.u32("vocab_size", c.opt_u64(&["vocab_size"])?);
    m.u32("attention.q_lora_rank", c.opt_u64(&["q_lora_rank"])?);
    let kv_lora = c.opt_u64(&["kv_lora_rank"])?.unwrap_or(512);
    let rope = c.req_u64(&["qk_rope_head_dim"])?;
    let nope = c.req_u64(&["qk_nope_head_dim"])?;
    m.u32("attention.kv_lora_rank", Some(kv_lora));
    m.u32("attention.key_length", Some(kv_lora + rope));
    m.u32("attention.value_length", Some(kv_lora));
    m.u32("attention.key_length_mla", Some(nope + rope));
    m.u32(
        "attention.value_length_mla",
        Some(c.req_u64(&["v_head_dim"])?),
    );
    let expert_ff = c.req_u64(&["moe_intermediate_size", "intermediate_size"])?;
    m.u32("expert_feed_forward_length", Some(expert_ff));
    m.u32(
        "expert_shared_count",
        Some(c.opt_u64(&["n_shared_experts"])?.unwrap_or(0)),
    );
    m.f32(
        "expert_weights_scale",
        c.opt_f64(&["routed_scaling_factor"])?,
    );
    if c.opt_bool("norm_topk_prob")? == Some(true) {
        m.set("expert_weights_norm", Value::Bool(true));
    }
    m.u32("rope.dimension_count", Some(rope));
    if let Some(mscale) = c.rope_params().get("mscale_all_dim").and_then(Json::as_f64) {
        m.f32("rope.scaling.yarn_log_multiplier", Some(0.1 * mscale));
    }
    Ok(())
}
