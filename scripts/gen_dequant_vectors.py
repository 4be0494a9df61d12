#!/usr/bin/env python3
"""Writes crates/kernels/tests/data/dequant_vectors.bin: random blocks of every GGUF weight type
with the values gguf-py dequantizes them to (gguf-py's dequantization is bit-identical to ggml's;
the fixtures README checked that with ggml itself). An independent reference for
`dequantize_row`, including the types no fixture model uses (Q4_1, Q5_1, Q2_K, Q3_K, Q5_K).

Needs numpy and gguf-py (llama.cpp's gguf-py folder on PYTHONPATH, or `pip install gguf`).
Format, little-endian, repeated per type:
  u32 type id, u32 n_values, u32 n_bytes, bytes[n_bytes], f32[n_values]
"""
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
BLOCKS = 8
rng = np.random.default_rng(1234)
out = bytearray()
for t in TYPES:
    block_len, block_bytes = {
        T.F16: (1, 2), T.BF16: (1, 2), T.Q4_0: (32, 18), T.Q4_1: (32, 20), T.Q5_0: (32, 22),
        T.Q5_1: (32, 24), T.Q8_0: (32, 34), T.Q2_K: (256, 84), T.Q3_K: (256, 110),
        T.Q4_K: (256, 144), T.Q5_K: (256, 176), T.Q6_K: (256, 210),
    }[t]
    n_values = 256 * BLOCKS if block_len == 1 else block_len * BLOCKS
    raw = bytearray(rng.integers(0, 256, size=n_values // block_len * block_bytes, dtype=np.uint8).tobytes())
    # Keep every f16 scale finite and moderate: random bytes can be Inf/NaN.
    scale_offsets = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
                     T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
    for b in range(len(raw) // block_bytes):
        for o in scale_offsets.get(t, []):
            d = np.float16(rng.uniform(-0.1, 0.1)).tobytes()
            raw[b * block_bytes + o: b * block_bytes + o + 2] = d
    if t in (T.F16, T.BF16):
        vals = rng.standard_normal(n_values).astype(np.float32)
        if t == T.F16:
            raw = bytearray(vals.astype(np.float16).tobytes())
        else:
            raw = bytearray((vals.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    deq = quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), t).astype(np.float32).reshape(-1)
    assert deq.size == n_values, (t, deq.size)
    out += struct.pack("<III", int(t), n_values, len(raw)) + bytes(raw) + deq.tobytes()
path = sys.argv[1] if len(sys.argv) > 1 else "crates/kernels/tests/data/dequant_vectors.bin"
open(path, "wb").write(out)
print(f"wrote {path}: {len(out)} bytes, {len(TYPES)} types")
