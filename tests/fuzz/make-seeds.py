#!/usr/bin/env python3
"""Seed inputs for the GGUF fuzz target: small, valid GGUF files written with plain struct
packing (no dependency), covering every metadata type, nested arrays, several tensor types
and a complete tiny llama model, so the fuzzer starts from deep inside the format.
Usage: make-seeds.py OUTDIR"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# tensor type id -> (block elems, block bytes)
TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 12: (256, 144),
         14: (256, 210), 30: (1, 2)}


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors, align=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    off, blobs = 0, []
    for name, ne, ty in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", ty, off)
        n = 1
        for x in ne:
            n *= x
        be, bb = TYPES[ty]
        size = n // be * bb
        blobs.append(bytes((i * 37 + 11) & 0x3b for i in range(size)))
        off += (size + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    for blob in blobs:
        out += blob + b"\0" * (-len(blob) % align)
    return out


def tiny_llama():
    e, ff, h, hk, v, L = 32, 64, 4, 2, 16, 1
    kv = [("general.architecture", STR, "llama"), ("llama.block_count", U32, L),
          ("llama.embedding_length", U32, e), ("llama.feed_forward_length", U32, ff),
          ("llama.attention.head_count", U32, h), ("llama.attention.head_count_kv", U32, hk),
          ("llama.context_length", U32, 128), ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
          ("llama.rope.freq_base", F32, 10000.0), ("tokenizer.ggml.model", STR, "gpt2"),
          ("tokenizer.ggml.tokens", ARR, (STR, [f"t{i}" for i in range(v)]))]
    d = e // h
    t = [("token_embd.weight", [e, v], 8), ("output_norm.weight", [e], 0)]
    for l in range(L):
        t += [(f"blk.{l}.attn_norm.weight", [e], 0), (f"blk.{l}.attn_q.weight", [e, h * d], 2),
              (f"blk.{l}.attn_k.weight", [e, hk * d], 3), (f"blk.{l}.attn_v.weight", [e, hk * d], 8),
              (f"blk.{l}.attn_output.weight", [h * d, e], 1), (f"blk.{l}.ffn_norm.weight", [e], 0),
              (f"blk.{l}.ffn_gate.weight", [e, ff], 30), (f"blk.{l}.ffn_up.weight", [e, ff], 2),
              (f"blk.{l}.ffn_down.weight", [ff, e], 3)]
    return gguf(kv, t)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {
        "all-types.gguf": gguf([("u8", U8, 7), ("i8", I8, -7), ("u16", U16, 700), ("i16", I16, -700),
                                ("u32", U32, 70000), ("i32", I32, -70000), ("f32", F32, 0.5),
                                ("bool", BOOL, 1), ("str", STR, "text"), ("u64", U64, 1 << 40),
                                ("i64", I64, -(1 << 40)), ("f64", F64, 2.5),
                                ("arr", ARR, (F32, [1.0, 2.0])),
                                ("nested", ARR, (ARR, [(U32, [1, 2]), (STR, ["a", "b"])]))], []),
        "tensors.gguf": gguf([("general.alignment", U32, 64)],
                             [("a", [256, 2], 12), ("b", [256], 14), ("c", [64], 2)], align=64),
        "tiny-llama.gguf": tiny_llama(),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
