#!/usr/bin/env python3
"""Compare frugal with llama.cpp on the same GGUF file and thread counts, in one run.

For each model and thread count, runs `frugal bench` and `llama-bench` alternately (ROUNDS rounds,
each engine doing its own repetitions), then prints the median tokens/s per test (pp512, tg128)
and the ratio frugal / llama.cpp. Builds nothing: point it at built binaries.

    python3 bench/compare.py --frugal target/release/frugal --llama-bench .peer/build/bin/llama-bench \
        --threads 1,2 bench/models/qwen2.5-0.5b-Q4_0.gguf
"""
import argparse
import json
import statistics
import subprocess
import sys


def run_frugal(exe, model, threads, p, n, reps):
    out = subprocess.run(
        [exe, "bench", model, "-t", str(threads), "-p", str(p), "-n", str(n), "-r", str(reps), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    res = {}
    for line in out.splitlines():
        if line.strip().startswith("{"):
            r = json.loads(line)
            res[r["test"]] = r["samples"]
    return res


def run_llama(exe, model, threads, p, n, reps):
    res = {}
    # llama-bench runs pp and tg as separate tests; -p 0 / -n 0 disable one of them.
    for test, args in ((f"pp{p}", ["-p", str(p), "-n", "0"]), (f"tg{n}", ["-p", "0", "-n", str(n)])):
        out = subprocess.run(
            [exe, "-m", model, "-t", str(threads), "-r", str(reps), "-o", "json"] + args,
            check=True, capture_output=True, text=True,
        ).stdout
        data = json.loads(out)
        res[test] = data[0]["samples_ts"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frugal", default="target/release/frugal")
    ap.add_argument("--llama-bench", default=".peer/build/bin/llama-bench")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per engine per round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    args = ap.parse_args()

    print("| model | threads | test | frugal t/s | llama.cpp t/s | ratio |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for model in args.models:
        for t in [int(x) for x in args.threads.split(",")]:
            ours, theirs = {}, {}
            for _ in range(args.rounds):
                for k, v in run_frugal(args.frugal, model, t, args.p, args.n, args.reps).items():
                    ours.setdefault(k, []).extend(v)
                for k, v in run_llama(args.llama_bench, model, t, args.p, args.n, args.reps).items():
                    theirs.setdefault(k, []).extend(v)
            for test in (f"pp{args.p}", f"tg{args.n}"):
                a, b = statistics.median(ours[test]), statistics.median(theirs[test])
                name = model.rsplit("/", 1)[-1]
                print(f"| {name} | {t} | {test} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
