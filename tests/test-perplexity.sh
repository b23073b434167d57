#!/usr/bin/env bash
# `spotlight perplexity` against llama.cpp's perplexity tool on the same held-out text, model,
# context and chunks (tests/fixtures/ppl-llama-cpp.tsv, from tools/ref/make-ppl-fixture.sh):
# within 1%. Usage: test-perplexity.sh SPOTLIGHT_BIN FIXTURE
set -u
bin=$1
fixture=$2
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
pass=0
fail=0
while IFS=$'\t' read -r model text sha ctx chunks ref; do
  [[ "$model" == \#* ]] && continue
  file="$cache/corpus/heldout/$text"
  if [ "$(sha256sum "$file" 2>/dev/null | cut -d' ' -f1)" != "$sha" ]; then
    echo "FAIL: $file missing or different from the fixture's text (run tools/fetch-corpus.sh)"
    fail=$((fail + 1))
    continue
  fi
  ours=$("$bin" perplexity -m "$cache/$model" -f "$file" -c "$ctx" --chunks "$chunks" -t 2 --json |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
  if python3 -c "import sys; o, r = $ours, $ref; sys.exit(0 if abs(o / r - 1) < 0.01 else 1)"; then
    echo "ok: $model $text c=$ctx chunks=$chunks: spotlight $ours, llama.cpp $ref"
    pass=$((pass + 1))
  else
    echo "FAIL: $model $text c=$ctx chunks=$chunks: spotlight $ours, llama.cpp $ref (over 1% apart)"
    fail=$((fail + 1))
  fi
done <"$fixture"
# --also: several attention settings scored on one prefill per chunk give exactly what separate
# runs give (the attention switched after the prefill rehashes the prefix's keys).
text="$cache/corpus/heldout/austen-persuasion.txt"
model=$(awk -F'\t' '$1 !~ /^#/ {print $1; exit}' "$fixture")
run() { "$bin" perplexity -m "$cache/$model" -f "$text" -c 384 --chunks 2 --decode-last 24 -t 1 --json "$@"; }
both=$(run --also "--attn simhash --budget 5%" --also "--attn topk-exact --budget 10% --min-tokens 16" |
       python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ppl"], *[a["ppl"] for a in d["also"]])')
apart="$(run | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])') \
$(run --attn simhash --budget 5% | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])') \
$(run --attn topk-exact --budget 10% --min-tokens 16 | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')"
if [ -n "$both" ] && [ "$both" = "$apart" ]; then
  echo "ok: --also equals separate runs: $both"
  pass=$((pass + 1))
else
  echo "FAIL: --also gives '$both', separate runs '$apart'"
  fail=$((fail + 1))
fi
if "$bin" perplexity -m "$cache/$model" -f "$text" --also "--attn simhash" 2>/dev/null; then
  echo "FAIL: --also without --decode-last was accepted"
  fail=$((fail + 1))
else
  pass=$((pass + 1))
fi
echo "perplexity: $pass passed, $fail failed"
[ "$fail" = 0 ] && [ "$pass" -gt 0 ]
