#!/usr/bin/env bash
# A million-token context on the CPU: corpus text ingested into one KV store in the file tier
# (Spotlight sparse prefill), in pieces of ~128K tokens, each piece one `spotlight generate -n 0
# --resume` run appending to the store; then a few tokens decoded at the full length. Records per
# piece the prefill speed, the peak RSS and the disk the store takes, then the time to reopen the
# full store with the key codes hashed again vs read from the code file, and writes
# bench/results/long-1m.{md,csv}.
#
#   bench/run-1m.sh [--tokens 1048576] [--piece 131072] [--threads 2] [--decode 16]
#                   [--budget 0.2%] [--work DIR]
#
# Hours of CPU on 2 cores (the model's own forward pass alone is ~200 tok/s there), so the run is
# resumable: the store, the pieces and every run's JSON live in DIR (default: the cache's
# bench-1m), a finished piece is never redone, and an interrupted piece is truncated away
# (`--resume=N`) and ingested again. Kill it any time and rerun the same command to go on.
#
# The settings are for capacity and speed, not quality (the default model's trained context is
# 8K): every layer sparse (--dense-layers 0: a dense layer would attend to every earlier token of a
# 1M-token prefill), a 0.2% budget (2K positions at 1M, at least 256), block-16 selection behind a
# 256 MiB block cache, 512-token prefill chunks (one selection per chunk and layer scans every
# stored code, so larger chunks spend less per token on it). ~24 GB of disk for 1M tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
tokens=1048576
piece=131072
threads=2
decode=16
budget=0.2%
work=$cache/bench-1m
while [ $# -gt 0 ]; do
  case $1 in
    --tokens) tokens=$2; shift 2 ;;
    --piece) piece=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --decode) decode=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "run-1m: unknown option $1" >&2; exit 2 ;;
  esac
