#!/usr/bin/env python3
"""Check make_hybrid_bench_model.py against llama.cpp's own converter.

For each preset: a transformers model of the preset's shape (Qwen3_5ForCausalLM / Qwen3_5MoeForCausalLM, the
config fields of the published config.json: rope_parameters with mrope_section, partial_rotary_factor,
max_position_embeddings, tie_word_embeddings, mtp_num_hidden_layers 1), made smaller only where the converter
does not care (4 layers = 3 linear + 1 full attention, 4 experts, the 576-row toy vocabulary of
../shared/fixtures), plus one MTP block named as in real checkpoints (mtp.fc, mtp.pre_fc_norm_*, mtp.norm,
mtp.layers.0.*), saved as bf16 safetensors and converted by convert_hf_to_gguf.py --outtype f16 (through the
shared set's convert_hf_tiny.py); then make_hybrid_bench_model.py with the same overrides; then every metadata
key but tokenizer.* and the naming ones (general.name, .basename, .finetune, .size_label: the
converter derives them from the directory name), and every tensor's name, shape, type and position,
must be equal.

usage: LLAMA_CPP=... python bench/check_hybrid_bench_layout.py WORKDIR [preset ...]
       (python with torch, transformers 5.23, safetensors, numpy; the toy tokenizer is read from
        ../shared/fixtures/hf/qwen2)
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LC = os.environ["LLAMA_CPP"]
sys.path.insert(0, os.path.join(LC, "gguf-py"))
sys.path.insert(0, HERE)
import gguf  # noqa: E402
import make_hybrid_bench_model as M  # noqa: E402

FIX = os.environ.get("FRUGAL_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))
OVERRIDES = {"n_layer": 4, "n_vocab": 576, "n_expert": 4}


def hf_checkpoint(c, out):
    import torch
    import transformers as T
    from safetensors.torch import load_file, save_file
    moe = bool(c.get("n_expert"))
    kw = dict(vocab_size=c["n_vocab"], hidden_size=c["n_embd"], num_hidden_layers=c["n_layer"],
              num_attention_heads=c["n_head"], num_key_value_heads=c["n_head_kv"], head_dim=c["head_dim"],
              max_position_embeddings=c["n_ctx"], rms_norm_eps=c["rms_eps"], tie_word_embeddings=c["tied"],
              layer_types=["linear_attention" if M.is_recurrent(c, i) else "full_attention"
                           for i in range(c["n_layer"])],
              linear_conv_kernel_dim=c["conv"], linear_key_head_dim=c["lin_k_dim"],
              linear_value_head_dim=c["lin_v_dim"], linear_num_key_heads=c["lin_k_heads"],
              linear_num_value_heads=c["lin_v_heads"], bos_token_id=512, eos_token_id=512,
              rope_parameters={"rope_type": "default", "rope_theta": c["rope_theta"], "partial_rotary_factor": 0.25,
                               "mrope_section": c["sections"][:3], "mrope_interleaved": True})
    if moe:
        C, Model = T.Qwen3_5MoeTextConfig, T.Qwen3_5MoeForCausalLM
        kw.update(num_experts=c["n_expert"], num_experts_per_tok=c["n_expert_used"],
                  moe_intermediate_size=c["n_ff_exp"], shared_expert_intermediate_size=c["n_ff_shexp"])
    else:
        C, Model = T.Qwen3_5TextConfig, T.Qwen3_5ForCausalLM
        kw.update(intermediate_size=c["n_ff"])
    torch.manual_seed(0)
    model = Model(C(**kw)).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    st = os.path.join(out, "model.safetensors")
    sd = load_file(st)
    full = next(i for i in range(c["n_layer"]) if not M.is_recurrent(c, i))
    pre = f"model.layers.{full}."
    E = c["n_embd"]
    extra = {"mtp." + k: (E,) for k in ("pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight", "norm.weight")}
    extra["mtp.fc.weight"] = (E, 2 * E)
    extra.update({"mtp.layers.0." + k[len(pre):]: tuple(v.shape) for k, v in sd.items() if k.startswith(pre)})
    for k, shape in extra.items():
        sd[k] = torch.zeros(shape, dtype=torch.bfloat16)
    save_file(sd, st, metadata={"format": "pt"})
    cj = json.load(open(os.path.join(out, "config.json")))
    cj.update(mtp_num_hidden_layers=1, mtp_use_dedicated_embeddings=False, rope_theta=c["rope_theta"],
              partial_rotary_factor=0.25)
    json.dump(cj, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(FIX, "hf", "qwen2", f), "rb") as src, open(os.path.join(out, f), "wb") as dst:
            dst.write(src.read())


def layout(path):
    r = gguf.GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if k.startswith(("GGUF.", "tokenizer.")) or k in ("general.name", "general.size_label",
                                                                    "general.basename", "general.finetune"):
            continue
        v = f.contents()
        kv[k] = [round(x, 6) for x in v] if isinstance(v, list) and v and isinstance(v[0], float) else v
    ts = [(t.name, tuple(int(x) for x in t.shape), t.tensor_type.name) for t in r.tensors]
    return kv, ts


def main():
    work = sys.argv[1]
    presets = sys.argv[2:] or ["qwen35-0.8b", "qwen35-2b", "qwen35moe-small"]
    os.makedirs(work, exist_ok=True)
    bad = 0
    for p in presets:
        c = dict(M.PRESETS[p])
        sets = [f"{k}={v}" for k, v in OVERRIDES.items() if k in c]
        c.update({k: v for k, v in OVERRIDES.items() if k in c})
        hf = os.path.join(work, p + "-hf")
        conv = os.path.join(work, p + "-converter.gguf")
        mine = os.path.join(work, p + "-generator.gguf")
        hf_checkpoint(c, hf)
        env = dict(os.environ, GGUF_PRE="qwen2", PYTHONPATH=os.path.join(LC, "gguf-py"))
        for cmd in ([sys.executable, os.path.join(FIX, "tools", "convert_hf_tiny.py"), hf, "--outfile", conv,
                     "--outtype", "f16"],
                    [sys.executable, os.path.join(HERE, "make_hybrid_bench_model.py"), "--preset", p,
                     "--vocab", conv, "--out", mine] + [x for s in sets for x in ("--set", s)]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{' '.join(cmd[:3])} failed:\n{r.stderr[-3000:]}")
        (kv1, t1), (kv2, t2) = layout(conv), layout(mine)
        diffs = [f"key {k}: converter {kv1.get(k)!r} generator {kv2.get(k)!r}"
                 for k in sorted(set(kv1) | set(kv2)) if kv1.get(k) != kv2.get(k)]
        d1, d2 = {n: (s, ty) for n, s, ty in t1}, {n: (s, ty) for n, s, ty in t2}
        diffs += [f"tensor {n}: converter {d1.get(n)} generator {d2.get(n)}"
                  for n in sorted(set(d1) | set(d2)) if d1.get(n) != d2.get(n)]
        if not diffs and [n for n, _, _ in t1] != [n for n, _, _ in t2]:
            diffs.append("same tensors, other order")
        print(f"{p} ({', '.join(sets)}): {len(t1)} tensors, {len(kv1)} keys: "
              + ("identical" if not diffs else f"{len(diffs)} differences"))
        for d in diffs:
            print("   ", d)
        bad += bool(diffs)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
