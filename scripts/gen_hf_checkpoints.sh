#!/bin/sh
# gen_hf_checkpoints.sh - the transformers checkpoints behind the fixture GGUFs, regenerated, for the safetensors
# loader's tests of the architectures whose checkpoints are not committed (size): the shared set's llama, qwen3,
# qwen2moe (../shared/fixtures/tools/hf_tiny.py), the labs set's ernie4_5, ernie4_5-moe (with gemma3 and
# glm4moe, which are committed: scripts/labs_fixtures/hf_tiny_labs.py) and the hybrid set's qwen35, qwen35moe,
# qwen3next (scripts/hybrid_fixtures/hf_tiny_hybrid.py; only qwen35 has committed transformers logits). Each model's reference logits must equal
# the committed <arch>.hf.f32 bit for bit (then they are the very checkpoints the GGUFs were converted from).
#
# Needs: PY, a Python with torch (2.10.0 was used) and transformers==5.23.0 (numpy, safetensors).
# Run:   PY=/path/to/python sh scripts/gen_hf_checkpoints.sh [OUT]   (OUT: default target/hf-checkpoints)
# Then:  FRUGAL_SHARED_HF=OUT/shared FRUGAL_LABS_HF=OUT/labs FRUGAL_HYBRID_HF=OUT/hybrid \
#          cargo test -p frugal-loader --test checkpoint
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${FRUGAL_FIXTURES:-$ROOT/../shared/fixtures}
OUT=${1:-$ROOT/target/hf-checkpoints}
: "${PY:?set PY}"
mkdir -p "$OUT"/tok/tiny-bpe-512
cp "$FIX"/hf/qwen2/tokenizer.json "$OUT"/tok/tiny-bpe-512/
export HF_HUB_OFFLINE=1 TOKENIZERS_DIR="$OUT"/tok
FIXTURES_OUT="$OUT"/shared $PY "$FIX"/tools/hf_tiny.py llama qwen3 qwen2moe > "$OUT"/shared.log 2>&1
FIXTURES_OUT="$OUT"/labs $PY "$ROOT"/scripts/labs_fixtures/hf_tiny_labs.py > "$OUT"/labs.log 2>&1
FIXTURES_OUT="$OUT"/hybrid $PY "$ROOT"/scripts/hybrid_fixtures/hf_tiny_hybrid.py > "$OUT"/hybrid.log 2>&1
$PY - "$OUT" "$FIX" "$ROOT" <<'PY'
import sys, numpy as np
out, fix, root = sys.argv[1:]
for set_, ref, archs in [("shared", f"{fix}/expected", ["llama", "qwen3", "qwen2moe"]),
                         ("labs", f"{root}/crates/fixtures/data/labs/expected",
                          ["gemma3", "glm4moe", "ernie4_5", "ernie4_5-moe"]),
                         ("hybrid", f"{root}/crates/fixtures/data/hybrid/expected", ["qwen35"])]:
    for a in archs:
        ours = np.load(f"{out}/{set_}/{a}/ref_logits.npy")
        want = np.fromfile(f"{ref}/{a}.hf.f32", "<f4").reshape(ours.shape)
        assert (ours == want).all(), f"{a}: the regenerated checkpoint's logits differ from {a}.hf.f32"
        print(f"{a}: reference logits identical")
PY
