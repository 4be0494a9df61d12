#!/usr/bin/env python3
"""Write a random-weight Qwen3-30B-A3B GGUF straight in Q4_K_M blocks (about 18.6 GB), for speed benchmarks.

The sibling of ../shared/tools/make_bench_model.py (whose qwen3moe metadata keys, tensor names, shapes and
order it writes, with the real model's hyper-parameters), but it writes the quantized file directly: an f16
intermediate for `llama-quantize` would take 61 GB of disk. It refuses to start when the target filesystem
has less free space than the exact output size plus a margin.

    python3 bench/make_moe_q4km_model.py --dry-run            # the plan: tensors, types, exact bytes
    python3 bench/make_moe_q4km_model.py --out bench/models/qwen3-30b-a3b-Q4_K_M.gguf
    ... --set n_layer=2 --set n_expert=16                     # a small file of the same layer shapes

Shapes (Qwen/Qwen3-30B-A3B config.json; the same numbers in scripts/models/qwen3-30B-A3B.sh of slime,
the zyzshishui/slime fork of THUDM/slime, found with the code search): hidden 2048, 48 layers, 32 query /
4 KV heads of head_dim 128 (q is 4096 rows),
intermediate_size 6144 (written as feed_forward_length, unused by a pure-MoE model), moe_intermediate_size 768,
128 experts, top-8, vocab 151936, untied lm_head, q/k RMSNorm, rms eps 1e-6, rope theta 1e6,
max_position_embeddings 40960 (slime's script has no position count; 40960, tie_word_embeddings false, rms eps
and rope theta also as in copies of this config.json embedded in public test code; no Hub access here).
30.5 B parameters, 3.3 B active per token (3.04 B without token_embd).

Types: what llama.cpp's `llama-quantize F16 OUT Q4_K_M` picks (src/llama-quant.cpp, llama_tensor_get_type_impl,
of the vendored llama.cpp in .peer), for qwen3moe with n_expert != 8:
- output.weight Q6_K (the OUTPUT rule: Q6_K unless the base type is Q8_0); token_embd.weight Q4_K (untied).
- attn_v: Q6_K where use_more_bits(i, n) (i = the attn_v counter, i.e. the layer: i < n/8, i >= 7n/8, or
  (i - n/8) % 3 == 2), else Q4_K. For 48 layers: 0-5, 8, 11, ..., 41, 42-47 (24 layers).
- ffn_down_exps: category FFN_DOWN, layer parsed from the name because n_expert > 1; Q6_K where
  use_more_bits(layer, n_layer), else Q4_K: the same 24 layers.
- attn_q, attn_k, attn_output, ffn_gate_exps, ffn_up_exps: Q4_K (the n_expert == 8 bumps of attn_k / attn_v to
  Q8_0 and attn_output to Q5_K do not apply to 128 experts; this script refuses n_expert = 8).
- ffn_gate_inp (router; never quantized) and every norm: F32.
Checked at a small size: ../shared/tools/make_bench_model.py --preset qwen3moe-small with 16 layers and
16 experts, quantized by .peer/build/bin/llama-quantize Q4_K_M, has the names, shapes, types and metadata
keys this script writes with the same --set (see bench/README.md).

Blocks: random bytes for the quants and sub-block scales, f16 super-block scales chosen so that the
dequantized weights have std about STD = 0.02 (like make_bench_model.py's normal weights) and mean about 0:
- Q4_K (144 B / 256 values: d f16, dmin f16, 12 B of 6-bit scales/mins, 128 B of 4-bit quants):
  w = d*sc*q - dmin*m with sc, m uniform in 0..63, q in 0..15; dmin = 7.5 d cancels the mean, and then
  std(w) = d * sqrt(Var(sc q) + 7.5^2 Var(m)) = 258.3 d, so d = 7.7e-5 (an f16 normal number).
- Q6_K (210 B / 256: 128 B ql, 64 B qh, 16 int8 scales, d f16): w = d*sc*(q - 32), q uniform in 0..63;
  the int8 scales are drawn in -16..16 (not -128..127) so that d = 1.1e-4 stays a normal f16 number.
Each d is the nominal value times U(0.8, 1.2), never below the smallest normal f16, never NaN/Inf. The layout
is checked before writing by dequantizing sample blocks with gguf-py's gguf.quants.dequantize.

Needs numpy and gguf-py (PYTHONPATH=$LLAMA_CPP/gguf-py). Tensors are written one chunk at a time (64 MB);
GGUFWriter only gets the tensor infos, so memory stays far below the file size.
"""
import argparse
import os
import shutil
import sys
import time

