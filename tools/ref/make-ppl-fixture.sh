#!/usr/bin/env bash
# Records llama.cpp's perplexity of held-out corpus text for tests/test-perplexity.sh:
# tests/fixtures/ppl-llama-cpp.tsv, one line per (model, text, ctx, chunks) with the text's
# sha256 so the test knows it measures the same input.
#
#   tools/ref/llama-cpp.sh && tools/fetch-corpus.sh && tools/ref/make-ppl-fixture.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
bin="$cache/llama-cpp/bin/llama-perplexity"
[ -x "$bin" ] || { echo "make-ppl-fixture: run tools/ref/llama-cpp.sh first" >&2; exit 1; }
out=tests/fixtures/ppl-llama-cpp.tsv
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
echo -e "# model\ttext (corpus/heldout)\tsha256\tctx\tchunks\tppl (llama.cpp $("$bin" --version 2>&1 | grep -o 'commit [0-9a-f]*' | head -n1), 2 threads, -fa off)" >"$tmp"
run() { # model text ctx chunks
  local text="$cache/corpus/heldout/$2"
  local ppl
  ppl=$("$bin" -m "$cache/$1" -f "$text" -c "$3" --chunks "$4" -t 2 -fa off 2>&1 |
        sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  [ -n "$ppl" ] || { echo "make-ppl-fixture: llama-perplexity failed on $1 $2" >&2; exit 1; }
  echo -e "$1\t$2\t$(sha256sum "$text" | cut -d' ' -f1)\t$3\t$4\t$ppl" >>"$tmp"
  echo "make-ppl-fixture: $1 $2 c=$3 chunks=$4: $ppl"
}
run SmolLM2-135M-Instruct.Q4_1.gguf austen-persuasion.txt 512 12
run Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf gnu-bash-bashref.txt 512 6
mv "$tmp" "$out"
trap - EXIT
