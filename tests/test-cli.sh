#!/usr/bin/env bash
# The spotlight CLI as a user meets it: help, inspect on the default model (text and JSON),
# and one clear error line with a non-zero exit for bad input. Usage: test-cli.sh SPOTLIGHT_BIN
set -u
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli-lib.sh"


"$bin" --help >"$tmp/help" && grep -q "inspect" "$tmp/help" && ok || bad "--help"
"$bin" --version | grep -Eq '^spotlight [0-9]+\.[0-9]+\.[0-9]+$' && ok || bad "--version"
expect_error "no command" 2 "no command given" -- "$bin"
expect_error "unknown command" 2 "unknown command 'frobnicate'" -- "$bin" frobnicate

# The default model (from the cache).
if "$bin" inspect --no-tensors >"$tmp/inspect" 2>"$tmp/err"; then
  grep -Eq '^architecture +llama$' "$tmp/inspect" && ok || bad "inspect: architecture"
  grep -Eq '^layers +30$' "$tmp/inspect" && ok || bad "inspect: layers"
  grep -Eq '^heads +9 query / 3 KV \(group of 3\), head_dim 64$' "$tmp/inspect" && ok || bad "inspect: heads"
  grep -Eq '^KV cache +f16: 23040 bytes per token, 23.04 GB per 1M tokens$' "$tmp/inspect" && ok || bad "inspect: KV bytes"
  grep -Eq '^tokenizer +gpt2 \(byte-level BPE, pre smollm\), vocab 49152$' "$tmp/inspect" && ok || bad "inspect: tokenizer"
else
  bad "inspect on the default model failed: $(cat "$tmp/err")"
fi
"$bin" inspect >"$tmp/full" 2>&1 && [ "$(grep -c '^blk\.' "$tmp/full")" = 270 ] && ok || bad "inspect tensor table rows"
if "$bin" inspect --json >"$tmp/json" 2>"$tmp/err"; then
  python3 - "$tmp/json" <<'PY' && ok || bad "inspect --json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["n_layer"] == 30 and d["n_head"] == 9 and d["n_head_kv"] == 3 and d["head_dim"] == 64, d
assert d["kv_bytes_per_token_f16"] == 23040 and d["tied_embeddings"] is True
assert len(d["tensors"]) == 272 and sum(t["bytes"] for t in d["tensors"]) == d["weight_bytes"]
PY
else
  bad "inspect --json failed: $(cat "$tmp/err")"
fi

# Bad input: one line, non-zero exit.
expect_error "missing file" 1 "No such file" -- "$bin" inspect "$tmp/nope.gguf"
echo "hello, I am not a model" >"$tmp/text.gguf"
expect_error "not gguf" 1 "bad magic" -- "$bin" inspect "$tmp/text.gguf"
model=$(sed -n 's/^model *\(.*\) (.*$/\1/p' "$tmp/inspect")
if [ -f "$model" ]; then
  head -c 1000000 "$model" >"$tmp/cut.gguf"
  expect_error "truncated model" 1 "truncated" -- "$bin" inspect "$tmp/cut.gguf"
else
  bad "could not find the default model path in inspect output"
fi
expect_error "directory" 1 "not a regular file" -- "$bin" inspect "$tmp"
# a FIFO or a device is refused at once (open() on a FIFO would wait for a writer forever;
# /dev/zero never ends)
mkfifo "$tmp/fifo"
expect_error "FIFO model" 1 "fifo.* is not a regular file" -- timeout 60 "$bin" inspect "$tmp/fifo"
expect_error "FIFO prompt" 1 "cannot read .*/fifo: not a regular file" -- timeout 60 "$bin" generate -f "$tmp/fifo"
expect_error "/dev/zero prompt" 1 "cannot read /dev/zero: not a regular file" -- timeout 60 "$bin" generate -f /dev/zero
expect_error "/dev/zero text" 1 "cannot read /dev/zero: not a regular file" -- timeout 60 "$bin" perplexity -f /dev/zero
expect_error "FIFO q/k text" 1 "cannot read .*/fifo: not a regular file" -- timeout 60 "$bin" dump-qk -f "$tmp/fifo"
expect_error "two models" 2 "one model" -- "$bin" inspect a.gguf b.gguf
expect_error "no default model" 1 "fetch-model" -- env SPOTLIGHT_MODELS="$tmp/empty" "$bin" inspect
expect_error "bad option" 2 "unknown or incomplete option .--bogus." -- "$bin" inspect --bogus

