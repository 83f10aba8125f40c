#!/usr/bin/env python3
"""Writes the tiny torch checkpoints that engine/src/checkpoint/tests.rs reads, and the values
they must yield, to tests/fixtures/checkpoints/.

    python3 tests/reference/make_checkpoint_fixtures.py

Needs torch. The output is committed; rerun only to change the fixtures. Each checkpoint is a
few KB. expected.json maps each file to its tensors in the order the reader must list them:
    {"nested.pt": [{"name", "shape", "dtype", "values" (row-major; floats as the f32 torch gives
     for .float(), ints as ints), "storage" (tensors with the same number share one storage)}]}
"""
import collections
import json
import os
import sys

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "checkpoints")

DTYPES = {
    torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.float64: "float64", torch.int64: "int64", torch.int32: "int32", torch.bool: "bool",
}


def nested():
    """{'learnable': a real module state_dict (with _metadata) plus every tensor form we read}."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))  # num_batches_tracked: int64 scalar
    sd = model.state_dict()
    sd["enc.scalar"] = torch.tensor(-1.25)
    sd["enc.empty"] = torch.zeros(0, 3)
    sd["enc.conv"] = torch.randn(2, 3, 2, 2)
    sd["enc.transposed"] = torch.randn(3, 5).t()  # shape [5, 3], strides [1, 5]
    base = torch.arange(20, dtype=torch.float32) * 0.5 - 3.0
    sd["shared.a"] = base[2:8]  # offset 2 into base's storage
    sd["shared.b"] = base.view(4, 5)[1:3, 1:4]  # offset 6, strides [5, 1]: not contiguous
    sd["half"] = torch.randn(2, 3).half()
    sd["bf16"] = torch.randn(3).bfloat16()
    sd["double"] = torch.tensor([1e-3, -2.0 / 3.0, 1e40], dtype=torch.float64)  # 1e40 -> inf in f32
    sd["position_ids"] = torch.arange(5).unsqueeze(0)
    sd["big_ints"] = torch.tensor([-(2**62), 2**40 + 7, -1], dtype=torch.int64)
    sd["int32"] = torch.tensor([-7, 2**31 - 1], dtype=torch.int32)
    sd["mask"] = torch.tensor([True, False, True])
    sd["enc_mom.weight"] = torch.randn(2, 2)  # a momentum twin for the skip test
    return {"learnable": sd, "epoch": 3, "meta": {"note": "not a tensor"}}


def params():
    """nn.Parameters (torch._utils._rebuild_parameter) in a plain dict, saved with protocol 4
    (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL)."""
    torch.manual_seed(1)
    return {"w": nn.Parameter(torch.randn(4, 3)), "b": nn.Parameter(torch.randn(3), requires_grad=False)}


def values(t):
    if t.dtype.is_floating_point:
        return [float(x) for x in t.detach().float().reshape(-1).tolist()]
    return [int(x) for x in t.detach().reshape(-1).tolist()]


def describe(obj, prefix=""):
    """Flattens like the Rust reader: nested dicts joined with '.', non-tensors skipped."""
    out = []
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out += describe(v, name)
        elif isinstance(v, torch.Tensor):
            out.append((name, v))
    return out


def expected(obj):
    storages = {}
    rows = []
    for name, t in describe(obj):
        ptr = t.untyped_storage().data_ptr()
        rows.append({
            "name": name,
            "shape": list(t.shape),
            "dtype": DTYPES[t.dtype],
            "values": values(t),
            "storage": storages.setdefault(ptr, len(storages)),
        })
    return rows


def main():
    os.makedirs(OUT, exist_ok=True)
    exp = {}
    obj = nested()
    torch.save(obj, os.path.join(OUT, "nested.pt"))
    exp["nested.pt"] = expected(obj)
    obj = params()
    torch.save(obj, os.path.join(OUT, "params_proto4.pt"), pickle_protocol=4)
    exp["params_proto4.pt"] = expected(obj)
    # Pre-1.6 format, for the error test only.
    torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1, allow_nan=True)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes", file=sys.stderr)
    print(f"torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
