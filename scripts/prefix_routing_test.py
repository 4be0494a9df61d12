#!/usr/bin/env python3
"""Three `frugal serve` replicas behind a router written here, standing in for the Gateway API
Inference Extension's endpoint picker: prefix affinity from the replicas' KV-cache events against
round-robin, on traffic whose prompts share long prefixes.

The router knows only what a real one knows: each replica's KV-cache events (ZeroMQ, vLLM's
schema and block hashes; it hashes each prompt's blocks the same way and counts how many leading
blocks a replica announced) and its /metrics (vllm:num_requests_waiting,
vllm:num_requests_running, vllm:kv_cache_usage_perc). Each policy starts three fresh replicas and
sends the same requests (prompts as token ids: a group's shared prefix and a unique suffix),
streamed, several at once; it reports the prompt tokens served from cache (from each response's
usage) and the median time to first token.

    scripts/prefix_routing_test.py --frugal target/release/frugal --model MODEL.gguf \\
        --prefix 512 --suffix 32 --groups 6 --requests 120 --kv-tokens 2048 --concurrency 3

With --check (CI, on a fixture model) it also asserts that prefix affinity serves more of the
prompts from cache than round-robin, and that every response's cached tokens are what the
replica's announced blocks predicted when the request was routed (when nothing was in flight).
Needs pyzmq and msgpack.
"""

import argparse
import json
import random
import re
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import msgpack
import zmq

from serve_process import Server, free_port
from vllm_blocks import BLOCK, block_hashes


class Replica:
    def __init__(self, name, base):
        self.name, self.base = name, base
        self.blocks = set()
        self.waiting = self.running = 0
        self.kv_usage = 0.0


class Router:
    """What the endpoint picker knows, kept current by a subscriber thread and a scraper."""

    def __init__(self, replicas, sub):
        self.replicas = {r.name: r for r in replicas}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.rr = 0
        self.rng = random.Random(1)
        self.threads = [threading.Thread(target=self.events, args=(sub,), daemon=True),
                        threading.Thread(target=self.scrape, daemon=True)]
        for t in self.threads:
            t.start()

    def events(self, sub):
        while not self.stop.is_set():
            if not sub.poll(100):
                continue
            topic, _, payload = sub.recv_multipart()
            replica = self.replicas[topic.decode().split("@")[1]]
            _, events, _ = msgpack.unpackb(payload)
            with self.lock:
                for e in events:
                    if e["type"] == "BlockStored":
                        replica.blocks.update(e["block_hashes"])
                    elif e["type"] == "BlockRemoved":
                        replica.blocks.difference_update(e["block_hashes"])
                    else:
                        replica.blocks.clear()

    def scrape(self):
        gauges = {"vllm:num_requests_waiting": "waiting", "vllm:num_requests_running": "running",
                  "vllm:kv_cache_usage_perc": "kv_usage"}
        while not self.stop.is_set():
            for r in self.replicas.values():
                try:
                    with urllib.request.urlopen(r.base + "/metrics", timeout=2) as resp:
                        text = resp.read().decode()
                except OSError:
                    continue
                for line in text.splitlines():
                    m = re.match(r"^(vllm:[a-z_]+)\{[^}]*\} (\S+)$", line)
                    if m and m.group(1) in gauges:
                        with self.lock:
                            setattr(r, gauges[m.group(1)], float(m.group(2)))
            time.sleep(0.05)

    def cached_blocks(self, replica, hashes):
        n = 0
        while n < len(hashes) and hashes[n] in replica.blocks:
            n += 1
        return n

    def pick(self, policy, prompt):
        """The replica for `prompt`, and the prompt tokens it is predicted to have cached."""
        hashes = block_hashes(prompt[:len(prompt) - 1])
        with self.lock:
            replicas = list(self.replicas.values())
            if policy == "round-robin":
                r = replicas[self.rr % len(replicas)]
                self.rr += 1
            else:
                # The picker's default profile: prefix 3, queue 2, KV-cache use 2.
                def score(r):
                    prefix = self.cached_blocks(r, hashes) / max(len(hashes), 1)
                    queue = 1 / (1 + r.waiting + r.running)
                    return 3 * prefix + 2 * queue + 2 * (1 - r.kv_usage)
                scores = [score(r) for r in replicas]
                # Ties are broken at random, as the picker's max-score picker does.
                r = self.rng.choice([r for r, s in zip(replicas, scores) if s >= max(scores) - 1e-9])
            return r, self.cached_blocks(r, hashes) * BLOCK

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def stream(base, prompt, max_tokens):
    """TTFT in seconds and the usage of a streamed completion."""
    body = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t0 = time.monotonic()
    ttft, usage = None, None
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices"):
                ttft = time.monotonic() - t0
            usage = chunk.get("usage") or usage
    return ttft, usage


