#!/usr/bin/env python3
"""Write a random-weight Qwen3.5 / Qwen3.5-MoE GGUF with the exact tensor names, shapes, types and metadata
that llama.cpp's converter (convert_hf_to_gguf.py --outtype f16, this tree's conversion/qwen.py) writes for
the real checkpoint, for speed benchmarks. The hybrid-model sibling of ../shared/tools/make_bench_model.py
(same idea, same random weights: normal, std 0.02, norms 1), which knows only qwen2/qwen3/qwen3moe.

    python3 bench/make_hybrid_bench_model.py --list
    python3 bench/make_hybrid_bench_model.py --preset qwen35-0.8b \
        --vocab $LLAMA_CPP/models/ggml-vocab-qwen35.gguf --out bench/models/qwen35-0.8b-f16.gguf
    ... --set n_layer=8 --set n_expert=16     # override any preset field

What the converter writes and this script reproduces (checked: bench/check_hybrid_bench_layout.py
converts a transformers model of each preset's shape, with fewer layers and experts and a 576-row vocabulary,
with the converter and compares every key and tensor but the tokenizer's and general.name):

- `<arch>.block_count` = layers + 1: the multi-token-prediction (MTP) block that Qwen3.5 checkpoints carry
  (`mtp_num_hidden_layers` 1) becomes blk.<n_layer>.* with `nextn_predict_layers` 1: a full-attention layer
  (its FFN dense or MoE as the trunk's) plus nextn.eh_proj [2E -> E], nextn.enorm, nextn.hnorm,
  nextn.shared_head_norm. llama.cpp does not load it unless asked (`load_mtp`), but it is in the file.
- linear-attention layers: attn_qkv, attn_gate, ssm_alpha, ssm_beta, ssm_out (F16), ssm_conv1d, ssm_a,
  ssm_dt.bias, ssm_norm (F32); full-attention layers: attn_q (query + output gate: 2 x heads x head_dim rows),
  attn_k, attn_v, attn_output (F16), attn_q_norm, attn_k_norm (F32); both: attn_norm, post_attention_norm (F32).
- MoE: ffn_gate_inp [n_expert, E] and ffn_gate_inp_shexp [1, E] F32 (routers), *_exps [n_expert, ...] and
  *_shexp F16. Dense: ffn_gate / ffn_up / ffn_down F16.
- tied presets (0.8B, 2B) have no output.weight (llama.cpp uses token_embd).
- the vocabulary: tokenizer.* copied from a llama.cpp models/ggml-vocab-*.gguf; if it has fewer tokens than
  the model's embedding rows (llama.cpp's ggml-vocab-qwen35.gguf has 151936; Qwen3.5's embedding has 248320
  rows), it is padded with [PAD<i>] tokens of type UNUSED, as the converter pads real Qwen vocabularies.

Needs numpy and gguf-py (PYTHONPATH=$LLAMA_CPP/gguf-py: this tree's gguf-py knows the qwen35 keys).
Tensors are written one chunk at a time, so memory use stays far below the file size.
"""
import argparse
import sys

import numpy as np
import gguf

# Shapes of the published checkpoints, as text_config of their config.json (see bench/README.md for the sources):
# hidden, layers, FFN, attention heads / KV heads / head_dim 256, linear-attention key heads / value heads of
# 128, conv kernel 4, vocab 248320, rope theta 1e7 with partial_rotary_factor 0.25 (64 dims) and interleaved
# MRoPE sections [11, 11, 10], full attention every 4th layer, RMSNorm eps 1e-6, one MTP layer.
_QWEN35 = dict(arch="qwen35", n_vocab=248320, head_dim=256, lin_k_heads=16, lin_k_dim=128, lin_v_dim=128,
               conv=4, rope_theta=1e7, rope_dim=64, sections=[11, 11, 10, 0], n_ctx=262144, rms_eps=1e-6,
               full_every=4, n_mtp=1)
