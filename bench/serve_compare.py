#!/usr/bin/env python3
"""Compare `frugal serve` with llama.cpp's `llama-server` on the same GGUF file and thread count.

Starts one server at a time (frugal, then llama-server) with 16 parallel sequences of the same
context each, and measures over HTTP, with streaming `/v1/completions` requests:

* for 1, 8 and 16 concurrent clients: aggregate generation throughput (completion tokens of all
  requests / wall time from the first request sent to the last token received) and the median
  time to first token;
* the time to first token of a request whose long prefix (~1500 tokens) is cold, and of one whose
  prefix is already in the server's cache (the same prefix sent once before, a different suffix).

Every request generates exactly `--max-tokens` tokens, greedily: the end-of-generation tokens (read
from `frugal info --json`) get a logit bias of -100 on both servers, and llama-server also gets
`ignore_eos`. Prompts of the throughput runs start with a unique request number, so neither server
reuses a cached prefix there. Stdlib only.

    python3 bench/serve_compare.py --frugal target/release/frugal --threads 2 \
        bench/models/qwen2.5-0.5b-Q4_0.gguf
"""
import argparse
import http.client
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def loadavg():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class Server:
    """A server process; its output goes to a log file shown if it fails to start."""

    def __init__(self, name, cmd, port, startup_timeout):
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"serve-compare-{name}-", suffix=".log", delete=False)
        print(f"# {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with status {self.proc.returncode} while starting")
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail(f"/health not 200 after {startup_timeout}s")

    def fail(self, why):
        self.stop()
        with open(self.log.name, errors="replace") as f:
            tail = f.read()[-4000:]
        sys.exit(f"{self.name} {why}; log {self.log.name}:\n{tail}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stream_completion(port, body, timeout):
    """Sends one streaming /v1/completions request; returns (ttft_s, completion_tokens, total_s)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    body = dict(body, stream=True, stream_options={"include_usage": True})
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:500]!r}")
    ttft, chunks, usage = None, 0, None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        msg = json.loads(data)
        if "error" in msg:
            raise RuntimeError(f"stream error: {msg['error']}")
        if msg.get("usage"):
            usage = msg["usage"]
        for ch in msg.get("choices") or []:
            if ch.get("text"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    conn.close()
    n = usage["completion_tokens"] if usage else chunks
    return ttft if ttft is not None else total, n, total


def completion(port, body, timeout):
    """One non-streaming request; returns its JSON."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    conn.request("POST", "/v1/completions", json.dumps(dict(body, stream=False)),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {text[:500]!r}")
    return json.loads(text)


WORDS = ("time people way year work government day man world life part house course case system place "
         "end group company party information school fact money point example state business night area "
         "water thing family head hand order john side home development week power country council use "
         "service room market problem court lot a war police interest car law road form face education "
         "policy research sort office body person health mother question period name book level child "
         "control society minister view door line community south city god father centre effect staff "
         "position kind job woman action management act process north age evidence idea west support "
         "moment sense report mind church morning death change industry land care century range table").split()


