#!/usr/bin/env python3
"""Bit-exact dequantization vectors for kernel unit tests: for each TYPE=file.gguf, 1024 values of real
quantized weights (whole blocks, from the first tensor of that type, starting at its 9th row) and what
ggml's to_float (libggml-base, through ctypes) makes of them; where gguf-py can dequantize the type too,
its result must be bit-identical to ggml's or this script fails.

usage: dequant_vectors.py LIBGGML_BASE OUT_DIR TYPE=file.gguf [TYPE=file.gguf ...]
Writes OUT_DIR/<TYPE>.bin, one record in the format of crates/kernels/tests/data/dequant_vectors.bin
(little-endian: u32 ggml type id, u32 n_values, u32 n_bytes, n_bytes raw block bytes, n_values f32),
and OUT_DIR/index.json (type id, block size and bytes, source tensor, vec_dot_type, gguf-py check)."""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGUFReader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ggml_deq import Ggml  # noqa: E402

N_VALUES = 1024
SKIP_ROWS = 8
# type_traits_cpu[type].vec_dot_type in ggml/src/ggml-cpu/ggml-cpu.c (the same on every x86 build)
VEC_DOT = {"Q4_1": "Q8_1", "Q5_1": "Q8_1", "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q5_K": "Q8_K",
           "IQ1_S": "Q8_K", "IQ1_M": "Q8_K", "IQ2_XXS": "Q8_K", "IQ2_XS": "Q8_K", "IQ2_S": "Q8_K",
           "IQ3_XXS": "Q8_K", "IQ3_S": "Q8_K", "IQ4_NL": "Q8_0", "IQ4_XS": "Q8_K", "TQ1_0": "Q8_K",
           "TQ2_0": "Q8_K", "MXFP4": "Q8_0", "NVFP4": "Q8_0", "Q1_0": "Q8_0", "Q2_0": "Q8_0"}

g = Ggml(sys.argv[1])
out_dir = sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
index = {}
for arg in sys.argv[3:]:
    name, path = arg.split("=", 1)
    r = GGUFReader(path)
    t = next(t for t in r.tensors if t.tensor_type.name == name)
    tr = g.traits(int(t.tensor_type))
    row_bytes = int(t.shape[0]) // tr.blck_size * tr.type_size
    n_bytes = N_VALUES // tr.blck_size * tr.type_size
    flat = np.asarray(t.data).view(np.uint8).reshape(-1)
    raw = flat[SKIP_ROWS * row_bytes: SKIP_ROWS * row_bytes + n_bytes].tobytes()
    assert len(raw) == n_bytes
    deq = g.dequantize(int(t.tensor_type), raw)
    assert deq.size == N_VALUES and np.isfinite(deq).all()
    try:
        ref = gguf.quants.dequantize(np.frombuffer(raw, dtype=np.uint8), t.tensor_type)
        ref = ref.astype(np.float32).reshape(-1)
        assert ref.tobytes() == deq.tobytes(), f"{name}: gguf-py differs from ggml"
        check = "gguf-py bit-identical to ggml"
    except NotImplementedError:
        check = "gguf-py cannot dequantize this type; ggml only"
    rec = struct.pack("<III", int(t.tensor_type), N_VALUES, len(raw)) + raw + deq.astype("<f4").tobytes()
    open(os.path.join(out_dir, f"{name}.bin"), "wb").write(rec)
    index[name] = {"ggml_type_id": int(t.tensor_type), "block_values": tr.blck_size, "block_bytes": tr.type_size,
                   "n_values": N_VALUES, "n_bytes": len(raw), "vec_dot_type": VEC_DOT[name],
                   "source": f"{os.path.basename(path)}: {t.name}, rows {SKIP_ROWS}.. "
                             f"(row length {int(t.shape[0])})",
                   "check": check}
    print(f"{name}: {len(rec)} bytes from {t.name} ({check})")
open(os.path.join(out_dir, "index.json"), "w").write(json.dumps(index, indent=1) + "\n")
