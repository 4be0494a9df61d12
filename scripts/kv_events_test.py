#!/usr/bin/env python3
"""frugal's KV-cache events through a ZeroMQ subscriber, as a router (llm-d, the Gateway API
Inference Extension's precise prefix scorer) consumes vLLM's.

Starts `frugal serve` with `--kv-events-endpoint` and a replay endpoint and a small KV cache,
subscribes, sends completions (prompts as token ids) that share prefixes, carry a cache_salt and
overflow the cache, and checks:
- the wire format: frames [topic, 8-byte big-endian sequence number, msgpack payload], the
  payload vLLM's `KVEventBatch` ([ts, events, data_parallel_rank]) with its events' fields;
- every stored block's hash is vLLM's (sha256 of the pickle of (parent, tokens, extra_keys),
  the chain starting from sha256(pickle("vllm-none-hash")), the last 8 bytes as an integer),
  computed here from the prompt's tokens, and a salted prefix's first block mixes in its salt;
- the index the events build (stored minus removed) predicts each request's cached prompt
  tokens exactly as the server reports them (`usage.prompt_tokens_details.cached_tokens`), and
  never holds more blocks than the cache has;
- the replay endpoint resends every batch from a sequence number on, then the end marker;
- a replica started before its router, and a router that restarts, are connected to;
- SIGTERM ends with AllBlocksCleared.
Needs pyzmq and msgpack.
"""

import argparse
import json
import sys
import time
import urllib.request

import msgpack
import zmq

from serve_process import Server, free_port
from vllm_blocks import BLOCK, block_hashes

KV_BLOCKS = 16
STORED_KEYS = ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
               "medium", "lora_name", "extra_keys", "group_idx"]


class Index:
    """What a router knows of the replica's cache: the blocks announced and not removed."""

    def __init__(self, joined_late=False):
        self.live, self.batches, self.next_seq, self.cleared = {}, [], 0, False
        # A router that (re)starts after the replica missed what came before: it cannot check
        # parents and removals against blocks it never saw.
        self.joined_late = joined_late

    def apply(self, frames):
        topic, seq, payload = frames
        assert topic == b"kv@test@frugal-model", topic
        seq = int.from_bytes(seq, "big")
        if self.joined_late and not self.batches:
            self.next_seq = seq
        assert seq == self.next_seq, (seq, self.next_seq)
        self.next_seq += 1
        self.batches.append((seq, payload))
        batch = msgpack.unpackb(payload)
        assert isinstance(batch, list) and len(batch) == 3, batch
        ts, events, rank = batch
        assert isinstance(ts, float) and abs(ts - time.time()) < 60 and rank == 0, batch
        for e in events:
            self.event(e)

    def event(self, e):
        kind = e["type"]
        if kind == "BlockStored":
            assert list(e) == STORED_KEYS, list(e)
            n = len(e["block_hashes"])
            assert e["block_size"] == BLOCK and len(e["token_ids"]) == n * BLOCK, e
            assert e["medium"] == "CPU" and e["group_idx"] == 0 and len(e["extra_keys"]) == n, e
            parent = e["parent_block_hash"]
            assert parent is None or parent in self.live or self.joined_late, f"parent {parent} not announced"
            for i, h in enumerate(e["block_hashes"]):
                assert h not in self.live or self.joined_late, f"block {h} stored twice"
                self.live[h] = (e["token_ids"][i * BLOCK:(i + 1) * BLOCK], parent if i == 0 else None)
        elif kind == "BlockRemoved":
            assert list(e) == ["type", "block_hashes", "medium", "group_idx"], e
            for h in e["block_hashes"]:
                assert h in self.live or self.joined_late, f"removed block {h} was never stored"
                self.live.pop(h, None)
        elif kind == "AllBlocksCleared":
            self.live.clear()
            self.cleared = True
        else:
            raise AssertionError(f"unknown event {e}")
        assert len(self.live) <= KV_BLOCKS, len(self.live)

    def cached_tokens(self, prompt, salt=None):
        """The prompt tokens a replica with these blocks skips (never the last one)."""
        hashes = block_hashes(prompt[:len(prompt) - 1], salt)
        n = 0
        while n < len(hashes) and hashes[n] in self.live:
            n += 1
        return n * BLOCK


def drain(sub, index, quiet=0.3):
    """Applies batches until none arrives for `quiet` seconds."""
    while sub.poll(int(quiet * 1000)):
        index.apply(sub.recv_multipart())


def complete(base, prompt, salt=None):
    body = {"model": "m", "prompt": prompt, "max_tokens": 1, "temperature": 0}
    if salt:
        body["cache_salt"] = salt
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        usage = json.load(r)["usage"]
    return usage["prompt_tokens_details"]["cached_tokens"]


