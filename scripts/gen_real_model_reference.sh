#!/usr/bin/env bash
# llama.cpp's references for crates/cli/tests/real_models.rs, from the llama.cpp peer (see
# ../shared/peer/README.md): PEER=.peer by default (the source tree unpacked in it, the build in
# $PEER/build). Writes, beside the test:
#   real_models/smollm2.chat.json  greedy chat answer (scripts/real_model_reference.c)
#   real_models/smollm2.ppl.json   llama-perplexity on real_models/plain_english.txt
# Each file records the command that made it. Run from anywhere; needs cc and the fetched model.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=$(realpath "${PEER:-.peer}")
SRC="$PEER/llama_cpp_python-0.3.36/vendor/llama.cpp"
BIN="$PEER/build/bin"
OUT=crates/cli/tests/real_models
MODEL=$(scripts/fetch_model.py smollm2)
N_GEN=24
SYSTEM="You are a helpful AI assistant named SmolLM, trained by Hugging Face"
USER_MSG="What is the capital of France? Answer in one sentence."
CTX=512
CHUNKS=4

tool=$(mktemp -d)/real_model_reference
cc -O2 -std=c11 -I"$SRC/include" -I"$SRC/ggml/include" scripts/real_model_reference.c \
  -L"$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$tool"

"$tool" "$MODEL" "$N_GEN" "$SYSTEM" "$USER_MSG" > "$OUT/.chat.tmp"
python3 - "$OUT/.chat.tmp" "$OUT/smollm2.chat.json" "$N_GEN" "$SYSTEM" "$USER_MSG" <<'EOF'
import json, sys
src, dst, n_gen, system, user = sys.argv[1:]
d = json.load(open(src))
out = {
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_model.py smollm2)",
    "llama_cpp": "llama-cpp-python 0.3.36 vendored tree (ggml 0.25.3), ../shared/peer/README.md",
    "command": "scripts/gen_real_model_reference.sh: real_model_reference MODEL "
               f"{n_gen} {json.dumps(system)} {json.dumps(user)}",
    "settings": "f32 K/V cache, flash attention off, 2 threads, prompt in one batch, then one "
                "token per llama_decode; greedy = argmax, lowest id on ties",
    **d,
}
json.dump(out, open(dst, "w"), indent=1)
open(dst, "a").write("\n")
EOF
rm "$OUT/.chat.tmp"

ppl_cmd=(llama-perplexity -m MODEL -f "$OUT/plain_english.txt" -c "$CTX" --chunks "$CHUNKS" -t 2
  -ctk f32 -ctv f32 -fa off)
"$BIN/llama-perplexity" -m "$MODEL" "${ppl_cmd[@]:3}" > "$OUT/.ppl.log" 2>&1
python3 - "$OUT/.ppl.log" "$OUT/smollm2.ppl.json" "${ppl_cmd[*]}" "$CTX" "$CHUNKS" <<'EOF'
import json, re, sys
log, dst, cmd, ctx, chunks = sys.argv[1:]
text = open(log).read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
if not m:
    sys.exit(f"no final estimate in llama-perplexity's output:\n{text[-2000:]}")
running_ppl = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),?", text)]
out = {
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_model.py smollm2)",
    "llama_cpp": "llama-cpp-python 0.3.36 vendored tree (ggml 0.25.3), ../shared/peer/README.md",
    "command": cmd,
    "ctx": int(ctx),
    "chunks": int(chunks),
    "running_ppl": running_ppl,
    "ppl": float(m.group(1)),
    "ppl_stderr": float(m.group(2)),
}
json.dump(out, open(dst, "w"), indent=1)
open(dst, "a").write("\n")
EOF
rm "$OUT/.ppl.log"
cat "$OUT/smollm2.chat.json" "$OUT/smollm2.ppl.json"
