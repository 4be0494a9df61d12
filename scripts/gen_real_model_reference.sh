#!/usr/bin/env bash
# llama.cpp's references for crates/cli/tests/real_models.rs, from the llama.cpp peer (see
# ../shared/peer/README.md): PEER=.peer by default (the source tree unpacked in it, the build in
# $PEER/build). Writes, beside the test, for each model NAME (smollm2, gemma3-270m):
#   real_models/NAME.chat.json  greedy chat answer (scripts/real_model_reference.c)
#   real_models/NAME.complete.json  greedy raw completion, for a base model (gemma3-270m)
#   real_models/NAME.ppl.json   llama-perplexity on real_models/plain_english.txt
# Each file records the command that made it. Run from anywhere; needs cc and the fetched models
# (scripts/fetch_model.py NAME). Arguments: the model names to do (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=$(realpath "${PEER:-.peer}")
SRC="$PEER/llama_cpp_python-0.3.36/vendor/llama.cpp"
BIN="$PEER/build/bin"
OUT=crates/cli/tests/real_models
N_GEN=24
USER_MSG="What is the capital of France? Answer in one sentence."
CTX=512
CHUNKS=4
LLAMA_CPP_DESC="llama-cpp-python 0.3.36 vendored tree (ggml 0.25.3), ../shared/peer/README.md"

tool=$(mktemp -d)/real_model_reference
cc -O2 -std=c11 -I"$SRC/include" -I"$SRC/ggml/include" scripts/real_model_reference.c \
  -L"$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$tool"

# chat NAME SYSTEM [TEMPLATE] [PROMPT OUTFILE]: the greedy answer to PROMPT (default USER_MSG). SYSTEM is the model's default system
# message (which its Jinja template adds when there is none; empty: no system message), TEMPLATE
# llama.cpp's built-in template for a file that carries none (the test renders the model's own
# Jinja template, which must give the same tokens).
chat() {
  local name=$1 system=$2 template=("${@:3:1}") prompt=${4:-$USER_MSG} dst=$OUT/${5:-$1.chat.json} model
  model=$(scripts/fetch_model.py "$name")
  "$tool" "$model" "$N_GEN" "$system" "$prompt" "${template[@]}" > "$OUT/.chat.tmp"
  python3 - "$OUT/.chat.tmp" "$dst" "$N_GEN" "$system" "$prompt" \
    "$(basename "$model") (scripts/fetch_model.py $name)" "$LLAMA_CPP_DESC" "${template[@]}" <<'PY'
import json, sys
src, dst, n_gen, system, user, model, llama_cpp, *template = sys.argv[1:]
d = json.load(open(src))
args = [n_gen, system, user] + template
out = {
    "model": model,
    "llama_cpp": llama_cpp,
    "command": "scripts/gen_real_model_reference.sh: real_model_reference MODEL "
               + " ".join(a if a.isdigit() else json.dumps(a) for a in args),
    "settings": "f32 K/V cache, flash attention off, 2 threads, prompt in one batch, then one "
                "token per llama_decode; greedy = argmax, lowest id on ties",
    **d,
}
json.dump(out, open(dst, "w"), indent=1)
open(dst, "a").write("\n")
PY
  rm "$OUT/.chat.tmp"
}

# ppl NAME: llama-perplexity on plain_english.txt, CTX tokens a chunk, the first CHUNKS chunks.
ppl() {
  local name=$1 model
  model=$(scripts/fetch_model.py "$name")
  local ppl_cmd=(llama-perplexity -m MODEL -f "$OUT/plain_english.txt" -c "$CTX" --chunks "$CHUNKS"
    -t 2 -ctk f32 -ctv f32 -fa off)
  "$BIN/llama-perplexity" -m "$model" "${ppl_cmd[@]:3}" > "$OUT/.ppl.log" 2>&1
  python3 - "$OUT/.ppl.log" "$OUT/$name.ppl.json" "${ppl_cmd[*]}" "$CTX" "$CHUNKS" \
    "$(basename "$model") (scripts/fetch_model.py $name)" "$LLAMA_CPP_DESC" <<'PY'
import json, re, sys
log, dst, cmd, ctx, chunks, model, llama_cpp = sys.argv[1:]
text = open(log).read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
if not m:
    sys.exit(f"no final estimate in llama-perplexity's output:\n{text[-2000:]}")
running_ppl = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),?", text)]
out = {
    "model": model,
    "llama_cpp": llama_cpp,
    "command": cmd,
    "ctx": int(ctx),
    "chunks": int(chunks),
    "running_ppl": running_ppl,
    "ppl": float(m.group(1)),
    "ppl_stderr": float(m.group(2)),
}
json.dump(out, open(dst, "w"), indent=1)
open(dst, "a").write("\n")
PY
  rm "$OUT/.ppl.log"
}

[ $# -gt 0 ] || set -- smollm2 gemma3-270m
for name in "$@"; do
  case $name in
    smollm2) chat smollm2 "You are a helpful AI assistant named SmolLM, trained by Hugging Face" ;;
    # The file carries no chat template: llama.cpp's built-in "gemma" renders as Gemma 3's own
    # template (real_models/gemma3.jinja), but for the BOS that the template writes as text and
    # llama.cpp adds in tokenizing; no system message (Gemma has none by default).
    # It is the pretrained model (no chat tuning: the chat answer repeats the question), so also a
    # raw completion, which the CLI test checks for a sensible answer.
    gemma3-270m) chat gemma3-270m "" gemma
      chat gemma3-270m "" none "$(printf 'Question: What is the capital of France?\nAnswer:')" \
        gemma3-270m.complete.json ;;
    *) echo "unknown model $name" >&2; exit 1 ;;
  esac
  ppl "$name"
  cat "$OUT/$name.chat.json" "$OUT/$name.ppl.json"
done