def workload(args, vocab):
    rng = random.Random(7)
    groups = [[rng.randrange(1, vocab) for _ in range(args.prefix)] for _ in range(args.groups)]
    # Each group's requests come in bursts, as conversations and agents do.
    order = [rng.randrange(args.groups) for _ in range(args.requests)]
    return [groups[g] + [rng.randrange(1, vocab) for _ in range(args.suffix)] for g in order]


def run_policy(args, policy, prompts):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    port = free_port()
    sub.bind(f"tcp://127.0.0.1:{port}")
    servers = [Server([args.frugal, "serve", args.model, "--host", "127.0.0.1", "--port", "0",
                       "-t", str(args.threads), "-c", str(args.prefix + args.suffix + args.max_tokens + 16),
                       "--kv-tokens", str(args.kv_tokens), "--max-seqs", "4",
                       "--kv-events-endpoint", f"tcp://127.0.0.1:{port}",
                       "--kv-events-topic", f"kv@r{i}@{{model}}"], quiet=True) for i in range(3)]
    try:
        replicas = [Replica(f"r{i}", s.wait_ready(120)) for i, s in enumerate(servers)]
        router = Router(replicas, sub)
        sub_ready = time.monotonic() + 1.0
        while time.monotonic() < sub_ready:
            time.sleep(0.05)  # the subscriber thread polls: libzmq sends its subscription
        results, lock = [], threading.Lock()
        in_flight = [0]

        def one(prompt):
            with lock:
                alone = in_flight[0] == 0
                in_flight[0] += 1
            replica, predicted = router.pick(policy, prompt)
            ttft, usage = stream(replica.base, prompt, args.max_tokens)
            with lock:
                in_flight[0] -= 1
                results.append((replica.name, ttft, usage, predicted, alone))

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, prompts))
        router.close()
        return results
    except Exception:
        for s in servers:
            print(f"--- server log ---\n{s.log_text()[-3000:]}", flush=True)
        raise
    finally:
        for s in servers:
            s.stop()
            s.cleanup()
        sub.close()


def summary(policy, results):
    prompt = sum(u["prompt_tokens"] for _, _, u, _, _ in results)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for _, _, u, _, _ in results)
    ttfts = sorted(t for _, t, _, _, _ in results)
    spread = {r: sum(1 for n, *_ in results if n == r) for r in ("r0", "r1", "r2")}
    print(f"{policy:>15}: prefix hit rate {cached / prompt:6.1%} ({cached}/{prompt} prompt tokens), "
          f"median TTFT {statistics.median(ttfts) * 1e3:7.1f} ms, p90 "
          f"{ttfts[int(0.9 * (len(ttfts) - 1))] * 1e3:7.1f} ms, requests per replica {spread}", flush=True)
    return cached / prompt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--vocab", type=int, default=560, help="token ids are drawn below this")
    ap.add_argument("--prefix", type=int, default=96)
    ap.add_argument("--suffix", type=int, default=16)
    ap.add_argument("--groups", type=int, default=6)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--kv-tokens", type=int, default=384)
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="assert affinity beats round-robin")
    args = ap.parse_args()
    prompts = workload(args, args.vocab)
    print(f"3 replicas, {args.requests} requests in {args.groups} groups, prefix {args.prefix} + "
          f"suffix {args.suffix} tokens, {args.max_tokens} generated, KV cache {args.kv_tokens} tokens "
          f"per replica, {args.concurrency} at once", flush=True)
    rates = {}
    for policy in ("round-robin", "prefix-affinity"):
        results = run_policy(args, policy, prompts)
        rates[policy] = summary(policy, results)
        if args.check and policy == "prefix-affinity":
            for name, _, usage, predicted, alone in results:
                got = usage["prompt_tokens_details"]["cached_tokens"]
                assert not alone or got == predicted, f"{name}: cached {got}, events predicted {predicted}"
    if args.check:
        assert rates["prefix-affinity"] > rates["round-robin"], rates
        print("prefix routing: all checks passed")


if __name__ == "__main__":
    main()
