#!/usr/bin/env bash
# Everything a fresh machine (Python 3.11+, gcc, cmake) needs to run meshp2p from this checkout:
#   1. libgmp-dev, which libp2p's fastecdsa compiles against (apt-get, as root or through sudo);
#   2. a virtual environment in .venv with meshp2p installed editable (with --test: plus the test tools);
#   3. with --test and npm present: the Node clients tests/node uses (npm ci, from its lock file);
#   4. with --test: Debian's chromium (apt-get), which the web console's browser tests drive headless through the
#      playwright package (a test extra; playwright downloads no browser of its own);
#   5. llama.cpp built once from the pinned release (vendor/llama.cpp/build.sh) into ~/.cache/meshp2p.
# Safe to run again: each step is skipped when already done.
# usage: tools/setup.sh [--test]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python=${PYTHON:-python3}
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

if ! printf '#include <gmp.h>\n' | cc -E -x c - >/dev/null 2>&1; then
  echo "== installing libgmp-dev (needed to build libp2p's fastecdsa)"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgmp-dev
fi

if [ -n "$extras" ] && ! command -v chromium >/dev/null; then
  echo "== installing chromium (the web console's browser tests drive it headless)"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
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

if [ -n "$extras" ] && command -v npm >/dev/null && [ ! -f tests/node/node_modules/.package-lock.json ]; then
  echo "== installing the Node test clients (tests/node)"
  npm ci --silent --no-audit --no-fund --prefix tests/node
fi

# Build when no binaries are found, or when the cached build predates our current patches (BUILD_INFO lists them).
build_info=${XDG_CACHE_HOME:-$HOME/.cache}/meshp2p/llama.cpp/$(cat vendor/llama.cpp/VERSION)/BUILD_INFO
want_patches="patches=$(cd vendor/llama.cpp/patches && ls *.patch 2>/dev/null | tr '\n' ' ')"
if ! .venv/bin/python -c "from meshp2p.inference.binaries import find_llama_binaries as f; f()" 2>/dev/null; then
  .venv/bin/meshp2p llama build
elif [ -z "${MESHP2P_LLAMA_DIR:-}" ] && [ -f "$build_info" ] && ! grep -qxF "$want_patches" "$build_info"; then
  echo "== the cached llama.cpp build predates vendor/llama.cpp/patches: rebuilding"
  .venv/bin/meshp2p llama build
fi
echo "== ready: .venv/bin/meshp2p"
