//! Loading a model's tensors from GGUF into kernel matrices, with shape checks that name the tensor.

use crate::config::{DeltaNetConfig, MlaConfig, ModelConfig, MoeConfig, SharedGate};
use crate::ModelError;
use frugal_formats::{GgufFile, TensorInfo};
use frugal_kernels::{dequant::dequantize_row, Matrix};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Whether weight matrices borrow their bytes from the file's memory map or copy them.
///
/// Mapped matrices cost no copy: those with a packed layout at this CPU's instruction set (see
/// `frugal_kernels::packed`) are repacked at load, in parallel, and their file pages then dropped
/// from the resident set, so only the packed copy stays in memory; the others are read in place,
/// from pages the OS loads on first use (as llama.cpp does with mmap). MoE expert matrices that
/// stay in the map ([`Mmap::Always`], or [`Mmap::Auto`] when the model does not fit) are never
/// repacked: their pages are read on demand and dropped by the OS under memory pressure, so a MoE
/// model larger than RAM still runs, at the speed of the page cache or the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mmap {
    /// Map; MoE experts stay in the map only when the weights would not fit comfortably (with a
    /// quarter to spare) in the available memory (`MemAvailable`, or the cgroup's limit if lower).
    #[default]
    Auto,
    /// Map, and keep MoE experts in the map whatever the available memory.
    Always,
    /// Copy every tensor into memory (dropping its file pages right after), repacked on first use.
    Never,
}

impl Mmap {
    /// `FRUGAL_MMAP=auto|always|never`, [`Mmap::Auto`] when unset or unrecognized.
    pub fn from_env() -> Mmap {
        match std::env::var("FRUGAL_MMAP").as_deref() {
            Ok("always") => Mmap::Always,
            Ok("never") => Mmap::Never,
            _ => Mmap::Auto,
        }
    }
}

/// How to load weights.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Dequantize every matrix to F32 at load ("exact path": f32 weights and activations, no
    /// activation quantization). Used to check the rest of the forward pass against references.
    pub dequantize: bool,
    /// Threads that repack weights at load (`None`: every available core).
    pub threads: Option<usize>,
    /// Called after each tensor with (bytes loaded, bytes total).
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub attn: Attention,
    /// The token mixer's output projection (attention's `attn_output`, Gated DeltaNet's
    /// `ssm_out`).
    pub wo: Matrix,
    /// Added to the output projection (ERNIE 4.5 may have it).
    pub wo_bias: Option<Vec<f32>>,
    /// Gemma's sandwich norms: applied to the token mixer's output before its residual add.
    pub attn_post_norm: Option<Vec<f32>>,
    /// The norm before the feed-forward (`ffn_norm`, or `post_attention_norm` where it follows
    /// the attention's residual add: the hybrids, GLM-4.5).
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    /// Gemma's sandwich norms: applied to the feed-forward's output before its residual add.
    pub ffn_post_norm: Option<Vec<f32>>,
}

// One per layer: the size difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Attention {
    /// Grouped-query attention with per-head keys and values.
    Gqa(GqaWeights),
    /// DeepSeek's multi-head latent attention.
    Mla(MlaWeights),
    /// Gated DeltaNet linear attention (the hybrids' recurrent layers).
    DeltaNet(DeltaNetWeights),
}

/// A Gated DeltaNet layer's tensors (see `crate::delta_net`).
pub(crate) struct DeltaNetWeights {
    /// Queries, keys and values before the convolution: `[conv_dim x n_embd]`.
    pub qkv: Matrix,
    /// The output gate `z`: `[value_dim x n_embd]`.
    pub z: Matrix,
    pub beta_alpha: BetaAlpha,
    /// Convolution taps, `[conv_kernel][conv_dim]` (the file's `[conv_dim][conv_kernel]`
    /// transposed, so each tap is one row).
    pub conv: Vec<f32>,
    /// Added to alpha before the softplus (`ssm_dt.bias`), per value head.
    pub dt_bias: Vec<f32>,
    /// `-exp(A_log)` per value head (`ssm_a`).
    pub a: Vec<f32>,
    /// RMS-norm weight of each value head's output (`ssm_norm`).
    pub norm: Vec<f32>,
}

