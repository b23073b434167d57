#!/usr/bin/env bash
# `spotlight summarize` as a user runs it, on the default model with tiny documents, -n 8 and
# -c 512 (so a ~2.5 KB document goes through map-reduce): one record per document in input
# order, error records for bad documents, a manifest with malformed lines, resuming after
# kill -9 (finished records kept byte for byte, the rest equal to an uninterrupted run), a torn
# log line cut off, and one-line errors for bad usage. Usage: test-summarize.sh SPOTLIGHT_BIN
set -u
bin="$1"
tmp=$(mktemp -d)
job=
trap '[ -n "$job" ] && kill -9 "$job" 2>/dev/null; rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli-lib.sh"
run() { nice "$bin" summarize -n 8 -c 512 "$@"; }
start() { nice "$bin" summarize -n 8 -c 512 "$@" & job=$!; } # $! is the summarize process itself


# wait_lines FILE N PID: until FILE holds N complete lines (0), or PID ended or 120 s passed (1).
wait_lines() {
  local i
  for ((i = 0; i < 2400; i++)); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# ---- a directory of documents: formats, bad documents, direct and map-reduce ----
mkdir -p "$tmp/docs" "$tmp/nomodel"
echo "The lighthouse on the northern cape was built in 1874 to guide fishing boats through the strait." >"$tmp/docs/a.txt"
printf '# Bread\n\nSourdough rises thanks to a starter of wild yeast. Its acidity gives the loaf a tangy taste.\n' >"$tmp/docs/b.md"
cat >"$tmp/docs/c.html" <<'EOF'
<!DOCTYPE html><html><head><title>Bees</title><style>body { color: red; background: url("x.png"); }</style>
<script>var s = "<p>" + "this script text is not part of the document, and neither is the style" + "</p>";</script></head>
<body><h1>Honey bees</h1><p>Bees tell each other where flowers are with a &quot;waggle dance&quot; &amp; share food.</p></body></html>
EOF
python3 - "$tmp/docs/d-long.txt" <<'PY'
import sys
towns = ["Arden", "Bellmoor", "Caswell", "Dunmore", "Elsworth", "Fairhaven", "Glenrock", "Harwick"]
crops = ["barley", "apples", "wool", "cheese", "timber", "salt", "honey", "flax"]
lines = [f"The town of {t} traded {c} with its neighbours every autumn, and its council kept careful "
         f"records of each harvest, each storm and each new bridge built over the river." for t, c in zip(towns, crops)]
lines += [f"In the year {1800 + 7 * i} the people of {towns[i]} opened a school, a mill and a small library."
          for i in range(8)]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
: >"$tmp/docs/empty.txt"
printf 'abc\0def' >"$tmp/docs/bin.dat"
printf 'ab\xff\xfecd' >"$tmp/docs/bad.txt"
echo "hidden files are not documents" >"$tmp/docs/.notes"

if run "$tmp/docs" -o "$tmp/out1.jsonl" 2>"$tmp/err1"; then
  python3 - "$tmp/out1.jsonl" "$tmp/docs" <<'PY' && ok || bad "directory job: records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
d = sys.argv[2]
ids = [r["id"] for r in recs]
assert ids == [f"{d}/{n}" for n in ["a.txt", "b.md", "bad.txt", "bin.dat", "c.html", "d-long.txt", "empty.txt"]], ids
by = {r["id"].rsplit("/", 1)[1]: r for r in recs}
for r in recs:
    assert set(r) == {"id", "path", "summary", "method", "calls", "tokens_in", "tokens_out", "seconds", "error"}, r
    assert r["path"] == r["id"] and r["seconds"] >= 0, r
for n in ["a.txt", "b.md", "c.html"]:
    r = by[n]
    assert r["error"] is None and r["method"] == "direct" and r["calls"] == 1, r
    assert isinstance(r["summary"], str) and r["summary"] and 1 <= r["tokens_out"] <= 8, r
assert by["c.html"]["tokens_in"] < 40, by["c.html"]  # tags, script and style gone
r = by["d-long.txt"]
assert r["method"] == "map-reduce" and r["calls"] >= 3 and r["tokens_in"] > 460 and r["summary"], r
for n, why in [("bad.txt", "not valid UTF-8 at byte 2"), ("bin.dat", "binary file (NUL byte at byte 3)"),
               ("empty.txt", "empty document")]:
    r = by[n]
    assert r["error"] == why and r["summary"] is None and r["method"] is None, r
PY
  grep -q "7 documents: 4 ok, 3 failed" "$tmp/err1" && ok || bad "directory job: summary line: $(tail -1 "$tmp/err1")"
  ls "$tmp" | grep -q 'out1.jsonl\.' && bad "directory job left a log or temporary: $(ls "$tmp")" || ok
  # a rerun of a finished job redoes nothing: no model is even needed, the output is unchanged
  cp "$tmp/out1.jsonl" "$tmp/out1.before"
  SPOTLIGHT_MODELS="$tmp/nomodel" run "$tmp/docs" -o "$tmp/out1.jsonl" 2>"$tmp/err" &&
    cmp -s "$tmp/out1.jsonl" "$tmp/out1.before" && ok || bad "rerun of a finished job: $(tail -1 "$tmp/err")"
else
  bad "directory job failed: $(tail -2 "$tmp/err1")"
fi

# ---- a manifest: inline text, relative paths, malformed lines ----
cat >"$tmp/jobs.jsonl" <<'EOF'
{"id": "inline", "text": "The council approved a new bridge over the river. Work starts in May and ends next year."}
{"id": "bad-path", "path": 7}
this line is not json

{"id": "rel", "path": "docs/a.txt", "tags": ["x", {"y": null}], "n": -1.5e3}
{"id": "gone", "path": "docs/missing.txt"}
{"text": "an entry without an id"}
{"id": "uni", "text": "<html><body><p>Caf\u00e9 owners \ud83d\ude00 &amp; staff met on Monday to plan the summer market.</p></body></html>"}
EOF
if run --manifest "$tmp/jobs.jsonl" -o "$tmp/man.jsonl" 2>"$tmp/err2"; then
  grep -q '^manifest:2: "path" is not a string$' "$tmp/err2" && grep -q '^manifest:3: not a JSON object' "$tmp/err2" &&
    grep -q '^manifest:7: a "text" entry needs an "id"$' "$tmp/err2" && ok || bad "manifest: line errors: $(cat "$tmp/err2")"
  python3 - "$tmp/man.jsonl" "$tmp/out1.jsonl" <<'PY' && ok || bad "manifest job: records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in recs] == ["inline", "bad-path", "line-3", "rel", "gone", "line-7", "uni"], recs
by = {r["id"]: r for r in recs}
for i in ["inline", "rel", "uni"]:
    assert by[i]["method"] == "direct" and by[i]["summary"] and by[i]["error"] is None, by[i]
assert "path" not in by["inline"] and by["rel"]["path"] == "docs/a.txt"
assert by["bad-path"]["error"].startswith("manifest line 2:") and by["line-3"]["error"].startswith("manifest line 3:")
assert "No such file" in by["gone"]["error"] and by["gone"]["summary"] is None
# the same text summarized in another job and after other documents: the same greedy summary
a = [json.loads(l) for l in open(sys.argv[2]) if l.startswith('{"id":"') and '/a.txt"' in l][0]
assert by["rel"]["summary"] == a["summary"], (by["rel"], a)
PY
else
  bad "manifest job failed: $(tail -2 "$tmp/err2")"
fi

# ---- resuming after kill -9 ----
mkdir -p "$tmp/res"
echo "Otters hold hands while they sleep so that they do not drift apart." >"$tmp/res/r1.txt"
for i in 2 3 4; do
  python3 -c "import sys; i = int(sys.argv[1]); print(' '.join(f'Report {i}.{k}: the survey team counted {i * 37 + k * 11} \
birds near lake number {k + i}, noting that the weather was {[\"calm\", \"windy\", \"wet\"][k % 3]} that week.' for k in range(6)))" \
    "$i" >"$tmp/res/r$i.txt"
done
if run "$tmp/res" -o "$tmp/ref.jsonl" 2>"$tmp/err"; then
  ok
  start "$tmp/res" -o "$tmp/run.jsonl" 2>/dev/null
  if wait_lines "$tmp/run.jsonl.log" 1 "$job"; then
    kill -9 "$job"
    wait "$job" 2>/dev/null
    job=
    cp "$tmp/run.jsonl.log" "$tmp/killed.log"
    k=$(wc -l <"$tmp/killed.log")
    [ ! -e "$tmp/run.jsonl" ] && [ "$k" -lt 4 ] && ok || bad "resume: the job finished before the kill ($k records)"
    if run "$tmp/res" -o "$tmp/run.jsonl" 2>"$tmp/err"; then
      grep -q "resuming: $k of 4 documents already have a record" "$tmp/err" && ok || bad "resume: no resuming line: $(cat "$tmp/err")"
      python3 - "$tmp/run.jsonl" "$tmp/killed.log" "$tmp/ref.jsonl" <<'PY' && ok || bad "resume: records"
import json, sys
out = open(sys.argv[1]).read().splitlines()
killed = [l for l in open(sys.argv[2]).read().split("\n")[:-1]]
ref = [json.loads(l) for l in open(sys.argv[3])]
recs = [json.loads(l) for l in out]
assert [r["id"] for r in recs] == [r["id"] for r in ref], "each document exactly once, in input order"
for l in killed:  # finished before the kill: kept byte for byte (not redone: "seconds" would differ)
    assert l in out, l
for r, f in zip(recs, ref):
    assert (r["summary"], r["method"], r["tokens_in"], r["tokens_out"]) == \
           (f["summary"], f["method"], f["tokens_in"], f["tokens_out"]), (r, f)
PY
      [ ! -e "$tmp/run.jsonl.log" ] && ok || bad "resume: the log outlived the job"
    else
      bad "resume: the rerun failed: $(tail -1 "$tmp/err")"
    fi
  else
    bad "resume: no record appeared in the log"
  fi

  # a torn last line (half a record, as a kill mid-write leaves it) is cut off before appending
  { head -2 "$tmp/ref.jsonl"; sed -n 3p "$tmp/ref.jsonl" | head -c 40; } >"$tmp/torn.jsonl.log"
  start "$tmp/res" -o "$tmp/torn.jsonl" 2>"$tmp/err3"
  if wait_lines "$tmp/torn.jsonl.log" 3 "$job"; then
    kill -9 "$job"
    wait "$job" 2>/dev/null
    job=
    grep -q "dropped a torn last record (40 bytes)" "$tmp/err3" && ok || bad "torn: not reported: $(head -1 "$tmp/err3")"
    python3 - "$tmp/torn.jsonl.log" "$tmp/ref.jsonl" <<'PY' && ok || bad "torn: the log after the resume"
import json, sys
log = open(sys.argv[1]).read()
ref = open(sys.argv[2]).read().splitlines()
assert log.endswith("\n")
lines = log.splitlines()
assert lines[:2] == ref[:2], "the whole records kept"
recs = [json.loads(l) for l in lines]  # the appended record did not land on the torn half
assert recs[2]["id"] == json.loads(ref[2])["id"], recs[2]
PY
    run "$tmp/res" -o "$tmp/torn.jsonl" 2>"$tmp/err" &&
      python3 - "$tmp/torn.jsonl" "$tmp/ref.jsonl" <<'PY' && ok || bad "torn: the finished output"
import json, sys
out = open(sys.argv[1]).read().splitlines()
ref = open(sys.argv[2]).read().splitlines()
assert out[:2] == ref[:2]
assert [json.loads(l)["summary"] for l in out] == [json.loads(l)["summary"] for l in ref]
PY
  else
    bad "torn: the resumed job appended nothing: $(cat "$tmp/err3")"
  fi
else
  bad "resume: the reference run failed: $(tail -1 "$tmp/err")"
fi

# ---- bad usage: one line, non-zero exit, nothing left behind ----
expect_error "no inputs" 2 "give documents" -- "$bin" summarize -o "$tmp/x.jsonl"
expect_error "no output" 2 "give the output file with -o" -- "$bin" summarize "$tmp/docs"
expect_error "inputs and manifest" 2 "not both" -- "$bin" summarize "$tmp/docs" --manifest "$tmp/jobs.jsonl" -o "$tmp/x.jsonl"
expect_error "bad -n" 2 "-n must be an integer" -- "$bin" summarize "$tmp/docs" -o "$tmp/x.jsonl" -n 0
expect_error "resume option" 2 "--resume does not apply" -- "$bin" summarize "$tmp/docs" -o "$tmp/x.jsonl" --resume
expect_error "output folder under a file" 1 "cannot create the directory .*/docs/a.txt: it is a file" -- \
  "$bin" summarize "$tmp/docs" -o "$tmp/docs/a.txt/out.jsonl"
expect_error "output is a directory" 1 "cannot write .*/docs: it is a directory" -- "$bin" summarize "$tmp/docs/a.txt" -o "$tmp/docs"
expect_error "missing manifest" 1 "cannot read the manifest .*nope.jsonl" -- "$bin" summarize --manifest "$tmp/nope.jsonl" -o "$tmp/x.jsonl"
expect_error "bad model" 1 "nope.gguf" -- "$bin" summarize -m "$tmp/nope.gguf" "$tmp/docs/a.txt" -o "$tmp/x.jsonl"
expect_error "context too small" 1 "raise -c or lower -n" -- "$bin" summarize "$tmp/docs/a.txt" -o "$tmp/x.jsonl" -c 100 -n 64
ls "$tmp" | grep -q '^x\.jsonl' && bad "failed jobs left files: $(ls "$tmp" | grep '^x\.')" || ok

# ---- outputs from nothing, and files the user did not mean to give away ----
# the output's folders are made (mkdir -p)
run "$tmp/docs/a.txt" -o "$tmp/new/deeper/o.jsonl" 2>"$tmp/err" && [ "$(wc -l <"$tmp/new/deeper/o.jsonl")" = 1 ] && ok ||
  bad "output in a folder that does not exist: $(tail -1 "$tmp/err")"
# an output (or its log) that is an input is refused before any work, the input untouched
printf 'A document that must survive, without a final newline.' >"$tmp/self.txt"
cp "$tmp/self.txt" "$tmp/self.before"
expect_error "output is the input" 1 "the input .*/self.txt is also .*/self.txt, which this job writes" -- \
  "$bin" summarize "$tmp/self.txt" -o "$tmp/self.txt"
cp "$tmp/self.txt" "$tmp/lg.jsonl.log"
expect_error "log is an input" 1 "the input .*/lg.jsonl.log is also" -- "$bin" summarize "$tmp/lg.jsonl.log" -o "$tmp/lg.jsonl"
ln -s "$tmp/self.txt" "$tmp/link.txt"
expect_error "output is an input through a link" 1 "the input .*/link.txt is also" -- \
  "$bin" summarize "$tmp/link.txt" -o "$tmp/self.txt"
echo '{"id": "x", "text": "hello there"}' >"$tmp/m.jsonl"
cp "$tmp/m.jsonl" "$tmp/m.before"
expect_error "output is the manifest" 1 "the manifest .*/m.jsonl is also" -- "$bin" summarize --manifest "$tmp/m.jsonl" -o "$tmp/m.jsonl"
cmp -s "$tmp/self.txt" "$tmp/self.before" && cmp -s "$tmp/lg.jsonl.log" "$tmp/self.before" &&
  cmp -s "$tmp/m.jsonl" "$tmp/m.before" && ok || bad "a refused job changed its input"
# a link planted at the log's name is refused, its target neither appended to nor cut
ln -s "$tmp/self.txt" "$tmp/planted.jsonl.log"
expect_error "link at the log" 1 "cannot write .*/planted.jsonl.log: it is a symbolic link" -- \
  "$bin" summarize "$tmp/docs/a.txt" -o "$tmp/planted.jsonl"
cmp -s "$tmp/self.txt" "$tmp/self.before" && ok || bad "the planted log's target changed"
# a FIFO or device as manifest or document: refused at once, never waited on or read forever
mkfifo "$tmp/fifo.jsonl"
expect_error "FIFO manifest" 1 "cannot read the manifest .*/fifo.jsonl: not a regular file" -- \
  timeout 60 "$bin" summarize --manifest "$tmp/fifo.jsonl" -o "$tmp/x.jsonl"
expect_error "/dev/zero manifest" 1 "cannot read the manifest /dev/zero: not a regular file" -- \
  timeout 60 "$bin" summarize --manifest /dev/zero -o "$tmp/x.jsonl"
timeout 120 "$bin" summarize -n 8 -c 512 -q "$tmp/fifo.jsonl" -o "$tmp/fifo-out.jsonl" 2>"$tmp/err" &&
  grep -q '"error":"not a regular file"' "$tmp/fifo-out.jsonl" && ok || bad "FIFO document: $(tail -1 "$tmp/err")"
# a file name that is not UTF-8 is written losslessly (\udcXX), read back by a rerun (which
# then redoes nothing) and by Python as the name (os.fsencode)
mkdir -p "$tmp/names"
cp "$tmp/docs/a.txt" "$tmp/names/$(printf 'caf\xe9.txt')"
if run "$tmp/names" -o "$tmp/names.jsonl" 2>"$tmp/err"; then
  python3 - "$tmp/names.jsonl" "$tmp/names" <<'PY' && ok || bad "non-UTF-8 name: the record"
import json, os, sys
(r,) = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
assert os.fsencode(r["path"]) == os.fsencode(sys.argv[2]) + b"/caf\xe9.txt", r
assert r["error"] is None and r["summary"], r
PY
  cp "$tmp/names.jsonl" "$tmp/names.before"
  SPOTLIGHT_MODELS="$tmp/nomodel" run "$tmp/names" -o "$tmp/names.jsonl" 2>"$tmp/err" &&
    cmp -s "$tmp/names.jsonl" "$tmp/names.before" && ok || bad "non-UTF-8 name: the rerun: $(tail -1 "$tmp/err")"
else
  bad "non-UTF-8 name: $(tail -1 "$tmp/err")"
fi
# the longest names whose logs fit: the temporary of the final write fits too
long=$(python3 -c "print('L' * 245)")
run "$tmp/docs/a.txt" -o "$tmp/$long" 2>"$tmp/err" && [ -s "$tmp/$long" ] &&
  [ "$(ls "$tmp" | grep -c '^LLLL')" = 1 ] && ok || bad "245-byte output name: $(tail -1 "$tmp/err")"
# a line of the log that is not a record is reported once
printf 'this is not a record\n' >"$tmp/warn.jsonl.log"
run "$tmp/docs/a.txt" -o "$tmp/warn.jsonl" 2>"$tmp/err"
[ "$(grep -c 'not a record' "$tmp/err")" = 1 ] && ok || bad "'not a record' reported $(grep -c 'not a record' "$tmp/err") times"
# more threads than cores: one warning line
if [ "$(nproc)" -lt 1024 ]; then
  "$bin" summarize -t 1024 --manifest "$tmp/nope.jsonl" -o "$tmp/x.jsonl" 2>"$tmp/err"
  grep -q "warning: -t 1024 is more than the [0-9]* cores" "$tmp/err" && ok || bad "no -t warning: $(cat "$tmp/err")"
fi

finish summarize