# generate / perplexity: a real generation, then bad input.
if "$bin" generate --chat -p "What is the capital of France?" -n 12 --temp 0 --json >"$tmp/gen.json" 2>"$tmp/err"; then
  python3 - "$tmp/gen.json" <<'PY' && ok || bad "generate --json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["n_prompt"] == 37 and 1 <= d["n_generated"] <= 12 and len(d["tokens"]) == d["n_generated"], d
assert d["stop_reason"] in ("length", "eos") and d["decode_tok_s"] > 0 and d["text"], d
assert d["backend"] == "cpu" and d["device_bytes"] == 0, d
PY
else
  bad "generate failed: $(cat "$tmp/err")"
fi
"$bin" generate -p "Once upon a time" -n 40 --temp 0 --stop "," >"$tmp/stop.txt" 2>/dev/null
grep -q "stop: stop string" <("$bin" generate -p "Once upon a time" -n 40 --temp 0 --stop "," 2>&1 >/dev/null) && ! grep -q "," "$tmp/stop.txt" && ok || bad "stop string"
expect_error "empty prompt" 1 "the prompt is empty" -- "$bin" generate -p ""
expect_error "n negative" 2 "-n must be an integer" -- "$bin" generate -p hi -n -5
expect_error "no prompt" 2 "exactly one of -p PROMPT or -f FILE" -- "$bin" generate
expect_error "gpu bad index" 2 "--gpu must be" -- "$bin" generate -p hi --gpu=x
expect_error "vram without gpu" 1 "--vram-mb needs --gpu" -- "$bin" generate -p hi --vram-mb 100
expect_error "vram too small" 1 "8192 tokens need [0-9]+ MiB of VRAM .* 400 MiB holds at most [0-9]+ tokens" -- \
  "$bin" generate -p hi -n 2 -c 8192 --gpu --vram-mb 400
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_error "gpu absent" 1 "CUDA" -- "$bin" generate -p hi -n 2 --gpu
fi
printf 'ab\xff\xfecd' >"$tmp/bad.txt"
expect_error "invalid utf-8" 1 "not valid UTF-8 at byte 2" -- "$bin" generate -f "$tmp/bad.txt"
expect_error "missing prompt file" 1 "No such file" -- "$bin" generate -f "$tmp/nope.txt"
python3 -c "print('word ' * 3000)" >"$tmp/long.txt"
expect_error "prompt over context" 1 "the context holds 512" -- "$bin" generate -f "$tmp/long.txt" -c 512
expect_error "bad temperature" 2 "--temp must be a number" -- "$bin" generate -p hi --temp abc
expect_error "perplexity short text" 1 "at least one chunk" -- "$bin" perplexity -f "$tmp/stop.txt" -c 512
expect_error "perplexity invalid utf-8" 1 "not valid UTF-8" -- "$bin" perplexity -f "$tmp/bad.txt"