def tokens(seed, n):
    # The fixture models have a vocabulary of 576.
    return [1 + (seed * 7919 + i * 104729) % 560 for i in range(n)]


def exercise(base, sub, index):
    a = tokens(1, 50)
    shared = a[:32] + tokens(2, 18)
    requests = [(a, None), (a, None), (shared, None), (a, "tenant-a"), (a, "tenant-a")]
    requests += [(tokens(10 + k, 60), None) for k in range(6)]  # 24 blocks: evictions
    requests += [(a, None), (shared, None), (a, "tenant-a")]
    stored_before = 0
    for prompt, salt in requests:
        expected = index.cached_tokens(prompt, salt)
        got = complete(base, prompt, salt)
        assert got == expected, f"cached tokens: server {got}, events predict {expected}"
        drain(sub, index)
        for i, h in enumerate(block_hashes(prompt[:len(prompt) - 1], salt)):
            if h in index.live:
                assert index.live[h][0] == prompt[i * BLOCK:(i + 1) * BLOCK]
        stored_before = max(stored_before, len(index.live))
    removed = sum(1 for _, p in index.batches for e in msgpack.unpackb(p)[1] if e["type"] == "BlockRemoved")
    salted = [e for _, p in index.batches for e in msgpack.unpackb(p)[1]
              if e["type"] == "BlockStored" and e["extra_keys"][0] == ["tenant-a"]]
    assert removed > 0, "the cache never evicted"
    assert salted and salted[0]["block_hashes"][0] == block_hashes(a, "tenant-a")[0], salted
    print(f"ok events: {len(index.batches)} batches, {removed} blocks removed, "
          f"{len(index.live)} live of {KV_BLOCKS}", flush=True)


def check_replay(port, index):
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    start = 2
    dealer.send_multipart([b"", start.to_bytes(8, "big")])
    got = []
    while True:
        assert dealer.poll(5000), "no replay answer"
        empty, seq, payload = dealer.recv_multipart()
        assert empty == b""
        if seq == (-1).to_bytes(8, "big", signed=True):
            assert payload == b""
            break
        got.append((int.from_bytes(seq, "big"), payload))
    assert got == index.batches[start:], (len(got), len(index.batches))
    dealer.close()
    print(f"ok replay: {len(got)} batches from sequence {start}", flush=True)


def subscriber(port):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    for _ in range(50):
        try:
            sub.bind(f"tcp://127.0.0.1:{port}")
            return sub
        except zmq.ZMQError:  # a closed socket releases its port in libzmq's own thread
            time.sleep(0.1)
    raise AssertionError(f"cannot bind port {port} again")


def check_router_restart(base, port):
    """A router that restarts is connected to again: a new prompt's blocks reach it."""
    sub, index = subscriber(port), Index(joined_late=True)
    prompt = tokens(99, 40)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        drain(sub, index, quiet=0.3)  # also sends the subscription to a reconnected peer
        complete(base, prompt)
        if sub.poll(2000):
            index.apply(sub.recv_multipart())
            drain(sub, index)
            assert block_hashes(prompt)[0] in index.live, index.live
            print("ok router restart: reconnected", flush=True)
            return sub, index
        prompt = tokens(100 + int(deadline - time.monotonic()), 40)
    raise AssertionError("no events after the router restarted")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    events_port, replay_port = free_port(), free_port()
    server = Server([args.frugal, "serve", args.model, "--host", "127.0.0.1", "--port", "0",
                     "--model-alias", "frugal-model", "-c", "256", "--kv-tokens", str(KV_BLOCKS * BLOCK),
                     "--max-seqs", "2", "-t", "1", "--shutdown-timeout", "5",
                     "--kv-events-endpoint", f"tcp://127.0.0.1:{events_port}",
                     "--kv-events-replay-endpoint", f"tcp://*:{replay_port}",
                     "--kv-events-topic", "kv@test@{model}"])
    index = Index()
    try:
        # The router binds and replicas connect, as llm-d deploys it; the router may come up
        # after the replica (which must not wait for it) and restart.
        base = server.wait_ready(120)
        sub = subscriber(events_port)
        drain(sub, index, quiet=1.0)
        exercise(base, sub, index)
        check_replay(replay_port, index)
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert f"frugal_kv_events_batches_total {len(index.batches)}\n" in metrics, metrics
        assert "frugal_kv_events_dropped_total 0\n" in metrics, metrics
        sub.close(linger=0)
        sub, index = check_router_restart(base, events_port)
        status = server.stop()
        assert status == 0, f"exit status {status}"
        drain(sub, index, quiet=1.0)
        assert index.cleared and not index.live, "no AllBlocksCleared at shutdown"
        print("ok shutdown: AllBlocksCleared", flush=True)
    except Exception:
        print(f"--- server log ---\n{server.log_text()}", flush=True)
        raise
    finally:
        server.cleanup()
    print("kv events: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
