#!/usr/bin/env bash
# The project's test command: formatting, lints, every test of the workspace (the chat page's in
# headless Chromium, installed here by apt where possible; the GBNF converter's on llama.cpp's
# grammars, fetched once), then `frugal serve` through the official openai and anthropic Python
# clients (scripts/openai_client_test.py, scripts/anthropic_client_test.py) and a ZeroMQ
# subscriber of its KV-cache events (scripts/kv_events_test.py), in a venv at .venv-test that pip
# fills on first use, with the pinned huggingface_hub the hub crate's cache fidelity test runs;
# deploy/'s Dockerfile and Kubernetes manifests checked offline (scripts/validate_deploy.sh), then
# every fuzz target for 60 s (scripts/fuzz.sh).
# Fixtures are read from ../shared/fixtures (override with FRUGAL_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The chat page's browser test (crates/server/tests/chat_page.rs) needs Chromium and chromedriver:
# install them where we can (root with apt-get), then make the test fail rather than skip.
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
  apt_install || { apt-get update -qq && apt_install; } || echo "warning: could not install chromium" >&2
fi
if command -v chromedriver >/dev/null; then export FRUGAL_REQUIRE_BROWSER=1; fi
# llama.cpp's sample GBNF grammars (from its PyPI source package, cached) for the GBNF converter's test.
./scripts/fetch_peer_grammars.sh
export FRUGAL_REQUIRE_PEER_GRAMMARS=1
# The Python clients' venv, made before the tests: the hub crate's fidelity test
# (crates/hub/tests/huggingface_hub_fidelity.rs) shares a cache with the real huggingface_hub.
if [ ! -x .venv-test/bin/python ]; then
  python3 -m venv .venv-test
fi
.venv-test/bin/pip install -q --disable-pip-version-check openai anthropic huggingface_hub==1.33.0 pyzmq msgpack
export FRUGAL_HF_PYTHON="$PWD/.venv-test/bin/python" FRUGAL_REQUIRE_HF_PYTHON=1
cargo test --workspace --locked

cargo build --locked -p frugal
.venv-test/bin/python scripts/openai_client_test.py \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen2-Q8_0.gguf"
# Reasoning, tool calls and structured output, on a fixture with DeepSeek-R1-Distill's template.
.venv-test/bin/python scripts/openai_client_test.py --output-checks \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen3-Q8_0.gguf" \
  --chat-template-file "${FRUGAL_FIXTURES:-../shared/fixtures}/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
# Anthropic's Messages API through the official anthropic client, plain and with tools and thinking.
.venv-test/bin/python scripts/anthropic_client_test.py \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen2-Q8_0.gguf"
.venv-test/bin/python scripts/anthropic_client_test.py --output-checks \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen3-Q8_0.gguf" \
  --chat-template-file "${FRUGAL_FIXTURES:-../shared/fixtures}/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
# KV-cache events through a ZeroMQ subscriber: vLLM's schema and hashes, checked against the
# server's own prefix-cache hits, replay and shutdown.
.venv-test/bin/python scripts/kv_events_test.py \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen2-Q8_0.gguf"
# Three replicas behind a router that reads only their KV events and metrics: prefix affinity must
# serve more prompt tokens from cache than round-robin (scripts/prefix_routing_test.py).
.venv-test/bin/python scripts/prefix_routing_test.py --check \
  --frugal "${CARGO_TARGET_DIR:-target}/debug/frugal" \
  --model "${FRUGAL_FIXTURES:-../shared/fixtures}/models/qwen2-Q8_0.gguf"
# deploy/ offline: the Dockerfile linted, the Kubernetes manifests against their schemas (seconds).
./scripts/validate_deploy.sh
# Fuzzing: request parsing and message normalization, and the GGUF parser, 60 s each.
./scripts/fuzz.sh 60
