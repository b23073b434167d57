#!/usr/bin/env bash
# Retrieval quality of the trained Spotlight hash against SimHash (the paper's comparison, made
# stricter): trains the default model's hash at 32, 64 and 128 bits where missing
# (tools/make-hash.sh; ~30-40 minutes per code length on 2 cores, resumable), then runs
# `spotlight eval-retrieval` on the held-out dumps: attention-mass recall and IoU with the
# exact top-k per layer and KV head, at budgets 1/2/5/10%, for Spotlight at 32/64/128 bits,
# SimHash at 64..1024 bits, the untrained hash (sign) and the exact top-k.
# Writes bench/results/retrieval.{md,csv,svg}.
#
#   bench/run-retrieval.sh [--bits "32 64 128"]
set -euo pipefail
cd "$(dirname "$0")/.."
bits="32 64 128"
[ "${1:-}" = "--bits" ] && bits=$2
for b in $bits; do tools/make-hash.sh --bits "$b"; done
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
args=()
for b in $bits; do args+=(--hash "$cache/hash/SmolLM2-135M-Instruct.Q4_1.gguf.b$b.slhash"); done
mkdir -p bench/results
build/bin/spotlight eval-retrieval "${args[@]}" -o bench/results/retrieval
