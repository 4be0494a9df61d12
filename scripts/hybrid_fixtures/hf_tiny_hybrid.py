#!/usr/bin/env python3
"""Tiny random-weight Qwen3.5 / Qwen3.5-MoE / Qwen3-Next checkpoints (no download) + HF reference logits.

The same recipe as ../shared/fixtures/tools/hf_tiny.py (transformers model classes, seed 1234, weights rounded
to bf16 and saved as bf16 safetensors, reference logits in fp32 math from those bf16 values, eager attention),
with what these hybrid (Gated DeltaNet + gated full attention) models need on top:

* norms: Qwen3.5 / Qwen3-Next RMSNorm computes x * (1 + w) and stores w (zero-initialised); w is drawn as
  0.2 * N(0,1), so the effective scale is 1 + 0.2 N(0,1) as hf_tiny.py's norms. The gated norm of the linear
  attention (linear_attn.norm, x * w * silu(z)) stores w itself: 1 + 0.2 N(0,1). llama.cpp's converter adds 1
  to every *norm.weight except linear_attn.norm.weight.
* A_log = log(U(1, 16)) and dt_bias = softplus^-1(dt) with dt log-uniform in [0.001, 0.1] (about -6.9 .. -2.3),
  the Mamba-2 / flash-linear-attention GatedDeltaNet initialisation. The per-token decay
  exp(-exp(A_log) * softplus(a + dt_bias)) (a ~ N(0,1)) then spans ~0.1 .. ~1 with most of it near 1 (printed
  as "decay" below): the state carries over many tokens, and the delta rule (L2-normalised q/k,
  beta = sigmoid(b)) keeps it bounded. (HF's own init, A = U(0.01, 16) with dt_bias = 1, or dt_bias in 0..1,
  gives a median decay ~0.001: every head forgets its state at each token.)
* the causal conv1d kernel [channels, 1, 4] is a Linear of fan-in 4 (std 1/2).
* one multi-token-prediction (MTP) block, which transformers drops but real checkpoints carry and
  llama.cpp's converter turns into blk.<n_layer>.* (nextn): mtp.fc.weight [H, 2H], mtp.pre_fc_norm_embedding,
  mtp.pre_fc_norm_hidden, mtp.norm (offset norms) and mtp.layers.0.* = a full-attention decoder layer, named
  and shaped exactly as the checkpoint's own full-attention layer (model.layers.3.*) is saved. Drawn from a
  second generator (seed 4321) after the model, so the trunk's weights do not depend on it. config.json gets
  "mtp_num_hidden_layers": 1 (Qwen3.5 configs carry it; Qwen3-Next's do not: the converter counts the
  mtp.layers.* tensors). The HF reference logits are the model's (no MTP).

usage: HF_HUB_OFFLINE=1 TOKENIZERS_DIR=... FIXTURES_OUT=... python hf_tiny_hybrid.py [names...]   (default: all)
out:   $FIXTURES_OUT/<name>/{config.json, model.safetensors (bf16), tokenizer.json, tokenizer_config.json,
                             ref_tokens.json, ref_logits.npy (float32 [n_tokens, vocab])}
"""
import json, math, os, shutil, sys
import numpy as np
import torch
import transformers as T
from safetensors.torch import load_file, save_file

TOKS = os.environ["TOKENIZERS_DIR"]
TOK_DIR = os.path.join(TOKS, "tiny-bpe-512")   # ../shared/fixtures/tools/train_tiny_bpe.py (515 tokens)
VOCAB = 576
H = 256
LAYER_TYPES = ["linear_attention"] * 3 + ["full_attention"]
FULL = LAYER_TYPES.index("full_attention")

# as hf_tiny.py's COMMON, 4 layers
COMMON = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
              bos_token_id=512, eos_token_id=512, tie_word_embeddings=False,
              head_dim=64, layer_types=LAYER_TYPES, linear_conv_kernel_dim=4,
              linear_key_head_dim=128, linear_value_head_dim=128,
              linear_num_key_heads=2, linear_num_value_heads=4)   # k heads != v heads: V-head reordering
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=256, shared_expert_intermediate_size=256)
# Qwen3.5 applies interleaved MRoPE: mrope_section left at its default ([11, 11, 10]; for text all three
# position components are equal, so it is plain RoPE on the first 0.25 * 64 = 16 dims of each head)
ROPE35 = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25}
ROPE_NEXT = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25}


def cfgs():
    return {
        "qwen35": (T.Qwen3_5TextConfig, T.Qwen3_5ForCausalLM,
                   dict(COMMON, intermediate_size=512, rope_parameters=dict(ROPE35)), True),
        "qwen35moe": (T.Qwen3_5MoeTextConfig, T.Qwen3_5MoeForCausalLM,
                      dict(COMMON, **MOE, rope_parameters=dict(ROPE35)), True),
        "qwen3next": (T.Qwen3NextConfig, T.Qwen3NextForCausalLM,
                      dict(COMMON, **MOE, intermediate_size=512, decoder_sparse_step=1, mlp_only_layers=[],
                           norm_topk_prob=True, rope_parameters=dict(ROPE_NEXT)), False),
    }


