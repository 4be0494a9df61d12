#!/usr/bin/env python3
"""Compare frugal with llama.cpp on the same GGUF file and thread counts, in one run.

For each model and thread count, runs `frugal bench` and `llama-bench` alternately (ROUNDS rounds,
each engine doing its own repetitions), then prints the median tokens/s per test (pp512, tg128),
the ratio frugal / llama.cpp, each engine's peak resident memory, and for decode the fraction of
the memory-bandwidth limit frugal reaches: tokens/s x bytes of weights read per token / the read
bandwidth that `frugal membw` measures on this machine at the same thread count. Bytes read per
token default to the file size (every weight is read once per token; exact for models whose output
projection is the embedding matrix, as in Qwen2.5-0.5B/1.5B); for a MoE give the active bytes
with --bytes-per-token. Builds nothing: point it at built binaries.

`--busy K` runs K competing processes (each a spinning loop that keeps one core busy) during the
measurements, as on a shared server or in a container beside other work; `--threads default` (in
the list) passes no thread count, so each engine picks its own default.

    python3 bench/compare.py --frugal target/release/frugal --llama-bench .peer/build/bin/llama-bench \
        --threads 1,2 bench/models/qwen2.5-0.5b-Q4_0.gguf
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd):
    """stdout of `cmd` and its peak resident set size in MB (from wait4's rusage)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return out, ru.ru_maxrss / 1024


def thread_args(threads):
    """`-t N`, or nothing for the engine's own default."""
    return [] if threads == "default" else ["-t", threads]


def run_frugal(exe, model, threads, p, n, reps):
    out, rss = run([exe, "bench", model, *thread_args(threads), "-p", str(p), "-n", str(n), "-r", str(reps), "--json"])
    res = {}
    for line in out.splitlines():
        if line.strip().startswith("{"):
            r = json.loads(line)
            res[r["test"]] = r["samples"]
    return res, rss


def run_llama(exe, model, threads, p, n, reps):
    res, peak = {}, 0.0
    # llama-bench runs pp and tg as separate tests; -p 0 / -n 0 disable one of them.
    for test, args in ((f"pp{p}", ["-p", str(p), "-n", "0"]), (f"tg{n}", ["-p", "0", "-n", str(n)])):
        out, rss = run([exe, "-m", model, *thread_args(threads), "-r", str(reps), "-o", "json"] + args)
        res[test] = json.loads(out)[0]["samples_ts"]
        peak = max(peak, rss)
    return res, peak


def bandwidth(frugal, threads):
    out, _ = run([frugal, "membw", *thread_args(threads), "--json"])
    return json.loads(out)["read_gb_per_s"] * 1e9


def spinners(k):
    """K processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frugal", default="target/release/frugal")
    ap.add_argument("--llama-bench", default=".peer/build/bin/llama-bench")
    ap.add_argument("--threads", default="1,2", help="comma-separated; 'default' lets each engine choose")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per engine per round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--bytes-per-token", type=float, help="weight bytes read per decoded token (default: file size)")
    ap.add_argument("--busy", type=int, default=0, help="competing CPU-bound processes during the runs")
    args = ap.parse_args()

    threads = args.threads.split(",")
    if args.busy:
        print(f"With {args.busy} competing process(es) spinning on the CPU during every measurement.")
    print("Read bandwidth (`frugal membw`, same threads) is measured before each model: on shared or")
    print("virtual machines it moves from minute to minute, and decode follows it.")
    print()
    print("| model | threads | test | frugal t/s | llama.cpp t/s | ratio | read GB/s "
          "| frugal % of bandwidth limit | peak RSS frugal / llama.cpp MB |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models:
        per_token = args.bytes_per_token or os.path.getsize(model)
        for t in threads:
            bw = bandwidth(args.frugal, t)
            ours, theirs, rss_ours, rss_theirs = {}, {}, 0.0, 0.0
            busy = spinners(args.busy)
            try:
                for _ in range(args.rounds):
                    res, rss = run_frugal(args.frugal, model, t, args.p, args.n, args.reps)
                    rss_ours = max(rss_ours, rss)
                    for k, v in res.items():
                        ours.setdefault(k, []).extend(v)
                    res, rss = run_llama(args.llama_bench, model, t, args.p, args.n, args.reps)
                    rss_theirs = max(rss_theirs, rss)
                    for k, v in res.items():
                        theirs.setdefault(k, []).extend(v)
            finally:
                for b in busy:
                    b.kill()
                    b.wait()
            name = model.rsplit("/", 1)[-1]
            for test in (f"pp{args.p}", f"tg{args.n}"):
                a, b = statistics.median(ours[test]), statistics.median(theirs[test])
                frac = f"{100 * a * per_token / bw:.0f} %" if test.startswith("tg") else ""
                print(f"| {name} | {t} | {test} | {a:.2f} | {b:.2f} | {a / b:.2f} | {bw / 1e9:.1f} | {frac} "
                      f"| {rss_ours:.0f} / {rss_theirs:.0f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
