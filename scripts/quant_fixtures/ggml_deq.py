#!/usr/bin/env python3
"""ggml's own dequantization (type_traits[type].to_float in libggml-base) through ctypes, for the types
gguf-py cannot dequantize (Q1_0, Q2_0 in llama-cpp-python 0.3.36) and to check gguf-py against ggml.

As a program: python ggml_deq.py LIBGGML_BASE in.gguf out.gguf -- like ../shared/fixtures/tools/
dequant_gguf.py (same metadata, every tensor to F32), but with ggml's to_float instead of gguf-py."""
import ctypes
import sys

import numpy as np

TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


class TypeTraits(ctypes.Structure):  # struct ggml_type_traits, ggml/include/ggml.h
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


class Ggml:
    def __init__(self, lib_path):
        self.lib = ctypes.CDLL(lib_path)
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]

    def traits(self, type_id):
        return self.lib.ggml_get_type_traits(int(type_id)).contents

    def dequantize(self, type_id, raw):
        """raw: bytes of whole blocks -> float32 array, ggml's to_float."""
        t = self.traits(type_id)
        raw = bytes(raw)
        assert len(raw) % t.type_size == 0, (t.type_name, len(raw))
        n = len(raw) // t.type_size * t.blck_size
        out = np.empty(n, dtype=np.float32)
        src = ctypes.create_string_buffer(raw, len(raw))
        TO_FLOAT(t.to_float)(ctypes.cast(src, ctypes.c_void_p), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
        return out


def main():
    import gguf
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    g = Ggml(sys.argv[1])
    r = GGUFReader(sys.argv[2])
    w = GGUFWriter(sys.argv[3], r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if k == "general.file_type":
            w.add_uint32(k, int(gguf.LlamaFileType.ALL_F32))
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), t, sub_type=f.types[1])
        else:
            w.add_key_value(k, f.contents(), t)
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape)]
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            a = np.array(t.data, dtype=np.float32)
        else:
            a = g.dequantize(int(t.tensor_type), np.asarray(t.data).tobytes())
        w.add_tensor(t.name, a.reshape(shape))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    print("wrote", sys.argv[3], "(ggml to_float)")


if __name__ == "__main__":
    main()
