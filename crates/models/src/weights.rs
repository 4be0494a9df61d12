//! Loading a model's tensors from GGUF into kernel matrices, with shape checks that name the tensor.

use crate::config::ModelConfig;
use crate::ModelError;
use frugal_formats::{GgufFile, TensorInfo};
use frugal_kernels::{dequant::dequantize_row, Matrix};

/// How to load weights.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Dequantize every matrix to F32 at load ("exact path": f32 weights and activations, no
    /// activation quantization). Used to check the rest of the forward pass against references.
    pub dequantize: bool,
    /// Called after each tensor with (bytes loaded, bytes total).
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub attn: Attention,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

pub(crate) enum Attention {
    /// Grouped-query attention with per-head keys and values.
    Gqa(GqaWeights),
    /// DeepSeek's multi-head latent attention.
    Mla(MlaWeights),
}

pub(crate) struct GqaWeights {
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Qwen3: RMS norm over each query / key head before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

pub(crate) struct MlaWeights {
    /// Query down-projection and its norm (absent in V2-Lite).
    pub q_a: Option<(Matrix, Vec<f32>)>,
    /// Query up-projection (`attn_q_b`), or the direct projection (`attn_q`) without `q_a`.
    pub q: Matrix,
    /// Latent plus RoPE key: `[kv_lora + qk_rope x n_embd]`.
    pub kv_a: Matrix,
    pub kv_a_norm: Vec<f32>,
    /// Per head `[kv_lora x qk_nope]`: absorbs the key up-projection into the query.
    pub k_b: Vec<Matrix>,
    /// Per head `[v_head x kv_lora]`: the value up-projection, applied after attention.
    pub v_b: Vec<Matrix>,
}

/// A SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
pub(crate) struct FfnWeights {
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
}

pub(crate) enum Ffn {
    Dense(FfnWeights),
    Moe(MoeWeights),
}

pub(crate) struct MoeWeights {
    /// Router: `[n_expert x n_embd]`.
    pub router: Matrix,
    pub experts: Vec<FfnWeights>,
    /// Always-on shared expert(s), gated by `sigmoid(gate · x)` in qwen2moe.
    pub shared: Option<(Option<Matrix>, FfnWeights)>,
    /// Selection bias added to the expert scores (DeepSeek-V3's `exp_probs_b`).
    pub probs_bias: Option<Vec<f32>>,
}

pub(crate) struct Weights {
    pub token_embd: Matrix,
    /// `None` when the output projection is tied to `token_embd`.
    pub output: Option<Matrix>,
    pub output_norm: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    /// Llama 3.1-style RoPE frequency factors (`rope_freqs.weight`), one per rotated pair.
    pub rope_freqs: Option<std::sync::Arc<[f32]>>,
    pub n_params: u64,
    pub n_bytes: u64,
}

impl Weights {
    pub fn output(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    pub fn load(
        gguf: &GgufFile,
        c: &ModelConfig,
        opts: &LoadOptions,
    ) -> Result<Weights, ModelError> {
        let mut l = Loader {
            gguf,
            opts,
            done: 0,
            total: gguf.tensors().iter().map(|t| t.n_bytes as u64).sum(),
            n_params: 0,
            n_bytes: 0,
        };
        gguf.advise_willneed();
        let (e, v) = (c.n_embd, c.n_vocab);
        let token_embd = l.matrix("token_embd.weight", e, v)?;
        let output = if gguf.tensor("output.weight").is_some() {
            Some(l.matrix("output.weight", e, v)?)
        } else {
            None
        };
        let output_norm = l.vector("output_norm.weight", e)?;
        let rope_freqs = l
            .opt_vector("rope_freqs.weight", c.rope.n_rot / 2, false)?
            .map(std::sync::Arc::from);
        let mut layers = Vec::with_capacity(c.n_layer);
        let has_bias = c.arch.qkv_bias();
        let has_qk_norm = c.arch.qk_norm();
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let (q, kv) = (c.q_dim(), c.kv_dim());
            let attn = match &c.mla {
                None => Attention::Gqa(GqaWeights {
                    wq: l.matrix(&n("attn_q.weight"), e, q)?,
                    wk: l.matrix(&n("attn_k.weight"), e, kv)?,
                    wv: l.matrix(&n("attn_v.weight"), e, kv)?,
                    bq: l.opt_vector(&n("attn_q.bias"), q, has_bias)?,
                    bk: l.opt_vector(&n("attn_k.bias"), kv, has_bias)?,
                    bv: l.opt_vector(&n("attn_v.bias"), kv, has_bias)?,
                    q_norm: l.opt_vector(&n("attn_q_norm.weight"), c.head_dim_k, has_qk_norm)?,
                    k_norm: l.opt_vector(&n("attn_k_norm.weight"), c.head_dim_k, has_qk_norm)?,
                }),
                Some(m) => {
                    let q_width = c.n_head * (m.qk_nope + m.qk_rope);
                    let (q_a, q) = match m.q_lora {
                        Some(r) => (
                            Some((
                                l.matrix(&n("attn_q_a.weight"), e, r)?,
                                l.vector(&n("attn_q_a_norm.weight"), r)?,
                            )),
                            l.matrix(&n("attn_q_b.weight"), r, q_width)?,
                        ),
                        None => (None, l.matrix(&n("attn_q.weight"), e, q_width)?),
                    };
                    Attention::Mla(MlaWeights {
                        q_a,
                        q,
                        kv_a: l.matrix(&n("attn_kv_a_mqa.weight"), e, m.kv_lora + m.qk_rope)?,
                        kv_a_norm: l.vector(&n("attn_kv_a_norm.weight"), m.kv_lora)?,
                        k_b: l.stacked(&n("attn_k_b.weight"), m.qk_nope, m.kv_lora, c.n_head)?,
                        v_b: l.stacked(&n("attn_v_b.weight"), m.kv_lora, m.v_head, c.n_head)?,
                    })
                }
            };
            let attn_out_width = c.mla.as_ref().map_or(q, |m| c.n_head * m.v_head);
            let dense_ffn = c.moe.as_ref().is_none_or(|m| i < m.n_dense_lead);
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), e)?,
                attn,
                wo: l.matrix(&n("attn_output.weight"), attn_out_width, e)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), e)?,
                ffn: match &c.moe {
                    Some(m) if !dense_ffn => Ffn::Moe(MoeWeights {
                        router: l.matrix(&n("ffn_gate_inp.weight"), e, m.n_expert)?,
                        experts: l.experts(&n("ffn_{}_exps.weight"), e, m.n_ff_exp, m.n_expert)?,
                        shared: match m.n_ff_shared {
                            Some(ff) => Some((
                                if m.shared_gated {
                                    Some(l.matrix(&n("ffn_gate_inp_shexp.weight"), e, 1)?)
                                } else {
                                    None
                                },
                                l.ffn(&n("ffn_{}_shexp.weight"), e, ff)?,
                            )),
                            None => None,
                        },
                        probs_bias: l.opt_vector(&n("exp_probs_b.bias"), m.n_expert, false)?,
                    }),
                    _ => Ffn::Dense(l.ffn(&n("ffn_{}.weight"), e, c.n_ff)?),
                },
            });
        }
        // The weights were copied out of the map: let the kernel drop its page-cache pages from our RSS.
        gguf.advise_dontneed();
        Ok(Weights {
            token_embd,
            output,
            output_norm,
            layers,
            rope_freqs,
            n_params: l.n_params,
            n_bytes: l.n_bytes,
        })
    }
}