/// The projections to the per-head update strength (beta) and decay (alpha).
pub(crate) enum BetaAlpha {
    /// Qwen3.5: `ssm_beta` and `ssm_alpha`, `[n_v_heads x n_embd]` each.
    Split { beta: Matrix, alpha: Matrix },
    /// Qwen3-Next: `ssm_ba`, `[2 n_v_heads x n_embd]`, per key head its value heads' betas then
    /// their alphas.
    Fused(Matrix),
}

/// A multi-token-prediction layer (`nextn`): it predicts the token after next from the trunk's
/// last hidden state and the next token's embedding (see `crate::mtp`). The trunk's forward pass
/// does not run it.
pub(crate) struct NextnLayer {
    /// `[n_embd x 2 n_embd]`: the normalized embedding and hidden state, concatenated, in.
    pub eh_proj: Matrix,
    pub enorm: Vec<f32>,
    pub hnorm: Vec<f32>,
    /// The head's own token embeddings, if it has them (else `token_embd`).
    pub embed_tokens: Option<Matrix>,
    /// The head's own final norm, if it has one (else `output_norm`).
    pub shared_head_norm: Option<Vec<f32>>,
    /// The head's own output projection, if it has one (else `output`).
    pub shared_head_head: Option<Matrix>,
    /// A full-attention decoder layer.
    pub layer: LayerWeights,
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
    /// `wq` also yields, per head after its query, a gate for the attention output (the
    /// hybrids' gated attention: `out · sigmoid(gate)`).
    pub output_gate: bool,
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

// One per layer: the size difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ffn {
    Dense(FfnWeights),
    Moe(MoeWeights),
}

pub(crate) struct MoeWeights {
    /// Router: `[n_expert x n_embd]`.
    pub router: Matrix,
    pub experts: Vec<FfnWeights>,
    /// Always-on shared expert(s), gated by `sigmoid(gate · x)` in qwen2moe and the hybrids.
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
    /// Multi-token-prediction layers (after the trunk's in the file).
    pub nextn: Vec<NextnLayer>,
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
        mmap: Mmap,
    ) -> Result<Weights, ModelError> {
        let mut l = Loader::new(gguf, c, opts, mmap);
        let (e, v) = (c.n_embd, c.n_vocab);
        let token_embd = l.matrix("token_embd.weight", e, v)?;
        let output = l.opt_matrix("output.weight", e, v)?;
        let output_norm = l.vector("output_norm.weight", e)?;
        let rope_freqs = l
            .opt_vector("rope_freqs.weight", c.rope.n_rot / 2, false)?
            .map(std::sync::Arc::from);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            layers.push(l.layer(c, i)?);
        }
        let nextn = (c.n_layer..c.n_layer + c.n_nextn)
            .map(|i| l.nextn(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        let w = Weights {
            token_embd,
            output,
            output_norm,
            layers,
            nextn,
            rope_freqs,
            n_params: l.n_params,
            n_bytes: l.n_bytes,
        };
        w.repack(opts, l.done, l.total);
        Ok(w)
    }

    /// Every matrix.
    pub(crate) fn matrices(&self) -> Vec<&Matrix> {
        let mut out = vec![&self.token_embd];
        out.extend(&self.output);
        for l in &self.layers {
            out.extend(layer_matrices(l));
        }
        for n in &self.nextn {
            out.push(&n.eh_proj);
            out.extend(&n.embed_tokens);
            out.extend(&n.shared_head_head);
            out.extend(layer_matrices(&n.layer));
        }
        out
    }

    /// Builds the packed layout of every mapped matrix that has one (all cores, one matrix at a
    /// time each), then drops its file pages from the resident set: the packed copy is what the
    /// matmuls read. Matrices kept in the map (`Matrix::without_repack`) or without a packed layout
    /// stay as they are. Progress goes on from `done` to `total`.
    fn repack(&self, opts: &LoadOptions, done: u64, total: u64) {
        let todo: Vec<&Matrix> = self
            .matrices()
            .into_iter()
            .filter(|m| m.bytes().is_mapped())
            .collect();
        let next = AtomicUsize::new(0);
        let done = AtomicU64::new(done);
        let n_threads = opts
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, todo.len().max(1));
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(m) = todo.get(i) else { break };
            m.repack();
            if m.is_repacked() {
                // With a margin: faults in this matrix also mapped the tail of the one before it
                // and the head of the next (the kernel's fault-around), which may be done
                // already. Pages dropped early are read again from the page cache.
                m.bytes().release_pages(FAULT_AROUND);
            }
            let d = done.fetch_add(m.n_bytes() as u64, Ordering::Relaxed) + m.n_bytes() as u64;
            if let Some(p) = opts.progress {
                p(d.min(total), total);
            }
        };
        std::thread::scope(|s| {
            for _ in 1..n_threads {
                s.spawn(work);
            }
            work();
        });
        // Faults while packing one matrix map a few neighbouring pages around them (the kernel's
        // fault-around), including the tail of a matrix already dropped: drop them all again.
        for m in todo.iter().filter(|m| m.is_repacked()) {
            m.bytes().release_pages(0);
        }
    }
}

