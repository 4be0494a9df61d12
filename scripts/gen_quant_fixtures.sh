#!/bin/sh
# gen_quant_fixtures.sh - the project's own quantized fixtures: one tiny model per GGUF weight type that
# ../shared/fixtures does not cover, made from its f32 models with llama.cpp, and what llama.cpp computes on
# each (the same outputs as its regen.sh / tools/make_expected.py), plus bit-exact dequantization vectors
# for kernel unit tests. See crates/fixtures/data/quants/README.md and crates/kernels/tests/data/dequant/README.md.
#
# Needs (as ../shared/fixtures/regen.sh does):
#   LLAMA_CPP      llama.cpp source tree (vendor/llama.cpp of the sdist llama-cpp-python==0.3.36)
#   LLAMA_CPP_BIN  bin/ of a CPU build of it with llama-quantize, llama-imatrix, libllama.so, libggml-base.so
#   PY             python with numpy (gguf-py is taken from $LLAMA_CPP/gguf-py, so it matches the build)
# Run:  LLAMA_CPP=... LLAMA_CPP_BIN=... PY=... sh scripts/gen_quant_fixtures.sh
# Scratch files go to $WORK (default target/quant-fixtures); outputs are overwritten in place.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${FRUGAL_FIXTURES:-$ROOT/../shared/fixtures}
T=$FIX/tools
S=$ROOT/scripts/quant_fixtures
WORK=${WORK:-$ROOT/target/quant-fixtures}
DATA=$ROOT/crates/fixtures/data/quants
DEQV=$ROOT/crates/kernels/tests/data/dequant
CC=${CC:-cc}
: "${LLAMA_CPP:?set LLAMA_CPP}" "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN}" "${PY:?set PY}"
export PYTHONPATH=$LLAMA_CPP/gguf-py
Q=$LLAMA_CPP_BIN/llama-quantize
rm -rf "$WORK"/models "$WORK"/deq "$WORK"/expected "$WORK"/fix "$DATA"/models "$DATA"/expected
mkdir -p "$WORK"/bin "$WORK"/models "$WORK"/deq "$WORK"/logs "$DATA"/models "$DATA"/expected "$DEQV"

# 0. the fixture set's two C tools, linked against this build (as regen.sh does)
$CC -O2 -o "$WORK"/bin/dump_logits_gen "$T"/dump_logits_gen.c -I"$LLAMA_CPP"/include -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"
$CC -O2 -o "$WORK"/bin/check_deq "$T"/check_deq.c -I"$LLAMA_CPP"/ggml/include \
    -L"$LLAMA_CPP_BIN" -lggml -lggml-base -Wl,-rpath,"$LLAMA_CPP_BIN"

# 1. importance matrix of qwen2-f32 on a small committed text (the 1-2 bit types require one).
#    Only blk.* matrices get entries: qwen2's token_embd is tied (also the output), which llama-imatrix skips.
"$LLAMA_CPP_BIN"/llama-imatrix -m "$FIX"/models/qwen2-f32.gguf -f "$S"/imatrix.txt -o "$WORK"/qwen2.imatrix.gguf \
    -c 128 -t 2 > "$WORK"/logs/imatrix.log 2>&1
IM="--imatrix $WORK/qwen2.imatrix.gguf"

# 2. qwen2 (every matrix row is 256 or 512 long, so no shape fallback) in one weight type per file:
#    --pure (no per-tensor mixture), so every matrix, token_embd (= the tied output) included, gets the type.
#    <file label> <llama-quantize ftype> [extra options]
dense() {
  label=$1; ftype=$2; shift 2
  # shellcheck disable=SC2086
  "$Q" --pure $IM "$@" "$FIX"/models/qwen2-f32.gguf "$DATA"/models/qwen2-"$label".gguf "$ftype" 2 \
    > "$WORK"/logs/qwen2-"$label".log 2>&1
}
# IQ2_XXS, IQ2_XS and IQ1_S cannot quantize a tensor without importance data (ggml asserts): token_embd, which
# has none, gets Q4_K there (a type the shared fixtures already check).
TOK="--token-embedding-type q4_k"
dense Q4_1 Q4_1
dense Q5_1 Q5_1
dense Q2_K Q2_K
dense Q3_K Q3_K_M                  # --pure: the ftype's default type only
dense Q5_K Q5_K_M
dense IQ1_S IQ1_S $TOK
dense IQ1_M IQ1_M
dense IQ2_XXS IQ2_XXS $TOK
dense IQ2_XS IQ2_XS $TOK
dense IQ2_S IQ2_M                  # ftype IQ2_S's default type is IQ2_XS; IQ2_M's is IQ2_S
dense IQ3_XXS IQ3_XXS
dense IQ3_S IQ3_S
dense IQ4_NL IQ4_NL
dense IQ4_XS IQ4_XS
dense TQ1_0 TQ1_0
dense TQ2_0 TQ2_0
dense Q1_0 Q1_0
dense Q2_0 Q2_0
dense NVFP4 Q8_0 --tensor-type '\.weight$=nvfp4'   # no NVFP4 ftype in llama-quantize: every matrix by name
# one "dynamic" mixture as Unsloth's UD files make them: a type per tensor (first matching pattern wins)
dense UD_MIX IQ4_XS --token-embedding-type q6_k \
  --tensor-type 'blk\.0\.attn_q=iq3_xxs' --tensor-type 'blk\.1\.attn_q=iq4_xs' \
  --tensor-type 'blk\.0\.attn_k=iq4_xs' --tensor-type 'blk\.1\.attn_k=q4_k' --tensor-type 'attn_v=q6_k' \
  --tensor-type 'blk\.0\.attn_output=iq3_xxs' --tensor-type 'blk\.1\.attn_output=iq4_xs' \
  --tensor-type 'blk\.0\.ffn_gate=iq2_xxs' --tensor-type 'blk\.1\.ffn_gate=iq3_xxs' --tensor-type 'ffn_up=iq2_xxs' \
  --tensor-type 'blk\.0\.ffn_down=q4_k' --tensor-type 'blk\.1\.ffn_down=iq4_xs'

