#!/usr/bin/env bash
# Quality of sparse attention against dense on the default model and held-out real text (the
# corpus split the hash never trained on), in one markdown table file:
#   1. perplexity of generation at depth: `spotlight perplexity -c C --decode-last D`, the last
#      D tokens of each C-token chunk fed one by one through decode (where sparse attention
#      applies), for dense, spotlight, simhash (same bits) and topk-exact at each budget;
#   2. greedy continuation agreement with dense (token match, ROUGE-L over token ids) from
#      prompts of C tokens;
#   3. passkey retrieval at several lengths and depths (tools/quality/passkey.py, filler from
#      a held-out document), success = the key appears in the greedy answer;
#   4. what sparse prefill costs: perplexity with the prefill attending sparsely against dense.
#
#   tools/eval-quality.sh [--quick] [--fresh] [-o FILE]   (default FILE bench/results/quality.md)
#
# Every measurement's JSON is kept in the cache (eval-quality/, one folder per spotlight binary,
# so a rebuild starts over) and reused on a rerun: an interrupted run goes on where it stopped.
# --fresh: measure everything again.
#
# --quick: 2K context, 2% budget, fewer chunks and passkeys (a few minutes); the full run
# (2K/4K/8K, 2/5/10%) takes about an hour on 2 cores. Needs the hash file (tools/make-hash.sh)
# for the spotlight rows; without it they are skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
fresh=0
out=bench/results/quality.md
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --fresh) fresh=1 ;;
    -o) out=$2; shift ;;
    *) echo "usage: tools/eval-quality.sh [--quick] [--fresh] [-o FILE]" >&2; exit 2 ;;
  esac
  shift
done
bin=build/bin/spotlight
[ -x "$bin" ] || { echo "eval-quality: build first (tools/setup.sh)" >&2; exit 1; }
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
tools/fetch-corpus.sh >/dev/null
held="$cache/corpus/heldout"
ppl_text="$held/austen-persuasion.txt"
cont_text="$held/austen-emma.txt"
filler="$held/melville-moby-dick.txt"
hash="$cache/hash/SmolLM2-135M-Instruct.Q4_1.gguf.b64.slhash"
if [ "$quick" = 1 ]; then
  ctxs="2048"; budgets="2%"; decode_last=64; cont_n=32; pk_lens="1024 2048"; pk_depths="0.5"
else
  ctxs="2048 4096 8192"; budgets="2% 5% 10%"; decode_last=128; cont_n=64; pk_lens="1024 2048 4096 7680"
  pk_depths="0.1 0.5 0.9"
fi
# label and attention options of each sparse row
modes="spotlight spotlight+rerank4 simhash topk-exact"
[ -f "$hash" ] || { echo "eval-quality: no $hash (tools/make-hash.sh); spotlight rows skipped" >&2; modes="simhash topk-exact"; }
mode_args() {
  case $1 in
    spotlight+rerank4) echo "--attn spotlight --rerank 4" ;;
    *) echo "--attn $1" ;;
  esac
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# measured NAME OUT CMD...: CMD's stdout (a JSON) into OUT, from the cache when NAME was measured
# by this binary before; a run that fails or is cut off leaves nothing in the cache.
work="$cache/eval-quality/$(sha256sum "$bin" | cut -c1-16)"
[ "$fresh" = 1 ] && rm -rf "$work"
mkdir -p "$work"
measured() {
  local name=$1 dst=$2; shift 2
  if [ ! -s "$work/$name.json" ]; then
    "$@" >"$work/$name.part" 2>"$work/$name.err" || { echo "eval-quality: $name failed: $(tail -1 "$work/$name.err")" >&2; exit 1; }
    mv "$work/$name.part" "$work/$name.json"
  fi
  cp "$work/$name.json" "$dst"
}
mkdir -p "$(dirname "$out")"
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }

{
echo "# Sparse attention quality: SmolLM2-135M, held-out text"
echo
echo "$(date -u '+%Y-%m-%d %H:%M') UTC; \`tools/eval-quality.sh$([ "$quick" = 1 ] && echo " --quick")\`. Sparse layers: 2..29 (2 dense), 4 sinks, 64-token window, at least 64 selected; 64-bit codes for spotlight and simhash; token-level selection. spotlight+rerank4: the hash picks 4x the budget, exact attention over those keeps the budget (\`--rerank 4\`)."
echo
echo "## Perplexity of generation at depth"
echo
echo "Each C-token chunk of $(basename "$ppl_text"): prefill of C-$decode_last tokens (dense), then the last $decode_last tokens one at a time through decode; only those are scored. Same tokens for every row; each context is one \`spotlight perplexity --also\` run, every sparse row decoding again from the same prefill (the numbers separate runs give, as tests/test-perplexity.sh checks)."
echo
echo "| context | chunks | attention | budget | PPL | vs dense |"
echo "|---|---|---|---|---|---|"
} >"$tmp/ppl.md"
for c in $ctxs; do
  chunks=$(( (quick == 1 ? 2 : 4) * 2048 / c )); [ "$chunks" -lt 1 ] && chunks=1
  # one run per context: dense, then every mode and budget again on the same prefill (--also)
  also=()
  for m in $modes; do for b in $budgets; do also+=(--also "$(mode_args "$m") --budget $b"); done; done
  measured "ppl-$c-$chunks-$decode_last-$(echo "$modes $budgets" | tr ' %+' '_pP')" "$tmp/p.json" \
    "$bin" perplexity -f "$ppl_text" -c "$c" --chunks "$chunks" --decode-last "$decode_last" --json "${also[@]}"
  python3 - "$tmp/p.json" "$c" "$chunks" "$modes" "$budgets" >>"$tmp/ppl.md" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c, chunks, modes, budgets = sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()