/// The matrices of one layer.
pub(crate) fn layer_matrices(l: &LayerWeights) -> Vec<&Matrix> {
    let mut out = Vec::new();
    fn ffn_of<'a>(out: &mut Vec<&'a Matrix>, f: &'a FfnWeights) {
        out.extend([&f.gate, &f.up, &f.down]);
    }
    match &l.attn {
        Attention::Gqa(a) => out.extend([&a.wq, &a.wk, &a.wv]),
        Attention::DeltaNet(d) => {
            out.extend([&d.qkv, &d.z]);
            match &d.beta_alpha {
                BetaAlpha::Split { beta, alpha } => out.extend([beta, alpha]),
                BetaAlpha::Fused(m) => out.push(m),
            }
        }
        Attention::Mla(a) => {
            out.extend(a.q_a.as_ref().map(|(m, _)| m));
            out.extend([&a.q, &a.kv_a]);
            out.extend(&a.k_b);
            out.extend(&a.v_b);
        }
    }
    out.push(&l.wo);
    match &l.ffn {
        Ffn::Dense(f) => ffn_of(&mut out, f),
        Ffn::Moe(m) => {
            out.push(&m.router);
            for e in &m.experts {
                ffn_of(&mut out, e);
            }
            if let Some((gate, f)) = &m.shared {
                out.extend(gate);
                ffn_of(&mut out, f);
            }
        }
    }
    out
}

/// How far around a page fault the kernel maps pages already in the page cache
/// (`fault_around_bytes`, 64 KiB by default).
const FAULT_AROUND: usize = 64 << 10;

/// Bytes of memory available to this process: `MemAvailable` of `/proc/meminfo`, or less if its
/// cgroup (v1 or v2) has a lower limit. `None` where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let system = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (system, cgroup_available()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Limit minus usage (plus reclaimable inactive file pages) of this process's memory cgroup.
fn cgroup_available() -> Option<u64> {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let stat = |dir: &std::path::Path, key: &str| {
        read(&dir.join("memory.stat")).and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<u64>().ok())
        })
    };
    let cgroups = read(std::path::Path::new("/proc/self/cgroup"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, limit, usage, inactive) = match controllers {
            "" => (
                "/sys/fs/cgroup",
                "memory.max",
                "memory.current",
                "inactive_file",
            ),
            c if c.split(',').any(|c| c == "memory") => (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            ),
            _ => continue,
        };
        // Inside a container the path may be relative to an outer root: try its suffixes.
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for i in 0..=parts.len() {
            let dir = std::path::Path::new(root).join(parts[i..].join("/"));
            if let (Some(limit), Some(usage)) =
                (num(read(&dir.join(limit))), num(read(&dir.join(usage))))
            {
                let inactive = stat(&dir, inactive).unwrap_or(0);
                return Some(limit.saturating_sub(usage) + inactive.min(usage));
            }
        }
    }
    None
}

