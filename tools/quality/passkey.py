#!/usr/bin/env python3
"""Writes a passkey (needle-in-a-haystack) prompt: real filler text from a corpus document,
a pass key sentence at a given depth, and the question at the end. Deterministic for a seed.

  passkey.py FILLER.txt --tokens-approx N --depth 0.5 --seed 1 -o prompt.txt
prints the pass key on stdout."""
import argparse
import random
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("filler")
    ap.add_argument("--tokens-approx", type=int, required=True)
    ap.add_argument("--depth", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    rnd = random.Random(a.seed * 1000003 + int(a.depth * 1000) + a.tokens_approx)
    key = str(rnd.randint(10000, 99999))
    text = open(a.filler, encoding="utf-8").read()
    text = re.sub(r"\s+", " ", text)
    chars = a.tokens_approx * 4  # about 4 characters per token for English prose
    start = rnd.randint(0, max(0, len(text) - chars - 1))
    hay = text[start:start + chars]
    cut = int(len(hay) * a.depth)
    # on a sentence boundary near the depth
    dot = hay.rfind(". ", 0, cut)
    cut = dot + 2 if dot > 0 else cut
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    prompt = ("There is a pass key hidden in the following text. Find it and remember it.\n\n"
              + hay[:cut] + needle + hay[cut:]
              + "\n\nWhat is the pass key? The pass key is")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(prompt)
    print(key)


if __name__ == "__main__":
    main()
