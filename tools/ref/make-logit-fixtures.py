#!/usr/bin/env python3
"""Reference logits and greedy generations for our forward-pass tests, computed by llama.cpp
(through llama-cpp-python), an implementation independent of ours.

Rerun (deterministic for a given llama.cpp build and thread count; commit what changes):
    tools/ref/llama-cpp.sh                          # once: builds the venv (see that script)
    tools/fetch-model.sh && tools/fetch-model.sh qwen2.5-coder-0.5b
    PY=${SPOTLIGHT_MODELS:-~/.cache/spotlight}/llama-cpp/venv/bin/python
    $PY tools/ref/make-logit-fixtures.py            # default texts, see below
    $PY tools/ref/make-logit-fixtures.py --text A.txt --text B.txt ...   # explicit texts
The texts used are written into each fixture's header, so a fixture names its own inputs.
Default texts, in order: the held-out corpus of tools/fetch-corpus.sh when present,
$CACHE/corpus/heldout/{debian-handbook-foreword,python-c-api-init_config,gnu-bash-bashref,
austen-emma}.txt (technical prose, API docs, shell manual, a novel; if one of those is missing,
all of heldout/*.txt sorted by name), else /usr/share/common-licenses/{BSD,Apache-2.0,MPL-2.0,
GPL-3} (Debian's base-files).
Prompt k (lengths 64, 256, 1024, 2048 tokens by default) is the first LENGTH tokens of
text k mod n_texts, tokenized by llama.cpp with parse_special=false.

Each model is evaluated with Llama(n_ctx = prompt tokens + 64, logits_all=True, n_threads=2,
n_batch=512), default context parameters otherwise: f16 K and V caches, flash attention off.
Greedy runs: 64 tokens, argmax over the raw logits (lowest id wins a tie), no sampler, no
penalties, end-of-generation tokens not special-cased (always 64 tokens), decoding one token
per llama_decode after a batched prompt.

Writes tests/fixtures/logits-<model>.bin per model in MODELS, all little-endian:
    offset 0   4 B        magic b"SLLG"
    offset 4   u32        format version (1)
    offset 8   u32        H, header text length, then H bytes of UTF-8 "key=value\\n" lines
                          (llama.cpp version, model, sha256, kv types, flash_attn, threads,
                          batch, texts, prompts)
    then       u32        n_vocab
               u32        K, entries per row (20)
               u32        n_records
    then n_records records:
               u32        kind: 0 = prompt evaluation, 1 = greedy generation
               u32        L, then L bytes: record name (ASCII, e.g. "prompt-256", "greedy-story")
               u32        n_prompt, then n_prompt i32 prompt token ids (no BOS: both models'
                          metadata say add_bos_token=false)
               u32        n_gen, then n_gen i32 generated ids (0 for kind 0)
               u32        n_rows (kind 0: n_prompt; kind 1: n_gen), then n_rows rows of
                          f32   logsumexp over all n_vocab logits of that row
                          f32   logit of the next prompt token (kind 0; NaN on the last row)
                                or of the chosen token (kind 1)
                          K x { i32 id, f32 logit }, by logit descending, ties by id ascending
    kind 0 row i: the logits after the model consumed prompt[0..i] (they predict prompt[i+1]);
    kind 1 row j: the logits that chose gen[j] (row 0 is the last prompt position, row j > 0
    follows feeding gen[j-1]).
"""
import argparse
import glob
import hashlib
import math
import os
import struct
import sys
import time

import numpy as np

try:
    import llama_cpp
except ImportError:
    sys.exit("needs the llama.cpp venv: run tools/ref/llama-cpp.sh and use its venv/bin/python")

