//! Loading a model's tensors from GGUF into kernel matrices, with shape checks that name the tensor.

use crate::config::{Arch, ModelConfig};
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
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Qwen3: RMS norm over each query / key head before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
}

pub(crate) struct Weights {
    pub token_embd: Matrix,
    /// `None` when the output projection is tied to `token_embd`.
    pub output: Option<Matrix>,
    pub output_norm: Vec<f32>,
    pub layers: Vec<LayerWeights>,
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
        let mut layers = Vec::with_capacity(c.n_layer);
        let has_bias = c.arch == Arch::Qwen2;
        let has_qk_norm = c.arch == Arch::Qwen3;
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let (q, kv) = (c.q_dim(), c.kv_dim());
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), e)?,
                wq: l.matrix(&n("attn_q.weight"), e, q)?,
                wk: l.matrix(&n("attn_k.weight"), e, kv)?,
                wv: l.matrix(&n("attn_v.weight"), e, kv)?,
                wo: l.matrix(&n("attn_output.weight"), q, e)?,
                bq: l.opt_vector(&n("attn_q.bias"), q, has_bias)?,
                bk: l.opt_vector(&n("attn_k.bias"), kv, has_bias)?,
                bv: l.opt_vector(&n("attn_v.bias"), kv, has_bias)?,
                q_norm: l.opt_vector(&n("attn_q_norm.weight"), c.head_dim_k, has_qk_norm)?,
                k_norm: l.opt_vector(&n("attn_k_norm.weight"), c.head_dim_k, has_qk_norm)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), e)?,
                w_gate: l.matrix(&n("ffn_gate.weight"), e, c.n_ff)?,
                w_up: l.matrix(&n("ffn_up.weight"), e, c.n_ff)?,
                w_down: l.matrix(&n("ffn_down.weight"), c.n_ff, e)?,
            });
        }
        // The weights were copied out of the map: let the kernel drop its page-cache pages from our RSS.
        gguf.advise_dontneed();
        Ok(Weights {
            token_embd,
            output,
            output_norm,
            layers,
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
