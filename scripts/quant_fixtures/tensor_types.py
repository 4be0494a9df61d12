#!/usr/bin/env python3
"""Markdown table of which tensors got which type, per GGUF file.
usage: tensor_types.py file.gguf [...]"""
import os
import re
import sys
from collections import OrderedDict

from gguf import GGUFReader

print("| file | bytes | type: tensors |")
print("|---|---|---|")
for path in sys.argv[1:]:
    r = GGUFReader(path)
    by_type = OrderedDict()
    for t in r.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t.name)
    parts = []
    for ty, names in sorted(by_type.items(), key=lambda kv: (kv[0] == "F32", kv[0])):
        if ty == "F32":
            parts.append(f"F32: {len(names)} (norms, biases, MoE router)")
            continue
        layers = OrderedDict()
        for n in names:
            m = re.match(r"blk\.(\d+)\.(.*)\.weight$", n)
            key = m.group(2) if m else n.removesuffix(".weight")
            layers.setdefault(key, []).append(m.group(1) if m else None)
        items = [k if ls == [None] else f"{k}[{','.join(ls)}]" for k, ls in layers.items()]
        parts.append(f"{ty}: {len(names)} ({' '.join(items)})")
    print(f"| {os.path.basename(path)} | {os.path.getsize(path)} | {'; '.join(parts)} |")
