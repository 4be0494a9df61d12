#!/bin/sh
# make_labs_bench_models.sh - the GLM-4.5-Air / ERNIE-4.5-0.3B / Gemma-3-1B benchmark models (random weights, the
# tensor layout and metadata keys of the real checkpoints as llama.cpp's converter writes them; see bench/README.md):
# for each preset an f16 file from make_labs_bench_model.py, quantized with llama-quantize (no imatrix), the f16 file
# deleted afterwards to save disk (KEEP_F16=1 keeps it).
#
# Needs: LLAMA_CPP (llama.cpp source tree: gguf-py and models/ggml-vocab-*.gguf), LLAMA_CPP_BIN (llama-quantize;
# default .peer/build/bin), PY (python with numpy; default python3), GEMMA_VOCAB (a GGUF with the Gemma 3 tokenizer;
# default the real Gemma-3-270M file that scripts/fetch_model.py gemma3-270m caches).
# Run:  LLAMA_CPP=.peer/llama_cpp_python-0.3.36/vendor/llama.cpp sh bench/make_labs_bench_models.sh \
#           [preset:TYPE,TYPE ...]       (default: ernie45-0.3b:Q4_K_M gemma3-1b:Q4_K_M glm45-air-8l:Q4_K_M)
# Disk: one f16 file plus one quantized file at once; the most is glm45-air-8l: 10.6 + 3.3 GB.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${LLAMA_CPP:?set LLAMA_CPP}"
BIN=${LLAMA_CPP_BIN:-$ROOT/.peer/build/bin}
PY=${PY:-python3}
OUT=$ROOT/bench/models
mkdir -p "$OUT"
export PYTHONPATH=$LLAMA_CPP/gguf-py
[ $# -gt 0 ] || set -- ernie45-0.3b:Q4_K_M gemma3-1b:Q4_K_M glm45-air-8l:Q4_K_M
for spec in "$@"; do
  p=${spec%%:*}
  case $p in
    glm45-*) vocab=$LLAMA_CPP/models/ggml-vocab-qwen2.gguf ;;   # GLM's own BPE vocabulary is not in the tree
    ernie45-*) vocab=$LLAMA_CPP/models/ggml-vocab-llama-spm.gguf ;;  # SentencePiece, as ERNIE's; padded
    gemma3-*) vocab=${GEMMA_VOCAB:-$(python3 "$ROOT"/scripts/fetch_model.py gemma3-270m)} ;;
    *) echo "unknown preset $p" >&2; exit 1 ;;
  esac
  for q in $(echo "${spec#*:}" | tr , ' '); do
    [ -f "$OUT/$p-f16.gguf" ] || $PY "$ROOT"/bench/make_labs_bench_model.py --preset "$p" --vocab "$vocab" \
      --out "$OUT/$p-f16.gguf"
    "$BIN"/llama-quantize "$OUT/$p-f16.gguf" "$OUT/$p-$q.gguf" "$q" 2 > "$OUT/$p-$q.log" 2>&1 \
      || { tail -20 "$OUT/$p-$q.log"; exit 1; }
    tail -3 "$OUT/$p-$q.log" | grep -E "model size|quant size" || true
    rm -f "$OUT/$p-$q.log"
    [ "${KEEP_F16:-0}" = 1 ] || rm -f "$OUT/$p-f16.gguf"
  done
done
ls -l "$OUT"/glm45-* "$OUT"/ernie45-* "$OUT"/gemma3-* 2>/dev/null || true
