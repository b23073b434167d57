#!/usr/bin/env bash
# `spotlight summarize` scaled out, on the default model with 5 small documents (one empty, so
# an error record travels too), -n 8 -c 512 -t 1, against a one-process run of the same job:
#   1. mpirun -np 2: every document exactly once, in input order, the same greedy summaries;
#      no shard log left behind. Its rerun is a no-op (no model needed), byte for byte.
#   2. an emulated Slurm array (SLURM_ARRAY_TASK_ID=0 and 1, SLURM_ARRAY_TASK_COUNT=2, both at
#      once): the last task to finish merges, the same output.
#   3. a rank that fails (rank 1 given a missing model): rank 0 names the documents without a
#      record, exits non-zero and writes no output; rerunning with -np 2 finishes the job.
#   4. array task 0 done, task 1 failed: a rerun with no array variables summarizes the rest
#      and merges.
# Exits 77 (skipped) when mpirun is missing. Usage: test-summarize-mpi.sh SPOTLIGHT_BIN
set -u
bin="$1"
if ! command -v mpirun >/dev/null; then
  echo "summarize-mpi: skipped: no mpirun (apt-get install openmpi-bin)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/cli-lib.sh"
# Open MPI refuses root without --allow-run-as-root; --oversubscribe lets 2 ranks start on a
# 1-CPU runner; no cross-memory attach, which containers often forbid.
# Under AddressSanitizer (tools/test.sh), Open MPI's own allocations outlive MPI_Finalize in
# unloaded plugins, which no suppression can name: leak checks are off for the MPI runs alone.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" nice mpirun --allow-run-as-root --oversubscribe "$@"; }
# -t 1 everywhere: greedy summaries are reproducible for a given thread count (the CPU kernels'
# float sums depend on it), and a rank bound to one core runs one thread
sum=("$bin" summarize -n 8 -c 512 -t 1)

mkdir -p "$tmp/docs" "$tmp/nomodel"
for i in 1 2 3 4; do
  python3 -c "import sys; i = int(sys.argv[1]); print(' '.join(f'Note {i}.{k}: the harbour crew loaded {i * 13 + k * 7} \
crates of {[\"apples\", \"salt\", \"wool\", \"tin\"][(i + k) % 4]} onto the ship before the storm.' for k in range(2 * i)))" \
    "$i" >"$tmp/docs/d$i.txt"
done
: >"$tmp/docs/empty.txt"

# same OUT REF: each document once, in REF's order, with REF's summaries (greedy decoding)
same() {
  python3 - "$1" "$2" <<'PY'
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
ref = [json.loads(l) for l in open(sys.argv[2])]
assert [r["id"] for r in out] == [r["id"] for r in ref], [r["id"] for r in out]
assert len({r["id"] for r in out}) == len(out) == 5, "a document twice"
keys = ("summary", "method", "calls", "tokens_in", "tokens_out", "error")
for a, b in zip(out, ref):
    assert all(a[k] == b[k] for k in keys), (a, b)
PY
}
no_logs() { ! ls "$tmp" | grep -q "^$1\.jsonl\."; }

if ! "${sum[@]}" "$tmp/docs" -o "$tmp/ref.jsonl" 2>"$tmp/err"; then
  echo "FAIL: the one-process reference run: $(tail -2 "$tmp/err")"
  exit 1
fi

# ---- 1. mpirun -np 2, then a rerun that has nothing to do ----
if mpi -np 2 "${sum[@]}" "$tmp/docs" -o "$tmp/mpi.jsonl" 2>"$tmp/err1"; then
  same "$tmp/mpi.jsonl" "$tmp/ref.jsonl" && ok || bad "mpirun -np 2: records differ from one process"
  grep -q "5 documents: 4 ok, 1 failed (0 from an earlier run); 2 ranks" "$tmp/err1" && ok ||
    bad "mpirun -np 2: summary line: $(cat "$tmp/err1")"
  [ "$(tr '\r' '\n' <"$tmp/err1" | grep -o 'shard [01]/2: [0-9]* documents: ' | wc -l)" = 2 ] && ok ||
    bad "mpirun -np 2: not one line per rank: $(cat "$tmp/err1")"
  no_logs mpi && ok || bad "mpirun -np 2 left logs: $(ls "$tmp")"
  cp "$tmp/mpi.jsonl" "$tmp/mpi.before"
  SPOTLIGHT_MODELS="$tmp/nomodel" mpi -x SPOTLIGHT_MODELS -np 2 "${sum[@]}" "$tmp/docs" -o "$tmp/mpi.jsonl" 2>"$tmp/err" &&
    cmp -s "$tmp/mpi.jsonl" "$tmp/mpi.before" && no_logs mpi && ok || bad "mpirun rerun not a no-op: $(tail -3 "$tmp/err")"