PRESETS = {
    # Qwen/Qwen3.5-0.8B: tie_word_embeddings true
    "qwen35-0.8b": dict(_QWEN35, n_embd=1024, n_layer=24, n_head=8, n_head_kv=2, n_ff=3584, lin_v_heads=16,
                        tied=True),
    # Qwen/Qwen3.5-2B: tie_word_embeddings true
    "qwen35-2b": dict(_QWEN35, n_embd=2048, n_layer=24, n_head=8, n_head_kv=2, n_ff=6144, lin_v_heads=16,
                      tied=True),
    # Not a released model: Qwen/Qwen3.5-35B-A3B's layer (hidden 2048, 16 / 2 heads of 256, linear attention
    # 16 key / 32 value heads of 128, experts of 512 with top-8 routing, one shared expert of 512, untied
    # 248320-row vocabulary, its MoE MTP layer) with 8 layers instead of 40 and 32 experts instead of 256:
    # a decode step does the real model's per-layer work (8 routed experts of the same shape), the file is
    # 2.25 B parameters instead of 35 B.
    "qwen35moe-small": dict(_QWEN35, arch="qwen35moe", n_embd=2048, n_layer=8, n_head=16, n_head_kv=2, n_ff=0,
                            lin_v_heads=32, tied=False, n_expert=32, n_expert_used=8, n_ff_exp=512,
                            n_ff_shexp=512),
    # Qwen/Qwen3.5-35B-A3B itself (35 B parameters: 70 GB at f16; listed for --set experiments and --list)
    "qwen35moe-35b-a3b": dict(_QWEN35, arch="qwen35moe", n_embd=2048, n_layer=40, n_head=16, n_head_kv=2, n_ff=0,
                              lin_v_heads=32, tied=False, n_expert=256, n_expert_used=8, n_ff_exp=512,
                              n_ff_shexp=512),
}
STD = 0.02


def is_recurrent(c, il):
    return il < c["n_layer"] and (il + 1) % c["full_every"] != 0


def tensor_list(c):
    """[(name, numpy-order shape, kind)] in the converter's order; kind: 'w' (F16 matrix), 'f32w' (F32 matrix:
    routers, conv), 'norm' (ones), 'ssm_a' (-U(1,16)), 'dt' (small)."""
    E, V, hd = c["n_embd"], c["n_vocab"], c["head_dim"]
    Hk, Hv, Dk, Dv = c["lin_k_heads"], c["lin_v_heads"], c["lin_k_dim"], c["lin_v_dim"]
    moe = bool(c.get("n_expert"))
    t = []
    if not c["tied"]:
        t.append(("output.weight", (V, E), "w"))
    t.append(("token_embd.weight", (V, E), "w"))

    def ffn(b):
        if moe:
            ne, f, fs = c["n_expert"], c["n_ff_exp"], c["n_ff_shexp"]
            return [(b + "ffn_down_exps.weight", (ne, E, f), "w"), (b + "ffn_gate_exps.weight", (ne, f, E), "w"),
                    (b + "ffn_up_exps.weight", (ne, f, E), "w"), (b + "ffn_gate_inp.weight", (ne, E), "f32w"),
                    (b + "ffn_down_shexp.weight", (E, fs), "w"), (b + "ffn_gate_shexp.weight", (fs, E), "w"),
                    (b + "ffn_up_shexp.weight", (fs, E), "w"), (b + "ffn_gate_inp_shexp.weight", (1, E), "f32w")]
        f = c["n_ff"]
        return [(b + "ffn_down.weight", (E, f), "w"), (b + "ffn_gate.weight", (f, E), "w"),
                (b + "ffn_up.weight", (f, E), "w")]

    def attn(b):
        return [(b + "attn_k_norm.weight", (hd,), "norm"), (b + "attn_k.weight", (c["n_head_kv"] * hd, E), "w"),
                (b + "attn_output.weight", (E, c["n_head"] * hd), "w"), (b + "attn_q_norm.weight", (hd,), "norm"),
                (b + "attn_q.weight", (2 * c["n_head"] * hd, E), "w"),
                (b + "attn_v.weight", (c["n_head_kv"] * hd, E), "w")]

    # per layer in the order of the HF names (input_layernorm, linear_attn.*, mlp.*, post_attention_layernorm,
    # self_attn.*), which is the order the converter meets them in
    for i in range(c["n_layer"]):
        b = f"blk.{i}."
        t.append((b + "attn_norm.weight", (E,), "norm"))
        if is_recurrent(c, i):
            conv_dim = 2 * Hk * Dk + Hv * Dv
            t += [(b + "ssm_a", (Hv,), "ssm_a"), (b + "ssm_conv1d.weight", (conv_dim, c["conv"]), "f32w"),
                  (b + "ssm_dt.bias", (Hv,), "dt"), (b + "ssm_alpha.weight", (Hv, E), "w"),
                  (b + "ssm_beta.weight", (Hv, E), "w"), (b + "attn_qkv.weight", (conv_dim, E), "w"),
                  (b + "attn_gate.weight", (Hv * Dv, E), "w"), (b + "ssm_norm.weight", (Dv,), "norm"),
                  (b + "ssm_out.weight", (E, Hv * Dv), "w")]
            t += ffn(b)
            t.append((b + "post_attention_norm.weight", (E,), "norm"))
        else:
            t += ffn(b)
            t.append((b + "post_attention_norm.weight", (E,), "norm"))
            t += attn(b)
    t.append(("output_norm.weight", (E,), "norm"))
    for j in range(c["n_mtp"]):   # mtp.fc, mtp.layers.0.*, mtp.norm, mtp.pre_fc_norm_embedding / _hidden
        b = f"blk.{c['n_layer'] + j}."
        t.append((b + "nextn.eh_proj.weight", (E, 2 * E), "w"))
        t.append((b + "attn_norm.weight", (E,), "norm"))
        t += ffn(b)
        t.append((b + "post_attention_norm.weight", (E,), "norm"))
        t += attn(b)
        t += [(b + "nextn.shared_head_norm.weight", (E,), "norm"), (b + "nextn.enorm.weight", (E,), "norm"),
              (b + "nextn.hnorm.weight", (E,), "norm")]
    return t