from refpaths import FIXTURES, MODELS, cache_dir  # noqa: E402 (sibling module)
# Each chat template's own default system prompt (tokenizer.chat_template in the GGUF).
SYSTEM = {
    "smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "qwen2.5-coder": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}
CHATS = [
    ("greedy-story", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("greedy-code", "Explain how a hash table works, then write a small example in Python."),
]
DEFAULT_HELDOUT = ["debian-handbook-foreword.txt", "python-c-api-init_config.txt",
                   "gnu-bash-bashref.txt", "austen-emma.txt"]
DEFAULT_LICENSES = ["BSD", "Apache-2.0", "MPL-2.0", "GPL-3"]
N_GEN = 64
TOP_K = 20
N_THREADS = 2
N_BATCH = 512


def chatml(system, user):
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def row_record(logits, next_id):
    """One row: logsumexp, logit of next_id (NaN if None), top-K (id, logit)."""
    x = logits.astype(np.float64)
    m = x.max()
    lse = m + math.log(np.exp(x - m).sum())
    part = np.argpartition(-logits, TOP_K)[:TOP_K]
    order = np.lexsort((part, -logits[part]))      # logit descending, then id ascending
    top = part[order]
    nxt = float(logits[next_id]) if next_id is not None else float("nan")
    out = struct.pack("<ff", lse, nxt)
    for i in top:
        out += struct.pack("<if", int(i), float(logits[i]))
    return out


def make_llama(model_path, n_ctx):
    return llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, logits_all=True, n_threads=N_THREADS,
                           n_threads_batch=N_THREADS, n_batch=N_BATCH, seed=0, verbose=False)


def record(kind, name, prompt, gen, rows):
    out = struct.pack("<II", kind, len(name)) + name.encode("ascii")
    out += struct.pack("<I", len(prompt)) + struct.pack(f"<{len(prompt)}i", *prompt)
    out += struct.pack("<I", len(gen)) + struct.pack(f"<{len(gen)}i", *gen)
    out += struct.pack("<I", len(rows)) + b"".join(rows)
    return out


def prompt_records(model_path, texts, lengths, header):
    vocab_llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    recs = []
    for k, n in enumerate(lengths):
        path = texts[k % len(texts)]
        with open(path, "rb") as f:
            data = f.read()
        ids = vocab_llm.tokenize(data, add_bos=True, special=False)
        if len(ids) < n:
            sys.exit(f"{path} has only {len(ids)} tokens; prompt {k} needs {n}")
        prompt = ids[:n]
        llm = make_llama(model_path, n + N_GEN)
        t0 = time.monotonic()
        llm.eval(prompt)
        dt = time.monotonic() - t0
        scores = llm.scores[:n]
        rows = [row_record(scores[i], prompt[i + 1] if i + 1 < n else None) for i in range(n)]
        name = f"prompt-{n}"
        header.append(f"{name}={os.path.basename(path)} (sha256 {hashlib.sha256(data).hexdigest()}) "
                      f"first {n} tokens")
        top1 = sum(int(np.argmax(scores[i]) == prompt[i + 1]) for i in range(n - 1))
        print(f"  {name}: {os.path.basename(path)}, eval {dt:.1f} s, "
              f"top-1 = next token at {top1}/{n - 1} positions")
        recs.append(record(0, name, prompt, [], rows))
        del llm
    return recs


def greedy_records(model_path, system, header):
    vocab_llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    recs = []
    for name, user in CHATS:
        text = chatml(system, user)
        prompt = vocab_llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llm = make_llama(model_path, len(prompt) + N_GEN)
        llm.eval(prompt)
        gen, rows = [], []
        for _ in range(N_GEN):
            logits = llm.scores[llm.n_tokens - 1]
            tok = int(np.argmax(logits))
            rows.append(row_record(logits, tok))
            gen.append(tok)
            llm.eval([tok])
        eog = next((j for j, t in enumerate(gen) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)), None)
        shown = llm.detokenize(gen[:eog] if eog is not None else gen).decode("utf-8", "replace")
        header.append(f"{name}=ChatML, system {system!r}, user {user!r}")
        print(f"  {name}: prompt {len(prompt)} tokens, first end-of-generation at "
              f"{eog if eog is not None else 'none'}\n    > " + shown.replace("\n", "\n    > "))
        recs.append(record(1, name, prompt, gen, rows))
        del llm
    return recs


def default_texts(cache):
    d = os.path.join(cache, "corpus", "heldout")
    preferred = [os.path.join(d, n) for n in DEFAULT_HELDOUT]
    if all(os.path.exists(p) for p in preferred):
        return preferred, "held-out corpus (tools/fetch-corpus.sh)"
    heldout = sorted(glob.glob(os.path.join(d, "*.txt")))
    if heldout:
        return heldout, "held-out corpus (tools/fetch-corpus.sh), all files"
    return [os.path.join("/usr/share/common-licenses", n) for n in DEFAULT_LICENSES], "common-licenses"


def corpus_version(cache):
    try:
        with open(os.path.join(cache, "corpus", ".complete")) as f:
            return f.read().strip()
    except OSError:
        return "absent"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", action="append", help="text file for prompt k (repeatable; cycled)")
    ap.add_argument("--lengths", default="64,256,1024,2048", help="prompt lengths in tokens")
    ap.add_argument("--model", action="append", choices=list(MODELS), help="only these models")
    ap.add_argument("--out-dir", default=FIXTURES)
    args = ap.parse_args()
    cache = cache_dir()
    texts, source = (args.text, "--text") if args.text else default_texts(cache)
    lengths = [int(x) for x in args.lengths.split(",")]
    marker = os.path.join(cache, "llama-cpp", "COMPLETE")
    version = (" ".join(open(marker).read().split()[:3]) if os.path.exists(marker)
               else f"llama-cpp-python {llama_cpp.__version__}")
    print(f"texts ({source}): {', '.join(texts)}")
    for stem in args.model or list(MODELS):
        path = os.path.join(cache, MODELS[stem])
        if not os.path.exists(path):
            sys.exit(f"missing {path}: run tools/fetch-model.sh first")
        print(f"{stem}:")
        header = [
            f"generator=tools/ref/make-logit-fixtures.py",
            f"llama_cpp={version}",
            f"model={MODELS[stem]}",
            f"model_sha256={sha256(path)}",
            "kv_type_k=f16", "kv_type_v=f16", "flash_attn=disabled",
            f"n_threads={N_THREADS}", f"n_batch={N_BATCH}", f"n_ctx=prompt+{N_GEN}",
            f"texts_source={source}",
            f"corpus={corpus_version(cache)}",
            f"greedy=argmax, {N_GEN} tokens, end-of-generation ignored",
        ]
        recs = prompt_records(path, texts, lengths, header)
        recs += greedy_records(path, SYSTEM[stem], header)
        n_vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False).n_vocab()
        text = ("\n".join(header) + "\n").encode("utf-8")
        blob = b"SLLG" + struct.pack("<II", 1, len(text)) + text
        blob += struct.pack("<III", n_vocab, TOP_K, len(recs)) + b"".join(recs)
        out = os.path.join(args.out_dir, f"logits-{stem}.bin")
        with open(out, "wb") as f:
            f.write(blob)
        print(f"  wrote {out} ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
