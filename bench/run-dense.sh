#!/usr/bin/env bash
# Dense generation on the CPU, Spotlight next to llama.cpp in the same run: the same GGUF,
# the same thread count, decode at each context depth and prefill of 512 tokens, with the
# memory-bandwidth limit of decode beside them. Writes bench/results/dense-cpu.md.
#
#   bench/run-dense.sh [MODEL.gguf] [THREADS] [DEPTHS]
#
# Needs build/ (tools/setup.sh) and llama.cpp's llama-bench from tools/ref/llama-cpp.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
model=${1:-$cache/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${2:-2}
depths=${3:-0,512,4096,8192,16384}
llama_bench="$cache/llama-cpp/bin/llama-bench"
[ -x build/bench/bench-dense ] || { echo "run-dense: build first (tools/setup.sh)" >&2; exit 1; }
[ -x "$llama_bench" ] || { echo "run-dense: llama-bench missing; run tools/ref/llama-cpp.sh" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "run-dense: spotlight at depths $depths ($threads threads)" >&2
build/bench/bench-dense "$model" --depths "$depths" --decode 32 -t "$threads" --csv >"$tmp/ours.csv"
echo "run-dense: llama.cpp at depths 0,$depths" >&2
# Prefill from empty (2 repetitions), then decode at each depth (1 repetition: llama-bench
# re-prefills the depth for every repetition, which at 16K takes minutes on 2 cores).
{ "$llama_bench" -m "$model" -t "$threads" -p 512 -n 0 -r 2 -o csv &&
  "$llama_bench" -m "$model" -t "$threads" -p 0 -n 32 -d "$depths" -r 1 -o csv | tail -n +2; } \
  >"$tmp/llama.csv" 2>"$tmp/llama.err" || { cat "$tmp/llama.err" >&2; exit 1; }

python3 - "$tmp/ours.csv" "$tmp/llama.csv" "$model" "$threads" >bench/results/dense-cpu.md <<'PY'
import csv, os, sys, datetime
ours = list(csv.DictReader(open(sys.argv[1])))
llama = list(csv.DictReader(open(sys.argv[2])))
def ll(depth, kind):
    for r in llama:
        d = int(r.get("n_depth", 0) or 0)
        if d != depth: continue
        if kind == "pp" and int(r["n_prompt"]) > 0 and int(r["n_gen"]) == 0: return float(r["avg_ts"])
        if kind == "tg" and int(r["n_gen"]) > 0 and int(r["n_prompt"]) == 0: return float(r["avg_ts"])
    return float("nan")
print(f"# Dense CPU generation: Spotlight vs llama.cpp\n")
print(f"Model `{os.path.basename(sys.argv[3])}`, {sys.argv[4]} threads, {datetime.date.today()}; "
      f"llama.cpp build {llama[0].get('build_commit','?')} (llama-bench; prefill 2 repetitions, decode 1). "
      f"Decode limit = memcpy bandwidth ({float(ours[0]['memcpy_gb_s']):.1f} GB/s, same run) / bytes read per token "
      f"(weights + f16 K/V at that depth).\n")
print("| depth | decode tok/s spotlight | decode tok/s llama.cpp | ratio | decode limit tok/s |")
print("|---:|---:|---:|---:|---:|")
for r in ours:
    d = int(r["depth"]); a = float(r["decode_tok_s"]); b = ll(d, "tg")
    print(f"| {d} | {a:.2f} | {b:.2f} | {a/b:.2f}x | {float(r['decode_limit_tok_s']):.1f} |")
print()
print("| prefill | spotlight tok/s | llama.cpp tok/s | ratio |\n|---|---:|---:|---:|")
for r in ours:
    if int(r["depth"]) == 512:
        a = float(r["prefill_tok_s"]); b = ll(0, "pp")
        print(f"| 512 tokens from empty | {a:.1f} | {b:.1f} | {a/b:.2f}x |")
PY
cat bench/results/dense-cpu.md
