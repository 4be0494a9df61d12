#!/usr/bin/env python3
"""llama.cpp's token ids for varied text on the real Gemma-3-270M vocabulary (SentencePiece,
262k pieces, `tokenizer.ggml.pre` = default), for crates/tokenizer/tests/gemma3.rs.

Inputs: llama.cpp's own tokenizer test texts (../shared/fixtures/tokenizer/ggml-vocab-llama-bpe.gguf.inp:
English, code, CJK, emoji, whitespace runs, ...) tokenized as test-tokenizer-0 does (no BOS, special
tokens not parsed), plus chat-shaped texts with Gemma's control tokens (<start_of_turn>, <end_of_turn>,
<bos>) tokenized with BOS and special tokens parsed, as a prompt is.

usage: python3 scripts/gen_gemma3_token_vectors.py [GGUF] [LLAMA_BIN_DIR]
  GGUF: `scripts/fetch_model.py gemma3-270m` prints its path (default ~/.cache/frugal/models/...)
  LLAMA_BIN_DIR: a llama.cpp build's bin/ with llama-tokenize (default .peer/build/bin)
writes crates/tokenizer/tests/data/gemma3-270m.tokens.json
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/frugal/models/gemma-3-270m-q4_k_m.gguf")
BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".peer", "build", "bin")
INP = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizer", "ggml-vocab-llama-bpe.gguf.inp")
OUT = os.path.join(ROOT, "crates", "tokenizer", "tests", "data", "gemma3-270m.tokens.json")

CHAT = [
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nYou are terse.\n\nSay 日本語 and 🙂  twice.<end_of_turn>\n<start_of_turn>model\nOK<end_of_turn>\n",
    "<start_of_turn>user\n```python\ndef f(x):\n\treturn x  **  2\n```<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_image> text <end_of_image><eos>   <pad>",
]


def tokenize(text, special):
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", delete=False, suffix=".txt") as f:
        f.write(text)
        path = f.name
    cmd = [os.path.join(BIN, "llama-tokenize"), "-m", GGUF, "-f", path, "--ids", "--log-disable", "--no-escape"]
    if not special:
        cmd += ["--no-bos", "--no-parse-special"]
    env = dict(os.environ, LD_LIBRARY_PATH=BIN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    os.unlink(path)
    return json.loads(out.strip().splitlines()[-1])


def main():
    texts = open(INP, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    cases = []
    for t in texts:
        if t:
            cases.append({"text": t, "add_special": False, "parse_special": False, "ids": tokenize(t, False)})
    for t in CHAT:
        cases.append({"text": t, "add_special": True, "parse_special": True, "ids": tokenize(t, True)})
    doc = {
        "model": "gemma-3-270m-q4_k_m.gguf (scripts/fetch_model.py gemma3-270m)",
        "reference": "llama.cpp llama-tokenize (vendor/llama.cpp of llama-cpp-python 0.3.36), --no-escape; "
        "add_special=false: --no-bos --no-parse-special",
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        json.dump(doc, f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
