#!/usr/bin/env python3
"""Check bench/make_moe_q4km_model.py against llama.cpp's own Q4_K_M at a small size.

    python3 bench/check_moe_q4km_layout.py WORKDIR

Makes a qwen3moe f16 file with ../shared/tools/make_bench_model.py (16 layers, so that use_more_bits picks
some layers and not others; 16 experts, not 8, which llama.cpp treats specially; every row a multiple of 256),
quantizes it with `llama-quantize ... Q4_K_M`, writes the generator's file with the same shapes, and compares
every metadata key (value and order; general.name aside) and every tensor (name, order, shape, type, offset),
then dequantizes each generated quantized tensor with gguf-py (finite, std about 0.02).
Needs PYTHONPATH=$LLAMA_CPP/gguf-py; LLAMA_QUANTIZE (default .peer/build/bin/llama-quantize).
"""
import os
import subprocess
import sys

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizer", "ggml-vocab-qwen2.gguf")
SHAPE = dict(n_embd=256, n_layer=16, n_head=4, n_head_kv=2, head_dim=64, n_ff=768, n_expert=16, n_expert_used=4,
             n_ff_exp=256)


def fields(path):
    r = gguf.GGUFReader(path)
    kv = []
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.name":
            continue
        kv.append((k, b"".join(p.tobytes() for p in f.parts)))
    ti = [(t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.data_offset)) for t in r.tensors]
    return r, kv, ti


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    wd = sys.argv[1]
    os.makedirs(wd, exist_ok=True)
    quantize = os.environ.get("LLAMA_QUANTIZE", os.path.join(ROOT, ".peer", "build", "bin", "llama-quantize"))
    f16, ref, gen = (os.path.join(wd, n) for n in ("ref-f16.gguf", "ref-Q4_K_M.gguf", "gen-Q4_K_M.gguf"))
    sets = [x for k, v in SHAPE.items() for x in ("--set", f"{k}={v}")]
    py = sys.executable
    subprocess.run([py, os.path.join(ROOT, "..", "shared", "tools", "make_bench_model.py"), "--preset",
                    "qwen3moe-small", "--vocab", VOCAB, "--out", f16, *sets], check=True)
    subprocess.run([quantize, f16, ref, "Q4_K_M"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # make_bench_model's qwen3moe-small preset has 32768 positions; the generator's default is the real 40960
    subprocess.run([py, os.path.join(HERE, "make_moe_q4km_model.py"), "--vocab", VOCAB, "--out", gen, *sets,
                    "--set", "n_ctx=32768"], check=True)

    _, kv_r, ti_r = fields(ref)
    rg, kv_g, ti_g = fields(gen)
    bad = 0
    if [k for k, _ in kv_r] != [k for k, _ in kv_g]:
        print("metadata keys differ:\n  llama-quantize:", [k for k, _ in kv_r], "\n  generator:     ",
              [k for k, _ in kv_g])
        bad += 1
    for (k, a), (_, b) in zip(kv_r, kv_g):
        if a != b:
            print(f"metadata {k} differs")
            bad += 1
    if len(ti_r) != len(ti_g):
        print(f"{len(ti_r)} tensors from llama-quantize, {len(ti_g)} from the generator")
        bad += 1
    for a, b in zip(ti_r, ti_g):
        if a != b:
            print(f"tensor differs: llama-quantize {a}, generator {b}")
            bad += 1
    types = {}
    for t in rg.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.tensor_type in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K):
            w = gguf.quants.dequantize(t.data, t.tensor_type)
            if not np.isfinite(w).all() or not 0.018 < w.std() < 0.022:
                print(f"{t.name}: finite {np.isfinite(w).all()}, std {w.std():.4f}")
                bad += 1
    print(f"{len(kv_g)} metadata keys, {len(ti_g)} tensors ({types}), file {os.path.getsize(gen):,d} B "
          f"(llama-quantize's {os.path.getsize(ref):,d} B): {'identical layout' if not bad else f'{bad} differences'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
