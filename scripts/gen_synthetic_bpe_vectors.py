#!/usr/bin/env python3
"""Small byte-level BPE vocabularies with real models' pre-tokenizers, and llama.cpp's token ids
for varied text on them, for crates/tokenizer/tests/vectors.rs (no real GLM-4.5 / Kimi K2 vocabulary
is small enough to ship, and llama.cpp has no ggml-vocab file for them).

Each vocabulary is the 256 byte tokens plus merges learnt from the test texts themselves WITHOUT
pre-tokenization, so that many merged tokens span what the pre-tokenizer must keep apart (digit runs,
letters and punctuation, Han and kana, contractions, newlines): a wrong split gives other ids. Plus
a few control tokens. Written as GGUF vocabularies (`tokenizer.ggml.pre` = glm4, kimi-k2,
chatglm-bpe) with gguf-py, tokenized by llama.cpp's llama-tokenize (no BOS, special tokens not
parsed, as test-tokenizer-0), in the ggml-vocab .inp/.out format.

usage: python3 scripts/gen_synthetic_bpe_vectors.py [LLAMA_CPP_DIR] [LLAMA_BIN_DIR]
writes crates/tokenizer/tests/data/ggml-vocab-synthetic-<pre>.gguf{,.inp,.out}, an ERNIE-4.5-shaped
SentencePiece vocabulary ggml-vocab-synthetic-ernie4_5.gguf, and synthetic-eog.json: llama.cpp's
end-of-generation ids for each
"""
import collections
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_CPP = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".peer", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".peer", "build", "bin")
sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
import gguf  # noqa: E402

DATA = os.path.join(ROOT, "crates", "tokenizer", "tests", "data")
SHARED_INP = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizer", "ggml-vocab-llama-bpe.gguf.inp")
PRES = ["glm4", "kimi-k2", "chatglm-bpe"]
N_MERGES = 400
# Control tokens and special-token ids as each model's converter writes them (llama.cpp's
# conversion/base.py _set_vocab_glm: bos [gMASK], eot <|user|>, eom <|observation|>; Kimi K2:
# eos [EOS], its chat markers), so that llama.cpp's end-of-generation list can be compared.
CONTROL = {
    "glm4": ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
             "<|assistant|>", "<|observation|>"],
    "chatglm-bpe": ["<|endoftext|>", "[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|observation|>"],
    "kimi-k2": ["[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>",
                "<|im_middle|>", "[EOT]", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"],
}
ROLES = {
    "glm4": {"bos": "[gMASK]", "eos": "<|endoftext|>", "eot": "<|user|>", "eom": "<|observation|>"},
    "chatglm-bpe": {"eos": "<|endoftext|>", "eot": "<|user|>"},
    "kimi-k2": {"bos": "[BOS]", "eos": "[EOS]"},
}

EXTRA = [
    "DON'T you're WE'VE it'S I'd",
    "1234567 89 0.5 3,141,592",
    "中文测试，日本語のテキスト、ひらがなとカタカナ。한국어",
    "漢字かな交じり文です",
    "Hello世界123abc",
    "  leading\n\n\ttabs\r\nand  \u3000 spaces  ",
    "naïve façade Ångström ÆØÅ",
    "emoji 🙂👍🏽 and ſ long s",
    "camelCase XMLHttpRequest e\u0301te\u0301 Ωmega",
    "\u2f00\u2e80 radicals \u3005\u3007 \uf900\ufa0e compat \U00020000\U0002a700 ext",
    "def f(x):\n    return x**2  # comment\n",
    "<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
]


def byte_chars():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def learn_merges(texts, n):
    table = byte_chars()
    seqs = [[table[b] for b in t.encode("utf-8")] for t in texts]
    merges = []
    for _ in range(n):
        counts = collections.Counter()
        for s in seqs:
            counts.update(zip(s, s[1:]))
        if not counts:
            break
        (a, b), c = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [a + b]
                i += 1
    return table, merges


def write_vocab(path, pre, table, merges):
    tokens = [table[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for c in CONTROL[pre]:
        tokens.append(c)
        types.append(gguf.TokenType.CONTROL)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(8)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    for role, text in ROLES[pre].items():
        getattr(w, f"add_{role}_token_id")(tokens.index(text))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenize(model, text):
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", delete=False) as f:
        f.write(text)
        path = f.name
    cmd = [os.path.join(BIN, "llama-tokenize"), "-m", model, "-f", path, "--ids", "--log-disable",
           "--no-escape", "--no-bos", "--no-parse-special"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, LD_LIBRARY_PATH=BIN)).stdout
    os.unlink(path)
    return [int(x) for x in out.strip().splitlines()[-1].strip("[]").split(",") if x.strip()]


def eog_ids(model):
    """llama.cpp's end-of-generation ids, from its load log (`print_info: EOG token = ID 'text'`)."""
    cmd = [os.path.join(BIN, "llama-tokenize"), "-m", model, "-p", "x", "--ids", "-v"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, LD_LIBRARY_PATH=BIN))
    ids = []
    for line in (out.stdout + out.stderr).splitlines():
        if "EOG token" in line and "=" in line:
            ids.append(int(line.split("=", 1)[1].split()[0]))
    return sorted(set(ids))


def write_ernie_vocab(path):
    """A SentencePiece vocabulary shaped like ERNIE 4.5's (<unk> <s> </s>, its sentence markers as
    control tokens, byte pieces), as conversion/ernie.py writes it."""
    tokens = ["<unk>", "<s>", "</s>", "<|begin_of_sentence|>", "<|end_of_sentence|>", "<mask:1>"]
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 5
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    for piece in ["\u2581", "\u2581a", "a", "b"]:
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(8)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 6 + [0.0] * 256 + [-1.0, -2.0, -3.0, -4.0])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    shared = open(SHARED_INP, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    texts = [t for t in shared if t] + EXTRA
    table, merges = learn_merges(texts, N_MERGES)
    eog = {}
    for pre in PRES:
        path = os.path.join(DATA, f"ggml-vocab-synthetic-{pre}.gguf")
        write_vocab(path, pre, table, merges)
        ids = [tokenize(path, t) for t in texts]
        with open(path + ".inp", "w", encoding="utf-8", newline="\n") as f:
            f.write("\n__ggml_vocab_test__\n".join(texts))
        with open(path + ".out", "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(" ".join(map(str, i)) for i in ids))
        print(pre, len(texts), "texts", os.path.getsize(path), "bytes")
        eog[f"synthetic-{pre}"] = eog_ids(path)
    ernie = os.path.join(DATA, "ggml-vocab-synthetic-ernie4_5.gguf")
    write_ernie_vocab(ernie)
    eog["synthetic-ernie4_5"] = eog_ids(ernie)
    with open(os.path.join(DATA, "synthetic-eog.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump({"reference": "llama.cpp's load log, print_info: EOG token", "eog": eog}, f, indent=1)
        f.write("\n")
    print(eog)


if __name__ == "__main__":
    main()
