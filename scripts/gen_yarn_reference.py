#!/usr/bin/env python3
"""Reference logits for YaRN RoPE scaling from llama.cpp itself.

No fixture model uses YaRN, so this adds the rope-scaling keys to two fixture models (llama and
deepseek2, whose graph also rescales attention), runs llama.cpp's `dump_logits` (built from
../shared/fixtures/tools/dump_logits_gen.c against the peer build, see ../shared/peer) on the
fixture token sequence, and writes crates/models/tests/data/<model>-yarn.batched.f32.
crates/models/tests/parity.rs adds the same keys in memory and compares.

    python3 scripts/gen_yarn_reference.py /tmp/dump_logits
Needs numpy and gguf-py (llama.cpp's gguf-py folder on PYTHONPATH).
"""
import json
import struct
import subprocess
import sys

from gguf import GGUFReader

FIX = "../shared/fixtures"
# (model, extra metadata: key -> (gguf type id, value))
CASES = {
    "llama-f32": {
        "llama.rope.scaling.type": (8, "yarn"),
        "llama.rope.scaling.factor": (6, 4.0),
        "llama.rope.scaling.original_context_length": (4, 32),
    },
    "deepseek2-f32": {
        "deepseek2.rope.scaling.type": (8, "yarn"),
        "deepseek2.rope.scaling.factor": (6, 4.0),
        "deepseek2.rope.scaling.original_context_length": (4, 32),
        "deepseek2.rope.scaling.yarn_log_multiplier": (6, 0.0707),
    },
}


def kv_bytes(key, ty, value):
    k = key.encode()
    out = struct.pack("<Q", len(k)) + k + struct.pack("<I", ty)
    if ty == 8:
        v = value.encode()
        return out + struct.pack("<Q", len(v)) + v
    if ty == 6:
        return out + struct.pack("<f", value)
    if ty == 4:
        return out + struct.pack("<I", value)
    raise ValueError(ty)


def with_keys(src, dst, extra):
    r = GGUFReader(src)
    raw = open(src, "rb").read()
    n_tensors, n_kv = struct.unpack_from("<QQ", raw, 8)
    info_start = r.tensors[0].field.offset
    last = r.tensors[-1].field
    info_end = last.offset + sum(p.nbytes for p in last.parts)
    align = 32
    body = raw[24:info_start] + b"".join(kv_bytes(k, t, v) for k, (t, v) in extra.items())
    head = raw[:8] + struct.pack("<QQ", n_tensors, n_kv + len(extra)) + body + raw[info_start:info_end]
    head += b"\0" * (-len(head) % align)
    open(dst, "wb").write(head + raw[r.data_offset:])


def main():
    dump = sys.argv[1]
    for model, extra in CASES.items():
        src = f"{FIX}/models/{model}.gguf"
        tmp = f"/tmp/{model}-yarn.gguf"
        with_keys(src, tmp, extra)
        ids = json.load(open(f"{FIX}/expected/{model}.json"))["token_ids"]
        out = f"crates/models/tests/data/{model}-yarn.batched.f32"
        subprocess.run([dump, tmp, out] + [str(i) for i in ids], check=True, capture_output=True)
        print("wrote", out)


if __name__ == "__main__":
    main()