def copy_tokenizer(w, vocab_path, n_vocab):
    """tokenizer.* of a vocab GGUF, tokens padded to n_vocab with [PAD<i>] (type UNUSED) as the converter does."""
    r = gguf.GGUFReader(vocab_path)
    n_tok = len(r.fields["tokenizer.ggml.tokens"].data)
    if n_tok > n_vocab:
        sys.exit(f"vocab file has {n_tok} tokens, more than the model's {n_vocab} embedding rows")
    T = gguf.GGUFValueType
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vt = f.types[0]
        if vt == T.ARRAY:
            st = f.types[-1]
            if st == T.STRING:   # raw bytes: no utf-8 round trip
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            if key == "tokenizer.ggml.tokens":
                val += [f"[PAD{i}]".encode() for i in range(n_tok, n_vocab)]
            elif key == "tokenizer.ggml.token_type":
                val += [int(gguf.TokenType.UNUSED)] * (n_vocab - n_tok)
            elif key == "tokenizer.ggml.scores":
                val += [0.0] * (n_vocab - n_tok)
            w.add_key_value(key, val, T.ARRAY, sub_type=st)
        elif vt == T.STRING:
            w.add_key_value(key, bytes(f.parts[f.data[0]]), T.STRING)
        else:
            w.add_key_value(key, f.parts[f.data[0]].tolist()[0], vt)
    return n_tok


