#!/usr/bin/env bash
# Produces the Spotlight hash file of a model in the cache, from nothing: the real-text corpus
# (tools/fetch-corpus.sh), q/k dumps of training text (2 sequences of the trained context, at most 8192 tokens) and of
# held-out text (1 sequence, for the recall the trainer reports), then train-hash. Every step
# skips what is already done, and train-hash resumes at the first untrained layer, so an
# interrupted run picks up where it stopped. About 10 minutes of dumps and 30-40 minutes of
# training for the default model on 2 cores.
#
#   tools/make-hash.sh                 # the default model, 64-bit codes
#   tools/make-hash.sh --bits 128      # another code length (a multiple of 32)
#   tools/make-hash.sh -m MODEL.gguf   # another model (dumps and hash named after its file)
#   tools/make-hash.sh --quick         # a quick hash in seconds (512-token dumps, train-hash --quick)
#   tools/make-hash.sh -o FILE         # write the hash elsewhere
#   tools/make-hash.sh --bin PATH      # the spotlight binary to run (default build/bin/spotlight)
#
# Output: <cache>/hash/<model file>.b<bits>.slhash (what `spotlight generate --attn spotlight`
# and `spotlight eval-retrieval` look for). A --quick hash goes to <model file>.b<bits>.quick.slhash
# unless -o says otherwise, so it never stands in for the trained one; its dumps are <name>-quick*.
set -euo pipefail
cd "$(dirname "$0")/.."
bits=64
model=""
out=""
quick=0
bin=build/bin/spotlight
usage() { echo "usage: tools/make-hash.sh [--bits B] [-m MODEL.gguf] [-o FILE] [--quick] [--bin PATH]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --bits|-m|-o|--bin) [ $# -ge 2 ] || usage ;;&
    --bits) bits=$2; shift ;;
    -m) model=$2; shift ;;
    -o) out=$2; shift ;;
    --bin) bin=$2; shift ;;
    --quick) quick=1 ;;
    *) usage ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "make-hash: build first (tools/setup.sh)" >&2; exit 1; }
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
name=$(basename "${model:-SmolLM2-135M-Instruct.Q4_1.gguf}")
margs=()
[ -n "$model" ] && margs=(-m "$model")
dump="$cache/qk/$name"
dargs=(--seqs 2)
hdump=(--seqs 1)
targs=()
suffix=""
if [ "$quick" = 1 ]; then
  dump="$cache/qk/$name-quick"
  dargs=(--seqs 1 --seq-len 512)
  hdump=(--seqs 1 --seq-len 512)
  targs=(--quick)
  suffix=".quick"
fi
[ -n "$out" ] || out="$cache/hash/$name.b$bits$suffix.slhash"
mkdir -p "$(dirname "$out")"

tools/fetch-corpus.sh
say() { echo "make-hash: $*"; }
# A dump directory is complete when its last layer file is there (dump-qk renames the layers
# into place only after all of them are written).
complete() { ls "$1"/layer-*.qk >/dev/null 2>&1 && [ "$(ls "$1"/layer-*.qk | wc -l)" -gt 0 ]; }
if complete "$dump"; then say "training dumps present"; else
  say "dumping q/k of training text"
  "$bin" dump-qk "${margs[@]}" -f "$cache/corpus/train" "${dargs[@]}" -o "$dump"
fi
if complete "$dump-heldout"; then say "held-out dumps present"; else
  say "dumping q/k of held-out text"
  "$bin" dump-qk "${margs[@]}" -f "$cache/corpus/heldout" "${hdump[@]}" -o "$dump-heldout"
fi
say "training $bits-bit codes (resumable)"
"$bin" train-hash "${margs[@]}" --bits "$bits" "${targs[@]}" --qk "$dump" --eval-qk "$dump-heldout" -o "$out"
say "wrote $out"
