#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan (build-fuzz/) and fuzzes the GGUF
# reader for N seconds (default 60), starting from the seeds tests/fuzz/make-seeds.py writes.
# Crashing inputs are kept in build-fuzz/crashes/. Exit status non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_FUZZ=ON \
    -DSL_SANITIZE=address,undefined -DSL_CUDA=OFF -DSL_BUILD_BENCH=OFF >/dev/null
fi
cmake --build build-fuzz -j "$jobs" --target fuzz-gguf >/dev/null
corpus=build-fuzz/corpus-gguf
mkdir -p "$corpus" build-fuzz/crashes
python3 tests/fuzz/make-seeds.py "$corpus"
set +e
build-fuzz/tests/fuzz-gguf "$corpus" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/crashes/ -print_final_stats=1 >build-fuzz/fuzz.log 2>&1
rc=$?
set -e
grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" build-fuzz/fuzz.log || true
if [ "$rc" != 0 ]; then
  echo "fuzz: crash (exit $rc); input saved in build-fuzz/crashes/, log in build-fuzz/fuzz.log" >&2
  exit 1
fi
echo "fuzz: no crash in ${secs}s"