import gguf
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hybrid_bench_model import copy_tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VOCAB = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizer", "ggml-vocab-qwen2.gguf")

PRESETS = {
    # Qwen/Qwen3-30B-A3B (see the docstring for the source)
    "qwen3-30b-a3b": dict(arch="qwen3moe", n_embd=2048, n_layer=48, n_head=32, n_head_kv=4, head_dim=128,
                          n_ff=6144, n_vocab=151936, rope_theta=1e6, n_ctx=40960, rms_eps=1e-6,
                          n_expert=128, n_expert_used=8, n_ff_exp=768),
}
STD = 0.02
Q = gguf.GGMLQuantizationType
QK_K = 256
BLOCK_BYTES = {Q.Q4_K: 144, Q.Q6_K: 210}
F16_MIN_NORMAL = 2.0 ** -14
MARGIN = 256 << 20   # free space to leave beyond the file


def use_more_bits(i, n):
    # llama-quant.cpp's lambda, C++ integer division (i - n/8 < 0 only where i < n/8 already holds)
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def quantized_order(name):
    """llama-quantize writes tensors in the order of llama_model_loader's weights_map (weight_name_comparer):
    by layer number, tensors outside blocks (layer -1) first, then by name."""
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    return layer, name.encode()


def tensor_list(c):
    """[(name, numpy-order shape, type)]: make_bench_model.py's tensors with the Q4_K_M types, in the order
    llama-quantize writes them (see quantized_order)."""
    E, V, hd, L = c["n_embd"], c["n_vocab"], c["head_dim"], c["n_layer"]
    q, kv, ne, f = c["n_head"] * hd, c["n_head_kv"] * hd, c["n_expert"], c["n_ff_exp"]
    t = [("token_embd.weight", (V, E), Q.Q4_K)]
    for i in range(L):
        b = f"blk.{i}."
        more = Q.Q6_K if use_more_bits(i, L) else Q.Q4_K
        t += [(b + "attn_norm.weight", (E,), Q.F32), (b + "attn_q.weight", (q, E), Q.Q4_K),
              (b + "attn_k.weight", (kv, E), Q.Q4_K), (b + "attn_v.weight", (kv, E), more),
              (b + "attn_q_norm.weight", (hd,), Q.F32), (b + "attn_k_norm.weight", (hd,), Q.F32),
              (b + "attn_output.weight", (E, q), Q.Q4_K), (b + "ffn_norm.weight", (E,), Q.F32),
              (b + "ffn_gate_inp.weight", (ne, E), Q.F32),
              (b + "ffn_gate_exps.weight", (ne, f, E), Q.Q4_K), (b + "ffn_up_exps.weight", (ne, f, E), Q.Q4_K),
              (b + "ffn_down_exps.weight", (ne, E, f), more)]
    t += [("output_norm.weight", (E,), Q.F32), ("output.weight", (V, E), Q.Q6_K)]
    return sorted(t, key=lambda x: quantized_order(x[0]))


def nbytes(shape, qt):
    n = int(np.prod(shape))
    if qt == Q.F32:
        return 4 * n
    assert shape[-1] % QK_K == 0, f"row of {shape[-1]} values is not a multiple of {QK_K}"
    return n // QK_K * BLOCK_BYTES[qt]


def nominal_d(qt):
    """d giving dequantized std STD for uniform random quants/scales (see the docstring)."""
    if qt == Q.Q4_K:
        sc2, q2 = np.mean(np.arange(64.0) ** 2), np.mean(np.arange(16.0) ** 2)
        var = sc2 * q2 - (31.5 * 7.5) ** 2 + 7.5 ** 2 * np.var(np.arange(64.0))
    else:
        var = np.mean(np.arange(-16.0, 17.0) ** 2) * np.mean(np.arange(-32.0, 32.0) ** 2)
    return STD / np.sqrt(var)


