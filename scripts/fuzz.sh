#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each (default 60):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Runs on the stable toolchain CI has (RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z sanitizer
# flags; stable ships the ASan runtime), so no nightly download is needed: only cargo-fuzz, from
# crates.io, when it is missing. Seeds: the fixture models for `gguf`, fuzz/seeds/<target>/ for the others.
# Crashes land in fuzz/artifacts/<target>/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
FIXTURES=${FRUGAL_FIXTURES:-../shared/fixtures}

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then
    cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
  fi
  if [ "$t" = gguf ] && [ -d "$FIXTURES/models" ]; then
    cp -n "$FIXTURES"/models/qwen2-Q4_0.gguf "corpus/$t/" 2>/dev/null || true
  fi
  echo "== fuzzing $t for ${SECONDS_PER_TARGET}s"
  cargo fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048
done
