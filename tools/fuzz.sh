#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan (build-fuzz/) and fuzzes the GGUF
# reader, then the KV store file format, then the hash file reader, for N seconds each
# (default 60), starting from the seeds tests/fuzz/make-seeds.py, tests/fuzz/make-kv-seeds.c
# and tests/fuzz/make-hash-seeds.c write. Crashing inputs are kept in build-fuzz/crashes/.
# Exit status non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_FUZZ=ON \
    -DSL_SANITIZE=address,undefined -DSL_CUDA=OFF -DSL_BUILD_BENCH=OFF >/dev/null
fi
cmake --build build-fuzz -j "$jobs" --target fuzz-gguf fuzz-kv-format make-kv-seeds \
  fuzz-hash-file make-hash-seeds >/dev/null
mkdir -p build-fuzz/corpus-gguf build-fuzz/corpus-kv build-fuzz/corpus-hash build-fuzz/crashes
python3 tests/fuzz/make-seeds.py build-fuzz/corpus-gguf
build-fuzz/tests/make-kv-seeds build-fuzz/corpus-kv
build-fuzz/tests/make-hash-seeds build-fuzz/corpus-hash

# run TARGET CORPUS LOG [MAX_LEN]: fuzz one target; 0 when nothing crashed
run() {
  local rc
  set +e
  "build-fuzz/tests/$1" "$2" -max_total_time="$secs" -max_len="${4:-65536}" -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/crashes/ -print_final_stats=1 >"$3" 2>&1
  rc=$?
  set -e
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" "$3" || true
  if [ "$rc" != 0 ]; then
    echo "fuzz: $1 crash (exit $rc); input saved in build-fuzz/crashes/, log in $3" >&2
    return 1
  fi
  echo "fuzz: $1 no crash in ${secs}s"
}
status=0
run fuzz-gguf build-fuzz/corpus-gguf build-fuzz/fuzz.log || status=1
run fuzz-kv-format build-fuzz/corpus-kv build-fuzz/fuzz-kv.log || status=1
# 128 KiB: a hash file with the MLP alone needs head_dim = bits >= 64, 33 KB per function.
run fuzz-hash-file build-fuzz/corpus-hash build-fuzz/fuzz-hash.log 131072 || status=1
exit "$status"
