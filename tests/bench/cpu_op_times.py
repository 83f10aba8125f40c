#!/usr/bin/env python3
"""Sums the CPU path's per-op times (`BRIVL_CPU_OP_TIMES=1`, lines `cpu-op<TAB>what<TAB>ms` on
stderr) per op, over the passes after the first (the warm-up), largest first:

    BRIVL_CPU_OP_TIMES=1 target/release/examples/cpu_forward MODEL image 1 5 2> ops.txt
    python3 tests/bench/cpu_op_times.py ops.txt 5 [TOP]
"""
import collections
import sys

path, passes = sys.argv[1], int(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
rows = [l.rstrip("\n").split("\t") for l in open(path, encoding="utf-8") if l.startswith("cpu-op\t")]
per_pass = len(rows) // (passes + 1)
ops = collections.defaultdict(list)
for _, what, ms in rows[per_pass:]:
    ops[what].append(float(ms))
total = sum(sum(v) for v in ops.values()) / passes
families = collections.Counter()
for what, v in ops.items():
    families[what.split(" [")[0]] += sum(v) / passes
print(f"{per_pass} timed ops a pass, {total:.1f} ms a pass; by kind: "
      + ", ".join(f"{k} {v:.1f} ms" for k, v in families.most_common()))
for what, v in sorted(ops.items(), key=lambda kv: -sum(kv[1]))[:top]:
    ms = sum(v) / passes
    print(f"{ms:8.2f} ms {100 * ms / total:5.1f}%  x{len(v) // passes:<3d} {what}")
