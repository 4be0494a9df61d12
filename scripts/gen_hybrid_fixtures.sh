#!/bin/sh
# gen_hybrid_fixtures.sh - the project's hybrid-model fixtures (issue 15): tiny random-weight Qwen3.5 (dense),
# Qwen3.5-MoE and Qwen3-Next checkpoints made with transformers the way ../shared/fixtures/tools/hf_tiny.py makes
# the shared ones (scripts/hybrid_fixtures/hf_tiny_hybrid.py; each with one multi-token-prediction block),
# converted by llama.cpp's convert_hf_to_gguf.py, quantized by llama-quantize, and what llama.cpp and HF compute on
# them, in the shared set's formats (its make_expected.py, run unchanged). See crates/fixtures/data/hybrid/README.md.
#
# Needs (as ../shared/fixtures/regen.sh does):
#   LLAMA_CPP      llama.cpp source tree (vendor/llama.cpp of the sdist llama-cpp-python==0.3.36)
#   LLAMA_CPP_BIN  bin/ of a CPU build of it with llama-quantize, libllama.so, libggml-base.so
#   PY             python with torch (CPU), transformers==5.23.0, tokenizers, safetensors, numpy
#                  (gguf-py is taken from $LLAMA_CPP/gguf-py, so it matches the build)
# Run:  LLAMA_CPP=... LLAMA_CPP_BIN=... PY=... sh scripts/gen_hybrid_fixtures.sh
# Scratch files (HF checkpoints, every GGUF, the dequantized copies, all logits) go to $WORK (default
# target/hybrid-fixtures); the files named by SHIP (default below) are copied into crates/fixtures/data/hybrid,
# which is emptied first (its README and SHA256SUMS excepted). About 70 s on 2 cores.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${FRUGAL_FIXTURES:-$ROOT/../shared/fixtures}
T=$FIX/tools
S=$ROOT/scripts/hybrid_fixtures
WORK=${WORK:-$ROOT/target/hybrid-fixtures}
DATA=$ROOT/crates/fixtures/data/hybrid
CC=${CC:-cc}
ARCHS="qwen35 qwen35moe qwen3next"
QUANTS="Q8_0 Q4_K_M"
# What is committed (size: every GGUF here is 2.8-30 MB; see the README): one quantized file per architecture,
# whose dequantized copy's logits (expected/<model>.deq.batched.f32) are the exact-arithmetic reference.
SHIP=${SHIP:-"qwen35-Q4_K_M qwen35moe-Q4_K_M qwen3next-Q4_K_M"}
: "${LLAMA_CPP:?set LLAMA_CPP}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}" "${PY:?set PY}"
export PYTHONPATH=$LLAMA_CPP/gguf-py HF_HUB_OFFLINE=1
rm -rf "$WORK"/fix "$WORK"/models "$WORK"/deq "$WORK"/expected "$DATA"/models "$DATA"/expected
mkdir -p "$WORK"/bin "$WORK"/tok "$WORK"/models "$WORK"/deq "$WORK"/logs "$DATA"/models "$DATA"/expected

# 0. the fixture set's two C tools, linked against this build (as regen.sh does)
$CC -O2 -o "$WORK"/bin/dump_logits_gen "$T"/dump_logits_gen.c -I"$LLAMA_CPP"/include -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"
$CC -O2 -o "$WORK"/bin/check_deq "$T"/check_deq.c -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"

# 1. the shared set's 515-token toy tokenizer, trained again from $LLAMA_CPP/docs (it is the file in its hf/qwen2)
LLAMA_CPP=$LLAMA_CPP $PY "$T"/train_tiny_bpe.py "$WORK"/tok/tiny-bpe-512 512 > "$WORK"/logs/tokenizer.log
cmp "$WORK"/tok/tiny-bpe-512/tokenizer.json "$FIX"/hf/qwen2/tokenizer.json

