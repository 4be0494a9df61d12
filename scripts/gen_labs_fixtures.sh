#!/bin/sh
# gen_labs_fixtures.sh - tiny random-weight Gemma 3 (gemma3), GLM-4.5 (glm4moe) and ERNIE 4.5 (ernie4_5,
# ernie4_5-moe) fixtures, made exactly as scripts/gen_hybrid_fixtures.sh makes the hybrid ones: transformers
# checkpoints (scripts/labs_fixtures/hf_tiny_labs.py), llama.cpp's convert_hf_to_gguf.py (through
# scripts/labs_fixtures/convert_labs.py: the shared convert_hf_tiny.py plus the toy-tokenizer patches these
# architectures need), llama-quantize Q4_K_M, the shared dequant_gguf.py + check_deq and make_expected.py
# (unchanged). See crates/fixtures/data/labs/README.md.
#
# Needs: LLAMA_CPP, LLAMA_CPP_BIN, PY as scripts/gen_hybrid_fixtures.sh (the same llama.cpp, transformers 5.23.0).
# Run:  LLAMA_CPP=... LLAMA_CPP_BIN=... PY=... sh scripts/gen_labs_fixtures.sh
# ARCHS picks the models (default all four); DENSE the ones whose f32 GGUF is shipped gzip-compressed
# with llama.cpp's json and step logits (default gemma3 only: DENSE="gemma3 ernie4_5" adds 2.6 MB and takes the
# set over 20 MB). Scratch files go to $WORK (default target/labs-fixtures).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${FRUGAL_FIXTURES:-$ROOT/../shared/fixtures}
T=$FIX/tools
S=$ROOT/scripts/labs_fixtures
WORK=${WORK:-$ROOT/target/labs-fixtures}
DATA=$ROOT/crates/fixtures/data/labs
CC=${CC:-cc}
ARCHS=${ARCHS:-"gemma3 glm4moe ernie4_5 ernie4_5-moe"}
DENSE=${DENSE:-gemma3}
Q=Q4_K_M
: "${LLAMA_CPP:?set LLAMA_CPP}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}" "${PY:?set PY}"
export PYTHONPATH=$LLAMA_CPP/gguf-py HF_HUB_OFFLINE=1
rm -rf "$WORK"/fix "$WORK"/models "$WORK"/deq "$WORK"/expected "$DATA"/models "$DATA"/expected
mkdir -p "$WORK"/bin "$WORK"/tok "$WORK"/models "$WORK"/deq "$WORK"/logs "$DATA"/models "$DATA"/expected

# 0. the fixture set's two C tools, linked against this build
$CC -O2 -o "$WORK"/bin/dump_logits_gen "$T"/dump_logits_gen.c -I"$LLAMA_CPP"/include -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"
$CC -O2 -o "$WORK"/bin/check_deq "$T"/check_deq.c -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"

# 1. the shared 515-token toy tokenizer, trained again (identical to ../shared/fixtures/hf/qwen2/tokenizer.json)
LLAMA_CPP=$LLAMA_CPP $PY "$T"/train_tiny_bpe.py "$WORK"/tok/tiny-bpe-512 512 > "$WORK"/logs/tokenizer.log
cmp "$WORK"/tok/tiny-bpe-512/tokenizer.json "$FIX"/hf/qwen2/tokenizer.json

# 2. HF checkpoints (bf16) + HF f32 reference logits
TOKENIZERS_DIR="$WORK"/tok FIXTURES_OUT="$WORK"/fix $PY "$S"/hf_tiny_labs.py $ARCHS 2> "$WORK"/logs/hf.log

# 3. f32 GGUF (pre-tokenizer qwen2, the toy tokenizer's regex), Q4_K_M, its dequantized copy (check_deq)
for m in $ARCHS; do
  LLAMA_CPP=$LLAMA_CPP GGUF_PRE=qwen2 $PY "$S"/convert_labs.py "$WORK"/fix/$m \
    --outfile "$WORK"/models/$m-f32.gguf --outtype f32 > "$WORK"/logs/$m-convert.log 2>&1
  "$LLAMA_CPP_BIN"/llama-quantize "$WORK"/models/$m-f32.gguf "$WORK"/models/$m-$Q.gguf $Q 2 \
    > "$WORK"/logs/$m-$Q.log 2>&1
  $PY "$T"/dequant_gguf.py "$WORK"/models/$m-$Q.gguf "$WORK"/deq/$m-$Q-deq.gguf > /dev/null
  "$WORK"/bin/check_deq "$WORK"/models/$m-$Q.gguf "$WORK"/deq/$m-$Q-deq.gguf | tail -1
done

# 4. expected logits (the shared make_expected.py, unchanged: batched and --step, f32 KV cache, no flash
#    attention, 2 threads, 16 greedy tokens; deq logits; distances incl. HF vs llama.cpp on the f32 files)
$PY "$T"/make_expected.py "$WORK"/bin/dump_logits_gen "$WORK"/models "$WORK"/fix "$WORK"/deq "$WORK"/expected \
    "$(echo $ARCHS | tr ' ' ,)" | tee "$WORK"/logs/make_expected.log

# 5. what is committed: per model the Q4_K_M file, its json / batched / step / deq.batched logits, the
#    prompt, llama.cpp's f32 batched logits, transformers' logits; for DENSE models also the f32 GGUF (gzip -9) with llama.cpp's
#    json + step logits
SHIP=""
for m in $ARCHS; do
  SHIP="$SHIP $m-$Q"
  cp "$WORK"/models/$m-$Q.gguf "$DATA"/models/
  cp "$WORK"/expected/$m-$Q.json "$WORK"/expected/$m-$Q.batched.f32 "$WORK"/expected/$m-$Q.step.f32 \
     "$WORK"/expected/$m-$Q.deq.batched.f32 "$WORK"/expected/$m.ref_tokens.json \
     "$WORK"/expected/$m-f32.batched.f32 "$WORK"/expected/$m.hf.f32 "$DATA"/expected/
done
for m in $DENSE; do
  case " $ARCHS " in *" $m "*) ;; *) continue ;; esac
  gzip -9 -n -c "$WORK"/models/$m-f32.gguf > "$DATA"/models/$m-f32.gguf.gz
  cp "$WORK"/expected/$m-f32.json "$WORK"/expected/$m-f32.step.f32 "$DATA"/expected/
  SHIP="$SHIP $m-f32"
done
$PY "$ROOT"/scripts/hybrid_fixtures/distances.py subset "$WORK"/expected/distances.json \
    "$DATA"/expected/distances.json $SHIP

# 6. the README's tables
$PY "$ROOT"/scripts/quant_fixtures/tensor_types.py "$WORK"/models/*.gguf > "$WORK"/tensor_types.md
$PY "$ROOT"/scripts/hybrid_fixtures/distances.py table "$WORK"/expected/distances.json > "$WORK"/distances.md
cat "$WORK"/tensor_types.md "$WORK"/distances.md
(cd "$DATA" && find models expected -type f | sort | xargs sha256sum) > "$DATA"/SHA256SUMS
du -sb "$DATA"/models "$DATA"/expected