# dump-qk and train-hash: bad input, and a tiny dump + training run end to end.
expect_error "dump-qk no text" 2 "give the text with -f" -- "$bin" dump-qk
expect_error "dump-qk missing text" 1 "No such file" -- "$bin" dump-qk -f "$tmp/nope.txt"
expect_error "dump-qk too little text" 1 "sequences of 64 need" -- "$bin" dump-qk -f "$tmp/stop.txt" --seq-len 64 --seqs 9
expect_error "dump-qk bad seq-len" 2 "--seq-len must be an integer" -- "$bin" dump-qk -f "$tmp/stop.txt" --seq-len 3
expect_error "train-hash bad bits" 2 "multiple of 32" -- "$bin" train-hash --bits 80
expect_error "train-hash no dump" 1 "layer-00.qk" -- "$bin" train-hash --qk "$tmp/none" --eval-qk "$tmp/none" -o "$tmp/h.slhash"
[ -e "$tmp/h.slhash" ] && bad "train-hash left a hash file after failing" || ok
if "$bin" dump-qk -f "$tmp/long.txt" --seq-len 64 --seqs 2 -o "$tmp/qk" 2>"$tmp/err" &&
   "$bin" train-hash --qk "$tmp/qk" --eval-qk "$tmp/qk" --steps 3 -o "$tmp/h.slhash" 2>"$tmp/err"; then
  [ "$(ls "$tmp/qk" | grep -c '^layer-[0-9][0-9].qk$')" = 30 ] && ok || bad "dump-qk: expected 30 layer files"
  ls "$tmp/qk" | grep -q partial && bad "dump-qk left partial files" || ok
  grep -q "30 layers trained" "$tmp/err" && ok || bad "train-hash: no summary line"
  "$bin" train-hash --qk "$tmp/qk" --eval-qk "$tmp/qk" --steps 3 -o "$tmp/h.slhash" 2>"$tmp/err" &&
    grep -q "0 layers trained" "$tmp/err" && ok || bad "train-hash: rerun did not resume"
  # outputs from nothing: the folder is made; one that cannot be is an error before any training
  "$bin" train-hash --qk "$tmp/qk" --eval-qk "$tmp/qk" --steps 1 -o "$tmp/cache/hash/h1.slhash" 2>"$tmp/err" &&
    [ -s "$tmp/cache/hash/h1.slhash" ] && ok || bad "train-hash into a new folder: $(tail -1 "$tmp/err")"
  expect_error "train-hash output under a file" 1 "cannot create the directory .*/text.gguf: it is a file" -- \
    "$bin" train-hash --qk "$tmp/qk" --eval-qk "$tmp/qk" --steps 1 -o "$tmp/text.gguf/h.slhash"
  # eval-retrieval: refuses the training dumps, then measures on another dump
  expect_error "eval-retrieval on training data" 1 "was trained on" -- \
    "$bin" eval-retrieval --hash "$tmp/h.slhash" --qk "$tmp/qk" -o "$tmp/ev"
  expect_error "eval-retrieval bad budgets" 2 "--budgets must be" -- "$bin" eval-retrieval --budgets 0.02,x
  expect_error "eval-retrieval bad simhash bits" 2 "multiples of 32" -- "$bin" eval-retrieval --simhash-bits 40
  ls "$tmp"/ev.* >/dev/null 2>&1 && bad "eval-retrieval left output after failing" || ok
  if "$bin" dump-qk -f "$tmp/long.txt" --seq-len 64 --seqs 1 -o "$tmp/qk-held" 2>"$tmp/err" &&
     "$bin" eval-retrieval --hash "$tmp/h.slhash" --qk "$tmp/qk-held" --simhash-bits 64,512 --queries 16 \
       -o "$tmp/evout/ev" >"$tmp/out" 2>"$tmp/err"; then
    # spotlight 64, simhash 64 and 512, sign 64, exact: 5 methods x 30 layers x 3 KV heads x 4 budgets
    [ "$(tail -n +2 "$tmp/evout/ev.csv" | wc -l)" = 1800 ] && ok || bad "eval-retrieval: CSV rows"
    head -1 "$tmp/evout/ev.csv" | grep -q '^method,bits,layer,kv_head,budget,recall,iou,queries$' && ok || bad "eval-retrieval: CSV header"
    awk -F, 'NR > 1 && ($6 < 0 || $6 > 1.000001 || $7 < 0 || $7 > 1.000001) { exit 1 }' "$tmp/evout/ev.csv" && ok ||
      bad "eval-retrieval: a recall or IoU outside [0, 1]"
    awk -F, 'NR > 1 && $1 == "exact" && $7 != "1.000000" { exit 1 }' "$tmp/evout/ev.csv" && ok || bad "eval-retrieval: exact IoU not 1"
    grep -q "Spotlight 64 bits: recall .* vs SimHash 512 bits" "$tmp/evout/ev.md" && ok || bad "eval-retrieval: no target line"
    python3 -c "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); \
assert r.tag.endswith('svg') and len(r.findall('.//{http://www.w3.org/2000/svg}polyline')) >= 3" "$tmp/evout/ev.svg" && ok ||
      bad "eval-retrieval: SVG does not parse or lacks lines"
    ls "$tmp/evout" | grep -q 'tmp-' && bad "eval-retrieval left temporaries" || ok
  else
    bad "eval-retrieval: $(tail -1 "$tmp/err")"
  fi
