#!/usr/bin/env bash
# What to run when a GPU is at hand: builds the CUDA backend for that GPU, runs every GPU test
# (ctest label "gpu") and every GPU benchmark (bench/bench-gpu-*.cu), and writes one markdown
# results file. Under 8 minutes on an H100/H200 (most of it the build).
#
#   tools/gpu-check.sh [-o FILE] [--arch SM]      build here (build-gpu/) and run
#   tools/gpu-check.sh --pack FILE.tar.xz [--arch SM]
#                                    build here; archive the GPU tests and benches and the shared
#                                    libraries they need (not the CUDA driver, cuBLAS or glibc):
#                                    ~10 MB, for a GPU machine without the build dependencies
#   tools/gpu-check.sh --from FILE.tar.xz [-o FILE]
#                                    run a pack there (OpenBLAS, hwloc, liburing, Criterion not needed)
#
# Default FILE: bench/results/gpu-check.md. Default SM: the first GPU's compute capability, or 90
# (H100/H200) when packing on a machine without one. Exits non-zero when a test fails or no GPU
# is visible (a GPU check that skips everything proves nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=build
out=bench/results/gpu-check.md
arch=
dir=
while [ $# -gt 0 ]; do
  case $1 in
    -o) out=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --pack) mode=pack; dir=$2; shift 2 ;;
    --from) mode=from; dir=$2; shift 2 ;;
    *) echo "usage: tools/gpu-check.sh [-o FILE] [--arch SM] | --pack FILE.tar.xz [--arch SM] | --from FILE.tar.xz [-o FILE]" >&2; exit 2 ;;
  esac
done
log() { echo "gpu-check: $*" >&2; }

gpu_tests() { grep -o 'sl_test(test-gpu-[a-z0-9-]*' tests/CMakeLists.txt | cut -d'(' -f2; }
gpu_benches() { ls bench/bench-gpu-*.cu 2>/dev/null | xargs -rn1 basename | sed 's/\.cu$//'; }

build() {
  command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { log "no nvcc: install the CUDA toolkit"; exit 1; }
  if [ -z "$arch" ]; then
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . || true)
    [ -n "$arch" ] || arch=90
  fi
  log "building build-gpu/ for sm_$arch"
  cmake -S . -B build-gpu -DSL_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
  # shellcheck disable=SC2046
  cmake --build build-gpu -j "$(nproc)" --target $(gpu_tests) $(gpu_benches) >/dev/null
}

run_all() { # BINDIR_TESTS BINDIR_BENCH
  local tdir=$1 bdir=$2 fails=0 tmp
  tmp=$(mktemp -d)
  mkdir -p "$(dirname "$out")"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader >"$tmp/gpu" 2>/dev/null ||
    { log "no GPU visible (nvidia-smi failed)"; exit 1; }
  {
    echo "# GPU check"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ); GPU: $(head -1 "$tmp/gpu"); commit $(git rev-parse --short HEAD 2>/dev/null || cat "$dir/COMMIT" 2>/dev/null || echo unknown)"
    echo
    echo "## Tests"
    echo
    echo "| test | result | seconds |"
    echo "|---|---|---:|"
  } >"$out.part"
  for t in $(ls "$tdir" | grep '^test-gpu-'); do
    local t0 rc
    t0=$(date +%s.%N)
    rc=0
    "$tdir/$t" --jobs=1 --verbose >"$tmp/$t.log" 2>&1 || rc=$?
    local secs
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    local summary
    summary=$(grep -E '^\[====\] Synthesis' "$tmp/$t.log" | sed -e 's/^\[====\] Synthesis: //' -e 's/ *| */, /g' -e 's/ *$//' || true)
    local skips
    skips=$(grep -c '^\[SKIP\]' "$tmp/$t.log" || true)
    if [ $rc = 0 ] && [ "$skips" -gt 0 ]; then summary="$skips SKIPPED: $summary"; fails=$((fails + 1)); fi
    [ $rc = 0 ] || { fails=$((fails + 1)); summary="FAILED (exit $rc): $summary"; }
    echo "| $t | ${summary:-exit $rc} | $secs |" >>"$out.part"
    log "$t: ${summary:-exit $rc}"
    [ $rc = 0 ] || grep -E 'FAIL|Assertion|error' "$tmp/$t.log" | head -20 | sed 's/^/    /' >>"$tmp/failures"
  done
  if [ -s "$tmp/failures" ]; then
    { echo; echo '```'; cat "$tmp/failures"; echo '```'; } >>"$out.part"
  fi
  for b in $(ls "$bdir" | grep '^bench-gpu-'); do
    log "$b"
    local rc=0
    "$bdir/$b" -o "$tmp/$b.md" >"$tmp/$b.log" 2>&1 || rc=$?
    { echo; echo "## $b"; echo; } >>"$out.part"
    if [ $rc = 0 ]; then cat "$tmp/$b.md" >>"$out.part"
    else fails=$((fails + 1)); { echo "FAILED (exit $rc):"; echo '```'; tail -20 "$tmp/$b.log"; echo '```'; } >>"$out.part"; fi
  done
  mv "$out.part" "$out"
  rm -rf "$tmp"
  log "wrote $out ($fails failures)"
  [ $fails = 0 ]
}

case $mode in
  build)
    build
    run_all build-gpu/tests build-gpu/bench
    ;;
  pack)
    [ -n "$arch" ] || arch=90
    build
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/pack/bin" "$stage/pack/lib"
    for t in $(gpu_tests); do cp build-gpu/tests/"$t" "$stage/pack/bin/"; done
    for b in $(gpu_benches); do cp build-gpu/bench/"$b" "$stage/pack/bin/"; done
    # the shared libraries they load, less what every Linux and CUDA machine has
    ldd "$stage"/pack/bin/* | awk '$3 ~ /^\// {print $3}' | sort -u |
      grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|libgcc_s|libstdc\+\+|libcuda|libcublas|libcublasLt)\.so' |
      while read -r l; do cp -L "$l" "$stage/pack/lib/"; done
    git rev-parse --short HEAD >"$stage/pack/COMMIT"
    mkdir -p "$(dirname "$dir")"
    tar -C "$stage" -cJf "$dir.part" pack && mv "$dir.part" "$dir"
    log "packed $(ls "$stage/pack/bin" | wc -l) programs and $(ls "$stage/pack/lib" | wc -l) libraries into $dir ($(du -h "$dir" | cut -f1))"
    ;;
  from)
    [ -f "$dir" ] || { log "no pack $dir (make one with tools/gpu-check.sh --pack FILE.tar.xz)"; exit 1; }
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    tar -C "$stage" -xJf "$dir" || { log "$dir is not a pack"; exit 1; }
    dir=$stage/pack
    export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    run_all "$dir/bin" "$dir/bin"
    ;;
esac
