#!/usr/bin/env bash
# `spotlight tune` as a user runs it, on the default model and the held-out corpus: a budget
# nothing fits (CSV of plans, nothing measured, exit 1), then --quick under a RAM budget taken
# from those plans so that only part of the sweep fits, and --min-agree 0.5: a valid CSV (every field parses, the
# front flags are exactly the Pareto front recomputed here, fits = within the budgets, one
# recommendation following the documented rule), a well-formed SVG, a recommended command line
# that matches its CSV row and runs; one-line errors for bad arguments.
# Usage: test-tune.sh SPOTLIGHT_BIN
set -u
bin=$(realpath "$1")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli-lib.sh"

# A cache of its own: the default model and the corpus linked from the user's cache, and a
# quick Spotlight hash (tools/make-hash.sh --quick, seconds) made here, so the sweep has
# spotlight points whether or not a trained hash exists, and nothing is written to that cache.
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
model=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$tmp/cache"
ln -s "$(realpath "$cache/$model")" "$tmp/cache/$model"
ln -s "$(realpath "$cache/corpus")" "$tmp/cache/corpus"
export SPOTLIGHT_MODELS="$tmp/cache"
if ! nice "$(dirname "$0")/../tools/make-hash.sh" --quick --bin "$bin" -o "$tmp/cache/hash/$model.b64.slhash" \
    >"$tmp/hash.log" 2>&1; then
  echo "FAIL: quick hash: $(tail -n 3 "$tmp/hash.log")"
  exit 1
fi

tune() { nice "$bin" tune -t 1 "$@"; }

# Bad arguments.
expect_error "no ctx" 2 "give the context length" -- "$bin" tune
expect_error "bad ram budget" 2 "--ram-mb must be an integer" -- "$bin" tune --quick --ram-mb lots
expect_error "bad disk budget" 2 "--disk-mb must be an integer" -- "$bin" tune --quick --disk-mb -5
expect_error "bad budgets" 2 "--budgets takes" -- "$bin" tune --quick --budgets 2,x
expect_error "bad block" 2 "powers of two" -- "$bin" tune --quick --blocks 3
expect_error "bad option" 2 "unknown or incomplete option .--bogus." -- "$bin" tune --quick --bogus
expect_error "missing text" 1 "cannot open .*nope.txt" -- "$bin" tune --quick -f "$tmp/nope.txt"
echo "A short text, far from a thousand tokens." >"$tmp/short.txt"
expect_error "text too short" 1 "has [0-9]+ tokens; --ctx 1024 needs at least" -- "$bin" tune --quick -f "$tmp/short.txt"
expect_error "past trained context" 1 "past the model's trained context of 8192" -- "$bin" tune --ctx 16384

# Nothing fits: the plans are written, nothing is measured.
cd "$tmp" || exit 1
expect_error "nothing fits" 1 "none of the [0-9]+ configurations fits the budgets .*plan.csv" -- tune --quick --ram-mb 1 -o plan
python3 - plan.csv <<'PY' && ok || bad "no-fit CSV"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) >= 5, len(rows)
for r in rows:
    assert r["status"] == "not measured" and r["fits"] == "0" and r["front"] == "0" and r["recommended"] == "0", r
    assert int(r["host_ram_bytes"]) > 1 << 20 and r["decode_ms"] == "", r
assert {r["attn"] for r in rows} == {"dense", "spotlight", "simhash"}, rows
assert {r["kv"] for r in rows} == {"ram", "file"}, rows
PY
[ -f plan.svg ] && python3 -c "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])" plan.svg && ok || bad "no-fit SVG"
# Outputs from nothing: PREFIX's folders are made; a folder that cannot be is an error before any work.
tune --quick --ram-mb 1 -o new/dir/plan >/dev/null 2>&1
[ -s new/dir/plan.csv ] && [ -s new/dir/plan.svg ] && ok || bad "tune -o into a new folder"
expect_error "output under a file" 1 "cannot create the directory .*plan.csv: it is a file" -- tune --quick -o plan.csv/x

