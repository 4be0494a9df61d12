#!/usr/bin/env python3
"""Write a random-weight GLM-4.5 (glm4moe), ERNIE 4.5 (ernie4_5) or Gemma 3 (gemma3) GGUF with the tensor names,
shapes, types and metadata keys that llama.cpp's converter (convert_hf_to_gguf.py --outtype f16: conversion/glm.py,
ernie.py, gemma.py of this tree) writes for the real checkpoint, for speed benchmarks. The sibling of
make_hybrid_bench_model.py (whose tokenizer copy and tensor writer it uses: normal weights of std 0.02, norms 1).

    python3 bench/make_labs_bench_model.py --list
    python3 bench/make_labs_bench_model.py --preset gemma3-1b \
        --vocab ~/.cache/frugal/models/gemma-3-270m-q4_k_m.gguf --out bench/models/gemma3-1b-f16.gguf
    ... --set n_layer=4 --set n_expert=8     # override any preset field

The keys and their order are those of the tiny converted fixtures (crates/fixtures/data/labs/models/*.gguf, made
by scripts/gen_labs_fixtures.sh from transformers checkpoints with convert_hf_to_gguf.py), general.size_label
left out. What each architecture's converter writes and this script reproduces:

- glm4moe: q/k/v with bias, no q/k norm, partial rotary (rope.dimension_count = head_dim x 0.5), the first
  `leading_dense_block_count` layers dense (ffn_gate/up/down), the others MoE: ffn_gate_inp [n_expert, E] and
  exp_probs_b.bias [n_expert] F32 (router and its selection bias), *_exps, and the shared expert *_shexp of
  expert_shared_count x expert_feed_forward_length rows; post_attention_norm is the FFN's norm; untied output;
  expert_gating_func 2 (sigmoid), expert_weights_scale, expert_weights_norm, expert group count 1 / used 1.
  The MTP (nextn) layer only when n_mtp > 0 (a whole MoE layer more: blk.<n_layer>.* plus nextn.eh_proj,
  enorm, hnorm, shared_head_norm; llama.cpp loads it only when asked).
- ernie4_5: plain llama-like layers (attn_norm, q/k/v/output without bias, ffn_norm, ffn_gate/up/down),
  tied embeddings (no output.weight), head_dim 128 with 16 heads on a 1024-wide model (q is 2048 rows).
- gemma3: q/k norms, four norms per layer (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm), tied
  embeddings, sliding window and rope.freq_base_swa (local layers) beside rope.freq_base (global layers).
- the vocabulary: tokenizer.* copied from a GGUF (a llama.cpp models/ggml-vocab-*.gguf or a real model's file),
  padded with [PAD<i>] tokens of type UNUSED up to the embedding rows when it has fewer.

Needs numpy and gguf-py (PYTHONPATH=$LLAMA_CPP/gguf-py). See bench/README.md for the shapes and their sources.
"""
import argparse
import os
import sys

import gguf
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hybrid_bench_model import copy_tokenizer, write_tensors  # noqa: E402

PRESETS = {
    # zai-org/GLM-4.5-Air's layer (hidden 4096, 96 / 8 heads of 128, partial_rotary_factor 0.5, attention_bias,
    # no qk-norm, dense FFN 10944 in layer 0, experts of 1408 with top-8 sigmoid routing + 1 shared expert,
    # routed_scaling_factor 1.0, norm_topk_prob, rms eps 1e-5, rope theta 1e6, 131072 positions) with 8 layers
    # instead of 46 and 24 experts instead of 128 (128 would be 16 B parameters: 32 GB at f16), no MTP layer
    # (the real file has 1), and the qwen2 vocabulary (151936 rows instead of GLM's 151552).
    "glm45-air-8l": dict(arch="glm4moe", n_embd=4096, n_layer=8, n_head=96, n_head_kv=8, head_dim=128,
                         rope_dim=64, n_ff=10944, n_dense=1, n_expert=24, n_expert_used=8, n_ff_exp=1408,
                         n_shared=1, expert_scale=1.0, expert_norm=True, n_vocab=151936, tied=False,
                         rope_theta=1e6, rms_eps=1e-5, n_ctx=131072, n_mtp=0),
    # baidu/ERNIE-4.5-0.3B-PT / -Base-PT
    "ernie45-0.3b": dict(arch="ernie4_5", n_embd=1024, n_layer=18, n_head=16, n_head_kv=2, head_dim=128,
                         n_ff=3072, n_vocab=103424, tied=True, rope_theta=500000.0, rms_eps=1e-5, n_ctx=131072),
    # google/gemma-3-1b-it / -pt (text-only, no rope scaling)
    "gemma3-1b": dict(arch="gemma3", n_embd=1152, n_layer=26, n_head=4, n_head_kv=1, head_dim=256, n_ff=6912,
                      n_vocab=262144, tied=True, rope_theta=1e6, rope_theta_swa=10000.0, n_swa=512,
                      rms_eps=1e-6, n_ctx=32768),
}


