#!/usr/bin/env python3
"""Tiny random-weight Gemma 3 / GLM-4.5 / ERNIE 4.5 checkpoints (no download) + HF reference logits.

The recipe of ../shared/fixtures/tools/hf_tiny.py and scripts/hybrid_fixtures/hf_tiny_hybrid.py (transformers
model classes, torch.manual_seed(0), then one torch.Generator seeded 1234 over named_parameters() in order;
weights rounded to bf16 and saved as bf16 safetensors; reference logits in fp32 math from those bf16 values,
eager attention), the same 103-token prompt as the hybrid set, the shared 515-token toy BPE (vocab 576 rows):

* matrices (and fused experts) N(0, 1/fan_in); lm_head x3; embeddings N(0, 1), or N(0, 9/H) when tied (as
  hf_tiny.py: tied logits then have std ~3);
* RMSNorm weights: 1 + 0.2 N(0,1) as stored, or, for Gemma 3 (x * (1 + w), stores w), w = 0.2 N(0,1); except
  Gemma 3's post_attention_layernorm / post_feedforward_layernorm (the "sandwich" norms on each sublayer's
  output): effective scale 8 (1 + 0.2 N(0,1)), i.e. w = 8 (1 + 0.2 N) - 1. Gemma multiplies the tied
  embedding by sqrt(H), and with unit-scale sublayers that input dominates the residual stream: 99% of the
  positions' top-1 is then the input token itself (an echo that a broken attention still reproduces); with
  scale 8 it is 8%, logits std 3.1;
* biases (GLM-4.5's q/k/v): 0.5 N(0,1) (visible next to unit-variance projections);
* GLM-4.5's router e_score_correction_bias: 0.5 N(0,1) (it changes the choice, not the weights);
* GLM-4.5's multi-token-prediction layer (model.layers.<n_layers>.*: a copy of the last (MoE) layer's
  shapes, + eh_proj [H, 2H], enorm, hnorm, shared_head.norm), drawn after the model from a second
  generator (seed 4321); transformers ignores it on load, so HF logits are the model's without MTP.

usage: HF_HUB_OFFLINE=1 TOKENIZERS_DIR=... FIXTURES_OUT=... python hf_tiny_labs.py [names...]   (default: all)
out:   $FIXTURES_OUT/<name>/{config.json, model.safetensors (bf16), tokenizer.json, tokenizer_config.json,
                             ref_tokens.json, ref_logits.npy (float32 [n_tokens, vocab])}
"""
import json, math, os, shutil, sys
import numpy as np
import torch
import transformers as T
from safetensors.torch import load_file, save_file

TOKS = os.environ["TOKENIZERS_DIR"]
TOK_DIR = os.path.join(TOKS, "tiny-bpe-512")
VOCAB = 576
H = 256
COMMON = dict(vocab_size=VOCAB, hidden_size=H, num_attention_heads=4, max_position_embeddings=4096,
              rms_norm_eps=1e-6, bos_token_id=512, eos_token_id=512, head_dim=64)


def cfgs():
    return {
        # 6 layers: Gemma 3's pattern, 5 sliding-window (local, rope theta 1e4) then 1 global (1e6) layer;
        # window 16 so that the 103-token prompt exercises it; query_pre_attn_scalar = head_dim (llama.cpp
        # scales q by head_dim^-0.5 for every size but 27B)
        "gemma3": (T.Gemma3TextConfig, T.Gemma3ForCausalLM,
                   dict(COMMON, num_hidden_layers=6, num_key_value_heads=1, intermediate_size=512,
                        sliding_window=16, query_pre_attn_scalar=64, tie_word_embeddings=True,
                        pad_token_id=0), dict(norm_offset=True, post_norm_scale=8.0)),
        # 3 layers: layer 0 dense (first_k_dense_replace 1), layers 1-2 MoE (4 experts of 256, top 2, sigmoid
        # scores + e_score_correction_bias for the choice, renormalised, routed_scaling_factor 2.5, one shared
        # expert); partial rotary 0.5, q/k/v bias, no qk-norm; + 1 MTP layer (num_nextn_predict_layers 1)
        "glm4moe": (T.Glm4MoeConfig, T.Glm4MoeForCausalLM,
                    dict(COMMON, num_hidden_layers=3, num_key_value_heads=2, intermediate_size=512,
                         moe_intermediate_size=256, n_routed_experts=4, num_experts_per_tok=2,
                         n_shared_experts=1, first_k_dense_replace=1, norm_topk_prob=True,
                         routed_scaling_factor=2.5, n_group=1, topk_group=1, attention_bias=True,
                         use_qk_norm=False, num_nextn_predict_layers=1, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "partial_rotary_factor": 0.5}), dict(mtp=True)),
        "ernie4_5": (T.Ernie4_5Config, T.Ernie4_5ForCausalLM,
                     dict(COMMON, num_hidden_layers=2, num_key_value_heads=2, intermediate_size=512,
                          use_bias=False, tie_word_embeddings=False,
                          rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), {}),
        "ernie4_5-moe": (T.Ernie4_5_MoeConfig, T.Ernie4_5_MoeForCausalLM,
                         dict(COMMON, num_hidden_layers=3, num_key_value_heads=2, intermediate_size=512,
                              moe_intermediate_size=256, moe_num_experts=4, moe_k=2, moe_layer_start_index=1,
                              moe_layer_interval=1, moe_num_shared_experts=1, use_bias=False,
                              tie_word_embeddings=False,
                              rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), {}),
    }