done
bin=build/bin/spotlight
hash=$cache/hash/SmolLM2-135M-Instruct.Q4_1.gguf.b64.slhash
[ -x $bin ] || { echo "run-1m: build first (tools/setup.sh)" >&2; exit 1; }
[ -f "$hash" ] || { echo "run-1m: no 64-bit hash file; run tools/make-hash.sh" >&2; exit 1; }
ls "$cache"/corpus/train/*.txt >/dev/null || { echo "run-1m: no corpus; run tools/fetch-corpus.sh" >&2; exit 1; }
mkdir -p "$work"
n_ctx=$((tokens + 16384))
attn=(--attn spotlight --bits 64 --hash "$hash" --budget "$budget" --min-tokens 256 --dense-layers 0
      --block 16 --cache-mb 256 --kv "file:$work/kv.slkv" -c "$n_ctx" -t "$threads" -b 512 --temp 0)

# The text: the whole corpus (held-out then training files), ~4 bytes per token, 19 MB in all.
[ -s "$work/doc.txt" ] || cat "$cache"/corpus/heldout/*.txt "$cache"/corpus/train/*.txt >"$work/doc.txt"
doc_bytes=$(stat -c %s "$work/doc.txt")

# state.tsv: one line per finished piece: index, end byte offset in doc.txt, positions stored after it.
touch "$work/state.tsv"
i=0; off=0; past=0
if [ -s "$work/state.tsv" ]; then read -r i off past < <(tail -1 "$work/state.tsv"); i=$((i + 1)); fi
[ "$past" -gt 0 ] || rm -f "$work/kv.slkv"

while [ "$past" -lt $((tokens - 512)) ]; do
  # bytes for the next piece from the bytes per token so far (4.0 before any), cut at a line end
  want=$((tokens - past < piece ? tokens - past - 256 : piece))
  if [ "$past" -gt 0 ]; then nbytes=$((want * off / past)); else nbytes=$((want * 4)); fi
  [ $((off + nbytes)) -lt "$doc_bytes" ] || { echo "run-1m: the corpus is too short for $tokens tokens" >&2; exit 1; }
  end=$(python3 -c "
import sys
doc, off, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
f = open(doc, 'rb'); f.seek(off); b = f.read(n)
cut = b.rfind(b'\\n')
b = b[:cut + 1] if cut > 0 else b
open(out, 'wb').write(b)
print(off + len(b))" "$work/doc.txt" "$off" "$nbytes" "$work/piece-$i.txt")
  resume=()
  [ "$past" -gt 0 ] && resume=(--resume="$past")
  echo "run-1m: piece $i: bytes $off..$end on top of $past stored tokens" >&2
  sync
  { echo 1 >/proc/sys/vm/drop_caches; } 2>/dev/null || true
  $bin generate -f "$work/piece-$i.txt" -n 0 "${attn[@]}" "${resume[@]}" --json >"$work/piece-$i.part" \
    2> >(tee "$work/piece-$i.err" >&2) || { echo "run-1m: piece $i failed: $(tail -1 "$work/piece-$i.err")" >&2; exit 1; }
  mv "$work/piece-$i.part" "$work/piece-$i.json"
  past=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n_past'])" "$work/piece-$i.json")
  du -B1 --apparent-size "$work/kv.slkv" | cut -f1 >"$work/piece-$i.disk"
  du -B1 "$work/kv.slkv" | cut -f1 >>"$work/piece-$i.disk"
  printf '%s\t%s\t%s\n' "$i" "$end" "$past" >>"$work/state.tsv"
  off=$end; i=$((i + 1))
done

if [ ! -s "$work/decode.json" ]; then
  echo "run-1m: decoding $decode tokens after $past stored tokens" >&2
  sync
  { echo 1 >/proc/sys/vm/drop_caches; } 2>/dev/null || true
  $bin generate -p " In short," -n "$decode" "${attn[@]}" --resume="$past" --json >"$work/decode.part" \
    2>"$work/decode.err" || { echo "run-1m: decode failed: $(tail -1 "$work/decode.err")" >&2; exit 1; }
  mv "$work/decode.part" "$work/decode.json"
fi

# Reopening the million-token store: once with the key codes hashed again from the stored keys
# (the code file removed), once with them read from the code file that run saved beside the store.
for how in hashed read; do
  [ -s "$work/resume-$how.json" ] && continue
  [ $how = read ] || rm -f "$work/kv.slkv.codes"
  echo "run-1m: resuming with the key codes $how" >&2
  sync
  { echo 1 >/proc/sys/vm/drop_caches; } 2>/dev/null || true
  $bin generate -p " In short," -n 4 "${attn[@]}" --resume="$past" --json >"$work/resume-$how.part" \
    2>"$work/resume-$how.err" || { echo "run-1m: resume failed: $(tail -1 "$work/resume-$how.err")" >&2; exit 1; }
  mv "$work/resume-$how.part" "$work/resume-$how.json"
done
du -B1 "$work/kv.slkv.codes" | cut -f1 >"$work/codes.disk"

mkdir -p bench/results
python3 - "$work" "$threads" "$budget" <<'PY'
import csv, json, os, sys
work, threads, budget = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [l.split() for l in open(f"{work}/state.tsv") if l.strip()]
out = ["# A million-token context on the CPU: ingest and decode\n"]
out.append(f"Model SmolLM2-135M-Instruct Q4_1, {threads} threads. Corpus text (held-out, then training "
           "files) ingested into one KV store in the file tier, one `spotlight generate -n 0 --resume` run "
           f"per piece; Spotlight sparse prefill with the 64-bit trained hash, budget {budget} (at least "
           "256 positions), 4 sinks, a 64-token window, every layer sparse (`--dense-layers 0`), block-16 "
           "selection, 256 MiB block cache, 512-token prefill chunks; the OS page cache dropped before each "
           "run where permitted. "
           "Beyond the model's trained 8K context this measures capacity and speed, not quality.\n")
out.append("| piece | context after | tokens | prefill tok/s | minutes | peak RSS GiB | store on disk GiB | resident codes MiB |")
out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
csvrows = [["piece", "n_past", "n_prompt", "prefill_tok_s", "prefill_s", "peak_rss_bytes", "disk_bytes", "code_bytes"]]
total_s = total_tok = 0
for i, _, past in rows:
    j = json.load(open(f"{work}/piece-{i}.json"))
    disk = int(open(f"{work}/piece-{i}.disk").read().split()[1])
    a = j["attention"]
    total_s += j["prefill_s"]; total_tok += j["n_prompt"]
    out.append(f"| {i} | {j['n_past']} | {j['n_prompt']} | {j['prefill_tok_s']:.1f} | {j['prefill_s'] / 60:.1f} | "
               f"{j['peak_rss_bytes'] / 2**30:.2f} | {disk / 2**30:.2f} | {a['code_bytes'] / 2**20:.0f} |")
    csvrows.append([i, j["n_past"], j["n_prompt"], j["prefill_tok_s"], j["prefill_s"], j["peak_rss_bytes"], disk, a["code_bytes"]])
d = json.load(open(f"{work}/decode.json"))
a = d["attention"]
out.append("")
out.append(f"- Ingest: {total_tok} tokens in {total_s / 3600:.2f} h of prefill, {total_tok / total_s:.1f} tok/s on average.")
out.append(f"- Decode after {d['n_stored']} stored tokens: {d['n_generated']} tokens at **{d['decode_tok_s']:.2f} tok/s**, "
           f"selection {a['select_us_per_layer']:.0f} µs and gather {a['gather_us_per_layer']:.0f} µs per layer, "
           f"{100 * a['selected_fraction']:.2f}% of positions attended, block cache hit rate "
           f"{100 * a.get('kv_cache_hit_rate', 0):.0f}%, peak RSS {d['peak_rss_bytes'] / 2**30:.2f} GiB.")
csvrows.append(["decode", d["n_past"], d["n_generated"], d["decode_tok_s"], d["decode_s"], d["peak_rss_bytes"], "", a["code_bytes"]])
r = {how: json.load(open(f"{work}/resume-{how}.json")) for how in ("hashed", "read")}
assert not r["hashed"]["resume_codes_read"] and r["read"]["resume_codes_read"], "the resumes did not take the intended paths"
codes_disk = int(open(f"{work}/codes.disk").read())
out.append(f"- Reopening the store at {r['read']['n_stored']} tokens: **{r['hashed']['resume_s']:.1f} s** reading back and "
           f"hashing every stored key, **{r['read']['resume_s']:.1f} s** reading the key codes saved beside it "
           f"({codes_disk / 2**20:.0f} MiB on disk), {r['hashed']['resume_s'] / r['read']['resume_s']:.0f}x less.")
for how in ("hashed", "read"):
    csvrows.append([f"resume-{how}", r[how]["n_stored"], r[how]["n_generated"], "", r[how]["resume_s"],
                    r[how]["peak_rss_bytes"], codes_disk if how == "read" else "", r[how]["attention"]["code_bytes"]])
peak = max(int(r[5]) for r in csvrows[1:])
out.append(f"- Largest peak RSS of any run: **{peak / 2**30:.2f} GiB**; the store: "
           f"{int(open(f'{work}/piece-{rows[-1][0]}.disk').read().split()[1]) / 2**30:.2f} GiB on disk; "
           f"resident key codes {a['code_bytes'] / 2**20:.0f} MiB.")
open("bench/results/long-1m.md", "w").write("\n".join(out) + "\n")
csv.writer(open("bench/results/long-1m.csv", "w", newline="")).writerows(csvrows)
print("\n".join(out))
PY
