#!/usr/bin/env python3
"""Writes perplexity-llama-cpp.json: llama-perplexity's figures on perplexity.txt for the fixture
models, the reference of tests/perplexity.rs. Run from this folder:

    LLAMA_PERPLEXITY=/path/to/llama-perplexity FIXTURES=/path/to/shared/fixtures \
        python3 perplexity-llama-cpp.py > perplexity-llama-cpp.json
"""
import json
import os
import re
import subprocess
import tempfile

L = os.environ.get("LLAMA_PERPLEXITY", "llama-perplexity")
M = os.path.join(os.environ.get("FIXTURES", "../../../../../shared/fixtures"), "models")
TEXT = "perplexity.txt"
SETTINGS = ["-c", "128", "-b", "128", "-t", "2"]


def run(args, want):
    # llama.cpp's logger runs on its own thread and now and then loses its last lines at exit.
    for _ in range(10):
        r = subprocess.run([L] + args, capture_output=True, text=True, check=True)
        if want in r.stdout + r.stderr:
            return r.stdout + r.stderr
    raise SystemExit(f"no {want!r} from {args}")


def shown(args):
    return "llama-perplexity " + " ".join(os.path.basename(a) for a in args)


def version():
    r = subprocess.run([L, "--version"], capture_output=True, text=True)
    return next(l for l in (r.stdout + r.stderr).splitlines() if l.startswith("version"))


def figure(text, label):
    return float(re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)", text).group(1))


def main():
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    out = {"llama_cpp": f"llama-perplexity {version()}, on {cpu}", "perplexity": {}, "kl_divergence": {}}
    for m in ["qwen2-f32", "qwen2-Q8_0", "llama-f32"]:
        args = ["-m", f"{M}/{m}.gguf", "-f", TEXT, *SETTINGS, "--chunks", "4"]
        text = run(args, "Final estimate")
        fin = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
        out["perplexity"][m] = {
            "command": shown(args),
            "chunks": [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", text)],
            "ppl": float(fin.group(1)),
            "uncertainty": float(fin.group(2)),
        }
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.kld")
        a1 = ["-m", f"{M}/qwen2-f32.gguf", "-f", TEXT, *SETTINGS, "--chunks", "4", "--kl-divergence-base", base]
        run(a1, "Final estimate")
        a2 = ["-m", f"{M}/qwen2-Q8_0.gguf", *SETTINGS, "--kl-divergence-base", base, "--kl-divergence"]
        text = run(a2, "Same top p")
    labels = {
        "mean_ppl_q": "Mean PPL(Q)",
        "mean_ppl_base": "Mean PPL(base)",
        "mean_ppl_ratio": "Mean PPL(Q)/PPL(base)",
        "mean_kld": "Mean    KLD",
        "median_kld": "Median  KLD",
        "max_kld": "Maximum KLD",
        "rms_dp_percent": "RMS Δp    ",
        "same_top_p_percent": "Same top p",
    }
    kl = {"commands": [shown(a1), shown(a2)]}
    kl.update({k: figure(text, v) for k, v in labels.items()})
    out["kl_divergence"]["qwen2-f32 -> qwen2-Q8_0"] = kl
    print(json.dumps(out, indent=1, ensure_ascii=False))


main()
