//! The checkpoint's tensors as GGUF tensors: names mapped, layouts transformed as
//! `convert_hf_to_gguf.py` transforms them, types chosen (kept as stored, F32 for the tensors
//! ggml keeps in F32, FP8 decoded, or quantized). A tensor stored as it will be used is
//! borrowed from its file's memory map; the others are converted into owned bytes.

use crate::config::{Arch, HfConfig};
use crate::convert::{apply_block_scales, decode, encode, fit_type, stored_type};
use crate::names::{canonical, target, Target};
use crate::transform::{apply, split_qkvz, Transform, VHeads};
use crate::{CheckpointError, Options};
use frugal_formats::{Dtype, NewTensor, SafeTensor, SafetensorsFile, TensorBytes};
use frugal_kernels::GgmlType;
use std::collections::{BTreeMap, HashMap};

/// A tensor of the checkpoint: which file, which entry.
#[derive(Clone, Copy)]
struct Src<'a> {
    file: usize,
    t: &'a SafeTensor,
}

struct Converter<'a> {
    files: &'a [SafetensorsFile],
    /// Every tensor by name, across the shards.
    by_name: HashMap<&'a str, Src<'a>>,
    arch: Arch,
    n_head: usize,
    n_head_kv: usize,
    quantize: Option<GgmlType>,
    /// FP8 checkpoints' scale blocks (`quantization_config.weight_block_size`).
    fp8_block: (usize, usize),
    tied: bool,
    /// Linear-attention value heads where Qwen3.5's converter reorders them, with the key and
    /// value head sizes.
    v_reorder: Option<(VHeads, usize, usize)>,
    out: Vec<NewTensor>,
}