def attention(c, b):
    """The attention tensors of one layer, in the converter's (alphabetical) order."""
    E, hd = c["n_embd"], c["head_dim"]
    q, kv = c["n_head"] * hd, c["n_head_kv"] * hd
    bias = c["arch"] == "glm4moe"
    norms = c["arch"] == "gemma3"
    t = [(b + "attn_k.bias", (kv,), "bias")] if bias else []
    t.append((b + "attn_k.weight", (kv, E), "w"))
    t += [(b + "attn_k_norm.weight", (hd,), "norm")] if norms else []
    t += [(b + "attn_norm.weight", (E,), "norm"), (b + "attn_output.weight", (E, q), "w")]
    t += [(b + "attn_q.bias", (q,), "bias")] if bias else []
    t.append((b + "attn_q.weight", (q, E), "w"))
    t += [(b + "attn_q_norm.weight", (hd,), "norm")] if norms else []
    t += [(b + "attn_v.bias", (kv,), "bias")] if bias else []
    t.append((b + "attn_v.weight", (kv, E), "w"))
    return t


def dense_ffn(c, b):
    E, f = c["n_embd"], c["n_ff"]
    return [(b + "ffn_down.weight", (E, f), "w"), (b + "ffn_gate.weight", (f, E), "w"),
            (b + "ffn_up.weight", (f, E), "w")]


def moe_ffn(c, b):
    E, ne, f = c["n_embd"], c["n_expert"], c["n_ff_exp"]
    fs = f * c["n_shared"]
    return [(b + "exp_probs_b.bias", (ne,), "bias"), (b + "ffn_down_exps.weight", (ne, E, f), "w"),
            (b + "ffn_down_shexp.weight", (E, fs), "w"), (b + "ffn_gate_exps.weight", (ne, f, E), "w"),
            (b + "ffn_gate_inp.weight", (ne, E), "f32w"), (b + "ffn_gate_shexp.weight", (fs, E), "w"),
            (b + "ffn_up_exps.weight", (ne, f, E), "w"), (b + "ffn_up_shexp.weight", (fs, E), "w")]


def layer(c, i):
    """The tensors of layer i (i == n_layer: the MTP layer), as the converter orders them (sorted by name)."""
    b, E = f"blk.{i}.", c["n_embd"]
    t = attention(c, b)
    if c["arch"] == "glm4moe":
        t += dense_ffn(c, b) if i < c["n_dense"] else moe_ffn(c, b)
        if i >= c["n_layer"]:
            t += [(b + "nextn.eh_proj.weight", (E, 2 * E), "w"), (b + "nextn.enorm.weight", (E,), "norm"),
                  (b + "nextn.hnorm.weight", (E,), "norm"), (b + "nextn.shared_head_norm.weight", (E,), "norm")]
        t.append((b + "post_attention_norm.weight", (E,), "norm"))
    else:
        t += dense_ffn(c, b)
        t.append((b + "ffn_norm.weight", (E,), "norm"))
        if c["arch"] == "gemma3":
            t += [(b + "post_attention_norm.weight", (E,), "norm"), (b + "post_ffw_norm.weight", (E,), "norm")]
    return sorted(t)


def tensor_list(c):
    """[(name, numpy-order shape, kind)]; kind: 'w' (F16 matrix), 'f32w' (F32 router), 'norm' (ones), 'bias'."""
    E, V = c["n_embd"], c["n_vocab"]
    t = [] if c["tied"] else [("output.weight", (V, E), "w")]
    t += [("output_norm.weight", (E,), "norm"), ("token_embd.weight", (V, E), "w")]
    for i in range(c["n_layer"] + c.get("n_mtp", 0)):
        t += layer(c, i)
    return t


