#!/usr/bin/env python3
"""Agreement of a greedy continuation with the dense one, from two `spotlight generate
--json` outputs: token match (share of positions with the same token, over the dense
length) and ROUGE-L F1 over token ids (longest common subsequence), as the paper's fidelity
test. Prints: match rouge_l"""
import json
import sys


def lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def main():
    ref = json.load(open(sys.argv[1]))["tokens"]
    got = json.load(open(sys.argv[2]))["tokens"]
    n = max(len(ref), 1)
    match = sum(1 for x, y in zip(ref, got) if x == y) / n
    l = lcs(ref, got)
    p = l / max(len(got), 1)
    r = l / n
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    print(f"{match:.3f} {f:.3f}")


if __name__ == "__main__":
    main()