def random_blocks(rng, qt, nb):
    """nb blocks of type qt as a (nb, block bytes) uint8 array."""
    bs = BLOCK_BYTES[qt]
    raw = rng.bit_generator.random_raw((nb * bs + 7) // 8).view(np.uint8)[: nb * bs].reshape(nb, bs)
    d = np.maximum(nominal_d(qt) * rng.uniform(0.8, 1.2, nb), F16_MIN_NORMAL).astype(np.float16)
    if qt == Q.Q4_K:
        raw[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        raw[:, 2:4] = (d.astype(np.float32) * 7.5).astype(np.float16).view(np.uint8).reshape(nb, 2)
    else:
        raw[:, 192:208] = rng.integers(-16, 17, (nb, 16), dtype=np.int8).view(np.uint8)
        raw[:, 208:210] = d.view(np.uint8).reshape(nb, 2)
    return raw


def check_blocks(seed):
    """Dequantize sample blocks with gguf-py: finite, mean ~0, std ~STD."""
    rng = np.random.Generator(np.random.SFC64([seed, 1 << 30]))
    for qt in (Q.Q4_K, Q.Q6_K):
        w = gguf.quants.dequantize(random_blocks(rng, qt, 4096), qt)
        assert w.shape == (4096, QK_K) and np.isfinite(w).all(), qt
        print(f"{qt.name} blocks: dequantized std {w.std():.4f}, mean {w.mean():+.5f}, max |w| {np.abs(w).max():.3f}",
              file=sys.stderr)
        assert abs(w.std() / STD - 1) < 0.1 and abs(w.mean()) < 0.1 * STD, qt


def write_metadata(w, c, name):
    """The keys of the converter's Qwen3MoeModel as make_bench_model.py writes them (without general.file_type:
    llama-quantize moves it to the end, after the tokenizer and general.quantization_version)."""
    w.add_name(name)
    w.add_block_count(c["n_layer"])
    w.add_context_length(c["n_ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_layer_norm_rms_eps(c["rms_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_expert_count(c["n_expert"])
    w.add_expert_used_count(c["n_expert_used"])
    w.add_expert_feed_forward_length(c["n_ff_exp"])


def header_bytes(w):
    """Bytes before the tensor data, as GGUFWriter will write them (header, KV pairs, tensor infos, padding)."""
    n = 4 + 4 + 8 + 8
    for key, val in w.kv_data[0].items():
        n += len(w._pack_val(key, gguf.GGUFValueType.STRING, add_vtype=False))
        n += len(w._pack_val(val.value, val.type, add_vtype=True, sub_type=val.sub_type))
    for name, ti in w.tensors[0].items():
        n += len(w._pack_val(name, gguf.GGUFValueType.STRING, add_vtype=False)) + 4 + 8 * len(ti.shape) + 4 + 8
    return n + (-n) % w.data_alignment


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen3-30b-a3b")
    ap.add_argument("--vocab", default=DEFAULT_VOCAB,
                    help="a GGUF holding tokenizer.* metadata "
                         "(default: ../shared/fixtures/tokenizer/ggml-vocab-qwen2.gguf)")
    ap.add_argument("--out", help="output .gguf")
    ap.add_argument("--name", help="general.name (default: the preset's name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field, e.g. --set n_layer=2 (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (tensors, types, bytes) and exit")
    a = ap.parse_args()

    c = dict(PRESETS[a.preset])
    for s in a.set:
        f, v = s.split("=", 1)
        if f not in c:
            sys.exit(f"unknown field {f}")
        c[f] = type(c[f])(float(v)) if isinstance(c[f], float) else int(v)
    if c["n_expert"] == 8:
        sys.exit("n_expert 8 takes llama.cpp's 8-expert types (attn_k/attn_v Q8_0, attn_output Q5_K); not done here")

    tl = tensor_list(c)
    w = gguf.GGUFWriter(a.out or "/dev/null", c["arch"])
    write_metadata(w, c, a.name or f"{a.preset} Q4_K_M (random weights, benchmark only)")
    if a.vocab and os.path.exists(a.vocab):
        copy_tokenizer(w, a.vocab, c["n_vocab"])
    elif not a.dry_run:
        sys.exit(f"vocab file {a.vocab} not found (--vocab)")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    for name, shape, qt in tl:
        if qt == Q.F32:
            w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes(shape, qt))
        else:
            byte_shape = (*shape[:-1], shape[-1] // QK_K * BLOCK_BYTES[qt])
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes(shape, qt), raw_dtype=qt)
    align = w.data_alignment
    data = sum(nbytes(s, qt) + (-nbytes(s, qt)) % align for _, s, qt in tl)
    head = header_bytes(w)
    total = head + data
    params = sum(int(np.prod(s)) for _, s, _ in tl)
    active = params - c["n_vocab"] * c["n_embd"] - sum(
        int(np.prod(s)) for n, s, _ in tl if "_exps" in n) * (c["n_expert"] - c["n_expert_used"]) // c["n_expert"]

    if a.dry_run or not a.out:
        kinds = {}
        for name, shape, qt in tl:
            k = "blk.N." + name.split(".", 2)[2] if name.startswith("blk.") else name
            e = kinds.setdefault(k, [shape, {}, 0])
            e[1][qt.name] = e[1].get(qt.name, 0) + 1
            e[2] += nbytes(shape, qt)
        print(f"{a.preset}: {len(tl)} tensors, {params / 1e9:.3f} B parameters ({active / 1e9:.3f} B active per "
              f"token, without token_embd)")
        print(f"{'tensor':28s} {'shape (numpy order)':22s} {'types (tensor count)':22s} {'bytes':>14s}")
        for k, (shape, types, nb) in kinds.items():
            ts = ", ".join(f"{t} x{n}" for t, n in types.items())
            print(f"{k:28s} {str(shape):22s} {ts:22s} {nb:14,d}")
        print(f"tensor data {data:,d} B + header/metadata {head:,d} B = {total:,d} B "
              f"({total / 1e9:.2f} GB, {total / 2**30:.2f} GiB)")
        exps = sum(nbytes(s, qt) for n, s, qt in tl if "_exps" in n)
        read = sum(nbytes(s, qt) for n, s, qt in tl if n != "token_embd.weight") - exps \
            + exps * c["n_expert_used"] // c["n_expert"]
        print(f"weight bytes a decode step reads (all but token_embd and the unused experts; compare.py "
              f"--bytes-per-token): {read:,d}")
        if not a.out:
            return

    out_dir = os.path.dirname(os.path.abspath(a.out))
    probe = out_dir
    while not os.path.isdir(probe):   # the directory is made only when writing
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    have = os.path.getsize(a.out) if os.path.isfile(a.out) else 0   # an old file we would overwrite
    if free + have < total + MARGIN:
        print(f"not enough disk: {a.out} needs {total:,d} B ({total / 2**30:.2f} GiB) plus a "
              f"{MARGIN >> 20} MiB margin; {out_dir} has {free:,d} B free ({free / 2**30:.2f} GiB)", file=sys.stderr)
        sys.exit(1)
    if a.dry_run:
        print(f"{out_dir}: {free / 2**30:.2f} GiB free, enough")
        return

    check_blocks(a.seed)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    w.write_header_to_file(a.out)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    assert fout.tell() <= head and head - fout.tell() < align, (fout.tell(), head)
    chunk = 64 << 20
    done = 0
    for idx, (name, shape, qt) in enumerate(tl):
        fout.write(b"\0" * ((-fout.tell()) % align))
        n = int(np.prod(shape))
        rng = np.random.Generator(np.random.SFC64([a.seed, idx]))
        if name.endswith("norm.weight"):
            np.ones(n, dtype=np.float32).tofile(fout)
        elif qt == Q.F32:   # the router: normal, std STD
            (rng.standard_normal(n, dtype=np.float32) * STD).tofile(fout)
        else:
            nb, per = n // QK_K, chunk // BLOCK_BYTES[qt]
            for o in range(0, nb, per):
                random_blocks(rng, qt, min(per, nb - o)).tofile(fout)
        done += nbytes(shape, qt)
        if name.endswith("attn_norm.weight") or idx == len(tl) - 1:
            print(f"\r{done / data * 100:5.1f}%  {name}  {time.time() - t0:5.0f} s", end="", file=sys.stderr,
                  flush=True)
    fout.write(b"\0" * ((-fout.tell()) % align))
    size = fout.tell()
    w.close()
    print(f"\nwrote {a.out}: {len(tl)} tensors, {params / 1e9:.3f} B parameters, {size:,d} B "
          f"(planned {total:,d}) in {time.time() - t0:.0f} s", file=sys.stderr)
    if size != total:
        sys.exit("size differs from the plan")


if __name__ == "__main__":
    main()