def write_metadata(w, c, name, ftype):
    """The keys, in the order of the converted fixtures (crates/fixtures/data/labs/models)."""
    arch = c["arch"]
    w.add_type("model")
    w.add_name(name)
    w.add_block_count(c["n_layer"] + c.get("n_mtp", 0))
    w.add_context_length(c["n_ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_rope_freq_base(c["rope_theta"])
    if arch == "gemma3":
        w.add_rope_freq_base_swa(c["rope_theta_swa"])
    w.add_layer_norm_rms_eps(c["rms_eps"])
    if arch == "glm4moe":
        w.add_expert_count(c["n_expert"])
        w.add_expert_used_count(c["n_expert_used"])
        w.add_expert_group_count(1)
        w.add_expert_group_used_count(1)
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    if arch == "gemma3":
        w.add_sliding_window(c["n_swa"])
    if arch == "glm4moe":
        w.add_rope_dimension_count(c["rope_dim"])
        w.add_expert_feed_forward_length(c["n_ff_exp"])
        w.add_expert_shared_count(c["n_shared"])
        w.add_leading_dense_block_count(c["n_dense"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        w.add_expert_weights_scale(c["expert_scale"])
        w.add_expert_weights_norm(c["expert_norm"])
        w.add_nextn_predict_layers(c["n_mtp"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(int(ftype))


def params(c, tl):
    """(total parameters, parameters a decode step reads: all but the untied token_embd, the MTP layer and the
    routed experts not chosen)."""
    tot = sum(int(np.prod(s)) for _, s, _ in tl)
    mtp = sum(int(np.prod(s)) for n, s, _ in tl if n.startswith(f"blk.{c['n_layer']}."))
    read = tot - mtp - (0 if c["tied"] else c["n_vocab"] * c["n_embd"])
    if c.get("n_expert"):
        exp = sum(int(np.prod(s)) for n, s, _ in tl if "_exps" in n and not n.startswith(f"blk.{c['n_layer']}."))
        read -= exp - exp * c["n_expert_used"] // c["n_expert"]
    return tot, read


def parse_overrides(c, sets):
    for s in sets:
        f, v = s.split("=", 1)
        if f not in c:
            sys.exit(f"unknown field {f}")
        old = c[f]
        if isinstance(old, bool):
            c[f] = v.lower() in ("1", "true", "yes")
        else:
            c[f] = type(old)(float(v)) if isinstance(old, float) else int(v)
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--vocab", help="a GGUF holding tokenizer.* metadata")
    ap.add_argument("--out", help="output .gguf")
    ap.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16",
                    help="type of the matrices (default f16, as `--outtype f16`); norms, biases, routers are F32")
    ap.add_argument("--name", help="general.name (default: the preset's name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field, e.g. --set n_layer=4 (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the presets with parameter counts and exit")
    a = ap.parse_args()

    if a.list:
        print("preset         arch      params  read/token")
        for k, c in PRESETS.items():
            tot, read = params(c, tensor_list(c))
            print(f"{k:14s} {c['arch']:9s} {tot / 1e9:6.3f}B {read / 1e9:6.3f}B")
        return
    if not (a.preset and a.vocab and a.out):
        ap.error("--preset, --vocab and --out are required")
    c = parse_overrides(dict(PRESETS[a.preset]), a.set)
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "f32": gguf.LlamaFileType.ALL_F32}[a.dtype]
    w = gguf.GGUFWriter(a.out, c["arch"])
    write_metadata(w, c, a.name or f"{a.preset} (random weights, benchmark only)", ftype)
    n_tok = copy_tokenizer(w, a.vocab, c["n_vocab"])
    if n_tok < c["n_vocab"]:
        print(f"vocabulary: {n_tok} tokens from {a.vocab}, padded to {c['n_vocab']}", file=sys.stderr)
    tl = tensor_list(c)
    write_tensors(w, tl, a.dtype, a.seed)
    tot, _ = params(c, tl)
    print(f"\nwrote {a.out}: {len(tl)} tensors, {tot / 1e9:.3f} B parameters", file=sys.stderr)


if __name__ == "__main__":
    main()
