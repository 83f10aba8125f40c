#!/usr/bin/env python3
"""Text-to-image recall of a demo checkpoint on the album, in PyTorch (the reference for the
numbers app/desktop/tests/demo_recall.rs prints; run by hand, never in CI).

    python tests/reference/recall_demo.py --dir /tmp/brivl-demo --album www/demo/album

A query is a distinct caption of the album; a hit at k: a photo with exactly that caption is
among the k most similar. Photos go through brivl_ref's decode and preprocessing (PIL), one at a
time, as the engine sees them.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brivl_ref as ref  # noqa: E402
import train_demo  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder with brivl-demo.pth (train_demo.py --out)")
    ap.add_argument("--album", required=True)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.backends.mha.set_fastpath_enabled(False)
    # The trainer's options (e.g. --width) are in its log; older folders have none.
    log = os.path.join(args.dir, "train_log.json")
    cfg = json.load(open(log))["config"] if os.path.exists(log) else train_demo.DEMO
    model, _ = ref.load_released(os.path.join(args.dir, cfg["name"] + ".pth"), cfg)
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(args.album, "captions.tsv"), encoding="utf-8")]
    with torch.no_grad():
        photos = torch.stack([model.imgencoder(ref.preprocess(ref.load_image(os.path.join(args.album, r[0])),
                                                               cfg["image_size"])) for r in rows])
        result = {}
        for lang, col in (("zh", 1), ("en", 2)):
            caps = [r[col] for r in rows]
            queries = sorted(set(caps))
            q = torch.stack([model.textencoder(*ref.tokenize(t, cfg["max_text_len"])) for t in queries])
            result[lang] = dict(n=len(queries), **train_demo.recall(photos, caps, queries, q))
    print("PyTorch recall, %d photos" % len(rows))
    print("| queries | n | R@1 | R@5 |\n|---|---|---|---|")
    for lang, r in result.items():
        print("| %s captions | %d | %.3f | %.3f |" % (lang, r["n"], r["R@1"], r["R@5"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
