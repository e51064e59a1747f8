#!/usr/bin/env python3
"""Seeds for fuzz_safetensors from the official fixtures (tests/fixtures/official/*.safetensors),
small enough to fuzz fast: each fixture's real header (metadata, names, dtypes) with every shape
shrunk to 1 per dimension except the last (<= 4), the data taken from the start of each tensor;
plus one truncated copy of op_small (its header + the first 64 data bytes).
Run from the project root: python3 tests/fuzz/seeds_from_fixtures.py"""
import json, struct, sys, os

DT = {"F32": 4, "F64": 8, "BF16": 2, "F16": 2, "I32": 4, "I64": 8, "I8": 1, "U8": 1}
out = "tests/fuzz/corpus/fuzz_safetensors"
for name in ["op_small", "layer"]:
    raw = open(f"tests/fixtures/official/{name}.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    new, chunks, off = {}, [], 0
    for k, v in hdr.items():
        if k == "__metadata__":
            new[k] = v
            continue
        shape = [1] * (len(v["shape"]) - 1) + [min(4, v["shape"][-1])] if v["shape"] else []
        if any(d == 0 for d in v["shape"]):
            shape = v["shape"]
        nb = DT[v["dtype"]]
        for d in shape:
            nb *= d
        b = v["data_offsets"][0]
        chunks.append(data[b:b + nb])
        new[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(new, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    open(f"{out}/{name}_shrunk.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    if name == "op_small":
        open(f"{out}/{name}_truncated.safetensors", "wb").write(raw[:8 + n + 64])
