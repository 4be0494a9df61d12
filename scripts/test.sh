#!/usr/bin/env bash
# The project's test command: formatting, lints, every test of the workspace, then `frugal serve`
# through the official openai Python client (scripts/openai_client_test.py, in a venv at .venv-test
# that `pip install openai` fills on first use), then every fuzz target for 60 s (scripts/fuzz.sh).
# Fixtures are read from ../shared/fixtures (override with FRUGAL_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
./scripts/fetch_peer_grammars.sh
export FRUGAL_REQUIRE_PEER_GRAMMARS=1
cargo test --workspace --locked

cargo build --locked -p frugal
if [ ! -x .venv-test/bin/python ]; then
  python3 -m venv .venv-test
fi
.venv-test/bin/pip install -q --disable-pip-version-check openai
.venv-test/bin/python scripts/openai_client_test.py \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen2-Q8_0.gguf"
# Reasoning, tool calls and structured output, on a fixture with DeepSeek-R1-Distill's template.
.venv-test/bin/python scripts/openai_client_test.py --output-checks \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen3-Q8_0.gguf" \
  --chat-template-file "${FRUGAL_FIXTURES:-../shared/fixtures}/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
# Fuzzing: request parsing and message normalization, and the GGUF parser, 60 s each.
./scripts/fuzz.sh 60