/// Every GGUF tensor of the model in `files`.
pub fn convert(
    c: &HfConfig,
    arch: Arch,
    files: &[SafetensorsFile],
    opts: &Options,
) -> Result<Vec<NewTensor>, CheckpointError> {
    let mut by_name = HashMap::new();
    for (file, f) in files.iter().enumerate() {
        for t in f.tensors() {
            if by_name.insert(t.name.as_str(), Src { file, t }).is_some() {
                return Err(tensor_err(f, &t.name, "appears in two shards".into()));
            }
        }
    }
    let n_head = c.req_u64(&["num_attention_heads"])? as usize;
    let mut conv = Converter {
        files,
        by_name,
        arch,
        n_head,
        n_head_kv: c
            .opt_u64(&["num_key_value_heads"])?
            .unwrap_or(n_head as u64) as usize,
        quantize: opts.quantize,
        fp8_block: fp8_block(c)?,
        tied: c.tie_word_embeddings()?,
        v_reorder: v_heads(c, arch)?,
        out: Vec::new(),
    };
    let n_layer = c.n_blocks(arch)?;
    let n_main = c.req_u64(&["num_hidden_layers"])? as usize;
    let mut experts: BTreeMap<(usize, &'static str), BTreeMap<usize, Src>> = BTreeMap::new();
    for (file, f) in files.iter().enumerate() {
        for t in f.tensors() {
            let src = Src { file, t };
            if t.name.ends_with("_scale_inv") {
                continue; // read with the FP8 weight it scales
            }
            if t.name.ends_with(".input_scale") || t.name.ends_with(".activation_scale") {
                continue; // static activation scales: ggml quantizes activations its own way
            }
            match target(&canonical(&t.name, n_main), arch, n_layer) {
                None => return Err(tensor_err(f, &t.name, "has no GGUF counterpart".into())),
                Some(Target::Skip) => {}
                Some(Target::Tensor(name)) if name == "output.weight" && conv.tied => {}
                Some(Target::Tensor(name)) => conv.single(src, name)?,
                Some(Target::KvB { layer }) => conv.kv_b(c, src, layer)?,
                Some(Target::Fused { layer, qkv }) => conv.fused(c, src, layer, qkv)?,
                Some(Target::Qkvz { layer }) => conv.qkvz(c, src, layer)?,
                Some(Target::Expert {
                    layer,
                    expert,
                    kind,
                }) => {
                    experts
                        .entry((layer, kind))
                        .or_default()
                        .insert(expert, src);
                }
            }
        }
    }
    let n_expert = c.opt_u64(&[
        "num_local_experts",
        "num_experts",
        "n_routed_experts",
        "moe_num_experts",
    ])?;
    for ((layer, kind), list) in experts {
        conv.stack(layer, kind, &list, n_expert.unwrap_or(0) as usize)?;
    }
    if let Some(factors) = crate::config::llama3_rope_factors(c)? {
        let bytes = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
        conv.out.push(NewTensor {
            name: "rope_freqs.weight".into(),
            dims: vec![factors.len() as u64],
            ty: GgmlType::F32,
            data: TensorBytes::Owned(bytes),
        });
    }
    Ok(conv.out)
}

fn tensor_err(f: &SafetensorsFile, tensor: &str, msg: String) -> CheckpointError {
    CheckpointError::Tensor {
        file: f.name().to_string(),
        tensor: tensor.to_string(),
        msg,
    }
}

/// Qwen3.5's linear-attention value heads when they outnumber the key heads (the converter then
/// reorders them), with the key and value head sizes.
fn v_heads(c: &HfConfig, arch: Arch) -> Result<Option<(VHeads, usize, usize)>, CheckpointError> {
    if !matches!(arch, Arch::Qwen35 | Arch::Qwen35Moe) {
        return Ok(None);
    }
    let nk = c.req_u64(&["linear_num_key_heads"])? as usize;
    let nv = c.req_u64(&["linear_num_value_heads"])? as usize;
    if nk == 0 || nv == nk || !nv.is_multiple_of(nk) {
        return Ok(None);
    }
    let dk = c.req_u64(&["linear_key_head_dim"])? as usize;
    let dv = c.req_u64(&["linear_value_head_dim"])? as usize;
    Ok(Some((VHeads { nk, per_k: nv / nk }, dk, dv)))
}

/// The number of MTP layers a checkpoint's tensors hold (`mtp.layers.J.*`).
pub fn mtp_layers(files: &[SafetensorsFile]) -> u64 {
    let layer = |name: &str| {
        let rest = name
            .strip_prefix("model.")
            .unwrap_or(name)
            .strip_prefix("mtp.layers.")?;
        rest.split('.').next()?.parse::<u64>().ok()
    };
    files
        .iter()
        .flat_map(|f| f.tensors())
        .filter_map(|t| layer(&t.name))
        .map(|j| j + 1)
        .max()
        .unwrap_or(0)
}

/// `quantization_config.weight_block_size` of an FP8 checkpoint (128 x 128 when not given).
fn fp8_block(c: &HfConfig) -> Result<(usize, usize), CheckpointError> {
    let Some(q) = c.get("quantization_config") else {
        return Ok((128, 128));
    };
    let bad = |msg: &str| CheckpointError::Config {
        file: c.file.clone(),
        msg: format!("quantization_config: {msg}"),
    };
    match q.get("quant_method").and_then(|m| m.as_str()) {
        Some("fp8") => {}
        other => {
            return Err(bad(&format!(
                "quant_method {other:?} is not supported (fp8)"
            )))
        }
    }
    let block = match q.get("weight_block_size") {
        None => return Ok((128, 128)),
        Some(b) => b
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect::<Vec<_>>()),
    };
    match block.as_deref() {
        Some(&[r, c]) if r > 0 && c > 0 => Ok((r as usize, c as usize)),
        _ => Err(bad("weight_block_size must be two positive integers")),
    }
}

/// Tensors ggml keeps in F32 whatever the rest is stored as (the converter's and
/// `llama-quantize`'s choice): vectors, norms, routers.
fn keeps_f32(name: &str, n_dims: usize) -> bool {
    n_dims <= 1
        || name.ends_with("_norm.weight")
        || name.contains("ffn_gate_inp")
        || name.contains("exp_probs_b")
        || name.contains("ssm_conv1d")
}

