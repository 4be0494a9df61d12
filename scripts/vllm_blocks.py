"""vLLM's prefix-caching block hashes as its KV events carry them, for the Python checks: SHA-256
of the pickle of (parent, block tokens, extra keys), chained from SHA-256 of the pickled seed
"vllm-none-hash" (vLLM's default), a cache_salt in the first block's extra keys, the last 8 bytes
of each hash as an integer."""

import hashlib
import pickle

BLOCK = 16


def _sha256(value):
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


NONE_HASH = _sha256("vllm-none-hash")


def block_hashes(tokens, salt=None):
    """The event hashes of `tokens`' full blocks, in order."""
    parent, out = NONE_HASH, []
    for i in range(len(tokens) // BLOCK):
        extra = (("cache_salt", salt),) if salt and i == 0 else None
        parent = _sha256((parent, tuple(tokens[i * BLOCK:(i + 1) * BLOCK]), extra))
        out.append(int.from_bytes(parent, "big") & ((1 << 64) - 1))
    return out