else
  bad "mpirun -np 2 failed: $(tail -5 "$tmp/err1")"
fi

# ---- 2. a Slurm array of two tasks, at the same time ----
# each on a CPU of its own where there are two, as Slurm's cpusets would place them
on_cpu() { if [ "$(nproc)" -ge 2 ]; then taskset -c "$@"; else shift; "$@"; fi; }
SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2 on_cpu 0 nice "${sum[@]}" "$tmp/docs" -o "$tmp/arr.jsonl" 2>"$tmp/err-a0" &
a0=$!
SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 on_cpu 1 nice "${sum[@]}" "$tmp/docs" -o "$tmp/arr.jsonl" 2>"$tmp/err-a1"
r1=$?
wait "$a0"
r0=$?
if [ "$r0" = 0 ] && [ "$r1" = 0 ] && [ -f "$tmp/arr.jsonl" ]; then
  same "$tmp/arr.jsonl" "$tmp/ref.jsonl" && ok || bad "array: records differ from one process"
  [ "$(cat "$tmp/err-a0" "$tmp/err-a1" | grep -c 'every shard is done: merged')" -ge 1 ] && ok ||
    bad "array: no task merged: $(cat "$tmp/err-a0" "$tmp/err-a1")"
  no_logs arr && ok || bad "array: logs left: $(ls "$tmp")"
else
  bad "array: exit $r0/$r1: $(tail -2 "$tmp/err-a0") / $(tail -2 "$tmp/err-a1")"
fi

# ---- 3. a rank that fails; the rerun finishes the job ----
mpi -np 1 "${sum[@]}" "$tmp/docs" -o "$tmp/fail.jsonl" : -np 1 "${sum[@]}" -m "$tmp/nope.gguf" "$tmp/docs" -o "$tmp/fail.jsonl" \
  2>"$tmp/err3"
r=$?
if [ "$r" != 0 ] && [ ! -e "$tmp/fail.jsonl" ] && grep -q "of 5 documents have no record: .*(failed ranks: 1); .*not written" "$tmp/err3"; then
  ok
  k=$(cat "$tmp"/fail.jsonl.shard-0.log 2>/dev/null | wc -l)
  [ "$k" -ge 1 ] && [ "$k" -lt 5 ] && ok || bad "failed rank: rank 0 kept $k records"
  if mpi -np 2 "${sum[@]}" "$tmp/docs" -o "$tmp/fail.jsonl" 2>"$tmp/err"; then
    grep -q "resuming: $k of 5 documents already have a record" "$tmp/err" && ok || bad "failed rank: no resuming line: $(cat "$tmp/err")"
    same "$tmp/fail.jsonl" "$tmp/ref.jsonl" && no_logs fail && ok || bad "failed rank: the rerun's output"
  else
    bad "failed rank: the rerun failed: $(tail -3 "$tmp/err")"
  fi
else
  bad "failed rank: exit $r, $(ls "$tmp" | grep fail), $(cat "$tmp/err3")"
fi

# ---- 4. array task 0 done, task 1 failed; a plain rerun merges ----
SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2 nice "${sum[@]}" "$tmp/docs" -o "$tmp/mix.jsonl" 2>"$tmp/err4"
r0=$?
SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 nice "${sum[@]}" -m "$tmp/nope.gguf" "$tmp/docs" -o "$tmp/mix.jsonl" 2>/dev/null
r1=$?
if [ "$r0" = 0 ] && [ "$r1" != 0 ] && [ ! -e "$tmp/mix.jsonl" ] && grep -q "mix.jsonl waits for [1-9] documents of other shards" "$tmp/err4"; then
  ok
  k=$(wc -l <"$tmp/mix.jsonl.shard-0.log")
  if nice "${sum[@]}" "$tmp/docs" -o "$tmp/mix.jsonl" 2>"$tmp/err"; then
    grep -q "resuming: $k of 5 documents already have a record" "$tmp/err" && ok || bad "array rerun: no resuming line: $(cat "$tmp/err")"
    same "$tmp/mix.jsonl" "$tmp/ref.jsonl" && no_logs mix && ok || bad "array rerun: the merged output"
  else
    bad "array rerun failed: $(tail -2 "$tmp/err")"
  fi
else
  bad "array task 0 then failed task 1: exit $r0/$r1, $(ls "$tmp" | grep mix), $(cat "$tmp/err4")"
fi

# ---- bad array variables: one line, exit 2 ----
SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_COUNT=2 "$bin" summarize "$tmp/docs" -o "$tmp/x.jsonl" 2>"$tmp/err"
[ $? = 2 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "give sbatch a range" "$tmp/err" && ok || bad "bad task id: $(cat "$tmp/err")"

finish summarize-mpi
