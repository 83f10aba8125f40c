#!/usr/bin/env python3
"""Which int8 scheme does BriVL need, and which matrices lose the most? Simulated in PyTorch.

    python tests/reference/quant_sensitivity.py --dir /tmp/brivl-full [--images 3] \
        [--schemes row,g128,g64,g32] [--scale f32|f16] [--f16 FAMILY,...] [--per-group-of-layers]

Loads DIR's checkpoint into brivl_ref.py's model, replaces exactly the matrices that
`brivl convert --quant q8` stores in int8 (1x1 convs, squeeze-excite, attention and FC
matrices, word embeddings; not the stem or depthwise convs, biases, norms) by their symmetric
int8 round trip, and prints the worst cosine of the image / text embeddings against the f32
model's. Schemes: `row` = one scale per output row (max|w| / 127); `gN` = one scale per N
consecutive input values of each row (the last group of a row may be shorter); `--scale f16`
rounds the scales to f16; `--f16` keeps the named families (see `family()`) in f16. BatchNorm
folding scales whole rows, so quantising the unfolded weights is the same as quantising the
folded ones. `--per-group-of-layers` also quantises one family of matrices at a time (row
scheme) to show where the error comes from.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brivl_ref  # noqa: E402


def family(name):
    """The converter's q8 matrices, by family; None for tensors kept in f32."""
    if not name.endswith("weight"):
        return None
    if name.startswith("imgencoder.backbone."):
        if ".se.conv_" in name:
            return "img SE"
        if name.endswith("conv_pwl.weight"):
            return "img pw project (IR)"
        if name.endswith("conv_pw.weight"):
            # conv_pw is the expansion in inverted-residual blocks, the projection in DS blocks.
            return "img pw expand / DS project"
        if "conv_head" in name:
            return "img head"
        return None
    if name.startswith("imgencoder.learnable."):
        if "max_pool" in name:
            return "img box proj"
        if "imgAtt" in name and ("proj" in name or "linear" in name):
            return "img att"
        if "imgFC" in name:
            return "img fc"
        return None
    if name.startswith("textencoder.backbone.bert."):
        if "word_embeddings" in name:
            return "text word emb"
        if ".attention.self." in name:
            return "text bert qkv"
        if "attention.output.dense" in name:
            return "text bert out"
        if "intermediate.dense" in name or name.endswith("output.dense.weight"):
            return "text bert ff"
        return None
    if name.startswith("textencoder.learnable."):
        if "textAtt" in name and ("proj" in name or "linear" in name):
            return "text att"
        if "textFC" in name:
            return "text fc"
    return None


def fake_quant(w, group, f16_scale):
    rows = w.shape[0]
    w2 = w.reshape(rows, -1)
    k = w2.shape[1]
    g = k if group is None else group
    pad = (-k) % g
    wp = F.pad(w2, (0, pad)).reshape(rows, -1, g)
    s = wp.abs().amax(-1, keepdim=True) / 127.0
    if f16_scale:
        s = s.half().float()
    s = torch.where(s > 0, s, torch.ones_like(s))
    q = (wp / s).round().clamp(-127, 127)
    return (q * s).reshape(rows, -1)[:, :k].reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/brivl-full")
    ap.add_argument("--mode", default="full", choices=sorted(brivl_ref.CONFIGS))
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--schemes", default="row,g128,g64,g32")
    ap.add_argument("--scale", default="f32", choices=["f32", "f16"])
    ap.add_argument("--f16", default="", help="comma-separated families kept in f16")
    ap.add_argument("--per-group-of-layers", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    torch.backends.mha.set_fastpath_enabled(False)
    cfg = brivl_ref.CONFIGS[args.mode]
    golden = json.load(open(os.path.join(args.dir, "golden.json"), encoding="utf-8"))
    model, _ = brivl_ref.load_released(os.path.join(args.dir, golden["checkpoint"]), cfg)
    img_dir = os.path.join(args.dir, "images")
    images = []
    for rec in golden["images"][: args.images]:
        f = rec.get("pil_decoded_png", rec["file"])
        images.append(brivl_ref.preprocess(brivl_ref.load_image(os.path.join(img_dir, f)), cfg["image_size"]))
    texts = [brivl_ref.tokenize(r["text"], cfg["max_text_len"]) for r in golden["texts"]]
    texts += [brivl_ref.tokenize(r["text"], 80) for r in golden["texts_l80"]]

    params = dict(model.named_parameters())
    fams = {n: family(n) for n in params}
    orig = {n: p.detach().clone() for n, p in params.items() if fams[n]}
    sizes = {}
    for n, f in fams.items():
        if f:
            sizes[f] = sizes.get(f, 0) + params[n].numel()

    def run(which_images=True, which_texts=True):
        with torch.no_grad():
            ie = [model.imgencoder(x) for x in images] if which_images else []
            te = [model.textencoder(*t) for t in texts] if which_texts else []
        return ie, te

    ref_i, ref_t = run()

    def worst(got, ref):
        return min(float(F.cosine_similarity(a, b, dim=0)) for a, b in zip(got, ref)) if got else float("nan")

    keep_f16 = set(f for f in args.f16.split(",") if f)
    unknown = keep_f16 - set(sizes)
    assert not unknown, "unknown families %s; known: %s" % (unknown, sorted(sizes))

    def quantise(group, select):
        with torch.no_grad():
            for n, w in orig.items():
                if not select(fams[n]):
                    params[n].copy_(w)
                elif fams[n] in keep_f16:
                    params[n].copy_(w.half().float())
                else:
                    params[n].copy_(fake_quant(w, group, args.scale == "f16"))

    print("q8 matrices: %d parameters; scale %s; in f16: %s (%d parameters); %d images, %d texts" %
          (sum(sizes.values()), args.scale, sorted(keep_f16) or "none", sum(sizes[f] for f in keep_f16),
           len(images), len(texts)))
    for scheme in args.schemes.split(","):
        group = None if scheme == "row" else int(scheme[1:])
        quantise(group, lambda f: True)
        i, t = run()
        print("%-6s all q8 matrices: worst image cosine %.7f, worst text cosine %.7f"
              % (scheme, worst(i, ref_i), worst(t, ref_t)), flush=True)
    if args.per_group_of_layers:
        for fam in sorted(sizes):
            quantise(None, lambda f, fam=fam: f == fam)
            img = fam.startswith("img")
            i, t = run(img, not img)
            print("row, only %-28s (%11d params): worst %s cosine %.7f"
                  % (fam, sizes[fam], "image" if img else "text", worst(i, ref_i) if img else worst(t, ref_t)),
                  flush=True)


if __name__ == "__main__":
    main()
