#!/bin/sh
# make_hybrid_bench_models.sh - the Qwen3.5 benchmark models (random weights, the exact tensor layout of the
# real checkpoints as llama.cpp's converter writes them; see bench/README.md): for each preset an f16 file
# from make_hybrid_bench_model.py, quantized with llama-quantize (no imatrix), the f16 file deleted
# afterwards to save disk (it is made again in about a minute; KEEP_F16=1 keeps it).
#
# Needs: LLAMA_CPP (llama.cpp source tree, for gguf-py and models/ggml-vocab-qwen35.gguf), LLAMA_CPP_BIN
# (llama-quantize; default .peer/build/bin), PY (python with numpy; default python3).
# Run:  LLAMA_CPP=.peer/llama_cpp_python-0.3.36/vendor/llama.cpp sh bench/make_hybrid_bench_models.sh \
#           [preset:TYPE,TYPE ...]       (default: qwen35-0.8b:Q8_0,Q4_K_M qwen35-2b:Q8_0,Q4_K_M
#                                                   qwen35moe-small:Q8_0,Q4_K_M)
# Disk: each f16 file is made once per quantized type and deleted after it, so the most ever used at once is
# one f16 file plus one quantized file (2B: 3.9 + 2.1 GB; qwen35moe-small: 4.5 + 2.4 GB).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${LLAMA_CPP:?set LLAMA_CPP}"
BIN=${LLAMA_CPP_BIN:-$ROOT/.peer/build/bin}
PY=${PY:-python3}
OUT=$ROOT/bench/models
mkdir -p "$OUT"
export PYTHONPATH=$LLAMA_CPP/gguf-py
[ $# -gt 0 ] || set -- qwen35-0.8b:Q8_0,Q4_K_M qwen35-2b:Q8_0,Q4_K_M qwen35moe-small:Q8_0,Q4_K_M
for spec in "$@"; do
  p=${spec%%:*}
  for q in $(echo "${spec#*:}" | tr , ' '); do
    [ -f "$OUT/$p-f16.gguf" ] || $PY "$ROOT"/bench/make_hybrid_bench_model.py --preset "$p" \
      --vocab "$LLAMA_CPP"/models/ggml-vocab-qwen35.gguf --out "$OUT/$p-f16.gguf"
    "$BIN"/llama-quantize "$OUT/$p-f16.gguf" "$OUT/$p-$q.gguf" "$q" 2 > "$OUT/$p-$q.log" 2>&1 \
      || { tail -20 "$OUT/$p-$q.log"; exit 1; }
    tail -3 "$OUT/$p-$q.log" | grep -E "model size|quant size" || true
    rm -f "$OUT/$p-$q.log"
    [ "${KEEP_F16:-0}" = 1 ] || rm -f "$OUT/$p-f16.gguf"
  done
done
ls -l "$OUT"/qwen35*
