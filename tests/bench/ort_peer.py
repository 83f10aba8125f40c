#!/usr/bin/env python3
"""The native CPU peer of `brivl bench --backend cpu`: the same towers in ONNX Runtime.

    python tests/bench/ort_peer.py export --dir /tmp/brivl-full        # -> DIR/onnx/{image,text}.onnx
    python tests/bench/ort_peer.py bench --dir /tmp/brivl-full --threads 2 [--repeats 3] \
        [--brivl-bench-output FILE]

`export` loads DIR's checkpoint into the PyTorch reference (tests/reference/brivl_ref.py) and
exports both online towers in f32, batched (dynamic batch axis): the image tower from normalised
pixels [B, 3, S, S] to L2-normalised embeddings, the text tower from ids and mask [B, L]. The
batched forward is the reference's, with the 37 boxes sampled in one grid_sample per image
(boxes stacked along the grid's height; bilinear sampling is per point, so the values are the
same) instead of one expanded feature map per box. `export` checks each export against the
reference's own per-item forward.

`compare` prints the ratios from saved outputs of both. `feeds` prints the batch-1 inputs as JSON
for the browser benchmark (tests/bench/browser_vs_ort_web.sh).

`bench` times ONNX Runtime (CPU EP, all graph optimisations, intra-op threads = --threads) like
`brivl bench` times itself: per batch size 1 and 8, one warm-up run, then --repeats timed runs of
one batched call; ms per item. With --brivl-bench-output (the text `brivl bench` printed in the
same run) it prints both and the ratios brivl / ONNX Runtime (> 1: brivl slower).
Benchmark only: never run in CI.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))


def towers(dir_, mode):
    import torch
    import torch.nn.functional as F
    import brivl_ref

    cfg = brivl_ref.CONFIGS[mode]
    ckpt = os.path.join(dir_, json.load(open(os.path.join(dir_, "config.json")))["checkpoint"])
    model, _ = brivl_ref.load_released(ckpt, cfg)

    class Image(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            enc, g = self.enc, cfg["pool_grid"]
            fmap = enc.backbone.forward_features(x)  # [B, C, H, W]
            b, c, h, w = fmap.shape
            theta = enc.thetas(h, w).to(fmap.dtype)
            n = theta.shape[0]
            grid = F.affine_grid(theta, [n, c, g, g], align_corners=False)  # [n, g, g, 2]
            grid = grid.reshape(1, n * g, g, 2).expand(b, n * g, g, 2)
            s = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            s = s.reshape(b, c, n, g, g).permute(0, 2, 1, 3, 4).reshape(b * n, c, g, g)
            pooled = enc.learnable.max_pool(s).reshape(b, n, c)
            pooled = F.normalize(pooled, p=2, dim=-1)
            att = enc.learnable.imgAtt(pooled)
            return F.normalize(enc.learnable.imgFC(att.mean(dim=1)), p=2, dim=-1)

    class Text(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, ids, mask):
            enc = self.enc
            hid = enc.backbone.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            x = F.normalize(hid, p=2, dim=-1)
            att = enc.learnable.textAtt(x, src_key_padding_mask=(mask == 0))
            m = mask.unsqueeze(-1).to(att.dtype)
            mean = (att * m).sum(dim=1) / m.sum(dim=1)
            return F.normalize(enc.learnable.textFC(mean), p=2, dim=-1)

    return cfg, model, Image(model.imgencoder).eval(), Text(model.textencoder).eval()


def query(i):
    return "海边的日落 %d" % i


def inputs(cfg, batch):
    import brivl_ref

    rng = np.random.default_rng(0)
    size = cfg["image_size"]
    images = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    toks = [brivl_ref.tokenize(query(i), cfg["max_text_len"]) for i in range(batch)]
    ids = np.concatenate([t[0].numpy() for t in toks]).astype(np.int64)
    mask = np.concatenate([t[1].numpy() for t in toks]).astype(np.int64)
    return images, ids, mask


def export(args):
    import torch

    torch.backends.mha.set_fastpath_enabled(False)
    cfg, model, image, text = towers(args.dir, args.mode)
    out = os.path.join(args.dir, "onnx")
    os.makedirs(out, exist_ok=True)
    images, ids, mask = inputs(cfg, 2)
    x, i, m = torch.from_numpy(images), torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode():
        want_img = torch.stack([model.imgencoder(x[j:j + 1]) for j in range(2)]).numpy()
        want_txt = torch.stack([model.textencoder(i[j:j + 1], m[j:j + 1]) for j in range(2)]).numpy()
        assert np.abs(image(x).numpy() - want_img).max() < 1e-4, "batched image tower differs"
        assert np.abs(text(i, m).numpy() - want_txt).max() < 1e-4, "batched text tower differs"
    with torch.no_grad():
        torch.onnx.export(image, (x,), os.path.join(out, "image.onnx"), input_names=["pixels"],
                          output_names=["embedding"], dynamic_axes={"pixels": {0: "batch"}},
                          opset_version=20, dynamo=False)
        torch.onnx.export(text, (i, m), os.path.join(out, "text.onnx"), input_names=["ids", "mask"],
                          output_names=["embedding"], dynamic_axes={"ids": {0: "batch"}, "mask": {0: "batch"}},
                          opset_version=20, dynamo=False)
    import onnxruntime as ort

    for name, feeds, want in (("image", {"pixels": images}, want_img), ("text", {"ids": ids, "mask": mask}, want_txt)):
        s = ort.InferenceSession(os.path.join(out, name + ".onnx"), providers=["CPUExecutionProvider"])
        got = s.run(None, feeds)[0]
        cos = (got * want).sum(-1).min()
        print("exported %s.onnx: worst cosine to the reference %.6f" % (name, cos))
        assert cos > 0.9999, name


def feeds(args):
    """The batch-1 text input `bench` feeds (the query, its ids and mask) and the image side, as
    JSON on stdout: what tests/browser/ort-web-bench.mjs feeds onnxruntime-web."""
    import brivl_ref

    cfg = brivl_ref.CONFIGS[args.mode]
    _, ids, mask = inputs(cfg, 1)
    json.dump({"image_size": cfg["image_size"], "text": query(0), "ids": ids[0].tolist(),
               "mask": mask[0].tolist()}, sys.stdout, ensure_ascii=False)


def parse_brivl(path):
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"\s*(image|text)\s+batch (\d+):\s+([\d.]+) ms per", line)
        if m:
            out[(m.group(1), int(m.group(2)))] = float(m.group(3))
    return out


def bench(args):
    import onnxruntime as ort
    import brivl_ref

    cfg = brivl_ref.CONFIGS[args.mode]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Subnormals as zeros, as brivl's CPU path makes them: the random model's squeeze-excite
    # gates saturate, and on Intel CPUs arithmetic on subnormals runs through microcode assists.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    sessions = {n: ort.InferenceSession(os.path.join(args.dir, "onnx", n + ".onnx"), opts,
                                        providers=["CPUExecutionProvider"]) for n in ("image", "text")}
    print("onnxruntime %s, CPU EP, %d intra-op threads" % (ort.__version__, args.threads))
    results = {}
    for batch in (1, 8):
        images, ids, mask = inputs(cfg, batch)
        for kind, feeds in (("image", {"pixels": images}), ("text", {"ids": ids, "mask": mask})):
            s = sessions[kind]
            s.run(None, feeds)
            t = time.perf_counter()
            for _ in range(args.repeats):
                s.run(None, feeds)
            ms = (time.perf_counter() - t) * 1e3 / (args.repeats * batch)
            results[(kind, batch)] = ms
            print("%-5s batch %d: %8.1f ms per %s" % (kind, batch, ms, kind))
    if args.brivl_bench_output:
        print_ratios(parse_brivl(args.brivl_bench_output), results, args.threads)


def compare(args):
    """Ratios from saved outputs of `brivl bench` and `bench` (the best rounds of cpu_vs_ort.sh)."""
    print_ratios(parse_brivl(args.brivl_bench_output), parse_brivl(args.ort_output), args.threads)


def print_ratios(b, results, threads):
    cpu = "?"
    try:
        cpu = [l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
               .stdout.splitlines() if l.startswith("Model name")][0]
    except OSError:
        pass
    print("\n%s, %s, %d threads each; ms per item; ratio = brivl / ONNX Runtime (> 1: brivl slower)"
          % (time.strftime("%Y-%m-%d"), cpu, threads))
    print("%-14s %10s %10s %8s" % ("", "brivl", "ORT", "ratio"))
    for key in sorted(results):
        if key in b:
            print("%-14s %10.1f %10.1f %7.2fx" % ("%s batch %d" % key, b[key], results[key], b[key] / results[key]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["export", "bench", "compare", "feeds"])
    ap.add_argument("--dir", default="/tmp/brivl-full")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--brivl-bench-output")
    ap.add_argument("--ort-output", help="compare: the text `bench` printed")
    args = ap.parse_args()
    {"export": export, "bench": bench, "compare": compare, "feeds": feeds}[args.command](args)


if __name__ == "__main__":
    main()
