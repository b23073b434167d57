#!/usr/bin/env bash
# Builds llama.cpp, the independent reference engine our tests and benchmarks compare against,
# from the llama-cpp-python sdist on PyPI (its vendored llama.cpp). Nothing is written into the
# repository and no llama.cpp source is ever committed: everything lives in the model cache,
#   $CACHE/llama-cpp/venv   Python venv with llama_cpp (built from the sdist) and numpy
#   $CACHE/llama-cpp/bin    llama-bench, llama-perplexity, llama-tokenize, llama-completion,
#                           llama-simple (static, from the same vendored sources)
#   $CACHE/llama-cpp/src    the sdist and its extracted tree; build/ is the cmake build tree
# where CACHE = $SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else ~/.cache/spotlight.
#
# Rerun (idempotent; a marker file records a finished build, so a second run only prints paths):
#   tools/ref/llama-cpp.sh            # build if needed, then print where things are
#   tools/ref/llama-cpp.sh --force    # rebuild from scratch
#   JOBS=4 tools/ref/llama-cpp.sh     # parallel compile jobs (default: nproc)
# Needs python3 (with venv and pip), cmake >= 3.21, a C/C++ compiler, and network access to PyPI.
# Takes ~30 min on 2 cores (the library is compiled twice: once by pip, once for the tools).
#
# Never built with -march=native: some of our machines report AMX in cpuid and AMX instructions
# fault there. The flags below pin an AVX2/FMA/F16C baseline that every machine we use has.
set -euo pipefail

VERSION=0.3.36   # vendors ggml-org/llama.cpp@0c1e57098 (see CHANGELOG.md in the sdist)
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
root="$cache/llama-cpp"
venv="$root/venv"
bin="$root/bin"
src="$root/src"
build="$root/build"
marker="$root/COMPLETE"
jobs="${JOBS:-$(nproc)}"

CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON \
-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
-DGGML_AMX_BF16=OFF -DGGML_CUDA=OFF -DGGML_BLAS=OFF -DGGML_BACKEND_DL=OFF -DLLAMA_CURL=OFF"

report() {
  echo "llama-cpp: $(cat "$marker")"
  echo "  python : $venv/bin/python  (import llama_cpp)"
  echo "  tools  : $bin/"
  ls "$bin" | sed 's/^/           /'
  echo "  sources: $src/llama_cpp_python-$VERSION/vendor/llama.cpp"
}

if [ "${1:-}" = "--force" ]; then
  rm -rf "$root"
elif [ -f "$marker" ] && grep -q "^llama-cpp-python $VERSION " "$marker"; then
  report
  exit 0
fi

t0=$(date +%s)
mkdir -p "$root"
rm -f "$marker"

# 1. The sdist (source only, no wheels) and its extracted tree.
sdist="$src/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
  mkdir -p "$src"
  python3 -m pip download --disable-pip-version-check --no-binary :all: --no-deps \
    -d "$src" "llama-cpp-python==$VERSION"
fi
tree="$src/llama_cpp_python-$VERSION"
[ -d "$tree/vendor/llama.cpp/ggml" ] || tar -xzf "$sdist" -C "$src"
commit=$(sed -n "/^## \[$VERSION\]/,/^## \[/p" "$tree/CHANGELOG.md" |
  grep -o 'ggml-org/llama.cpp@[0-9a-f]*' | head -n 1 | cut -d@ -f2)
commit="${commit:-unknown}"

# 2. The venv with llama_cpp built from that sdist (no prebuilt wheel), plus numpy.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet numpy \
  typing-extensions diskcache jinja2   # llama_cpp's runtime dependencies
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "llama-cpp: building llama-cpp-python $VERSION into $venv (slow)"
  CMAKE_ARGS="$CPU_FLAGS -DLLAVA_BUILD=OFF -DCMAKE_BUILD_TYPE=Release" \
  CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-cache-dir \
      --force-reinstall --no-deps --no-binary llama-cpp-python "$sdist"
fi

# 3. The CLI tools from the same vendored sources, statically linked so bin/ is self-contained.
echo "llama-cpp: building llama.cpp tools into $bin"
cmake -S "$tree/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release $CPU_FLAGS \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_COMMIT="$commit" >"$root/cmake-configure.log"
targets="llama-bench llama-perplexity llama-tokenize llama-completion llama-simple"
cmake --build "$build" -j "$jobs" --target $targets
mkdir -p "$bin"
for t in $targets; do
  cp -f "$build/bin/$t" "$bin/$t"
done

t1=$(date +%s)
echo "llama-cpp-python $VERSION llama.cpp@$commit built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((t1 - t0)) s with: $CPU_FLAGS" >"$marker"
report