else
  bad "dump-qk/train-hash: $(tail -1 "$tmp/err")"
fi

# sparse generation: bad options, then a store written, resumed and appended to
expect_error "attn unknown mode" 2 "--attn must be" -- "$bin" generate -p hi --attn sparse
expect_error "attn bad budget" 2 "--budget must be" -- "$bin" generate -p hi --budget 0
expect_error "attn bad block" 2 "--block must be a power of two" -- "$bin" generate -p hi --block 12
expect_error "kv bad spec" 2 "--kv must be ram, ram:PATH or file:PATH" -- "$bin" generate -p hi --kv disk
expect_error "resume without a store" 1 "--resume needs --kv file:PATH" -- "$bin" generate -p hi --attn simhash --resume
expect_error "store with dense attention" 1 "needs --attn spotlight or simhash" -- "$bin" generate -p hi --kv "file:$tmp/x.slkv"
expect_error "spotlight without a hash file" 1 "no hash file|hash" -- "$bin" generate -p hi --attn spotlight --hash "$tmp/none.slhash"
if "$bin" generate -p "The lighthouse keeper climbed the stairs and" -n 6 --temp 0 --attn simhash \
     --kv "file:$tmp/ctx.slkv" -c 512 --json >"$tmp/g1.json" 2>"$tmp/err" &&
   "$bin" generate -p " Then" -n 4 --temp 0 --attn simhash --kv "file:$tmp/ctx.slkv" -c 512 --resume \
     >"$tmp/out" 2>"$tmp/err"; then
  n1=$(python3 -c "import json,sys; d = json.load(open(sys.argv[1])); print(d['n_prompt'] + d['n_generated'])" "$tmp/g1.json")
  grep -q "resuming after $n1 stored tokens" "$tmp/err" && ok || bad "resume: expected 'resuming after $n1' in: $(head -1 "$tmp/err")"
  expect_error "resume into a smaller context" 1 "more than the context's" -- \
    "$bin" generate -p " Then" -n 2 --attn simhash --kv "file:$tmp/ctx.slkv" -c 8 --resume
else
  bad "store + resume: $(tail -1 "$tmp/err")"
fi

# ingest only (-n 0) in two pieces, then resume: the same greedy tokens as one run
if "$bin" generate -p "The lighthouse keeper climbed the stairs and" -n 4 --temp 0 --attn simhash -c 512 \
     --json >"$tmp/one.json" 2>"$tmp/err" &&
   "$bin" generate -p "The lighthouse keeper climbed" -n 0 --attn simhash --kv "file:$tmp/pieces.slkv" -c 512 \
     --json >"$tmp/p1.json" 2>"$tmp/err" &&
   "$bin" generate -p " the stairs and" -n 4 --temp 0 --attn simhash --kv "file:$tmp/pieces.slkv" -c 512 --resume \
     --json >"$tmp/p2.json" 2>"$tmp/err"; then
  python3 - "$tmp/one.json" "$tmp/p1.json" "$tmp/p2.json" <<'PY' && ok || bad "ingest in pieces (-n 0) then resume"
import json, sys
one, p1, p2 = (json.load(open(f)) for f in sys.argv[1:])
assert p1["n_generated"] == 0 and p1["tokens"] == [] and p1["n_stored"] == 0, p1
assert p1["n_past"] == p1["n_prompt"], p1
assert p2["n_stored"] == p1["n_past"] and p2["n_past"] == p1["n_past"] + p2["n_prompt"] + 4, p2
assert p2["tokens"] == one["tokens"], (p2["tokens"], one["tokens"])
assert p2["resume_codes_read"] is True, p2  # the key codes p1 saved beside the store
PY
  # the code file gone: the stored keys are hashed again, to the same tokens
  rm "$tmp/pieces.slkv.codes" &&
    "$bin" generate -p " the stairs and" -n 4 --temp 0 --attn simhash --kv "file:$tmp/pieces.slkv" -c 512 \
      --resume="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['n_past'])" "$tmp/p1.json")" \
      --json >"$tmp/p3.json" 2>"$tmp/err" &&
    python3 -c "
