#!/usr/bin/env python3
"""Bit-exact dequantization vectors for the kernels' tests, from gguf-py (whose dequantization is
bit-identical to ggml's: ../shared/fixtures/tools/check_deq.c proves it per file).

For each type: random block bytes (every bit pattern; blocks whose values are not all finite and
below 1e4 in magnitude are drawn again) and what gguf-py dequantizes them to:
  crates/kernels/tests/data/dequant/<TYPE>.blocks  raw blocks, ggml layout
  crates/kernels/tests/data/dequant/<TYPE>.f32     little-endian f32, block_len values per block

Run with gguf-py of the peer's llama.cpp tree (../shared/peer/README.md):
  PYTHONPATH=.peer/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py .peer-venv/bin/python \
      scripts/gen_dequant_vectors.py IQ2_XXS IQ4_NL ...

Types gguf-py cannot dequantize (Q1_0, Q2_0) are dequantized by ggml itself instead: its
`to_float` from the peer's libggml-base.so (.peer/build/bin, or the file named by GGML_BASE_LIB).
"""
import ctypes
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
from gguf.quants import dequantize

OUT = Path(__file__).resolve().parent.parent / "crates/kernels/tests/data/dequant"
BLOCKS = 16
GGML_BASE_LIB = os.environ.get("GGML_BASE_LIB", ".peer/build/bin/libggml-base.so")


class _TypeTraits(ctypes.Structure):
    # ggml.h's struct ggml_type_traits
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


def ggml_dequantize(raw: np.ndarray, qtype, block_len: int) -> np.ndarray:
    lib = ctypes.CDLL(GGML_BASE_LIB)
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    traits = lib.ggml_get_type_traits(int(qtype)).contents
    to_float = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(traits.to_float)
    src = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.zeros(block_len, dtype=np.float32)
    to_float(src.ctypes.data, out.ctypes.data, block_len)
    return out


def dequant(raw: np.ndarray, qtype, block_len: int) -> np.ndarray:
    try:
        return dequantize(raw, qtype).astype(np.float32).reshape(-1)
    except NotImplementedError:
        return ggml_dequantize(raw, qtype, block_len)


def vectors(name: str, seed: int):
    qtype = GGMLQuantizationType[name]
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks, values = [], []
    while len(blocks) < BLOCKS:
        raw = rng.integers(0, 256, block_bytes, dtype=np.uint8)
        with np.errstate(all="ignore"):
            v = dequant(raw, qtype, block_len)
        if v.size == block_len and np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e4):
            blocks.append(raw)
            values.append(v)
    return np.concatenate(blocks), np.concatenate(values)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sys.argv[1:]):
        raw, vals = vectors(name, 1000 + sum(map(ord, name)))
        (OUT / f"{name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"{name}.f32").write_bytes(vals.astype("<f4").tobytes())
        print(f"{name}: {BLOCKS} blocks, {raw.size} bytes, {vals.size} values")


if __name__ == "__main__":
    main()
