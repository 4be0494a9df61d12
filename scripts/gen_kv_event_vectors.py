#!/usr/bin/env python3
"""Writes crates/kvevents/tests/data/vllm_vectors.json: block hashes and encoded KV-event batches
computed by vLLM's own code, which frugal's KV events must reproduce exactly.

Needs vLLM importable (its pure-Python parts suffice; nothing runs a model):
    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install --no-deps vllm==0.34.0
    # then pip install whatever `import vllm.v1.core.block_pool` reports missing (torch CPU,
    # msgspec, cbor2, pyzmq, …)
    /tmp/vllm-venv/bin/python scripts/gen_kv_event_vectors.py
"""
import json
import os
import sys
from pathlib import Path

import msgspec
import vllm
from vllm.distributed.kv_events import KVEventBatch
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core import kv_cache_utils
from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import (
    get_request_block_hasher,
    init_none_hash,
    maybe_convert_block_hash,
)
from vllm.v1.request import Request

BLOCK = 16
OUT = Path(__file__).resolve().parent.parent / "crates/kvevents/tests/data/vllm_vectors.json"

# Token sequences: small ids (pickle's one-byte ints), two-byte ids, ids past 65535 (Qwen's
# vocabulary), a partial last block (not hashed), and 0.
TOKENS = [
    list(range(1, 49)),
    [151643, 151644, 872, 198] + [(i * 7919) % 152000 for i in range(60)],
    [0] * 16 + [255, 256, 65535, 65536] * 4 + [42],
]


def init(algo, seed):
    if seed is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = seed
    fn = get_hash_fn_by_name(algo)
    init_none_hash(fn)
    return fn


def request(rid, tokens, fn, salt=None):
    return Request(
        request_id=rid,
        prompt_token_ids=tokens,
        sampling_params=SamplingParams(max_tokens=1),
        pooling_params=None,
        cache_salt=salt,
        block_hasher=get_request_block_hasher(BLOCK, fn),
    )


def chains():
    out = []
    for algo in ["sha256", "sha256_cbor"]:
        for seed in [None, "0"]:
            fn = init(algo, seed)
            for salt in [None, "tenant-a"]:
                for i, tokens in enumerate(TOKENS):
                    r = request(f"c{i}", tokens, fn, salt)
                    out.append({
                        "algo": algo,
                        "python_hash_seed": seed,
                        "none_hash": kv_cache_utils.NONE_HASH.hex(),
                        "cache_salt": salt,
                        "tokens": tokens,
                        "hashes": [h.hex() for h in r.block_hashes],
                        "event_hashes": [maybe_convert_block_hash(h) for h in r.block_hashes],
                    })
    return out


def events(medium):
    """A block pool's events as vLLM's scheduler publishes them: blocks cached for two requests
    (one salted), evicted to make room, then the whole cache reset."""
    fn = init("sha256", None)
    pool = BlockPool(num_gpu_blocks=6, enable_caching=True, hash_block_size=BLOCK,
                     enable_kv_cache_events=True, medium=medium)
    batches = []
    a = request("a", TOKENS[0], fn)
    blocks_a = pool.get_new_blocks(3)
    pool.cache_full_blocks(a, blocks_a, 0, 3, BLOCK, 0)
    b = request("b", TOKENS[0][:32], fn, salt="tenant-a")
    blocks_b = pool.get_new_blocks(2)
    pool.cache_full_blocks(b, blocks_b, 0, 2, BLOCK, 0)
    batches.append(pool.take_events())
    pool.free_blocks(reversed(blocks_a))
    pool.free_blocks(reversed(blocks_b))
    pool.get_new_blocks(4)  # evicts cached blocks, least recently freed last
    batches.append(pool.take_events())
    pool2 = BlockPool(num_gpu_blocks=4, enable_caching=True, hash_block_size=BLOCK,
                      enable_kv_cache_events=True, medium=medium)
    pool2.reset_prefix_cache()
    batches.append(pool2.take_events())
    enc = msgspec.msgpack.Encoder()
    out = []
    for i, evs in enumerate(batches):
        batch = KVEventBatch(ts=1765000000.0 + i / 4, events=evs, data_parallel_rank=0)
        out.append({
            "medium": medium,
            "ts": batch.ts,
            "payload_hex": enc.encode(batch).hex(),
            "decoded": msgspec.to_builtins(batch),
        })
    return out


def main():
    data = {
        "generated_by": f"scripts/gen_kv_event_vectors.py with vLLM {vllm.__version__}, "
                        f"Python {sys.version.split()[0]}",
        "block_size": BLOCK,
        "chains": chains(),
        "batches": events("GPU") + events("CPU"),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