struct Loader<'a> {
    gguf: &'a GgufFile,
    opts: &'a LoadOptions<'a>,
    done: u64,
    total: u64,
    n_params: u64,
    n_bytes: u64,
}

impl Loader<'_> {
    fn info(&self, name: &str, expected: &[u64]) -> Result<&TensorInfo, ModelError> {
        let t = self
            .gguf
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.gguf.name().to_string(),
                name: name.to_string(),
            })?;
        // ggml drops trailing 1-sized dims inconsistently; compare without them.
        let trim = |d: &[u64]| {
            let mut d = d.to_vec();
            while d.len() > 1 && d.last() == Some(&1) {
                d.pop();
            }
            d
        };
        if trim(&t.dims) != trim(expected) {
            return Err(ModelError::BadShape {
                file: self.gguf.name().to_string(),
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: t.dims.clone(),
            });
        }
        Ok(t)
    }

    fn tick(&mut self, t: &TensorInfo) {
        self.done += t.n_bytes as u64;
        self.n_params += t.n_elements();
        if let Some(p) = self.opts.progress {
            p(self.done, self.total);
        }
    }

    /// A `[rows x cols]` matrix (GGUF dims `[cols, rows]`).
    fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<Matrix, ModelError> {
        let t = self.info(name, &[cols as u64, rows as u64])?.clone();
        let m = Matrix::from_bytes(t.ty, rows, cols, self.gguf.tensor_data(&t)).map_err(|e| {
            ModelError::Kernel {
                file: self.gguf.name().to_string(),
                name: name.to_string(),
                source: e,
            }
        })?;
        let m = if self.opts.dequantize && m.ty() != frugal_kernels::GgmlType::F32 {
            m.to_f32()
        } else {
            m
        };
        self.n_bytes += m.n_bytes() as u64;
        self.tick(&t);
        Ok(m)
    }

    /// Gate, up and down matrices; `pattern` has `{}` where `gate`/`up`/`down` goes.
    fn ffn(&mut self, pattern: &str, n_embd: usize, n_ff: usize) -> Result<FfnWeights, ModelError> {
        Ok(FfnWeights {
            gate: self.matrix(&pattern.replace("{}", "gate"), n_embd, n_ff)?,
            up: self.matrix(&pattern.replace("{}", "up"), n_embd, n_ff)?,
            down: self.matrix(&pattern.replace("{}", "down"), n_ff, n_embd)?,
        })
    }

    /// The experts of a MoE layer, stored as 3-D tensors `[cols, rows, n_expert]`.
    fn experts(
        &mut self,
        pattern: &str,
        n_embd: usize,
        n_ff: usize,
        n_expert: usize,
    ) -> Result<Vec<FfnWeights>, ModelError> {
        let gate = self.stacked(&pattern.replace("{}", "gate"), n_embd, n_ff, n_expert)?;
        let up = self.stacked(&pattern.replace("{}", "up"), n_embd, n_ff, n_expert)?;
        let down = self.stacked(&pattern.replace("{}", "down"), n_ff, n_embd, n_expert)?;
        Ok(gate
            .into_iter()
            .zip(up)
            .zip(down)
            .map(|((gate, up), down)| FfnWeights { gate, up, down })
            .collect())
    }

    /// `count` matrices of `[rows x cols]` stacked in one tensor.
    fn stacked(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
        count: usize,
    ) -> Result<Vec<Matrix>, ModelError> {
        let t = self
            .info(name, &[cols as u64, rows as u64, count as u64])?
            .clone();
        let data = self.gguf.tensor_data(&t);
        let per = t.n_bytes / count;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let m = Matrix::from_bytes(t.ty, rows, cols, &data[i * per..(i + 1) * per]).map_err(
                |e| ModelError::Kernel {
                    file: self.gguf.name().to_string(),
                    name: name.to_string(),
                    source: e,
                },
            )?;
            let m = if self.opts.dequantize && m.ty() != frugal_kernels::GgmlType::F32 {
                m.to_f32()
            } else {
                m
            };
            self.n_bytes += m.n_bytes() as u64;
            out.push(m);
        }
        self.tick(&t);
        Ok(out)
    }

    /// A vector of `len` values, converted to f32 whatever its stored type.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.info(name, &[len as u64])?.clone();
        let mut out = vec![0.0f32; len];
        if t.ty.row_bytes(len) != Some(t.n_bytes) {
            return Err(ModelError::Kernel {
                file: self.gguf.name().to_string(),
                name: name.to_string(),
                source: frugal_kernels::KernelError::RaggedRow {
                    ty: t.ty,
                    cols: len,
                    block: t.ty.block_len(),
                },
            });
        }
        dequantize_row(t.ty, self.gguf.tensor_data(&t), &mut out);
        self.n_bytes += (len * 4) as u64;
        self.tick(&t);
        Ok(out)
    }

    /// A vector that the architecture requires (`required`) or that may be absent.
    fn opt_vector(
        &mut self,
        name: &str,
        len: usize,
        required: bool,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        if required || self.gguf.tensor(name).is_some() {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}