# 3. MXFP4 exists only as MXFP4_MOE (expert tensors MXFP4, every other matrix Q8_0): the smaller MoE fixture
"$Q" "$FIX"/models/qwen3moe-f32.gguf "$DATA"/models/qwen3moe-MXFP4_MOE.gguf MXFP4_MOE 2 \
  > "$WORK"/logs/qwen3moe-MXFP4_MOE.log 2>&1

# 4. dequantized copies: gguf-py (the fixture set's dequant_gguf.py) where it knows every type of the file,
#    else ggml's own to_float (ggml_deq.py); check_deq proves each copy bit-identical to ggml's dequantization
for f in "$DATA"/models/*.gguf; do
  stem=$(basename "$f" .gguf)
  ln -sf "$f" "$WORK"/models/"$stem".gguf
  case $stem in
    *-Q1_0|*-Q2_0) $PY "$S"/ggml_deq.py "$LLAMA_CPP_BIN"/libggml-base.so "$f" "$WORK"/deq/"$stem"-deq.gguf > /dev/null ;;
    *) $PY "$T"/dequant_gguf.py "$f" "$WORK"/deq/"$stem"-deq.gguf > /dev/null ;;
  esac
  "$WORK"/bin/check_deq "$f" "$WORK"/deq/"$stem"-deq.gguf | tail -1
done

# 5. expected logits with the fixture set's make_expected.py (batched, --step, 16 greedy tokens, the deq copy's
#    logits, distances; quant_vs_f32 against the f32 model, so that is run again and its outputs dropped).
#    Its HF inputs are rebuilt from ../shared/fixtures/expected.
for a in qwen2 qwen3moe; do
  mkdir -p "$WORK"/fix/$a
  cp "$FIX"/expected/$a.ref_tokens.json "$WORK"/fix/$a/ref_tokens.json
  $PY -c "import numpy as n,sys; n.save(sys.argv[2], n.fromfile(sys.argv[1],'<f4').reshape(52,-1))" \
    "$FIX"/expected/$a.hf.f32 "$WORK"/fix/$a/ref_logits.npy
  ln -sf "$FIX"/models/$a-f32.gguf "$WORK"/models/$a-f32.gguf
done
FTYPES=$(cd "$DATA"/models && ls ./*.gguf | sed 's|^\./[a-z0-9]*-||; s|\.gguf$||' | sort -u | paste -sd, -)
$PY "$S"/make_expected.py "$T"/make_expected.py "$FTYPES" -- "$WORK"/bin/dump_logits_gen "$WORK"/models \
    "$WORK"/fix "$WORK"/deq "$WORK"/expected qwen2,qwen3moe > "$WORK"/logs/make_expected.log
for f in "$WORK"/expected/*; do
  case $(basename "$f") in *-f32.*|*.hf.f32|*.ref_tokens.json|distances.json) ;; *) cp "$f" "$DATA"/expected/ ;; esac
done
$PY -c "import json,sys; d=json.load(open(sys.argv[1])); json.dump({k:v for k,v in d.items() if not k.endswith('-f32')}, open(sys.argv[2],'w'), indent=1)" \
  "$WORK"/expected/distances.json "$DATA"/expected/distances.json

# 6. dequantization vectors for kernel tests (ggml's to_float; gguf-py must agree bit for bit where it can)
set --
for ty in Q4_1 Q5_1 Q2_K Q3_K Q5_K IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_NL IQ4_XS TQ1_0 TQ2_0 \
          NVFP4 Q1_0 Q2_0; do
  set -- "$@" "$ty=$DATA/models/qwen2-$ty.gguf"
done
$PY "$S"/dequant_vectors.py "$LLAMA_CPP_BIN"/libggml-base.so "$DEQV" "$@" \
  "MXFP4=$DATA/models/qwen3moe-MXFP4_MOE.gguf"

# 7. the per-file tensor-type table of the README
$PY "$S"/tensor_types.py "$DATA"/models/*.gguf > "$WORK"/tensor_types.md
cat "$WORK"/tensor_types.md
du -sb "$DATA" "$DEQV"