print(f"| {c} | {chunks} | dense | — | {d['ppl']:.3f} | |")
runs = iter(d["also"])
for m in modes:
    for b in budgets:
        p = next(runs)["ppl"]
        print(f"| {c} | {chunks} | {m} | {b} | {p:.3f} | {100 * (p / d['ppl'] - 1):+.1f}% |")
PY
  echo "eval-quality: perplexity at $c done" >&2
done

{
echo
echo "## Greedy continuation agreement with dense"
echo
echo "Prompt: the first C tokens of $(basename "$cont_text") (approximately; the text cut at 4 characters per token), $cont_n tokens generated greedily."
echo
echo "| context | attention | budget | token match | ROUGE-L |"
echo "|---|---|---|---|---|"
} >"$tmp/cont.md"
for c in $ctxs; do
  head -c $(( c * 4 - 600 )) "$cont_text" >"$tmp/prompt.txt"
  measured "cont-$c-$cont_n-dense" "$tmp/gd.json" \
    "$bin" generate -f "$tmp/prompt.txt" -c $(( c + cont_n + 64 )) -n "$cont_n" --temp 0 --json
  for m in $modes; do
    for b in $budgets; do
      # shellcheck disable=SC2046
      measured "cont-$c-$cont_n-$m-$b" "$tmp/gs.json" \
        "$bin" generate -f "$tmp/prompt.txt" -c $(( c + cont_n + 64 )) -n "$cont_n" --temp 0 $(mode_args "$m") --budget "$b" --json
      read -r match rouge < <(python3 tools/quality/agreement.py "$tmp/gd.json" "$tmp/gs.json")
      printf '| %s | %s | %s | %s | %s |\n' "$c" "$m" "$b" "$match" "$rouge" >>"$tmp/cont.md"
    done
  done
done

{
echo
echo "## Passkey retrieval"
echo
echo "Filler: $(basename "$filler"); the key sentence at the given depth; success when the greedy 8-token answer contains the key. Budget $(echo $budgets | cut -d' ' -f1)."
echo
printf '| length | depth | dense |'; for m in $modes; do printf ' %s |' "$m"; done; echo
printf '|---|---|---|'; for m in $modes; do printf -- '---|'; done; echo
} >"$tmp/pk.md"
b1=$(echo $budgets | cut -d' ' -f1)
declare -A ok_total
for len in $pk_lens; do
  for depth in $pk_depths; do
    key=$(python3 tools/quality/passkey.py "$filler" --tokens-approx "$len" --depth "$depth" -o "$tmp/pk.txt")
    row="| $len | $depth |"
    for m in dense $modes; do
      args=(); [ "$m" != dense ] && read -r -a args <<<"$(mode_args "$m") --budget $b1"
      measured "pk-$len-$depth-$m-$b1" "$tmp/pk.json" \
        "$bin" generate -f "$tmp/pk.txt" -c $(( len * 2 + 64 )) -n 8 --temp 0 "${args[@]}" --json
      if json "$tmp/pk.json" text | grep -q "$key"; then row="$row ✓ |"; ok_total[$m]=$(( ${ok_total[$m]:-0} + 1 ))
      else row="$row ✗ |"; fi
    done
    echo "$row" >>"$tmp/pk.md"
  done
done
row="| **total** | |"
for m in dense $modes; do row="$row ${ok_total[$m]:-0} |"; done
echo "$row" >>"$tmp/pk.md"

{
echo
echo "## Sparse prefill"
echo
echo "What \`--sparse-prefill\` costs where dense prefill is affordable: perplexity of the second half of each C-token chunk of $(basename "$ppl_text") (llama.cpp's scoring, every token from the prefill's logits), the chunk prefilled in 512-token pieces; sparse, each piece attends to itself and to the positions its KV heads select from the pieces before it (one selection per piece, the hash score summed over its rows), dense layers 0-1 excepted. Same chunks as the first table."
echo
echo "| context | chunks | prefill | budget | PPL | vs dense |"
echo "|---|---|---|---|---|---|"
} >"$tmp/sp.md"
for c in $ctxs; do
  chunks=$(( (quick == 1 ? 2 : 4) * 2048 / c )); [ "$chunks" -lt 1 ] && chunks=1
  measured "sprefill-$c-$chunks-dense" "$tmp/d.json" "$bin" perplexity -f "$ppl_text" -c "$c" --chunks "$chunks" -b 512 --json
  dense=$(json "$tmp/d.json" ppl)
  printf '| %s | %s | dense | — | %.3f | |\n' "$c" "$chunks" "$dense" >>"$tmp/sp.md"
  [[ " $modes " == *" spotlight "* ]] || continue
  for b in $budgets; do
    measured "sprefill-$c-$chunks-spotlight-$b" "$tmp/s.json" \
      "$bin" perplexity -f "$ppl_text" -c "$c" --chunks "$chunks" -b 512 --attn spotlight --budget "$b" --sparse-prefill --json
    p=$(json "$tmp/s.json" ppl)
    printf '| %s | %s | spotlight, sparse | %s | %.3f | %+.1f%% |\n' "$c" "$chunks" "$b" "$p" \
      "$(python3 -c "print(100 * ($p / $dense - 1))")" >>"$tmp/sp.md"
  done
  echo "eval-quality: sparse prefill at $c done" >&2
done

cat "$tmp/ppl.md" "$tmp/cont.md" "$tmp/pk.md" "$tmp/sp.md" >"$tmp/all.md"
mv "$tmp/all.md" "$out"
echo "eval-quality: wrote $out"
