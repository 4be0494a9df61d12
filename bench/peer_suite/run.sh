#!/usr/bin/env bash
# Runs llama.cpp's own server test suite (tools/server/tests, pytest) against `frugal serve`,
# through bench/peer_suite/llama_server_wrapper.py standing in for llama-server.
#
#   bench/peer_suite/run.sh                  # the default file list below
#   bench/peer_suite/run.sh unit/test_basic.py -k props   # any pytest arguments instead
#
# Environment: LLAMA_TESTS (the suite's tests directory), FRUGAL_BIN, FRUGAL_PEER_MODEL,
# FRUGAL_PEER_THREADS (see the wrapper), PEER_TIMEOUT (seconds per test, default 120),
# PEER_MARK (pytest -m expression, default "not slow", as the suite's tests.sh).
# Output: bench/peer_suite/results/{junit.xml,pytest.log}.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
LLAMA_TESTS=${LLAMA_TESTS:-/work/main/.peer/llama_cpp_python-0.3.36/vendor/llama.cpp/tools/server/tests}
LLAMA_ROOT=$(cd "$LLAMA_TESTS/../../.." && pwd)
VENV=$ROOT/.peer-suite-venv
RESULTS=$ROOT/bench/peer_suite/results
WORK=$ROOT/.peer-suite-work
export FRUGAL_BIN=${FRUGAL_BIN:-$ROOT/target/debug/frugal}

[ -x "$FRUGAL_BIN" ] || { echo "no $FRUGAL_BIN: cargo build -p frugal first" >&2; exit 1; }

if [ ! -x "$VENV/bin/pytest" ] || [ ! -e "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$LLAMA_TESTS/requirements.txt" pytest-timeout
    touch "$VENV/.installed"
fi

# A private copy of the suite, so that nothing is written into the llama.cpp tree; its relative
# paths (../../../models/templates, ../../../tools) resolve through links to the original.
rm -rf "$WORK"
mkdir -p "$WORK/tools/server"
cp -r "$LLAMA_TESTS" "$WORK/tools/server/tests"
rm -rf "$WORK/tools/server/tests/tmp"
mkdir -p "$WORK/tools/server/tests/tmp"
ln -s "$LLAMA_ROOT/models" "$WORK/models"
[ -d "$LLAMA_ROOT/tools/mtmd" ] && ln -s "$LLAMA_ROOT/tools/mtmd" "$WORK/tools/mtmd"

mkdir -p "$RESULTS"
export LLAMA_SERVER_BIN_PATH=$ROOT/bench/peer_suite/llama_server_wrapper.py
export PYTHONDONTWRITEBYTECODE=1
export PORT=${PORT:-18080}

if [ $# -eq 0 ]; then
    set -- unit/test_basic.py unit/test_chat_completion.py unit/test_compat_anthropic.py \
        unit/test_compat_oai_responses.py unit/test_completion.py unit/test_infill.py \
        unit/test_tokenize.py unit/test_security.py unit/test_tool_call.py \
        unit/test_ctx_shift.py unit/test_template.py unit/test_ignore_eos.py
fi

cd "$WORK/tools/server/tests"
start=$(date +%s)
set +e
"$VENV/bin/pytest" -p no:cacheprovider -q -rA \
    --timeout "${PEER_TIMEOUT:-120}" -m "${PEER_MARK:-not slow}" \
    --junitxml "$RESULTS/junit.xml" "$@" 2>&1 | tee "$RESULTS/pytest.log"
rc=${PIPESTATUS[0]}
set -e
echo "peer suite: $(( $(date +%s) - start )) s, pytest exit $rc" | tee -a "$RESULTS/pytest.log"
exit "$rc"
