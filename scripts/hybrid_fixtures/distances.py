#!/usr/bin/env python3
"""make_expected.py's distances.json: a subset of it, or the README's tables.
usage: distances.py subset IN.json OUT.json MODEL [MODEL...]
       distances.py table IN.json"""
import json
import re
import sys


def jdump(obj, path):
    """as make_expected.py writes it: json with one line per list of numbers"""
    s = json.dumps(obj, indent=1, ensure_ascii=False)
    s = re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", s)
    open(path, "w", encoding="utf-8").write(s + "\n")


def f(d, k):
    return f"{d[k]['max_abs']:.1e} / {d[k]['mean_abs']:.1e}" if k in d else "-"


def agree(d, k):
    return f"{100 * d[k]['argmax_agree']:.0f}%" if k in d else "-"


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    d = json.load(open(path))
    if cmd == "subset":
        jdump({k: d[k] for k in sys.argv[4:]}, sys.argv[3])
        return
    print("F32 files (max |Δ| / mean |Δ|):\n")
    print("| model | HF vs llama.cpp batched | HF vs llama.cpp step | llama.cpp batched vs step | min top-1 margin (prompt; greedy) |")
    print("|---|---|---|---|---|")
    for m, v in d.items():
        if v["ftype"] == "f32":
            print(f"| {m} | {f(v, 'hf_vs_batched')} | {f(v, 'hf_vs_step')} | {f(v, 'batched_vs_step')} | "
                  f"{v['min_top1_margin_prompt']:.3f}; {v['min_top1_margin_greedy']:.3f} |")
    print("\nQuantized files (max |Δ| / mean |Δ|):\n")
    print("| model | quant vs deq, batched | quant vs deq, step | top-1 agree (quant vs deq) | quant batched vs step "
          "| deq batched vs step | quant vs llama.cpp F32 | quant vs HF |")
    print("|---|---|---|---|---|---|---|---|")
    for m, v in d.items():
        if v["ftype"] != "f32":
            print(f"| {m} | {f(v, 'quant_vs_deq_batched')} | {f(v, 'quant_vs_deq_step')} | "
                  f"{agree(v, 'quant_vs_deq_batched')} | {f(v, 'batched_vs_step')} | {f(v, 'deq_batched_vs_step')} | "
                  f"{f(v, 'quant_vs_f32_batched')} | {f(v, 'quant_vs_hf')} |")


if __name__ == "__main__":
    main()