# 2. tiny random-weight HF checkpoints (bf16 safetensors, + one MTP block) and HF reference logits (fp32, eager)
TOKENIZERS_DIR="$WORK"/tok FIXTURES_OUT="$WORK"/fix $PY "$S"/hf_tiny_hybrid.py $ARCHS 2> "$WORK"/logs/hf.log

# 3. GGUF with llama.cpp's convert_hf_to_gguf.py through the shared set's wrapper (pre-tokenizer name forced to
#    qwen2: the toy tokenizer uses the Qwen2 regex), quantized with llama-quantize, dequantized back to F32 with
#    gguf-py; check_deq proves each copy bit-identical to ggml's own dequantization
for m in $ARCHS; do
  LLAMA_CPP=$LLAMA_CPP GGUF_PRE=qwen2 $PY "$T"/convert_hf_tiny.py "$WORK"/fix/$m \
    --outfile "$WORK"/models/$m-f32.gguf --outtype f32 > "$WORK"/logs/$m-convert.log 2>&1
  for q in $QUANTS; do
    "$LLAMA_CPP_BIN"/llama-quantize "$WORK"/models/$m-f32.gguf "$WORK"/models/$m-$q.gguf $q 2 \
      > "$WORK"/logs/$m-$q.log 2>&1
    $PY "$T"/dequant_gguf.py "$WORK"/models/$m-$q.gguf "$WORK"/deq/$m-$q-deq.gguf > /dev/null
    "$WORK"/bin/check_deq "$WORK"/models/$m-$q.gguf "$WORK"/deq/$m-$q-deq.gguf | tail -1
  done
done

# 4. expected logits with the shared set's make_expected.py, unchanged: batched and --step, f32 KV cache, no flash
#    attention, 2 threads, 16 greedy tokens; the deq copies' logits; distances (HF vs llama.cpp on the f32 files)
$PY "$T"/make_expected.py "$WORK"/bin/dump_logits_gen "$WORK"/models "$WORK"/fix "$WORK"/deq "$WORK"/expected \
    "$(echo $ARCHS | tr ' ' ,)" | tee "$WORK"/logs/make_expected.log

# 5. the shipped subset: the SHIP models, their expected files, the prompt (<arch>.ref_tokens.json), and
#    distances.json restricted to them (every measured distance, shipped or not, is in $WORK/expected/distances.json)
for s in $SHIP; do
  cp "$WORK"/models/$s.gguf "$DATA"/models/
  cp "$WORK"/expected/$s.json "$WORK"/expected/$s.*.f32 "$DATA"/expected/
  cp "$WORK"/expected/"${s%%-*}".ref_tokens.json "$DATA"/expected/
  # llama.cpp on the f32 model of the same weights: the quantized path's error is held to 1.5x
  # llama.cpp's own against it (crates/models/tests/common, check_ggml_path)
  cp "$WORK"/expected/"${s%%-*}"-f32.batched.f32 "$DATA"/expected/
done
# the dense f32 model, gzip-compressed (8 MB), with llama.cpp's step logits and transformers' logits: the
# f32 check against both (crates/models/tests/hybrid_parity.rs; frugal_fixtures::Set::model decompresses it)
gzip -9 -n -c "$WORK"/models/qwen35-f32.gguf > "$DATA"/models/qwen35-f32.gguf.gz
cp "$WORK"/expected/qwen35-f32.json "$WORK"/expected/qwen35-f32.step.f32 "$WORK"/expected/qwen35.hf.f32 "$DATA"/expected/
$PY "$S"/distances.py subset "$WORK"/expected/distances.json "$DATA"/expected/distances.json $SHIP

# 6. the README's tables: tensor types per file, and every distance measured
$PY "$ROOT"/scripts/quant_fixtures/tensor_types.py "$WORK"/models/*.gguf > "$WORK"/tensor_types.md
$PY "$S"/distances.py table "$WORK"/expected/distances.json > "$WORK"/distances.md
cat "$WORK"/tensor_types.md "$WORK"/distances.md
(cd "$DATA" && find models expected -type f | sort | xargs sha256sum) > "$DATA"/SHA256SUMS
du -sb "$DATA"/models "$DATA"/expected