# A RAM budget just under the largest plan, so that part of the sweep fits; a disk budget for the
# file tier's store; a low --min-agree, so that the recommendation weighs speed.
ram_mb=$(python3 -c "
import csv, sys
print(-(-max(int(r['host_ram_bytes']) for r in csv.DictReader(open(sys.argv[1]))) // 2**20) - 1)" plan.csv)
if tune --quick --ram-mb "$ram_mb" --disk-mb 200 --min-agree 0.5 -o q >q.out 2>q.err; then
  ok
  [ ! -e q.slkv ] && [ ! -e q.slkv.codes ] && ok || bad "the temporary store q.slkv (or its codes) was left behind"
  python3 - q.csv q.out "$ram_mb" 200 0.5 <<'PY' && ok || bad "quick CSV / recommendation: $(cat q.out)"
import csv, math, re, sys
path, out, ram_mb, disk_mb, min_agree = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
rows = list(csv.DictReader(open(path)))
header = open(path).readline().strip().split(",")
assert len(rows) == 11 and all(len(r) == len(header) for r in rows), (len(rows), header)
ints = ["bits", "block", "cache_mb", "ctx", "n_prefill", "n_decode", "threads", "dense_layers", "sinks", "window",
        "min_tokens", "host_ram_bytes", "vram_bytes", "disk_bytes", "max_ctx", "fits", "front", "recommended"]
nums = ["budget", "decode_ms", "decode_tok_s", "prefill_tok_s", "top1_agree", "kl_mean", "attended_frac",
        "select_us", "gather_us"]
for r in rows:
    assert r["status"] == "ok", r
    for k in ints: r[k] = int(r[k])
    for k in nums:
        r[k] = float(r[k])
        assert math.isfinite(r[k]) and r[k] >= 0, (k, r)
    assert r["ctx"] == 1024 and r["n_decode"] == 8 and 0 <= r["top1_agree"] <= 1 and r["decode_ms"] > 0, r
    assert r["fits"] == int(r["host_ram_bytes"] <= ram_mb << 20 and r["disk_bytes"] <= disk_mb << 20), r
    assert (r["kv"] == "file") == (r["disk_bytes"] > 0), r
dense = [r for r in rows if r["attn"] == "dense"]
assert len(dense) == 1 and dense[0]["top1_agree"] == 1 and dense[0]["kl_mean"] == 0, dense
assert any(r["fits"] for r in rows) and not all(r["fits"] for r in rows), "the budget should split the sweep"
# the Pareto front: minimum decode_ms and host RAM, maximum agreement
def dominates(a, b):
    le = a["decode_ms"] <= b["decode_ms"] and a["host_ram_bytes"] <= b["host_ram_bytes"] and a["top1_agree"] >= b["top1_agree"]
    return le and (a["decode_ms"] < b["decode_ms"] or a["host_ram_bytes"] < b["host_ram_bytes"] or a["top1_agree"] > b["top1_agree"])
for r in rows:
    on = not any(dominates(o, r) for o in rows if o is not r)
    assert r["front"] == int(on), ("front flag", r)
# the recommendation: the fastest fitting row whose agreement is >= min_agree x the best fitting one
rec = [r for r in rows if r["recommended"]]
assert len(rec) == 1, rec
rec = rec[0]
fit = [r for r in rows if r["fits"]]
best = max(r["top1_agree"] for r in fit)
ok_rows = [r for r in fit if r["top1_agree"] >= min_agree * best]
assert rec in ok_rows and rec["decode_ms"] == min(r["decode_ms"] for r in ok_rows), rec
assert rec["host_ram_bytes"] <= ram_mb << 20 and rec["disk_bytes"] <= disk_mb << 20, rec
# the printed front lists exactly the front rows; the command line says the recommended row
table = out.split("Pareto front")[1].split("recommended:")[0]
assert len([l for l in table.splitlines() if re.search(r"(ram|MiB) +[0-9.]+ ", l)]) == sum(r["front"] for r in rows), table
cmd = [l for l in out.splitlines() if l.strip().startswith("spotlight generate")]
assert len(cmd) == 1, out
args = cmd[0].split()
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if rec["attn"] == "dense":
    assert opt("--attn") is None and opt("--kv") is None, cmd
else:
    assert opt("--attn") == rec["attn"] and int(opt("--bits")) == rec["bits"], cmd
    assert abs(float(opt("--budget").rstrip("%")) / 100 - rec["budget"]) < 1e-6, cmd
    assert int(opt("--block") or 1) == rec["block"], cmd
    assert (opt("--kv") or "ram").startswith(rec["kv"]), cmd
    assert rec["kv"] == "ram" or int(opt("--cache-mb")) == rec["cache_mb"], cmd
assert int(opt("-c")) == 1024, cmd
open("cmd.txt", "w").write(cmd[0].strip() + "\n")
PY
  python3 - q.svg <<'PY' && ok || bad "SVG"
import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
assert root.tag == ns + "svg", root.tag
texts = [t.text for t in root.iter(ns + "text")]
assert "Pareto front" in texts and "recommended" in texts and "dense, RAM" in texts, texts
assert len(list(root.iter(ns + "circle"))) >= 11 + 2, "markers"
PY
  # The recommended line runs as printed (a short prompt instead of the document).
  if [ -s cmd.txt ]; then
    read -r -a line <cmd.txt
    args=()
    skip=0
    for a in "${line[@]:2}"; do
      if [ $skip = 1 ]; then skip=0; continue; fi
      if [ "$a" = -f ]; then skip=1; continue; fi
      args+=("$a")
    done
    "$bin" generate -p "The tuner said" -n 2 --temp 0 "${args[@]}" >gen.out 2>gen.err && ok ||
      bad "recommended command: ${args[*]}: $(cat gen.err)"
  fi
else
  bad "tune --quick failed: $(cat q.err)"
fi

finish test-tune
