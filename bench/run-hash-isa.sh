#!/usr/bin/env bash
# Does hash training reach the same held-out recall whichever OpenBLAS kernel the CPU gets?
# Trains the default model's 64-bit hash twice on the same q/k dumps, once with OpenBLAS's
# AVX-512 kernels (OPENBLAS_CORETYPE=Cooperlake, what Zen 4 and recent Xeons pick) and once with
# its AVX2 kernels (Haswell, what AVX2-only machines pick), and writes the per-layer held-out
# recall at 2% side by side to bench/results/hash-train-isa.md. The AVX-512 run needs a CPU with
# AVX-512; on an AVX2-only machine only the Haswell column can be made.
#   bench/run-hash-isa.sh [--seq-len N] [--steps N] [--layers N]   (defaults 2048, 150, 13)
# --layers stops each run after that many layers (train-hash saves after every layer).
set -euo pipefail
cd "$(dirname "$0")/.."
seq_len=2048 steps=150 layers=13
while [ $# -gt 0 ]; do
  case $1 in
    --seq-len) seq_len=$2; shift ;;
    --steps) steps=$2; shift ;;
    --layers) layers=$2; shift ;;
    *) echo "usage: bench/run-hash-isa.sh [--seq-len N] [--steps N] [--layers N]" >&2; exit 2 ;;
  esac
  shift
done
bin=build/bin/spotlight
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
tools/fetch-corpus.sh >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" dump-qk -f "$cache/corpus/train" --seq-len "$seq_len" --seqs 2 -o "$work/qk" 2>/dev/null
"$bin" dump-qk -f "$cache/corpus/heldout" --seq-len "$seq_len" --seqs 1 -o "$work/qk-ho" 2>/dev/null
for ct in Cooperlake Haswell; do
  echo "training with OPENBLAS_CORETYPE=$ct" >&2
  OPENBLAS_CORETYPE=$ct "$bin" train-hash --qk "$work/qk" --eval-qk "$work/qk-ho" --steps "$steps" \
    -o "$work/h-$ct.slhash" 2>&1 | tr '\r' '\n' | grep --line-buffered 'held-out' |
    sed -E 's/.*layer +([0-9]+)\/[0-9]+.*-> ([0-9.]+).*/\1 \2/' | head -n "$layers" >"$work/r-$ct.txt" || true
done
out=bench/results/hash-train-isa.md
{
  echo "# Hash training on AVX-512 and AVX2 OpenBLAS kernels"
  echo
  echo "Default model, 64 bits, 2 x $seq_len training tokens, $steps steps per layer, held-out recall at 2%"
  echo "on 1 x $seq_len held-out tokens (\`bench/run-hash-isa.sh\`). CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')."
  echo
  echo "| layer | AVX-512 (Cooperlake) | AVX2 (Haswell) | difference |"
  echo "|---:|---:|---:|---:|"
  join "$work/r-Cooperlake.txt" "$work/r-Haswell.txt" | awk '{printf "| %d | %.3f | %.3f | %+.3f |\n", $1 - 1, $2, $3, $3 - $2}'
  join "$work/r-Cooperlake.txt" "$work/r-Haswell.txt" | awk '$1 >= 3 {a += $2; b += $3; d += ($3 > $2 ? $3 - $2 : $2 - $3); n++}
    END {if (n) printf "\nMean over layers 2..%d: %.4f (AVX-512) and %.4f (AVX2); mean |difference| %.4f.\n", n + 1, a / n, b / n, d / n}'
} >"$out"
cat "$out"