impl<'a> Converter<'a> {
    fn file(&self, src: Src) -> &'a SafetensorsFile {
        &self.files[src.file]
    }

    /// The type GGUF tensor `name` of `dims` (ggml order) is stored in.
    fn out_type(&self, name: &str, dims: &[u64], dtype: Dtype) -> GgmlType {
        if keeps_f32(name, dims.len()) {
            return GgmlType::F32;
        }
        let is_output = name == "output.weight" || (self.tied && name == "token_embd.weight");
        match self.quantize {
            // llama-quantize gives the output matrix Q6_K unless Q8_0 was asked for.
            Some(q) if is_output && q != GgmlType::Q8_0 => {
                fit_type(GgmlType::Q6_K, dims[0] as usize)
            }
            Some(q) if name.ends_with(".weight") => fit_type(q, dims[0] as usize),
            _ => match dtype {
                Dtype::F8E4M3 => GgmlType::BF16,
                d => stored_type(d).unwrap_or(GgmlType::F32),
            },
        }
    }

    /// The values of `src` as f32 (FP8 weights multiplied by their block scales).
    fn values(&self, src: Src) -> Result<Vec<f32>, CheckpointError> {
        let f = self.file(src);
        let err = |msg: String| tensor_err(f, &src.t.name, msg);
        let mut v = decode(src.t.dtype, f.data(src.t)).map_err(err)?;
        if src.t.dtype == Dtype::F8E4M3 {
            let scale_name = format!("{}_scale_inv", src.t.name);
            let scale = self
                .by_name
                .get(scale_name.as_str())
                .ok_or_else(|| err(format!("FP8 weight without '{scale_name}'")))?;
            let scales = decode(scale.t.dtype, self.file(*scale).data(scale.t)).map_err(err)?;
            let cols = src.t.shape.last().copied().unwrap_or(1) as usize;
            apply_block_scales(&mut v, cols, &scales, self.fp8_block).map_err(err)?;
        }
        Ok(v)
    }

    /// Adds GGUF tensor `name` of `dims` from `values`, encoded in its type.
    fn push_values(
        &mut self,
        src: Src,
        name: String,
        dims: Vec<u64>,
        values: &[f32],
    ) -> Result<(), CheckpointError> {
        let ty = self.out_type(&name, &dims, src.t.dtype);
        let bytes = encode(values, dims[0] as usize, ty)
            .map_err(|msg| tensor_err(self.file(src), &src.t.name, msg))?;
        self.out.push(NewTensor {
            name,
            dims,
            ty,
            data: TensorBytes::Owned(bytes),
        });
        Ok(())
    }

    /// A tensor mapped one to one: borrowed when stored as it will be used, else converted
    /// (Llama's Q and K rows permuted into ggml's rotary layout first).
    fn single(&mut self, src: Src, name: String) -> Result<(), CheckpointError> {
        let mut dims: Vec<u64> = src.t.shape.iter().rev().copied().collect();
        // Outer dimensions of 1 dropped, as the converter writes them: Qwen2-MoE's shared-expert
        // gate [1, n_embd] and ERNIE's router bias [1, n_expert] are vectors in GGUF.
        while dims.len() > 1 && dims.last() == Some(&1) {
            dims.pop();
        }
        if dims.is_empty() {
            return Err(tensor_err(
                self.file(src),
                &src.t.name,
                "is a scalar".into(),
            ));
        }
        if name.contains("ssm_conv1d") {
            // [channels, 1, kernel]: the converter squeezes the middle dimension.
            dims.retain(|&d| d != 1);
        }
        let ty = self.out_type(&name, &dims, src.t.dtype);
        let transforms = self.transforms(&name);
        if transforms.is_empty() && stored_type(src.t.dtype) == Some(ty) {
            let data = TensorBytes::Borrowed {
                file: src.file,
                offset: src.t.offset,
            };
            self.out.push(NewTensor {
                name,
                dims,
                ty,
                data,
            });
            return Ok(());
        }
        let mut values = self.values(src)?;
        let cols = if dims.len() == 1 { 1 } else { dims[0] as usize };
        let v = self.v_reorder.map(|r| r.0);
        for t in transforms {
            values = apply(t, values, cols, v)
                .map_err(|msg| tensor_err(self.file(src), &src.t.name, msg))?;
        }
        self.push_values(src, name, dims, &values)
    }

    /// What the converter does to the values of GGUF tensor `name` before writing it.
    fn transforms(&self, name: &str) -> Vec<Transform> {
        let mut out = Vec::new();
        let kind = name
            .strip_suffix(".weight")
            .or(name.strip_suffix(".bias"))
            .unwrap_or(name);
        let kind = kind.rsplit('.').next().unwrap_or(kind);
        match (self.arch, kind) {
            (Arch::Llama, "attn_q") => out.push(Transform::Rotary(self.n_head)),
            (Arch::Llama, "attn_k") => out.push(Transform::Rotary(self.n_head_kv)),
            _ => {}
        }
        // Gemma's and the hybrids' RMSNorm multiply by 1 + w; ggml's by w (the converter adds 1,
        // in f32), except the hybrids' gated norm of the linear attention.
        let offset_norms = self.arch == Arch::Gemma3 || self.arch.is_hybrid();
        if offset_norms && name.ends_with("norm.weight") && !name.ends_with("ssm_norm.weight") {
            out.push(Transform::AddOne);
        }
        if self.arch.is_hybrid() && kind == "ssm_a" {
            out.push(Transform::NegExp);
        }
        if let Some((v, dk, dv)) = self.v_reorder {
            let qk = 2 * v.nk * dk;
            match kind {
                "attn_qkv" | "ssm_conv1d" => out.push(Transform::VRows { skip: qk, head: dv }),
                "attn_gate" => out.push(Transform::VRows { skip: 0, head: dv }),
                "ssm_alpha" | "ssm_beta" | "ssm_a" | "ssm_dt" => {
                    out.push(Transform::VRows { skip: 0, head: 1 })
                }
                "ssm_out" => out.push(Transform::VCols { head: dv }),
                _ => {}
            }
        }
        out
    }

    /// Qwen3-Next's fused `in_proj_qkvz` as `attn_qkv` and `attn_gate`.
    fn qkvz(&mut self, c: &HfConfig, src: Src, layer: usize) -> Result<(), CheckpointError> {
        let err = |msg: String| tensor_err(self.file(src), &src.t.name, msg);
        let [_, cols] = src.t.shape[..] else {
            return Err(err(format!("shape {:?} is not a matrix", src.t.shape)));
        };
        let nk = c.req_u64(&["linear_num_key_heads"])? as usize;
        let nv = c.req_u64(&["linear_num_value_heads"])? as usize;
        let dk = c.req_u64(&["linear_key_head_dim"])? as usize;
        let dv = c.req_u64(&["linear_value_head_dim"])? as usize;
        if nk == 0 || !nv.is_multiple_of(nk) {
            return Err(err(format!(
                "{nv} value heads are not a multiple of {nk} key heads"
            )));
        }
        let v = VHeads { nk, per_k: nv / nk };
        let values = self.values(src)?;
        let (qkv, z) = split_qkvz(&values, cols as usize, v, dk, dv).map_err(err)?;
        let rows = |n: usize| n / cols as usize;
        let qkv_dims = vec![cols, rows(qkv.len()) as u64];
        self.push_values(src, format!("blk.{layer}.attn_qkv.weight"), qkv_dims, &qkv)?;
        let z_dims = vec![cols, rows(z.len()) as u64];
        self.push_values(src, format!("blk.{layer}.attn_gate.weight"), z_dims, &z)
    }

    /// ERNIE's fused `qkv_proj` (split into Q, K and V rows) or `up_gate_proj` (gate rows, then
    /// up rows), each part borrowed where its type is kept.
    fn fused(
        &mut self,
        c: &HfConfig,
        src: Src,
        layer: usize,
        qkv: bool,
    ) -> Result<(), CheckpointError> {
        let err = |msg: String| tensor_err(self.file(src), &src.t.name, msg);
        let [rows, _] = src.t.shape[..] else {
            return Err(err(format!("shape {:?} is not a matrix", src.t.shape)));
        };
        let rows = rows as usize;
        let parts: Vec<(&str, usize)> = if qkv {
            let head_dim = match c.opt_u64(&["head_dim"])? {
                Some(d) => d as usize,
                None => c.req_u64(&["hidden_size"])? as usize / self.n_head.max(1),
            };
            let kv = self.n_head_kv * head_dim;
            vec![
                ("attn_q", self.n_head * head_dim),
                ("attn_k", kv),
                ("attn_v", kv),
            ]
        } else {
            vec![("ffn_gate", rows / 2), ("ffn_up", rows / 2)]
        };
        if parts.iter().map(|p| p.1).sum::<usize>() != rows {
            return Err(err(format!("{rows} rows do not split into {parts:?}")));
        }
        let mut start = 0;
        for (part, n) in parts {
            self.row_range(src, format!("blk.{layer}.{part}.weight"), start, n)?;
            start += n;
        }
        Ok(())
    }

    /// Rows `start..start + n` of matrix `src` as GGUF tensor `name`.
    fn row_range(
        &mut self,
        src: Src,
        name: String,
        start: usize,
        n: usize,
    ) -> Result<(), CheckpointError> {
        let cols = src.t.shape[1] as usize;
        let dims = vec![cols as u64, n as u64];
        let ty = self.out_type(&name, &dims, src.t.dtype);
        if stored_type(src.t.dtype) == Some(ty) {
            let offset = src.t.offset + start * cols * src.t.dtype.size();
            let data = TensorBytes::Borrowed {
                file: src.file,
                offset,
            };
            self.out.push(NewTensor {
                name,
                dims,
                ty,
                data,
            });
            return Ok(());
        }
        let values = self.values(src)?;
        self.push_values(src, name, dims, &values[start * cols..(start + n) * cols])
    }

    /// A layer's experts of one kind stacked into `blk.L.ffn_{kind}_exps.weight`
    /// `[cols, rows, n_expert]`, expert 0 first.
    fn stack(
        &mut self,
        layer: usize,
        kind: &str,
        list: &BTreeMap<usize, Src<'a>>,
        n_expert: usize,
    ) -> Result<(), CheckpointError> {
        let first = *list.values().next().expect("a listed kind has an expert");
        let name = format!("blk.{layer}.ffn_{kind}_exps.weight");
        let ids: Vec<usize> = list.keys().copied().collect();
        if ids != (0..n_expert).collect::<Vec<_>>() {
            return Err(tensor_err(
                self.file(first),
                &first.t.name,
                format!("layer {layer} has {kind} experts {ids:?}, the config says {n_expert}"),
            ));
        }
        for src in list.values() {
            if src.t.shape != first.t.shape || src.t.dtype != first.t.dtype {
                let msg = format!(
                    "{} {:?} differs from expert 0's {} {:?}",
                    src.t.dtype, src.t.shape, first.t.dtype, first.t.shape
                );
                return Err(tensor_err(self.file(*src), &src.t.name, msg));
            }
        }
        let dims = [
            &first.t.shape.iter().rev().copied().collect::<Vec<_>>()[..],
            &[n_expert as u64],
        ]
        .concat();
        let ty = self.out_type(&name, &dims, first.t.dtype);
        if stored_type(first.t.dtype) == Some(ty) {
            // Kept as stored: the experts' bytes, one after another (no round trip through f32).
            let mut bytes = Vec::with_capacity(first.t.n_bytes * n_expert);
            for src in list.values() {
                bytes.extend_from_slice(self.file(*src).data(src.t));
            }
            let data = TensorBytes::Owned(bytes);
            self.out.push(NewTensor {
                name,
                dims,
                ty,
                data,
            });
            return Ok(());
        }
        let mut values = Vec::new();
        for src in list.values() {
            values.extend(self.values(*src)?);
        }
        self.push_values(first, name, dims, &values)
    }

    /// DeepSeek's `kv_b_proj` `[n_head * (nope + v), kv_lora]` as llama.cpp stores it for
    /// absorbed attention: `attn_k_b` `[n_head][kv_lora][nope]` (each head's key rows
    /// transposed) and `attn_v_b` `[n_head][v][kv_lora]`.
    fn kv_b(&mut self, c: &HfConfig, src: Src, layer: usize) -> Result<(), CheckpointError> {
        let nope = c.req_u64(&["qk_nope_head_dim"])? as usize;
        let v_dim = c.req_u64(&["v_head_dim"])? as usize;
        let n_head = self.n_head;
        let err = |msg: String| tensor_err(self.file(src), &src.t.name, msg);
        let (rows, lora) = match src.t.shape[..] {
            [r, l] => (r as usize, l as usize),
            _ => return Err(err(format!("shape {:?} is not a matrix", src.t.shape))),
        };
        if rows != n_head * (nope + v_dim) {
            return Err(err(format!(
                "{rows} rows, expected heads {n_head} x (qk_nope_head_dim {nope} + v_head_dim {v_dim})"
            )));
        }
        let values = self.values(src)?;
        let (mut k_b, mut v_b) = (Vec::with_capacity(n_head * nope * lora), Vec::new());
        for head in values.chunks_exact((nope + v_dim) * lora) {
            let (k, v) = head.split_at(nope * lora);
            for l in 0..lora {
                k_b.extend((0..nope).map(|n| k[n * lora + l]));
            }
            v_b.extend_from_slice(v);
        }
        let (h, nope, lora, v_dim) = (n_head as u64, nope as u64, lora as u64, v_dim as u64);
        let k_name = format!("blk.{layer}.attn_k_b.weight");
        self.push_values(src, k_name, vec![nope, lora, h], &k_b)?;
        let v_name = format!("blk.{layer}.attn_v_b.weight");
        self.push_values(src, v_name, vec![lora, v_dim, h], &v_b)
    }
}