/// The name of tensor `suffix` of layer `i`.
fn blk(i: usize, suffix: &str) -> String {
    format!("blk.{i}.{suffix}")
}

struct Loader<'a> {
    gguf: &'a GgufFile,
    opts: &'a LoadOptions<'a>,
    /// Matrices borrow the file images; `false` copies them ([`Mmap::Never`]).
    borrow: bool,
    /// Keep MoE expert matrices in the map, never repacked.
    experts_in_map: bool,
    done: u64,
    total: u64,
    n_params: u64,
    n_bytes: u64,
}

impl<'a> Loader<'a> {
    /// Decides where MoE experts live (see [`Mmap`]) and starts reading the file ahead when
    /// everything will be read now.
    fn new(
        gguf: &'a GgufFile,
        c: &ModelConfig,
        opts: &'a LoadOptions<'a>,
        mmap: Mmap,
    ) -> Loader<'a> {
        let total: u64 = gguf.tensors().iter().map(|t| t.n_bytes as u64).sum();
        let experts_in_map = c.moe.is_some()
            && match mmap {
                Mmap::Always => true,
                Mmap::Never => false,
                Mmap::Auto => available_memory().is_some_and(|avail| total + total / 4 > avail),
            };
        if !experts_in_map {
            // Everything will be read now; with experts left in the map, only what is used is.
            gguf.advise_willneed();
        }
        Loader {
            gguf,
            opts,
            borrow: mmap != Mmap::Never,
            experts_in_map,
            done: 0,
            total,
            n_params: 0,
            n_bytes: 0,
        }
    }

    /// Layer `i`'s tensors, in the order they have always been loaded (progress and the first
    /// error reported depend on it).
    fn layer(&mut self, c: &ModelConfig, i: usize) -> Result<LayerWeights, ModelError> {
        let e = c.n_embd;
        let dense_ffn = c.moe.as_ref().is_none_or(|m| i < m.n_dense_lead);
        let recurrent = c
            .delta_net
            .as_ref()
            .filter(|d| i < c.n_layer && d.recurrent[i]);
        let attn_norm = self.vector(&blk(i, "attn_norm.weight"), e)?;
        let (attn, wo) = match (recurrent, &c.mla) {
            (Some(d), _) => (
                Attention::DeltaNet(self.delta_net(c, d, i)?),
                self.matrix(&blk(i, "ssm_out.weight"), d.value_dim(), e)?,
            ),
            (None, None) => (
                Attention::Gqa(self.gqa(c, i)?),
                self.matrix(&blk(i, "attn_output.weight"), c.q_dim(), e)?,
            ),
            (None, Some(m)) => (
                Attention::Mla(self.mla(c, m, i)?),
                self.matrix(&blk(i, "attn_output.weight"), c.n_head * m.v_head, e)?,
            ),
        };
        let wo_bias = self.opt_vector(&blk(i, "attn_output.bias"), e, false)?;
        let sandwich = c.arch == crate::Arch::Gemma3;
        let attn_post_norm = match sandwich {
            true => Some(self.vector(&blk(i, "post_attention_norm.weight"), e)?),
            false => None,
        };
        let ffn_norm = match c.arch.ffn_norm_is_post_attention() {
            true => "post_attention_norm.weight",
            false => "ffn_norm.weight",
        };
        let ffn_norm = self.vector(&blk(i, ffn_norm), e)?;
        let ffn = match &c.moe {
            Some(m) if !dense_ffn => Ffn::Moe(self.moe(e, m, i)?),
            _ => Ffn::Dense(self.ffn(&blk(i, "ffn_{}.weight"), e, c.n_ff)?),
        };
        Ok(LayerWeights {
            attn_norm,
            attn,
            wo,
            wo_bias,
            attn_post_norm,
            ffn_norm,
            ffn,
            ffn_post_norm: match sandwich {
                true => Some(self.vector(&blk(i, "post_ffw_norm.weight"), e)?),
                false => None,
            },
        })
    }

    fn gqa(&mut self, c: &ModelConfig, i: usize) -> Result<GqaWeights, ModelError> {
        let n = |s: &str| blk(i, s);
        let (e, q, kv) = (c.n_embd, c.q_dim(), c.kv_dim());
        let has_bias = c.arch.qkv_bias();
        let has_qk_norm = c.arch.qk_norm();
        let output_gate = c.arch.is_hybrid();
        let q_rows = if output_gate { 2 * q } else { q };
        Ok(GqaWeights {
            output_gate,
            wq: self.matrix(&n("attn_q.weight"), e, q_rows)?,
            wk: self.matrix(&n("attn_k.weight"), e, kv)?,
            wv: self.matrix(&n("attn_v.weight"), e, kv)?,
            bq: self.opt_vector(&n("attn_q.bias"), q, has_bias)?,
            bk: self.opt_vector(&n("attn_k.bias"), kv, has_bias)?,
            bv: self.opt_vector(&n("attn_v.bias"), kv, has_bias)?,
            q_norm: self.opt_vector(&n("attn_q_norm.weight"), c.head_dim_k, has_qk_norm)?,
            k_norm: self.opt_vector(&n("attn_k_norm.weight"), c.head_dim_k, has_qk_norm)?,
        })
    }

    fn mla(&mut self, c: &ModelConfig, m: &MlaConfig, i: usize) -> Result<MlaWeights, ModelError> {
        let n = |s: &str| blk(i, s);
        let e = c.n_embd;
        let q_width = c.n_head * (m.qk_nope + m.qk_rope);
        let (q_a, q) = match m.q_lora {
            Some(r) => (
                Some((
                    self.matrix(&n("attn_q_a.weight"), e, r)?,
                    self.vector(&n("attn_q_a_norm.weight"), r)?,
                )),
                self.matrix(&n("attn_q_b.weight"), r, q_width)?,
            ),
            None => (None, self.matrix(&n("attn_q.weight"), e, q_width)?),
        };
        Ok(MlaWeights {
            q_a,
            q,
            kv_a: self.matrix(&n("attn_kv_a_mqa.weight"), e, m.kv_lora + m.qk_rope)?,
            kv_a_norm: self.vector(&n("attn_kv_a_norm.weight"), m.kv_lora)?,
            k_b: self.stacked(&n("attn_k_b.weight"), m.qk_nope, m.kv_lora, c.n_head, false)?,
            v_b: self.stacked(&n("attn_v_b.weight"), m.kv_lora, m.v_head, c.n_head, false)?,
        })
    }

    fn moe(&mut self, e: usize, m: &MoeConfig, i: usize) -> Result<MoeWeights, ModelError> {
        let n = |s: &str| blk(i, s);
        Ok(MoeWeights {
            router: self.matrix(&n("ffn_gate_inp.weight"), e, m.n_expert)?,
            experts: self.experts(&n("ffn_{}_exps.weight"), e, m.n_ff_exp, m.n_expert)?,
            shared: match m.n_ff_shared {
                Some(ff) => Some((
                    if m.shared_gate != SharedGate::None {
                        Some(self.matrix(&n("ffn_gate_inp_shexp.weight"), e, 1)?)
                    } else {
                        None
                    },
                    self.ffn(&n("ffn_{}_shexp.weight"), e, ff)?,
                )),
                None => None,
            },
            probs_bias: self.opt_vector(&n("exp_probs_b.bias"), m.n_expert, false)?,
        })
    }

    /// A Gated DeltaNet layer's tensors (the output projection aside).
    fn delta_net(
        &mut self,
        c: &ModelConfig,
        d: &DeltaNetConfig,
        i: usize,
    ) -> Result<DeltaNetWeights, ModelError> {
        let n = |s: &str| blk(i, s);
        let (e, nv, width) = (c.n_embd, d.n_v_heads, d.conv_kernel);
        let qkv = self.matrix(&n("attn_qkv.weight"), e, d.conv_dim())?;
        let z = self.matrix(&n("attn_gate.weight"), e, d.value_dim())?;
        let beta_alpha = match c.arch {
            crate::Arch::Qwen3Next => {
                BetaAlpha::Fused(self.matrix(&n("ssm_ba.weight"), e, 2 * nv)?)
            }
            _ => BetaAlpha::Split {
                beta: self.matrix(&n("ssm_beta.weight"), e, nv)?,
                alpha: self.matrix(&n("ssm_alpha.weight"), e, nv)?,
            },
        };
        // The file stores each channel's taps together; the convolution wants each tap's row.
        let taps = self.rows(&n("ssm_conv1d.weight"), width, d.conv_dim())?;
        let mut conv = vec![0.0f32; taps.len()];
        for (ch, row) in taps.chunks_exact(width).enumerate() {
            for (tap, &w) in row.iter().enumerate() {
                conv[tap * d.conv_dim() + ch] = w;
            }
        }
        Ok(DeltaNetWeights {
            qkv,
            z,
            beta_alpha,
            conv,
            dt_bias: self.vector(&n("ssm_dt.bias"), nv)?,
            a: self.vector(&n("ssm_a"), nv)?,
            norm: self.vector(&n("ssm_norm.weight"), d.head_dim)?,
        })
    }

    /// Multi-token-prediction layer `i` (numbered after the trunk's layers).
    fn nextn(&mut self, c: &ModelConfig, i: usize) -> Result<NextnLayer, ModelError> {
        let (e, v) = (c.n_embd, c.n_vocab);
        let n = |s: &str| blk(i, s);
        Ok(NextnLayer {
            eh_proj: self.matrix(&n("nextn.eh_proj.weight"), 2 * e, e)?,
            enorm: self.vector(&n("nextn.enorm.weight"), e)?,
            hnorm: self.vector(&n("nextn.hnorm.weight"), e)?,
            embed_tokens: self.opt_matrix(&n("nextn.embed_tokens.weight"), e, v)?,
            shared_head_norm: self.opt_vector(&n("nextn.shared_head_norm.weight"), e, false)?,
            shared_head_head: self.opt_matrix(&n("nextn.shared_head_head.weight"), e, v)?,
            layer: self.layer(c, i)?,
        })
    }

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

    /// Counts a tensor as loaded. Its matrices that borrow from the map are counted when
    /// [`Weights::repack`] is done with them; if none does (all copied, or dequantized), the
    /// tensor's file pages are dropped from the resident set now.
    fn tick(&mut self, t: &TensorInfo, loaded: &[&Matrix]) {
        self.n_params += t.n_elements();
        let mapped: u64 = loaded
            .iter()
            .filter(|m| m.bytes().is_mapped())
            .map(|m| m.n_bytes() as u64)
            .sum();
        self.done += (t.n_bytes as u64).saturating_sub(mapped);
        if mapped == 0 {
            self.gguf.release_tensor(t);
        }
        if let Some(p) = self.opts.progress {
            p(self.done, self.total);
        }
    }

    /// `rows x cols` of `t`'s type from `len` bytes at `offset` in the tensor's data: borrowed from
    /// the map, or copied ([`Mmap::Never`]); dequantized to F32 with `LoadOptions::dequantize`.
    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        t: &TensorInfo,
        rows: usize,
        cols: usize,
        offset: usize,
        len: usize,
        expert: bool,
    ) -> Result<Matrix, ModelError> {
        let m = match self.borrow {
            true => {
                let (image, start) = self.gguf.tensor_image(t);
                Matrix::from_mapped(t.ty, rows, cols, image, start + offset, len)
            }
            false => Matrix::from_bytes(
                t.ty,
                rows,
                cols,
                &self.gguf.tensor_data(t)[offset..offset + len],
            ),
        }
        .map_err(|e| ModelError::Kernel {
            file: self.gguf.name().to_string(),
            name: t.name.clone(),
            source: e,
        })?;
        Ok(
            if self.opts.dequantize && m.ty() != frugal_kernels::GgmlType::F32 {
                m.to_f32()
            } else if expert && self.experts_in_map {
                m.without_repack()
            } else {
                m
            },
        )
    }

    /// A `[rows x cols]` matrix (GGUF dims `[cols, rows]`).
    /// [`Loader::matrix`] for a tensor the file may not have.
    fn opt_matrix(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<Matrix>, ModelError> {
        match self.gguf.tensor(name) {
            Some(_) => self.matrix(name, cols, rows).map(Some),
            None => Ok(None),
        }
    }

    fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<Matrix, ModelError> {
        let t = self.info(name, &[cols as u64, rows as u64])?.clone();
        let m = self.make(&t, rows, cols, 0, t.n_bytes, false)?;
        self.n_bytes += m.n_bytes() as u64;
        self.tick(&t, &[&m]);
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
        let fused = pattern.replace("{}", "gate_up");
        let (gate, up) = match self.gguf.tensor(&fused) {
            Some(_) => self.stacked_halves(&fused, n_embd, n_ff, n_expert)?,
            None => (
                self.stacked(&pattern.replace("{}", "gate"), n_embd, n_ff, n_expert, true)?,
                self.stacked(&pattern.replace("{}", "up"), n_embd, n_ff, n_expert, true)?,
            ),
        };
        let down = self.stacked(&pattern.replace("{}", "down"), n_ff, n_embd, n_expert, true)?;
        Ok(gate
            .into_iter()
            .zip(up)
            .zip(down)
            .map(|((gate, up), down)| FfnWeights { gate, up, down })
            .collect())
    }

    /// Experts' gate and up matrices fused in one tensor (`ffn_gate_up_exps`, written by the
    /// converter's `--fuse-gate-up-exps`): each expert's `2 × rows` rows are its gate's, then its
    /// up projection's.
    fn stacked_halves(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
        count: usize,
    ) -> Result<(Vec<Matrix>, Vec<Matrix>), ModelError> {
        let t = self
            .info(name, &[cols as u64, 2 * rows as u64, count as u64])?
            .clone();
        let (per, half) = (t.n_bytes / count, t.n_bytes / count / 2);
        let (mut gate, mut up) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for i in 0..count {
            for (out, offset) in [(&mut gate, i * per), (&mut up, i * per + half)] {
                let m = self.make(&t, rows, cols, offset, half, true)?;
                self.n_bytes += m.n_bytes() as u64;
                out.push(m);
            }
        }
        let loaded: Vec<&Matrix> = gate.iter().chain(&up).collect();
        self.tick(&t, &loaded);
        Ok((gate, up))
    }

    /// `count` matrices of `[rows x cols]` stacked in one tensor (MoE experts if `expert`).
    fn stacked(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
        count: usize,
        expert: bool,
    ) -> Result<Vec<Matrix>, ModelError> {
        let t = self
            .info(name, &[cols as u64, rows as u64, count as u64])?
            .clone();
        let per = t.n_bytes / count;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let m = self.make(&t, rows, cols, i * per, per, expert)?;
            self.n_bytes += m.n_bytes() as u64;
            out.push(m);
        }
        self.tick(&t, &out.iter().collect::<Vec<_>>());
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
        self.n_params += t.n_elements();
        self.done += t.n_bytes as u64;
        Ok(out)
    }

    /// A small `[rows x cols]` tensor converted to f32, row-major (GGUF dims `[cols, rows]`).
    fn rows(&mut self, name: &str, cols: usize, rows: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.info(name, &[cols as u64, rows as u64])?.clone();
        let row_bytes = t.ty.row_bytes(cols).filter(|b| b * rows == t.n_bytes);
        let Some(row_bytes) = row_bytes else {
            return Err(ModelError::Kernel {
                file: self.gguf.name().to_string(),
                name: name.to_string(),
                source: frugal_kernels::KernelError::RaggedRow {
                    ty: t.ty,
                    cols,
                    block: t.ty.block_len(),
                },
            });
        };
        let mut out = vec![0.0f32; rows * cols];
        let data = self.gguf.tensor_data(&t);
        for (r, o) in out.chunks_exact_mut(cols).enumerate() {
            dequantize_row(t.ty, &data[r * row_bytes..(r + 1) * row_bytes], o);
        }
        self.n_bytes += (rows * cols * 4) as u64;
        self.n_params += t.n_elements();
        self.done += t.n_bytes as u64;
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
