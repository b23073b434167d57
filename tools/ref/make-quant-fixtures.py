#!/usr/bin/env python3
"""Reference fixtures for tests/test-quant.c: raw blocks of each supported tensor type and the
float32 values llama.cpp's own Python package (gguf-py) dequantizes them to. gguf-py is an
implementation independent of ours, written against ggml's C reference, so agreement with it
checks our block layouts and arithmetic.

Rerun (the output is deterministic; commit what changes):
    python3 -m pip install gguf==0.19.0 numpy && python3 tools/ref/make-quant-fixtures.py

Writes tests/fixtures/quant-<TYPE>.bin, one per type, all little-endian:
    offset 0   4 B   magic b"SLQF"
    offset 4   u32   GGML/GGUF type id
    offset 8   u64   n_elems
    offset 16  u64   n_raw_bytes (= n_elems / block_elems * block_bytes)
    offset 24        n_raw_bytes of raw blocks
    then             n_elems float32 expected values

The blocks are seeded pseudo-random bytes with the f16 scale fields overwritten by sane
values (random halves with magnitude in [1e-3, 1], either sign), except the first blocks,
which carry the extremes a real file can hold: +-65504, the smallest and largest subnormal
halves, and zero; two blocks also have all-ones and all-zero quant bytes. F16 and BF16 get 256
values: every special class (+-0, subnormals, +-inf, quiet and signalling NaNs, extremes) and
random bit patterns.
"""
import os
import struct
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:
    sys.exit("needs gguf-py: python3 -m pip install gguf==0.19.0 numpy")

T = gguf.GGMLQuantizationType
OUT_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
MAGIC = b"SLQF"

# Byte offsets of the f16 scale fields inside one block; every other byte is quant data.
SCALE_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
N_BLOCKS = {32: 24, 256: 12}  # by block size: 768 and 3072 elements

# (first field, second field) of the leading blocks; a single-scale type uses the first.
EXTREME_SCALES = [
    (0x7BFF, 0x7BFF),  # 65504, the largest finite half
    (0x0001, 0x0001),  # smallest subnormal, 2^-24
    (0x03FF, 0x03FF),  # largest subnormal
    (0x0000, 0x0000),  # zero
    (0xFBFF, 0x8001),  # -65504, negative subnormal
    (0x7BFF, 0x0001),  # large scale, tiny min
]
ALL_ONES_BLOCK, ALL_ZERO_BLOCK = 6, 7


def random_halves(rng, n):
    mag = np.exp(rng.uniform(np.log(1e-3), 0.0, n))
    sign = np.where(rng.integers(0, 2, n) == 1, -1.0, 1.0)
    return (sign * mag).astype(np.float16).view(np.uint16)


def quant_blocks(rng, qtype):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = N_BLOCKS[block_elems]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    raw[ALL_ONES_BLOCK, :] = 0xFF
    raw[ALL_ZERO_BLOCK, :] = 0x00
    for k, off in enumerate(SCALE_FIELDS[qtype]):
        halves = random_halves(rng, n_blocks)
        for b, pair in enumerate(EXTREME_SCALES):
            halves[b] = pair[k]
        raw[:, off:off + 2] = halves.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1), n_blocks * block_elems


def f16_values(rng):
    special = [0x0000, 0x8000, 0x0001, 0x8001, 0x0002, 0x03FF, 0x83FF, 0x0400, 0x8400,
               0x3C00, 0xBC00, 0x3555, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
               0x7E00, 0xFE00, 0x7C01, 0xFC01, 0x7DFF, 0x7FFF, 0xFFFF]
    rand = rng.integers(0, 1 << 16, size=256 - len(special), dtype=np.uint16)
    return np.concatenate([np.array(special, dtype=np.uint16), rand]).astype("<u2")


def bf16_values(rng):
    special = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x8080,
               0x3F80, 0xBF80, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80,
               0x7FC0, 0xFFC0, 0x7F81, 0xFF81, 0x7FFF, 0xFFFF]
    rand = rng.integers(0, 1 << 16, size=256 - len(special), dtype=np.uint16)
    return np.concatenate([np.array(special, dtype=np.uint16), rand]).astype("<u2")


def write_fixture(qtype, raw, n_elems):
    expected = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(-1)
    if expected.size != n_elems:
        raise SystemExit(f"{qtype.name}: gguf-py returned {expected.size} values, want {n_elems}")
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    assert raw.size == n_elems // block_elems * block_bytes
    path = os.path.join(OUT_DIR, f"quant-{qtype.name}.bin")
    with open(path, "wb") as f:
        f.write(struct.pack("<4sIQQ", MAGIC, int(qtype), n_elems, raw.size))
        f.write(raw.astype(np.uint8).tobytes())
        f.write(expected.astype("<f4").tobytes())
    print(f"{path}: {n_elems} elements, {raw.size} raw bytes")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    # One generator per type, seeded from the type id, so adding a type changes no others.
    v = f16_values(np.random.default_rng(1000 + int(T.F16)))
    write_fixture(T.F16, v.view(np.uint8), v.size)
    v = bf16_values(np.random.default_rng(1000 + int(T.BF16)))
    write_fixture(T.BF16, v.view(np.uint8), v.size)
    for qtype in SCALE_FIELDS:
        raw, n = quant_blocks(np.random.default_rng(1000 + int(qtype)), qtype)
        write_fixture(qtype, raw, n)


if __name__ == "__main__":
    main()