def write_metadata(w, c, name, ftype):
    """The keys (and their order) of the converter's Qwen3_5TextModel / Qwen3_5MoeTextModel."""
    moe = bool(c.get("n_expert"))
    w.add_type("model")
    w.add_name(name)
    w.add_block_count(c["n_layer"] + c["n_mtp"])
    w.add_context_length(c["n_ctx"])
    w.add_embedding_length(c["n_embd"])
    if not moe:
        w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_eps"])
    if moe:
        w.add_expert_count(c["n_expert"])
        w.add_expert_used_count(c["n_expert_used"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_file_type(int(ftype))
    w.add_rope_dimension_sections(c["sections"])
    if moe:
        w.add_expert_feed_forward_length(c["n_ff_exp"])
        w.add_expert_shared_feed_forward_length(c["n_ff_shexp"])
    if c["n_mtp"]:
        w.add_nextn_predict_layers(c["n_mtp"])
    w.add_ssm_conv_kernel(c["conv"])
    w.add_ssm_state_size(c["lin_k_dim"])
    w.add_ssm_group_count(c["lin_k_heads"])
    w.add_ssm_time_step_rank(c["lin_v_heads"])
    w.add_ssm_inner_size(c["lin_v_dim"] * c["lin_v_heads"])
    w.add_recurrent_layers([is_recurrent(c, i) for i in range(c["n_layer"] + c["n_mtp"])])
    w.add_full_attention_interval(c["full_every"])
    w.add_rope_dimension_count(c["rope_dim"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def to_bf16_bits(x):
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def write_tensors(w, tl, dtype, seed):
    """Writes the header, the metadata already added to `w` and the tensors of `tl` (see tensor_list: random
    matrices of std STD in `dtype`, ones for norms, the SSM kinds) one chunk at a time, and closes `w`.
    Shared with make_labs_bench_model.py."""
    Q = gguf.GGMLQuantizationType
    for name, shape, kind in tl:
        n = int(np.prod(shape))
        if kind == "w" and dtype == "f16":
            w.add_tensor_info(name, shape, np.dtype(np.float16), 2 * n)
        elif kind == "w" and dtype == "bf16":
            w.add_tensor_info(name, shape, np.dtype(np.uint16), 2 * n, raw_dtype=Q.BF16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * n)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    fout = w.fout[0]
    align = w.data_alignment
    chunk = 1 << 22
    total = sum(int(np.prod(s)) for _, s, _ in tl)
    done = 0
    for idx, (name, shape, kind) in enumerate(tl):
        fout.write(b"\0" * ((-fout.tell()) % align))
        n = int(np.prod(shape))
        rng = np.random.Generator(np.random.SFC64([seed, idx]))
        if kind == "norm":
            np.ones(n, dtype=np.float32).tofile(fout)
        elif kind == "ssm_a":      # -exp(A_log), A in U(1, 16): decays in (0, 1)
            (-rng.uniform(1.0, 16.0, n)).astype(np.float32).tofile(fout)
        elif kind == "dt":
            rng.uniform(-6.9, -2.3, n).astype(np.float32).tofile(fout)
        else:
            for o in range(0, n, chunk):
                x = rng.standard_normal(min(chunk, n - o), dtype=np.float32)
                x *= STD
                if kind == "w" and dtype == "f16":
                    x = x.astype(np.float16)
                elif kind == "w" and dtype == "bf16":
                    x = to_bf16_bits(x)
                x.tofile(fout)
        done += n
        if name.endswith("attn_norm.weight") or idx == len(tl) - 1:
            print(f"\r{done / total * 100:5.1f}%  {name}", end="", file=sys.stderr, flush=True)
    fout.write(b"\0" * ((-fout.tell()) % align))
    w.close()


def params(c, tl=None):
    tl = tl or tensor_list(c)
    tot = sum(int(np.prod(s)) for _, s, _ in tl)
    mtp = sum(int(np.prod(s)) for n, s, _ in tl if n.startswith(f"blk.{c['n_layer']}.") and c["n_mtp"])
    read = tot - mtp - (0 if c["tied"] else c["n_vocab"] * c["n_embd"])   # a decode step, without MTP
    if c.get("n_expert"):
        exp = sum(int(np.prod(s)) for n, s, _ in tl if "_exps" in n and not n.startswith(f"blk.{c['n_layer']}."))
        read -= exp - exp * c["n_expert_used"] // c["n_expert"]
    return tot, mtp, read


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--vocab", help="a GGUF holding tokenizer.* metadata, e.g. llama.cpp models/ggml-vocab-qwen35.gguf")
    ap.add_argument("--out", help="output .gguf")
    ap.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16",
                    help="type of the matrices the converter writes in the output type (default f16, as "
                         "`--outtype f16`); norms, conv, ssm_a/dt and routers are always F32")
    ap.add_argument("--name", help="general.name (default: the preset's name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field, e.g. --set n_layer=4 (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the presets with parameter counts and exit")
    a = ap.parse_args()

    if a.list:
        print("preset               arch       params    MTP   read/token  (weights a decode step reads: all but\n"
              "                                                            the MTP block, token_embd rows not looked up,"
              " routed experts x used/total)")
        for k, c in PRESETS.items():
            tot, mtp, read = params(c)
            print(f"{k:20s} {c['arch']:10s} {tot / 1e9:6.3f}B {mtp / 1e9:6.3f}B  {read / 1e9:6.3f}B")
        return
    if not (a.preset and a.vocab and a.out):
        ap.error("--preset, --vocab and --out are required")

    c = dict(PRESETS[a.preset])
    for s in a.set:
        f, v = s.split("=", 1)
        if f not in c:
            sys.exit(f"unknown field {f}")
        old = c[f]
        if isinstance(old, bool):
            c[f] = v.lower() in ("1", "true", "yes")
        elif isinstance(old, list):
            c[f] = [int(x) for x in v.split(",")]
        else:
            c[f] = type(old)(float(v)) if isinstance(old, float) else int(v)

    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "f32": gguf.LlamaFileType.ALL_F32}[a.dtype]
    w = gguf.GGUFWriter(a.out, c["arch"])
    write_metadata(w, c, a.name or f"{a.preset} (random weights, benchmark only)", ftype)
    n_tok = copy_tokenizer(w, a.vocab, c["n_vocab"])
    if n_tok < c["n_vocab"]:
        print(f"vocabulary: {n_tok} tokens from {a.vocab}, padded to {c['n_vocab']}", file=sys.stderr)

    tl = tensor_list(c)
    write_tensors(w, tl, a.dtype, a.seed)
    tot, mtp, read = params(c, tl)
    print(f"\nwrote {a.out}: {len(tl)} tensors, {tot / 1e9:.3f} B parameters ({mtp / 1e9:.3f} B in the MTP block)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
