#!/usr/bin/env bash
# `frugal pull` against curl on the same ~1 GB file from the same local fake Hub
# (crates/hub/examples/fake_hub.rs: resolve redirected to a CDN path, as the Hub does).
# Not part of CI. Both write the file to the same disk; frugal also checks its SHA-256.
# FAKE_HUB_NOT_LFS=1 serves the file as a small (non-LFS) file: no CDN redirect and no SHA-256 to
# check, which isolates the transport from the hashing.
# Usage: bench/pull_throughput.sh [SIZE_MB (1024)] [RUNS (5)]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
size_mb=${1:-1024}
runs=${2:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/frugal-pull-bench.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p frugal
cargo build --release -q -p frugal-hub --example fake_hub
target=${CARGO_TARGET_DIR:-target}/release
head -c "$((size_mb * 1024 * 1024))" /dev/urandom > "$work/model-Q8_0.gguf"
bytes=$(stat -c %s "$work/model-Q8_0.gguf")

"$target/examples/fake_hub" "$work/model-Q8_0.gguf" bench/model model-Q8_0.gguf > "$work/endpoint" &
server_pid=$!
for _ in $(seq 100); do [ "$(wc -l < "$work/endpoint")" -ge 2 ] && break; sleep 0.1; done
endpoint=$(sed -n 1p "$work/endpoint")
resolve_url=$(sed -n 2p "$work/endpoint")

# Wall seconds of a command; its CPU seconds (user + system) go to $work/cpu.
seconds() {
  local s e
  s=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/time" "$@" > /dev/null
  e=$(date +%s.%N)
  awk '{ print $1 + $2 }' "$work/time" > "$work/cpu"
  echo "$e - $s" | bc -l
}
rate() { echo "scale=1; $bytes / $1 / 1000000" | bc -l; }

best_curl=999999 best_frugal=999999
curl_times=() frugal_times=()
for run in $(seq "$runs"); do
  rm -f "$work/curl.out"
  t=$(seconds curl -sSfL -o "$work/curl.out" "$resolve_url")
  echo "run $run: curl   ${t}s  $(rate "$t") MB/s  (CPU $(cat "$work/cpu") s)"
  best_curl=$(echo "if ($t < $best_curl) $t else $best_curl" | bc -l)
  curl_times+=("$t")
  rm -rf "$work/cache"
  t=$(seconds env HF_ENDPOINT="$endpoint" HF_HUB_CACHE="$work/cache" "$target/frugal" pull bench/model:Q8_0)
  echo "run $run: frugal ${t}s  $(rate "$t") MB/s  (CPU $(cat "$work/cpu") s)"
  best_frugal=$(echo "if ($t < $best_frugal) $t else $best_frugal" | bc -l)
  frugal_times+=("$t")
done
cmp "$work/curl.out" "$work/model-Q8_0.gguf"
cmp "$(env HF_ENDPOINT="$endpoint" HF_HUB_CACHE="$work/cache" HF_HUB_OFFLINE=1 "$target/frugal" pull bench/model:Q8_0 2>/dev/null)" "$work/model-Q8_0.gguf"
echo "file: $bytes bytes; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
median_curl=$(median "${curl_times[@]}") median_frugal=$(median "${frugal_times[@]}")
echo "median: curl $(rate "$median_curl") MB/s, frugal pull $(rate "$median_frugal") MB/s," \
  "frugal/curl = $(echo "scale=3; $median_curl / $median_frugal" | bc -l)"
echo "best: curl $(rate "$best_curl") MB/s, frugal pull $(rate "$best_frugal") MB/s," \
  "frugal/curl = $(echo "scale=3; $best_curl / $best_frugal" | bc -l)"
