#!/usr/bin/env python3
"""Speculative decoding: frugal with and without it, against llama.cpp's, on the same files and
threads.

Starts up to four servers side by side, each with one sequence slot (`--streams 1`): `frugal`
(no speculation), `frugal-spec` (`--spec ngram`, `--draft-model` or `--spec mtp`), `llama-spec`
(llama-server with the same method and draft length: `--spec-type ngram-simple`, `draft-simple` or
`draft-mtp`) and, with `--llama-plain`, `llama` (llama-server without
it). Idle servers take no CPU; the requests go to them in turn (round robin), `--reps` times, and
the table gives medians. Each request generates exactly `--max-tokens` tokens (end-of-generation
tokens get a logit bias of -100, and `ignore_eos`), greedily unless `--temperature` says otherwise.

Decode speed is measured from the stream: (tokens - 1) / (time of the last token - time of the
first), so prefill is left out. Acceptance comes from frugal's /metrics counters and from
llama-server's `timings` (draft_n, draft_n_accepted).

Workloads (`--workload`):
  code-edit  a long code file followed by "rewrite it with one change" (the answer repeats the
             prompt when the model is real; random weights say what they say);
  rewrite    a paragraph and "rewrite this text, changing one word" through the chat template
             (for real instruct models such as SmolLM2-135M-Instruct);
  plain      random words to continue: nothing to copy (the overhead of speculating in vain).

With `--streams 8` each round sends 8 requests at once to each server and reports aggregate
tokens/s (all tokens / wall time) instead. Stdlib only.

    python3 bench/spec_compare.py --threads 2 --workload code-edit --spec ngram \\
        bench/models/qwen2.5-0.5b-Q4_0.gguf
    python3 bench/spec_compare.py --threads 2 --workload plain --spec draft \\
        --draft bench/models/qwen2.5-0.5b-Q4_K_M.gguf bench/models/qwen2.5-0.5b-Q8_0.gguf
    python3 bench/spec_compare.py --threads 2 --workload code-edit --spec mtp --spec-max 3 --fixed \\
        bench/models/qwen35-0.8b-Q8_0.gguf
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_compare import HOST, Server, cpu_name, free_port, loadavg, text_of  # noqa: E402

CODE = '''def {name}(items, key=None, reverse=False):
    """Return the {what} of items, ordered by key."""
    result = []
    for index, item in enumerate(items):
        value = key(item) if key is not None else item
        if value is None:
            continue
        result.append((value, index, item))
    result.sort(reverse=reverse)
    return [item for _, _, item in result]

'''
NAMES = ["sorted_by", "ranked", "ordered", "largest", "smallest", "stable_sort", "by_score", "top_items"]
WHATS = ["sorted copy", "ranking", "ordering", "largest values", "smallest values", "stable order"]


def code_file(n_functions, rng):
    names = rng.sample(NAMES, len(NAMES))
    return "".join(CODE.format(name=f"{names[i % len(names)]}_{rng.randrange(100)}",
                               what=rng.choice(WHATS)) for i in range(n_functions))


KEEPERS = ["keeper", "warden", "guardian", "watchman", "caretaker"]
PLACES = ["cliff", "headland", "island", "harbour wall", "point", "reef"]
YEARS = ["two hundred", "ninety", "a hundred and twenty", "sixty", "three hundred"]


def paragraph(rng):
    keeper, place, years = rng.choice(KEEPERS), rng.choice(PLACES), rng.choice(YEARS)
    return (f"The lighthouse stood at the edge of the {place} for {years} years. Every night its {keeper} "
            "climbed the spiral stairs, trimmed the wick and wound the clockwork that turned the lens. "
            f"Ships passing the reef saw the beam sweep across the water every {rng.randrange(5, 20)} "
            f"seconds and steered away from the rocks. When the {keeper} grew old, the {keeper}'s "
            "daughter took over the work, and she kept a log of every ship that passed, its name, its "
            f"flag and the hour it was seen. "), place


def workload_body(kind, seed):
    """The request body (without sampling fields) and its endpoint; each seed gives other text, so
    that no server answers a round from what it saw in an earlier one (frugal's n-gram pool
    remembers every finished sequence)."""
    rng = random.Random(seed)
    if kind == "code-edit":
        prompt = ("# utils.py\n" + code_file(8, rng) + "\n# The same file, with `reverse` renamed to "
                  "`descending` everywhere:\n# utils.py\n")
        return "/v1/completions", {"prompt": prompt}
    if kind == "rewrite":
        text, place = paragraph(rng)
        text += paragraph(rng)[0]
        msg = f"Rewrite this text exactly, changing only the word '{place}' to 'hill':\n\n{text}"
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": msg}]}
    return "/v1/completions", {"prompt": text_of(60, seed)}


def stream(port, path, body, timeout):
    """One streaming request; returns (tokens, seconds from first to last token, timings)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    body = dict(body, stream=True, stream_options={"include_usage": True})
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:500]!r}")
    first = last = None
    usage = timings = None
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
        usage = msg.get("usage") or usage
        timings = msg.get("timings") or timings
        for ch in msg.get("choices") or []:
            piece = ch.get("text") or (ch.get("delta") or {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
    conn.close()
    return usage["completion_tokens"], (last - first) if first else 0.0, timings or {}


def metric(port, name):
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    # Per-model series carry a `model_name` label; the one model's is the only one.
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def one_round(name, port, args, requests):
    """Decode tokens/s of one round (one request, or `--streams` at once), and (proposed,
    accepted) when the server reports them per request."""
    if args.streams == 1:
        path, body = requests[0]
        n, secs, t = stream(port, path, body, args.timeout)
        if n != args.max_tokens:
            raise RuntimeError(f"{name} generated {n} tokens, not {args.max_tokens}")
        return (n - 1) / secs, (t.get("draft_n"), t.get("draft_n_accepted"))
    results, errors = [], []

    def client(i):
        try:
            path, body = requests[i]
            results.append(stream(port, path, body, args.timeout))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(n for n, _, _ in results) / wall, (None, None)


def servers(args, eog):
    """(name, command for a port) of each server to run."""
    spec_max = str(args.spec_max)
    out = [("frugal", []), ("frugal-spec", ["--spec-max", spec_max])]
    if args.spec == "ngram":
        out[1][1].extend(["--spec", "ngram"])
    elif args.spec == "mtp":
        out[1][1].extend(["--spec", "mtp", "--draft-p-min", str(args.p_min)])
    else:
        out[1][1].extend(["--draft-model", args.draft, "--draft-p-min", str(args.p_min)])
    if args.fixed:
        out[1][1].append("--spec-fixed")
    cmds = []
    for name, extra in out:
        cmds.append((name, lambda port, extra=extra: [
            args.frugal, "serve", args.model, "--host", HOST, "--port", str(port), "-t", str(args.threads),
            "--max-seqs", str(args.streams), "-c", str(args.ctx), "--kv-tokens", str(args.streams * args.ctx),
            *extra]))
    if args.spec == "ngram":
        # The draft length set to frugal's; the lookup length too (llama.cpp's default, 12, drafts
        # nothing when it exceeds the draft length, and frugal looks up 4 tokens down to 2).
        kind = args.llama_ngram
        llama_spec = ["--spec-type", kind, f"--spec-{kind}-size-m", spec_max,
                      f"--spec-{kind}-size-n", str(min(args.llama_ngram_n, args.spec_max))]
    elif args.spec == "mtp":
        llama_spec = ["--spec-type", "draft-mtp", "--spec-draft-n-max", spec_max, "--spec-draft-n-min", "0",
                      "--spec-draft-p-min", str(args.p_min)]
    else:
        llama_spec = ["--spec-type", "draft-simple", "-md", args.draft, "--spec-draft-n-max", spec_max,
                      "--spec-draft-n-min", "0", "--spec-draft-p-min", str(args.p_min),
                      "-td", str(args.threads)]
    llama = [("llama-spec", llama_spec)] + ([("llama", [])] if args.llama_plain else [])
    for name, extra in llama:
        cmds.append((name, lambda port, extra=extra: [
            args.llama_server, "-m", args.model, "--host", HOST, "--port", str(port), "-t", str(args.threads),
            "-tb", str(args.threads), "-np", str(args.streams), "-c", str(args.streams * args.ctx),
            "--no-warmup", *extra]))
    return cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the target GGUF")
    ap.add_argument("--spec", choices=("ngram", "draft", "mtp"), required=True)
    ap.add_argument("--draft", help="the draft GGUF (--spec draft)")
    ap.add_argument("--workload", choices=("code-edit", "rewrite", "plain"), required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--spec-max", type=int, default=8, help="draft length (both engines)")
    ap.add_argument("--p-min", type=float, default=0.0, help="draft models' --draft-p-min (both engines)")
    ap.add_argument("--fixed", action="store_true", help="frugal: --spec-fixed (no adaptive length)")
    ap.add_argument("--llama-ngram", default="ngram-simple", help="llama-server's --spec-type for n-grams")
    ap.add_argument("--llama-ngram-n", type=int, default=4, help="llama-server's n-gram lookup length")
    ap.add_argument("--llama-plain", action="store_true", help="also llama-server without speculation")
    ap.add_argument("--streams", type=int, default=1, help="concurrent requests per round")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--ctx", type=int, default=4096, help="context per sequence")
    ap.add_argument("--frugal", default="target/release/frugal")
    ap.add_argument("--llama-server", default=".peer/build/bin/llama-server")
    ap.add_argument("--only", help="comma-separated server names to run")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    if (args.spec == "draft") != bool(args.draft):
        sys.exit("--draft FILE goes with --spec draft, and only with it")

    info = json.loads(subprocess.run([args.frugal, "info", args.model, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    eog = info.get("eog_token_ids") or []

    def request(seed):
        path, body = workload_body(args.workload, seed)
        body.update(max_tokens=args.max_tokens, temperature=args.temperature, seed=seed,
                    logit_bias={str(t): -100 for t in eog}, ignore_eos=True)
        return path, body

    chosen = [s for s in servers(args, eog) if not args.only or s[0] in args.only.split(",")]
    print(f"# {os.path.basename(args.model)}, {args.threads} threads, {cpu_name()}; {loadavg()}",
          file=sys.stderr, flush=True)
    running = []
    try:
        for name, cmd in chosen:
            port = free_port()
            running.append((name, port, Server(name, cmd(port), port, 600)))
        # One untimed round each: first-touch of the weights, caches warmed.
        def round_of(rep):
            return [request(1000 * rep + i) for i in range(args.streams)]

        for name, port, _ in running:
            one_round(name, port, args, round_of(1000))
        speeds = {name: [] for name, _, _ in running}
        drafts = {name: [0, 0] for name, _, _ in running}
        before = {name: (metric(port, "frugal_spec_draft_tokens_total"),
                         metric(port, "frugal_spec_accepted_tokens_total"))
                  for name, port, _ in running if name.startswith("frugal")}
        for rep in range(args.reps):
            requests = round_of(rep)
            for name, port, _ in running:
                s, (dn, da) = one_round(name, port, args, requests)
                speeds[name].append(s)
                if dn is not None:
                    drafts[name][0] += dn
                    drafts[name][1] += da or 0
                print(f"# rep {rep} {name}: {s:.1f} tokens/s", file=sys.stderr, flush=True)
        for name, port, _ in running:
            if name in before:
                p0, a0 = before[name]
                drafts[name] = [metric(port, "frugal_spec_draft_tokens_total") - p0,
                                metric(port, "frugal_spec_accepted_tokens_total") - a0]
    finally:
        for _, _, srv in running:
            srv.stop()

    base = statistics.median(speeds["frugal"]) if "frugal" in speeds else None
    unit = "decode tokens/s" if args.streams == 1 else f"aggregate tokens/s, {args.streams} streams"
    print(f"\n{os.path.basename(args.model)}"
          + (f" + draft {os.path.basename(args.draft)}" if args.draft else "")
          + f", --spec {args.spec}, workload {args.workload}, {args.threads} threads, draft length "
            f"{args.spec_max}, {args.max_tokens} tokens, temperature {args.temperature}, "
            f"median of {args.reps}; {cpu_name()}; {loadavg()}\n")
    print(f"| server | {unit} | × frugal without | guesses accepted |")
    print("| --- | ---: | ---: | ---: |")
    for name in speeds:
        m = statistics.median(speeds[name])
        ratio = f"{m / base:.2f}" if base else "-"
        p, a = drafts[name]
        acc = f"{a:.0f} / {p:.0f} ({100 * a / p:.0f} %)" if p else "-"
        print(f"| {name} | {m:.1f} | {ratio} | {acc} |")
    if "frugal-spec" in speeds and "llama-spec" in speeds:
        r = statistics.median(speeds["frugal-spec"]) / statistics.median(speeds["llama-spec"])
        print(f"\nfrugal-spec / llama-spec: {r:.2f}")


if __name__ == "__main__":
    main()
