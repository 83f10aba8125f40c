#!/usr/bin/env python3
"""Time the PyTorch reference on the same checkpoint that `brivl bench` runs, on the CPU.

    python tests/reference/bench_torch.py --dir /tmp/brivl-full [--repeats 1] \
        [--brivl-bench-output /tmp/brivl-full/bench-brivl-q8.txt]

Loads DIR/<checkpoint> (config.json names it) into brivl_ref.py's model (online towers only),
times image and text embedding at batch 1 and 8 exactly like `brivl bench` (one warm-up pass,
then --repeats timed passes; ms per item; batch 8 = 8 single-item forwards, since the reference
towers take one item at a time, like the release's inference), and with --brivl-bench-output
(the text `brivl bench` printed) prints both and the ratio brivl / PyTorch (> 1: brivl slower).
"""
import argparse
import json
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brivl_ref  # noqa: E402


def parse_brivl(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"\s*(image|text)\s+batch (\d+):\s+([\d.]+) ms per", line)
        if m:
            out[(m.group(1), int(m.group(2)))] = float(m.group(3))
        elif line.startswith("backend:"):
            out["backend"] = line.split(":", 1)[1].strip()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/brivl-full", help="folder written by brivl_ref.py")
    ap.add_argument("--mode", default="full", choices=sorted(brivl_ref.CONFIGS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--brivl-bench-output", help="text printed by `brivl bench` on the same machine")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.backends.mha.set_fastpath_enabled(False)  # the same math path the golden file used
    cfg = brivl_ref.CONFIGS[args.mode]
    ckpt = os.path.join(args.dir, json.load(open(os.path.join(args.dir, "config.json")))["checkpoint"])
    t = time.time()
    model, _ = brivl_ref.load_released(ckpt, cfg)
    print("torch %s, %d threads (os.cpu_count() %s), loaded %s in %.1f s"
          % (torch.__version__, torch.get_num_threads(), os.cpu_count(), ckpt, time.time() - t))

    size = cfg["image_size"]
    g = torch.Generator().manual_seed(0)
    results = {}
    with torch.inference_mode():
        for batch in (1, 8):
            images = [torch.randn(1, 3, size, size, generator=g) for _ in range(batch)]
            texts = [brivl_ref.tokenize("海边的日落 %d" % i, cfg["max_text_len"]) for i in range(batch)]
            for kind, items, fn in (("image", images, lambda x: model.imgencoder(x)),
                                    ("text", texts, lambda x: model.textencoder(*x))):
                for x in items:  # warm-up
                    fn(x)
                t = time.perf_counter()
                for _ in range(args.repeats):
                    for x in items:
                        fn(x)
                ms = (time.perf_counter() - t) * 1e3 / (args.repeats * batch)
                results[(kind, batch)] = ms
                print("%-6s batch %d: %.1f ms per %s" % (kind, batch, ms, kind))

    if args.brivl_bench_output:
        b = parse_brivl(args.brivl_bench_output)
        print("\nbrivl (%s) vs PyTorch (CPU, %d threads), ms per item; ratio = brivl / PyTorch"
              % (b.get("backend", "?"), torch.get_num_threads()))
        print("%-14s %10s %10s %8s" % ("", "brivl", "PyTorch", "ratio"))
        for key in sorted(results):
            if key in b:
                print("%-6s batch %d %10.1f %10.1f %8.2f" % (key[0], key[1], b[key], results[key], b[key] / results[key]))


if __name__ == "__main__":
    main()