import json, sys
p2, p3 = (json.load(open(f)) for f in sys.argv[1:])
assert p3['resume_codes_read'] is False and p3['tokens'] == p2['tokens'], (p3, p2)" "$tmp/p2.json" "$tmp/p3.json" &&
    [ -s "$tmp/pieces.slkv.codes" ] && ok || bad "resume without the code file: $(tail -1 "$tmp/err")"
else
  bad "ingest in pieces: $(tail -1 "$tmp/err")"
fi

# K/V in RAM written through to a store: dense attention, resumed into RAM
if "$bin" generate -p "The lighthouse keeper climbed the stairs and" -n 5 --temp 0 \
     --kv "ram:$tmp/dense.slkv" -c 512 --json >"$tmp/g2.json" 2>"$tmp/err" &&
   "$bin" generate -p " Then" -n 3 --temp 0 --kv "ram:$tmp/dense.slkv" -c 512 --resume \
     >"$tmp/out" 2>"$tmp/err"; then
  n2=$(python3 -c "import json,sys; d = json.load(open(sys.argv[1])); print(d['n_prompt'] + d['n_generated'])" "$tmp/g2.json")
  grep -q "resuming after $n2 stored tokens" "$tmp/err" && ok || bad "ram store resume: expected 'resuming after $n2' in: $(head -1 "$tmp/err")"
  "$bin" generate -p " Then" -n 2 --temp 0 --kv "ram:$tmp/dense.slkv" -c 512 --resume=3 >"$tmp/out" 2>"$tmp/err" &&
    grep -q "resuming after 3 stored tokens" "$tmp/err" && ok || bad "--resume=3: $(head -1 "$tmp/err")"
  expect_error "resume past the stored tokens" 1 "cannot keep 9999" -- \
    "$bin" generate -p " Then" -n 2 --kv "ram:$tmp/dense.slkv" -c 512 --resume=9999
else
  bad "ram store + resume: $(tail -1 "$tmp/err")"
fi

# KV store ownership and damage: nothing but a store is replaced, one writer at a time, a
# damaged newest header is refused until --recover, an empty store is not resumed
gen_kv() { "$bin" generate --attn simhash -c 512 "$@"; }
echo "keep me" >"$tmp/notes.txt"
expect_error "store over a text file" 1 "is not a KV store" -- gen_kv -p hi -n 0 --kv "file:$tmp/notes.txt" --kv-overwrite
[ "$(cat "$tmp/notes.txt")" = "keep me" ] && ok || bad "the text file was changed"
expect_error "store over a device" 1 "not a regular file" -- gen_kv -p hi -n 0 --kv "file:/dev/null" --kv-overwrite
[ -c /dev/null ] && ok || bad "/dev/null is no longer a device"
mkfifo "$tmp/fifo"
expect_error "resume a FIFO" 1 "not a regular file" -- timeout 20 "$bin" generate --attn simhash -c 512 -p hi -n 0 --kv "file:$tmp/fifo" --resume
if gen_kv -p "The lighthouse keeper climbed the stairs and" -n 0 --kv "file:$tmp/kvs/deep/own.slkv" 2>"$tmp/err"; then
  ok
  expect_error "store exists" 1 "already exists .*--kv-overwrite" -- gen_kv -p hi -n 0 --kv "file:$tmp/kvs/deep/own.slkv"
  gen_kv -p "Again" -n 0 --kv "file:$tmp/kvs/deep/own.slkv" --kv-overwrite 2>"$tmp/err" && ok || bad "--kv-overwrite: $(tail -1 "$tmp/err")"
  expect_error "overwrite with resume" 1 "--kv-overwrite needs" -- gen_kv -p hi -n 0 --kv "file:$tmp/kvs/deep/own.slkv" --kv-overwrite --resume
  expect_error "recover without resume" 1 "--recover needs --resume" -- gen_kv -p hi -n 0 --kv "file:$tmp/kvs/deep/own.slkv" --recover
  # a second writer while one ingests: the holder's PID in one line
  python3 -c "print('The sea was calm. ' * 700)" >"$tmp/longer.txt"
  "$bin" generate --attn simhash -f "$tmp/longer.txt" -n 0 -c 8192 --kv "file:$tmp/busy.slkv" 2>/dev/null &
  holder=$!
  for _ in $(seq 100); do [ -s "$tmp/busy.slkv.lock" ] && break; sleep 0.1; done
  expect_error "second writer" 1 "in use by process $holder" -- gen_kv -p hi -n 0 -c 8192 --kv "file:$tmp/busy.slkv" --resume
  kill -9 $holder 2>/dev/null; wait $holder 2>/dev/null
  # damage: one bit of the newest header's token count
  python3 - "$tmp/kvs/deep/own.slkv" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); h = f.read(8192)