def draw(name, shape, g):
    """One tensor's random values, by its (saved or module) name."""
    if name.endswith("A_log"):
        return torch.log(1.0 + 15.0 * torch.rand(shape, generator=g))
    if name.endswith("dt_bias"):   # softplus^-1(dt), dt log-uniform in [0.001, 0.1]
        dt = torch.exp(math.log(1e-3) + (math.log(1e-1) - math.log(1e-3)) * torch.rand(shape, generator=g))
        return dt + torch.log(-torch.expm1(-dt))
    if len(shape) == 1:
        if name.endswith("linear_attn.norm.weight"):       # gated RMSNorm: x * w
            return 1.0 + 0.2 * torch.randn(shape, generator=g)
        if name.endswith("norm.weight") or name.endswith("layernorm.weight") or "pre_fc_norm" in name:
            return 0.2 * torch.randn(shape, generator=g)   # offset RMSNorm: x * (1 + w)
        raise SystemExit(f"unexpected 1-d tensor {name}")
    if "embed_tokens" in name:
        return torch.randn(shape, generator=g)
    if "conv1d" in name:                                   # [channels, 1, kernel]: fan-in = kernel
        return torch.randn(shape, generator=g) / math.sqrt(shape[-1])
    # Linear [out, in] (or fused experts [E, out, in]): unit-variance outputs; lm_head x3 as hf_tiny.py
    scale = 3.0 if name.startswith("lm_head") else 1.0
    return scale * torch.randn(shape, generator=g) / math.sqrt(shape[-1])


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(draw(n, tuple(p.shape), g))


def add_mtp(path, seed):
    """Append one MTP block to the saved safetensors (see the module docstring)."""
    sd = load_file(path)
    g = torch.Generator().manual_seed(seed)
    pre = f"model.layers.{FULL}."
    layer = sorted(k for k in sd if k.startswith(pre))
    extra = {"mtp.fc.weight": (H, 2 * H), "mtp.pre_fc_norm_embedding.weight": (H,),
             "mtp.pre_fc_norm_hidden.weight": (H,), "mtp.norm.weight": (H,)}
    for k in layer:
        extra["mtp.layers.0." + k[len(pre):]] = tuple(sd[k].shape)
    for k, shape in extra.items():
        sd[k] = draw(k, shape, g).to(torch.bfloat16)
    save_file(sd, path, metadata={"format": "pt"})
    return len(extra)


def decay_stats(model, ids):
    """exp(g) of every linear-attention head over the prompt (g = -exp(A_log) * softplus(a + dt_bias))."""
    vals = []
    hooks = []
    for layer in model.model.layers:
        la = getattr(layer, "linear_attn", None)
        if la is None:
            continue
        def hook(mod, args, kwargs, out, la=la):
            x = args[0] if args else kwargs["hidden_states"]
            if hasattr(la, "in_proj_a"):
                a = la.in_proj_a(x)
            else:   # Qwen3-Next: a is the second half of each key-head group of in_proj_ba
                ba = la.in_proj_ba(x).reshape(*x.shape[:-1], la.num_k_heads, -1)
                a = ba[..., ba.shape[-1] // 2:].reshape(*x.shape[:-1], -1)
            vals.append(torch.exp(-la.A_log.float().exp() * torch.nn.functional.softplus(a.float() + la.dt_bias)))
        hooks.append(la.register_forward_hook(hook, with_kwargs=True))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    d = torch.cat([v.flatten() for v in vals])
    return f"decay min={d.min():.3g} median={d.median():.3g} max={d.max():.3g}"


def main(names):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    # hf_tiny.py's prompt, plus a second turn so that the prompt (103 tokens) spans two of the 64-token chunks
    # of the chunked delta rule (transformers' torch_chunk_gated_delta_rule and llama.cpp both use 64)
    text = ("Hello, world! The quick brown fox jumps over the lazy dog. 12345 <|im_end|>\n<|im_start|>user\n"
            "Gated delta nets keep one state per head; attention layers keep a cache.<|im_end|>")
    ids = tok.encode(text, add_special_tokens=False).ids + [513, 300, 575, 0]
    for name, (C, M, kw, mtp_in_config) in cfgs().items():
        if names and name not in names:
            continue
        out = os.path.join(os.environ["FIXTURES_OUT"], name)
        os.makedirs(out, exist_ok=True)
        cfg = C(**kw)
        cfg._attn_implementation = "eager"
        torch.manual_seed(0)
        model = M(cfg)
        randomize(model, seed=1234)
        model = model.to(torch.bfloat16)          # weights are bf16-exact
        model.save_pretrained(out, safe_serialization=True)
        st = os.path.join(out, "model.safetensors")
        n_mtp = add_mtp(st, seed=4321)
        cj = json.load(open(os.path.join(out, "config.json")))
        rp = cj.get("rope_parameters") or {}
        cj.setdefault("rope_theta", rp.get("rope_theta", 10000.0))   # as hf_tiny.py: hub configs carry it
        cj.setdefault("partial_rotary_factor", rp.get("partial_rotary_factor", 1.0))
        if mtp_in_config:
            cj["mtp_num_hidden_layers"] = 1
            cj["mtp_use_dedicated_embeddings"] = False
        json.dump(cj, open(os.path.join(out, "config.json"), "w"), indent=2)
        # fresh fp32 model from the bf16 values (.to(bf16) also rounded non-persistent buffers)
        sd = {k: v.float() for k, v in model.state_dict().items()}
        model = M(cfg)
        model.load_state_dict(sd, strict=False)
        model = model.float().eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        np.save(os.path.join(out, "ref_logits.npy"), logits)
        json.dump({"text": text, "ids": ids, "note": "ref_logits[i] = next-token logits after ids[:i+1]"},
                  open(os.path.join(out, "ref_tokens.json"), "w"), indent=1)
        shutil.copy(os.path.join(TOK_DIR, "tokenizer.json"), out)
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
                   "bos_token": None, "model_max_length": 4096}, open(os.path.join(out, "tokenizer_config.json"), "w"))
        sz = os.path.getsize(st)
        print(f"{name}: params={sum(p.numel() for p in model.parameters())} (+{n_mtp} MTP tensors) "
              f"safetensors={sz/1e6:.2f}MB logits {logits.shape} std={logits.std():.3f} "
              f"{decay_stats(model, ids)} top1={logits.argmax(-1).tolist()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
