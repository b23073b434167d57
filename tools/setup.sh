#!/usr/bin/env bash
# One command from a fresh clone to a working runtime: installs the system packages that are
# missing (Debian/Ubuntu), configures and builds into build/, fetches the default model into
# the model cache, produces its Spotlight hash file (tools/make-hash.sh: corpus, q/k dumps and
# training; ~45 minutes the first time, resumable, skipped once done), and runs the main job.
# Safe to rerun; each step skips what is done.
#
#   tools/setup.sh                      # everything, then the main job
#   tools/setup.sh --no-hash            # without training the hash (dense generation only)
#   tools/setup.sh --no-run --no-hash   # build and model only (used by tools/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
run_main=1
make_hash=1
for a in "$@"; do
  case $a in
    --no-run) run_main=0 ;;
    --no-hash) make_hash=0 ;;
    *) echo "usage: tools/setup.sh [--no-run] [--no-hash]" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*"; }

# ---- system packages -------------------------------------------------------------------------
# openmpi-*: `mpirun spotlight summarize` (SL_MPI=AUTO builds it when found; tests/test-summarize-mpi.sh)
pkgs="build-essential cmake pkg-config libopenblas-dev libhwloc-dev liburing-dev libcriterion-dev libpcre2-dev
      clang libclang-rt-dev python3 python3-pip openmpi-bin libopenmpi-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# pip may come from a non-Debian Python (pyenv); then python3-pip is not needed.
if [[ " $missing " == *" python3-pip "* ]] && command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  missing=${missing/ python3-pip/}
fi
if [[ " $missing " == *" python3 "* ]] && command -v python3 >/dev/null; then
  missing=${missing/ python3 / }
fi
if [ -n "${missing// /}" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  say "system packages present"
fi

# ---- build ----------------------------------------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building (build/)"
cmake --build build -j "$jobs" >/dev/null
say "built build/bin/spotlight"

# ---- default model ---------------------------------------------------------------------------
tools/fetch-model.sh

# ---- Spotlight hash of the default model -----------------------------------------------------
if [ "$make_hash" = 1 ]; then
  tools/make-hash.sh
fi

# ---- main job --------------------------------------------------------------------------------
if [ "$run_main" = 1 ]; then
  build/bin/spotlight inspect --no-tensors
  echo
  build/bin/spotlight generate --chat -p "Give me three tips for staying focused while studying." -n 96 --temp 0
fi
