#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up (packages, build, default model), then
#   1. ctest on the release build (unit, model, CLI, install; GPU tests skip without a GPU),
#   2. the same suites under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), less
#      the long llama.cpp comparisons (label "reference"), whose code paths the others cover,
#   3. a short libFuzzer run of every untrusted-input reader (build-fuzz/): GGUF, KV store file,
#      hash file, key-code file, summarize log and manifest (tools/fuzz.sh).
# Set SL_FUZZ_SECONDS to fuzz longer (default 60 per target). Everything a test needs (models,
# corpus, a quick Spotlight hash) is fetched or made by this command; .ci/run runs it from an
# empty model cache.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

# The CPU decides which kernel paths run (AVX-512, AVX2, scalar): say which this machine has.
isa=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' |
  grep -x -E 'sse4_2|avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx512_vpopcntdq' | tr '\n' ' ' || true)
echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'); flags: ${isa:-unknown}"

tools/setup.sh --no-run --no-hash
# The second, long-context model (Qwen2 family, 32K) is tested too, and the real-text corpus
# (held-out documents feed the perplexity comparison with llama.cpp).
tools/fetch-model.sh qwen2.5-coder-0.5b
tools/fetch-corpus.sh

echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== tests under ASan + UBSan"
if [ ! -f build-asan/CMakeCache.txt ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_SANITIZE=address,undefined \
    -DSL_CUDA=OFF -DSL_BUILD_BENCH=OFF >/dev/null
fi
cmake --build build-asan -j "$jobs" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp" \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -E 'test-install' -LE reference

echo "== fuzz smoke run"
tools/fuzz.sh "${SL_FUZZ_SECONDS:-60}"