gen = [struct.unpack_from("<Q", h, 4096 * i + 48)[0] for i in (0, 1)]
cur = 0 if gen[0] > gen[1] else 1
f.seek(4096 * cur + 56); b = f.read(1); f.seek(4096 * cur + 56); f.write(bytes([b[0] ^ 1])); f.close()
PY
  expect_error "damaged header refused" 1 "is damaged and may hold a newer state .*--recover" -- \
    gen_kv -p " Then" -n 0 --kv "file:$tmp/kvs/deep/own.slkv" --resume
  gen_kv -p " Then" -n 0 --kv "file:$tmp/kvs/deep/own.slkv" --resume --recover 2>"$tmp/err" &&
    grep -q "resuming after [1-9][0-9]* stored tokens" "$tmp/err" && ok || bad "--recover: $(cat "$tmp/err")"
  ls "$tmp/kvs/deep" | grep -Eq 'partial|lock' && bad "temporaries or lock files left: $(ls "$tmp/kvs/deep")" || ok
else
  bad "store in a new folder: $(tail -1 "$tmp/err")"
fi
long=$(printf 'n%.0s' $(seq 240))
expect_error "store name too long" 1 "too long.*$long" -- gen_kv -p hi -n 0 --kv "file:$tmp/$long"

# a model cut short under a running process: one error line and a non-zero exit, not a crash
if [ -f "$model" ]; then
  cp "$model" "$tmp/shrinking.gguf"
  python3 -c "print('the keeper climbed the stairs of the lighthouse every evening. ' * 1500)" >"$tmp/ppl.txt"
  "$bin" perplexity -m "$tmp/shrinking.gguf" -f "$tmp/ppl.txt" -c 128 >/dev/null 2>"$tmp/bus.err" &
  pid=$!
  for ((i = 0; i < 600; i++)); do grep -q "chunks of" "$tmp/bus.err" && break; sleep 0.05; done
  truncate -s 1000000 "$tmp/shrinking.gguf"
  wait "$pid"
  rc=$?
  [ "$rc" = 1 ] && grep -q "^spotlight: a mapped file was truncated or became unreadable while in use (SIGBUS)$" "$tmp/bus.err" &&
    ok || bad "model truncated while in use: exit $rc, $(tail -1 "$tmp/bus.err")"
fi

# -t beyond the cores: a one-line warning, and the run goes on; no statistic prints nan
if "$bin" generate -p "Hello" -n 2 --temp 0 -t 64 --attn simhash -c 256 >"$tmp/out" 2>"$tmp/err"; then
  grep -q "warning: -t 64 is more than the [0-9]* cores" "$tmp/err" && ok || bad "-t 64 gave no warning: $(head -2 "$tmp/err")"
  grep -qi "nan" "$tmp/err" && bad "a statistic printed nan: $(grep -i nan "$tmp/err")" || ok
else
  bad "generate -t 64: $(tail -1 "$tmp/err")"
fi

finish cli