def text_of(n_words, seed):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def run_server_bench(name, port, args, base_body):
    """Every measurement for one running server: {metric: value}."""
    res = {}
    # Warm up: weights into the page cache, threads started.
    completion(port, dict(base_body, prompt="Warm up " + text_of(20, 0), max_tokens=8), args.timeout)

    for n_clients in args.clients:
        results = []
        errors = []
        lock = threading.Lock()

        def client(ci):
            for r in range(args.rounds):
                body = dict(base_body, prompt=f"Request {ci}.{r}: " + text_of(args.prompt_words, 1000 + ci),
                            max_tokens=args.max_tokens)
                try:
                    out = stream_completion(port, body, args.timeout)
                except Exception as e:  # noqa: BLE001 - report after the run
                    with lock:
                        errors.append(repr(e))
                    return
                with lock:
                    results.append(out)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            sys.exit(f"{name}, {n_clients} clients: {len(errors)} request(s) failed: {errors[0]}")
        tokens = sum(n for _, n, _ in results)
        want = n_clients * args.rounds * args.max_tokens
        if tokens != want:
            print(f"# warning: {name}, {n_clients} clients: {tokens} completion tokens, expected {want}",
                  file=sys.stderr)
        res[f"{n_clients} clients: generated tok/s"] = tokens / wall
        res[f"{n_clients} clients: median TTFT ms"] = 1e3 * statistics.median(t for t, _, _ in results)
        print(f"# {name}: {n_clients} clients, {len(results)} requests, {tokens} tokens in {wall:.1f}s "
              f"({loadavg()})", file=sys.stderr, flush=True)

    # A long shared prefix: cold, then cached (same prefix, different suffix).
    cold, warm, n_prompt = [], [], None
    for rep in range(args.prefix_reps):
        prefix = f"Document {rep}: " + text_of(args.prefix_words, 5000 + rep) + "\n"
        body = dict(base_body, max_tokens=4)
        ttft, _, _ = stream_completion(port, dict(body, prompt=prefix + "Question one?"), args.timeout)
        cold.append(ttft)
        ttft, _, _ = stream_completion(port, dict(body, prompt=prefix + "Another, different question?"),
                                       args.timeout)
        warm.append(ttft)
        if n_prompt is None:
            r = completion(port, dict(body, prompt=prefix + "Question one?", max_tokens=1), args.timeout)
            n_prompt = r.get("usage", {}).get("prompt_tokens")
    if not cold:  # --prefix-reps 0: throughput only
        return res
    res["long prompt: prompt tokens"] = n_prompt
    res["long prompt, cold: TTFT ms"] = 1e3 * statistics.median(cold)
    res["long prompt, prefix cached: TTFT ms"] = 1e3 * statistics.median(warm)
    print(f"# {name}: long prompt TTFT cold {[round(x * 1e3) for x in cold]} ms, "
          f"cached {[round(x * 1e3) for x in warm]} ms ({loadavg()})", file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a GGUF model")
    ap.add_argument("--frugal", default="target/release/frugal")
    ap.add_argument("--llama-server", default="/work/main/.peer/build/bin/llama-server")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=16, help="sequences each server runs at once")
    ap.add_argument("--ctx-per-seq", type=int, default=2048, help="context of one sequence")
    ap.add_argument("--clients", default="1,8,16", help="concurrent clients, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="requests each client sends, one after another")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=24, help="words in a throughput prompt")
    ap.add_argument("--prefix-words", type=int, default=1500, help="words in the long prefix")
    ap.add_argument("--prefix-reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per request")
    ap.add_argument("--startup-timeout", type=float, default=300)
    ap.add_argument("--only", choices=("frugal", "llama-server"), help="run one server only")
    args = ap.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]

    info = json.loads(subprocess.run([args.frugal, "info", args.model, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    eog = info.get("eog_token_ids")
    if not eog:
        sys.exit("frugal info --json gives no eog_token_ids; cannot fix the generation length")
    base_body = {"temperature": 0, "logit_bias": {str(t): -100 for t in eog}, "ignore_eos": True}

    servers = []
    if args.only in (None, "frugal"):
        servers.append(("frugal", lambda port: [
            args.frugal, "serve", args.model, "--host", HOST, "--port", str(port), "-t", str(args.threads),
            "--max-seqs", str(args.parallel), "-c", str(args.ctx_per_seq),
            "--kv-tokens", str(args.parallel * args.ctx_per_seq)]))
    if args.only in (None, "llama-server"):
        servers.append(("llama-server", lambda port: [
            args.llama_server, "-m", args.model, "--host", HOST, "--port", str(port), "-t", str(args.threads),
            "-tb", str(args.threads), "-np", str(args.parallel), "-c", str(args.parallel * args.ctx_per_seq)]))

    print(f"# {os.path.basename(args.model)}, {args.threads} threads, {cpu_name()}, {os.cpu_count()} CPUs; "
          f"EOG ids {eog}; {loadavg()}", file=sys.stderr, flush=True)
    results = {}
    for name, cmd in servers:
        port = free_port()
        srv = Server(name, cmd(port), port, args.startup_timeout)
        try:
            results[name] = run_server_bench(name, port, args, base_body)
        finally:
            srv.stop()

    names = [n for n, _ in servers]
    metrics = list(dict.fromkeys(m for r in results.values() for m in r))
    print(f"\n{os.path.basename(args.model)}, {args.threads} threads, {args.parallel} parallel sequences "
          f"of {args.ctx_per_seq} tokens, {args.max_tokens} tokens per request; {loadavg()}\n")
    if len(names) == 2:
        print("| metric | frugal | llama-server | ratio frugal / llama-server |")
        print("| --- | ---: | ---: | ---: |")
    else:
        print(f"| metric | {names[0]} |")
        print("| --- | ---: |")
    for m in metrics:
        vals = [results[n].get(m) for n in names]
        cells = " | ".join("-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in vals)
        if len(names) == 2:
            # Long-prompt metric names carry the token count of the server that measured it.
            a, b = vals
            ratio = f"{a / b:.2f}" if a and b else "-"
            print(f"| {m} | {cells} | {ratio} |")
        else:
            print(f"| {m} | {cells} |")


if __name__ == "__main__":
    main()
