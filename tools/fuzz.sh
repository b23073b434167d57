#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan (build-fuzz/) and fuzzes, one after
# another: the GGUF reader (gguf), the KV store file format (kv), the hash file reader (hash),
# the key-code file reader (codes), the summarize record log reader (log) and the summarize
# manifest reader (manifest), each from the seeds its maker writes (tests/fuzz/make-*.{c,py}).
# Crashing inputs are kept in build-fuzz/crashes/. Exit status non-zero on any crash.
#
#   tools/fuzz.sh [SECONDS]   each target for SECONDS (default 60)
#   FUZZ_RUNS=N               each target for N executions instead (libFuzzer's -runs; the
#                             replay of the corpus comes on top), no time limit: with FUZZ_SEED
#                             and the same starting corpus, a long run repeats exactly
#   FUZZ_SEED=S               libFuzzer's random seed (default: a new one each run)
#   FUZZ_TARGETS="log codes"  only these targets (names as above), in this order
# The corpora (build-fuzz/corpus-NAME) keep what each run found; delete them to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
runs=${FUZZ_RUNS:-}
targets=${FUZZ_TARGETS:-gguf kv hash codes log manifest}
jobs=$(nproc 2>/dev/null || echo 2)
# The kv, codes, log and manifest targets write each input to a temporary file: on a disk that
# write, not the code under test, sets the pace.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

# NAME -> target, seed maker, -max_len. 128 KiB for hash: a hash file with the MLP alone needs
# head_dim = bits >= 64, 33 KB per function.
spec() {
  case "$1" in
    gguf) echo "fuzz-gguf - 65536" ;;
    kv) echo "fuzz-kv-format make-kv-seeds 65536" ;;
    hash) echo "fuzz-hash-file make-hash-seeds 131072" ;;
    codes) echo "fuzz-code-file make-code-seeds 65536" ;;
    log) echo "fuzz-job-log - 16384" ;;
    manifest) echo "fuzz-manifest - 16384" ;;
    *) echo "fuzz: unknown target '$1' (gguf kv hash codes log manifest)" >&2; return 1 ;;
  esac
}
build=()
for t in $targets; do
  read -r bin maker _ <<<"$(spec "$t")"
  build+=("$bin")
  [ "$maker" = - ] || build+=("$maker")
done
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSL_FUZZ=ON \
    -DSL_SANITIZE=address,undefined -DSL_CUDA=OFF -DSL_BUILD_BENCH=OFF >/dev/null
fi
cmake --build build-fuzz -j "$jobs" --target "${build[@]}" >/dev/null
mkdir -p build-fuzz/crashes

# seed NAME DIR: writes the target's seeds into DIR
seed() {
  case "$1" in
    gguf) python3 tests/fuzz/make-seeds.py "$2" ;;
    log | manifest) cp tests/fuzz/seeds-"$1"/* "$2"/ ;;
    *) "build-fuzz/tests/$(spec "$1" | cut -d' ' -f2)" "$2" ;;
  esac
}

# run NAME: fuzz one target; 0 when nothing crashed
run() {
  local bin maker len rc corpus=build-fuzz/corpus-$1 log=build-fuzz/fuzz-$1.log
  read -r bin maker len <<<"$(spec "$1")"
  mkdir -p "$corpus"
  seed "$1" "$corpus"
  local args=(-max_len="$len" -rss_limit_mb=2048 -artifact_prefix=build-fuzz/crashes/ -print_final_stats=1)
  if [ -n "$runs" ]; then args+=(-runs="$runs"); else args+=(-max_total_time="$secs"); fi
  [ -z "${FUZZ_SEED:-}" ] || args+=(-seed="$FUZZ_SEED")
  [ ! -f "tests/fuzz/$1.dict" ] || args+=(-dict="tests/fuzz/$1.dict")
  # the readers report each bad line (the KV store each damaged header) on stderr: closed
  # (libFuzzer hands the sanitizers a duplicate of it, so their reports still come through)
  case "$1" in log | manifest | kv) args+=(-close_fd_mask=2) ;; esac
  set +e
  "build-fuzz/tests/$bin" "$corpus" "${args[@]}" >"$log" 2>&1
  rc=$?
  set -e
  grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" "$log" || true
  if [ "$rc" != 0 ]; then
    echo "fuzz: $bin crash (exit $rc); input saved in build-fuzz/crashes/, log in $log" >&2
    return 1
  fi
  echo "fuzz: $bin no crash in $([ -n "$runs" ] && echo "$runs runs" || echo "${secs}s")"
}
status=0
for t in $targets; do run "$t" || status=1; done
exit "$status"