def draw(name, shape, g, tied, opts):
    if len(shape) == 1:
        if "norm" in name and name.endswith(".weight") and opts.get("post_norm_scale") and (
                "post_attention_layernorm" in name or "post_feedforward_layernorm" in name):
            return opts["post_norm_scale"] * (1.0 + 0.2 * torch.randn(shape, generator=g)) - 1.0
        if "norm" in name and name.endswith(".weight"):
            return (0.0 if opts.get("norm_offset") else 1.0) + 0.2 * torch.randn(shape, generator=g)
        if name.endswith("bias") or "e_score_correction" in name or "moe_statics" in name:
            return 0.5 * torch.randn(shape, generator=g)
        raise SystemExit(f"unexpected 1-d tensor {name}")
    if "e_score_correction" in name or "moe_statics" in name:
        return 0.5 * torch.randn(shape, generator=g)
    if "embed_tokens" in name:
        return torch.randn(shape, generator=g) * (opts.get("emb_std", 3.0 / math.sqrt(H)) if tied else 1.0)
    scale = 3.0 if name.startswith("lm_head") or "shared_head.head" in name else 1.0
    return scale * torch.randn(shape, generator=g) / math.sqrt(shape[-1])


def randomize(model, seed, tied, opts):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(draw(n, tuple(p.shape), g, tied, opts))
        for n, b in model.named_buffers():   # GLM's e_score_correction_bias is a buffer
            if "e_score_correction" in n:
                b.copy_(draw(n, tuple(b.shape), g, tied, opts))


def add_mtp(path, n_layers, seed, opts):
    sd = load_file(path)
    g = torch.Generator().manual_seed(seed)
    pre = f"model.layers.{n_layers - 1}."
    new = f"model.layers.{n_layers}."
    extra = {new + "eh_proj.weight": (H, 2 * H), new + "enorm.weight": (H,), new + "hnorm.weight": (H,),
             new + "shared_head.norm.weight": (H,)}
    for k in sorted(k for k in sd if k.startswith(pre)):
        extra[new + k[len(pre):]] = tuple(sd[k].shape)
    for k, shape in extra.items():
        sd[k] = draw(k, shape, g, False, opts).to(torch.bfloat16)
    save_file(sd, path, metadata={"format": "pt"})
    return len(extra)


def main(names):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    # the hybrid set's prompt (103 tokens)
    text = ("Hello, world! The quick brown fox jumps over the lazy dog. 12345 <|im_end|>\n<|im_start|>user\n"
            "Gated delta nets keep one state per head; attention layers keep a cache.<|im_end|>")
    ids = tok.encode(text, add_special_tokens=False).ids + [513, 300, 575, 0]
    assert len(ids) == 103, len(ids)
    for name, (C, M, kw, opts) in cfgs().items():
        if names and name not in names:
            continue
        out = os.path.join(os.environ["FIXTURES_OUT"], name)
        os.makedirs(out, exist_ok=True)
        cfg = C(**kw)
        cfg._attn_implementation = "eager"
        tied = bool(cfg.tie_word_embeddings)
        torch.manual_seed(0)
        model = M(cfg)
        randomize(model, 1234, tied, opts)
        if tied:
            model.tie_weights()
        model = model.to(torch.bfloat16)
        model.save_pretrained(out, safe_serialization=True)
        st = os.path.join(out, "model.safetensors")
        n_mtp = add_mtp(st, cfg.num_hidden_layers, 4321, opts) if opts.get("mtp") else 0
        cj = json.load(open(os.path.join(out, "config.json")))
        rp = cj.get("rope_parameters") or {}
        rp = rp.get("full_attention", rp)
        cj.setdefault("rope_theta", rp.get("rope_theta", 10000.0))
        cj.setdefault("partial_rotary_factor", rp.get("partial_rotary_factor", 1.0))
        json.dump(cj, open(os.path.join(out, "config.json"), "w"), indent=2)
        sd = {k: v.float() for k, v in model.state_dict().items()}
        model = M(cfg)
        model.load_state_dict(sd, strict=False)
        if tied:
            model.tie_weights()
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
              f"top1={logits.argmax(-1).tolist()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
