#!/usr/bin/env bash
# Everything a fresh machine (Python 3.11+, gcc, cmake) needs to run meshp2p from this checkout:
#   1. libgmp-dev, which libp2p's fastecdsa compiles against (apt-get, as root or through sudo);
#   2. a virtual environment in .venv with meshp2p installed editable (with --test: plus the test tools);
#   3. llama.cpp built once from the pinned release (vendor/llama.cpp/build.sh) into ~/.cache/meshp2p.
# Safe to run again: each step is skipped when already done.
# usage: tools/setup.sh [--test]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python=${PYTHON:-python3}

if ! printf '#include <gmp.h>\n' | cc -E -x c - >/dev/null 2>&1; then
  echo "== installing libgmp-dev (needed to build libp2p's fastecdsa)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgmp-dev
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.meshp2p-installed
want="$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)$extras"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing meshp2p$extras into .venv"
  .venv/bin/python -m pip install --quiet -e ".$extras"
  echo "$want" > "$stamp"
fi

if ! .venv/bin/python -c "from meshp2p.inference.binaries import find_llama_binaries as f; f()" 2>/dev/null; then
  .venv/bin/meshp2p llama build
fi
echo "== ready: .venv/bin/meshp2p"
