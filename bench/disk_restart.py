#!/usr/bin/env python3
"""Time to first token of a long prompt from the prefix cache's disk tier after a restart.

Starts `frugal serve --cache-dir DIR` on an empty directory and measures, for one prompt of about
`--prompt-tokens` tokens (max_tokens 1, streamed):

* cold: the first request, prefilled from nothing (its blocks are then written to DIR);
* RAM: the same prompt again on the same server (the RAM prefix cache);
* restart: the server stopped (SIGTERM; queued blocks are written) and started again on DIR,
  then the same prompt (read back from disk).

Each is repeated `--repeat` times with a new directory and a new prompt; the medians are printed
with the ratio restart/cold. The issue's target: restart <= 10 % of cold (0.5B shape, 2 threads).
Stdlib only; imports serve_compare.py's helpers.

    python3 bench/disk_restart.py --frugal target/release/frugal --threads 2 \
        bench/models/qwen2.5-0.5b-Q4_0.gguf
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_compare import Server, cpu_name, free_port, loadavg, stream_completion, text_of  # noqa: E402


def serve(args, cache_dir, port):
    cmd = [args.frugal, "serve", args.model, "--host", "127.0.0.1", "--port", str(port),
           "-t", str(args.threads), "-c", str(args.ctx), "--max-seqs", "1",
           "--cache-dir", cache_dir, "--kv-type", args.kv_type]
    return Server("frugal", cmd, port, args.startup_timeout)


def one_round(args, seed):
    cache_dir = tempfile.mkdtemp(prefix="frugal-disk-restart-")
    # These words are one token each (Qwen's, Llama's vocabularies).
    body = {"prompt": text_of(args.prompt_tokens, seed), "max_tokens": 1,
            "temperature": 0}
    try:
        port = free_port()
        s = serve(args, cache_dir, port)
        cold, _, _ = stream_completion(port, body, args.timeout)
        ram, _, _ = stream_completion(port, body, args.timeout)
        s.stop()
        port = free_port()
        s = serve(args, cache_dir, port)
        restart, _, _ = stream_completion(port, body, args.timeout)
        s.stop()
        return cold, ram, restart
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--frugal", default="target/release/frugal")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=4000)
    p.add_argument("--ctx", type=int, default=8192)
    p.add_argument("--kv-type", default="f16")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--startup-timeout", type=float, default=120)
    args = p.parse_args()
    rows = [one_round(args, seed) for seed in range(args.repeat)]
    cold, ram, restart = (statistics.median(r[i] for r in rows) for i in range(3))
    print(f"# {cpu_name()}, {args.threads} threads, {loadavg()}")
    print(f"# {os.path.basename(args.model)}, ~{args.prompt_tokens}-token prompt, KV {args.kv_type}, "
          f"median of {args.repeat}")
    print("| TTFT | seconds | of cold |")
    print("|---|---|---|")
    for name, t in (("cold prefill", cold), ("RAM prefix cache", ram), ("disk tier after restart", restart)):
        print(f"| {name} | {t:.3f} | {t / cold * 100:.1f} % |")


if __name__ == "__main__":
    main()
