#!/usr/bin/env python3
"""Switching between two models on one `frugal serve`: what the first request to an unloaded model
costs, and whether the loaded model slows down meanwhile.

For each trial, a fresh server serves the two models (neither pinned). The first model (A) is
loaded and warmed by a few requests; then, while a long streaming request to A runs, the first
request to B is sent. Reported:

* B's first request: time to its first token, beside B's load time (`/metrics`,
  `frugal_model_load_seconds_total`) plus B's normal time to first token (measured after, loaded);
* A's time to first token and generation speed alone, and while B loads.

Every request generates exactly `--max-tokens` tokens greedily (`ignore_eos`, llama-server's
`/completion`). Stdlib only.

    python3 bench/multi_model.py --frugal target/release/frugal --threads 2 A.gguf B.gguf
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def stream(port, model, prompt, max_tokens):
    """(time to first token, tokens per second after it, tokens) of one streaming request."""
    body = json.dumps({"model": model, "prompt": prompt, "n_predict": max_tokens,
                       "ignore_eos": True, "temperature": 0, "stream": True})
    c = http.client.HTTPConnection(HOST, port, timeout=600)
    t0 = time.monotonic()
    c.request("POST", "/completion", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{model}: {r.status} {r.read()[:300]!r}")
    first, n = None, 0
    for line in r:
        if line.startswith(b"data: ") and b'"content"' in line:
            n += 1
            if first is None:
                first = time.monotonic()
    end = time.monotonic()
    c.close()
    tps = (n - 1) / (end - first) if n > 1 and end > first else 0.0
    return first - t0, tps, n


def metric(port, name):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(args, port, extra=()):
    cmd = [args.frugal, "serve", *args.models, "--port", str(port), "-t", str(args.threads),
           "-c", "1024", "--max-seqs", "4", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def trial(args, names):
    port = free_port()
    proc = start(args, port)
    a, b = names
    prompt = "Write a short story about a lighthouse keeper. " * 4
    try:
        stream(port, a, prompt, 8)  # loads A
        alone = [stream(port, a, prompt, args.max_tokens) for _ in range(3)]
        rss_a = rss_mib(proc.pid)
        during = {}

        def busy():
            time.sleep(0.05)
            during["a"] = stream(port, a, prompt, args.max_tokens)

        t = threading.Thread(target=busy)
        t.start()
        first_b = stream(port, b, prompt, 8)
        t.join()
        load_b = metric(port, f'frugal_model_load_seconds_total{{model_name="{b}"}}')
        normal_b = statistics.median(stream(port, b, prompt, 8)[0] for _ in range(3))
        rss_both = rss_mib(proc.pid)
        return {
            "a_alone_ttft": statistics.median(x[0] for x in alone),
            "a_alone_tps": statistics.median(x[1] for x in alone),
            "a_during_ttft": during["a"][0],
            "a_during_tps": during["a"][1],
            "b_first_ttft": first_b[0],
            "b_load": load_b,
            "b_normal_ttft": normal_b,
            "rss_a": rss_a,
            "rss_both": rss_both,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def unload_check(args, names):
    """RSS with one model loaded, then after switching to the other under a budget that holds
    one of them only (so the first is unloaded), and back."""
    port = free_port()
    sizes = [os.path.getsize(m) for m in args.models]
    # Room for the larger model and its KV cache, not for both models.
    budget = max(sizes) + min(sizes) // 2
    proc = start(args, port, ["--models-memory", str(budget)])
    try:
        rss = [rss_mib(proc.pid)]
        for name in [names[0], names[1], names[0]]:
            stream(port, name, "Hello", 4)
            time.sleep(0.5)
            rss.append(rss_mib(proc.pid))
        unloads = [metric(port, f'frugal_model_unloads_total{{model_name="{n}"}}') for n in names]
        return rss, unloads, budget
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frugal", default="target/release/frugal")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("models", nargs=2)
    args = p.parse_args()
    names = [os.path.splitext(os.path.basename(m))[0] for m in args.models]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, -t {args.threads}; "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = [trial(args, names) for _ in range(args.trials)]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for i, r in enumerate(rows):
        print(f"trial {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    a, b = names
    print(f"\nmedians of {args.trials} trials:")
    print(f"  {b}: first request, time to first token {med['b_first_ttft']:.3f} s; "
          f"load {med['b_load']:.3f} s + normal TTFT {med['b_normal_ttft']:.3f} s = "
          f"{med['b_load'] + med['b_normal_ttft']:.3f} s")
    print(f"  {a}: TTFT {med['a_alone_ttft']:.3f} s alone, {med['a_during_ttft']:.3f} s while "
          f"{b} loads; {med['a_alone_tps']:.1f} tokens/s alone, {med['a_during_tps']:.1f} while")
    print(f"  RSS: {med['rss_a']:.0f} MiB with {a}, {med['rss_both']:.0f} MiB with both")
    rss, unloads, budget = unload_check(args, names)
    print(f"\n--models-memory {budget >> 20} MiB (one model at a time): RSS {rss[0]:.0f} MiB "
          f"empty, {rss[1]:.0f} with {a}, {rss[2]:.0f} after switching to {b}, {rss[3]:.0f} "
          f"back on {a}; unloads {unloads[0]:.0f} of {a}, {unloads[1]:.0f} of {b}")


if __name__ == "__main__":
    main()
