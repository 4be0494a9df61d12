#!/bin/sh
# gen_mtp_fixtures.sh - what llama.cpp's multi-token-prediction drafts guess on the fixtures that have an
# MTP layer (labs glm4moe, hybrid qwen35 and qwen35moe): each Q4_K_M file dequantized to F32 with the shared
# dequant_gguf.py (the exact path's reference, as in the sets), then scripts/mtp_fixtures/llama_mtp_drafts.py
# (llama-server --spec-type draft-mtp, 3 guesses a round, greedy, 16 tokens, on the set's 103-token prompt).
# Writes crates/fixtures/data/mtp/<model>.json; see its README. About 10 s.
#
# Needs: LLAMA_CPP (the llama.cpp tree, for gguf-py) and LLAMA_CPP_BIN (its build, with llama-server), as
# scripts/gen_labs_fixtures.sh; PY a Python with numpy.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${FRUGAL_FIXTURES:-$ROOT/../shared/fixtures}
DATA=$ROOT/crates/fixtures/data
WORK=${WORK:-$ROOT/target/mtp-fixtures}
: "${LLAMA_CPP:?set LLAMA_CPP}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}" "${PY:?set PY}"
export PYTHONPATH=$LLAMA_CPP/gguf-py
mkdir -p "$WORK" "$DATA"/mtp
for entry in labs:glm4moe hybrid:qwen35 hybrid:qwen35moe; do
  set=${entry%%:*} m=${entry#*:}
  $PY "$FIX"/tools/dequant_gguf.py "$DATA"/$set/models/$m-Q4_K_M.gguf "$WORK"/$m-deq.gguf > /dev/null
  $PY "$ROOT"/scripts/mtp_fixtures/llama_mtp_drafts.py "$LLAMA_CPP_BIN" "$WORK"/$m-deq.gguf \
    "$DATA"/$set/expected/$m.ref_tokens.json 16 3 $m-Q4_K_M > "$DATA"/mtp/$m-Q4_K_M.json
done
(cd "$DATA"/mtp && sha256sum *.json) > "$DATA"/mtp/SHA256SUMS
