#!/usr/bin/env bash
# llama.cpp's sample GBNF grammars (vendor/llama.cpp/grammars/*.gbnf of the llama-cpp-python
# 0.3.36 sdist) for crates/output/tests/gbnf.rs, into the model cache ($FRUGAL_MODEL_CACHE, by
# default ~/.cache/frugal/models) under llama-cpp-grammars/. Nothing is downloaded when they are
# there already; the tarball is deleted once they are out. The repository keeps no copy of them.
set -euo pipefail
cache="${FRUGAL_MODEL_CACHE:-$HOME/.cache/frugal/models}"
dest="$cache/llama-cpp-grammars"
if compgen -G "$dest/*.gbnf" > /dev/null; then
  exit 0
fi
version=0.3.36
name="llama_cpp_python-$version.tar.gz"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The sdist's address and hash from PyPI's index (JSON form of the simple API); `pip download`
# would also build the package's metadata (CMake and all) before keeping the file.
if ! python3 - "$name" > "$tmp/where" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(
    "https://pypi.org/simple/llama-cpp-python/",
    headers={"Accept": "application/vnd.pypi.simple.v1+json"},
)
with urllib.request.urlopen(req, timeout=60) as r:
    files = json.load(r)["files"]
f = next(f for f in files if f["filename"] == sys.argv[1])
print(f["url"], f["hashes"]["sha256"])
PY
then
  pip3 download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp"
fi
if [ ! -f "$tmp/$name" ]; then
  read -r url sha < "$tmp/where"
  curl -fsSL --retry 3 -o "$tmp/$name" "$url"
  echo "$sha  $tmp/$name" | sha256sum -c --quiet -
fi
mkdir -p "$tmp/x" "$dest"
tar -xzf "$tmp/$name" -C "$tmp/x" --wildcards "*/vendor/llama.cpp/grammars/*.gbnf"
rm -f "$tmp/$name"
find "$tmp/x" -path "*/vendor/llama.cpp/grammars/*.gbnf" -exec cp {} "$dest/" \;
echo "llama.cpp's grammars are in $dest: $(cd "$dest" && echo *.gbnf)"
