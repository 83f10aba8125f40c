#!/usr/bin/env python3
"""Independent check of the reference: recomputes golden.json from the checkpoint with plain
numpy (float64), written from ../shared/BRIVL_SPEC.md the way an engine would do it, without
timm, transformers or torch.nn: BN folded into the convs, TF 'SAME' padding by hand, strides
from config.json, bilinear resize and grid sampling by hand, attention and LayerNorm by hand,
GELU from math.erf, the 1x1 conv applied once to the averaged 4x4 samples. Token ids are checked
against a second tokenizer (tokenizers' BertWordPieceTokenizer).

torch is used only to read the checkpoint file. Usage (from the repo root):

    python tests/reference/check_ref.py tests/fixtures/tiny [--limit N]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from brivl_ref import VOCAB  # noqa: E402  (path of the shared vocabulary only)

_erf = np.vectorize(math.erf)


# ----------------------------------------------------------------------------- weights

class Weights:
    def __init__(self, path):
        sd = torch.load(path, map_location="cpu", weights_only=True)["learnable"]
        self.t = {k: v.double().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}

    def __getitem__(self, k):
        return self.t[k]

    def has(self, k):
        return k in self.t

    def fold_bn(self, conv_w, bn, eps):
        g, b = self[bn + ".weight"], self[bn + ".bias"]
        m, v = self[bn + ".running_mean"], self[bn + ".running_var"]
        scale = g / np.sqrt(v + eps)
        return conv_w * scale[:, None, None, None], b - m * scale


# ----------------------------------------------------------------------------- image ops

def resize_bilinear(x, out_h, out_w):
    """x [C, H, W]; bilinear, align_corners=False, no antialias (PyTorch's rule)."""
    c, h, w = x.shape

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(int)
        i0 = np.minimum(i0, n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, ly = axis(h, out_h)
    x0, x1, lx = axis(w, out_w)
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bot = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    return top * (1 - ly)[:, None] + bot * ly[:, None]


def same_pad(x, k, s):
    def amount(n):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    return np.pad(x, ((0, 0), amount(x.shape[1]), amount(x.shape[2])))


def conv(x, w, b, stride, depthwise):
    """x [C, H, W], w [O, I, k, k]."""
    k = w.shape[2]
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    xp = same_pad(x, k, stride) if k > 1 or stride > 1 else x
    if depthwise:
        out = np.zeros((w.shape[0], ho, wo))
        for i in range(k):
            for j in range(k):
                out += w[:, 0, i, j][:, None, None] * xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    else:
        cols = np.stack([xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
                         for i in range(k) for j in range(k)], axis=1)  # [I, k*k, ho, wo]
        out = (w.reshape(w.shape[0], -1) @ cols.reshape(-1, ho * wo)).reshape(-1, ho, wo)
    return out + b[:, None, None]


def silu(x):
    return x / (1 + np.exp(-x))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def squeeze_excite(wt, p, x):
    s = x.mean(axis=(1, 2))
    s = silu(wt[p + ".conv_reduce.weight"][:, :, 0, 0] @ s + wt[p + ".conv_reduce.bias"])
    s = sigmoid(wt[p + ".conv_expand.weight"][:, :, 0, 0] @ s + wt[p + ".conv_expand.bias"])
    return x * s[:, None, None]


def backbone(wt, cfg, x):
    pre = "imgencoder.backbone."
    bcfg = cfg["backbone"]
    eps = bcfg["bn_eps"]

    def cbn(x, conv_name, bn_name, stride, act, depthwise=False):
        w, b = wt.fold_bn(wt[pre + conv_name + ".weight"], pre + bn_name, eps)
        y = conv(x, w, b, stride, depthwise)
        return silu(y) if act else y

    x = cbn(x, "conv_stem", "bn1", bcfg["stem_stride"], True)
    s = 0
    while wt.has(pre + "blocks.%d.0.conv_dw.weight" % s):
        b = 0
        while wt.has(pre + "blocks.%d.%d.conv_dw.weight" % (s, b)):
            p = "blocks.%d.%d." % (s, b)
            stride = bcfg["stage_strides"][s] if b == 0 else 1
            inp = x
            if wt.has(pre + p + "conv_pwl.weight"):  # inverted residual
                x = cbn(x, p + "conv_pw", p + "bn1", 1, True)
                x = cbn(x, p + "conv_dw", p + "bn2", stride, True, depthwise=True)
                x = squeeze_excite(wt, pre + p + "se", x)
                x = cbn(x, p + "conv_pwl", p + "bn3", 1, False)
            else:  # depthwise separable
                x = cbn(x, p + "conv_dw", p + "bn1", stride, True, depthwise=True)
                x = squeeze_excite(wt, pre + p + "se", x)
                x = cbn(x, p + "conv_pw", p + "bn2", 1, False)
            if stride == 1 and inp.shape[0] == x.shape[0]:
                x = x + inp
            b += 1
        s += 1
    return cbn(x, "conv_head", "bn2", 1, True)


def pool_boxes(wt, cfg, fmap):
    """Samples each box on a GxG grid (bilinear, zero padding, align_corners=False), averages,
    then applies the 1x1 conv once. Returns [37, C]."""
    c, h, w = fmap.shape
    size, gb, g = cfg["image_size"], cfg["box_grid"], cfg["pool_grid"]
    s = size / gb
    boxes = [(i * s, j * s, (i + 1) * s, (j + 1) * s) for i in range(gb) for j in range(gb)]
    boxes.append((0, 0, size, size))
    r = size / h
    out = []
    for (x1, y1, x2, y2) in boxes:
        x1, y1, x2, y2 = x1 / r, y1 / r, x2 / r, y2 / r
        th = [[(x2 - x1) / (w - 1), 0, (x1 + x2 - w + 1) / (w - 1)],
              [0, (y2 - y1) / (h - 1), (y1 + y2 - h + 1) / (h - 1)]]
        acc = np.zeros(c)
        for a in range(g):
            for bb in range(g):
                u, v = (2 * bb + 1) / g - 1, (2 * a + 1) / g - 1
                gx = th[0][0] * u + th[0][2]
                gy = th[1][1] * v + th[1][2]
                px, py = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
                x0, y0 = math.floor(px), math.floor(py)
                for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                    for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                        if 0 <= yy < h and 0 <= xx < w:
                            acc += wy * wx * fmap[:, yy, xx]
        out.append(acc / (g * g))
    v = np.stack(out)
    wconv = wt["imgencoder.learnable.max_pool.0.weight"][:, :, 0, 0]
    return v @ wconv.T + wt["imgencoder.learnable.max_pool.0.bias"]


# ----------------------------------------------------------------------------- transformer ops

def l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def layer_norm(x, g, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def attention(q, k, v, heads, key_ok=None):
    n, d = q.shape
    dh = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(dh)
        if key_ok is not None:
            s = np.where(key_ok[None, :], s, -np.inf)
        outs.append(softmax(s) @ v[:, sl])
    return np.concatenate(outs, axis=1)


def encoder(wt, prefix, x, heads, key_ok=None):
    li = 0
    while wt.has(prefix + "layers.%d.self_attn.in_proj_weight" % li):
        p = prefix + "layers.%d." % li
        d = x.shape[1]
        qkv = x @ wt[p + "self_attn.in_proj_weight"].T + wt[p + "self_attn.in_proj_bias"]
        a = attention(qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:], heads, key_ok)
        a = a @ wt[p + "self_attn.out_proj.weight"].T + wt[p + "self_attn.out_proj.bias"]
        x = layer_norm(x + a, wt[p + "norm1.weight"], wt[p + "norm1.bias"], 1e-5)
        f = np.maximum(x @ wt[p + "linear1.weight"].T + wt[p + "linear1.bias"], 0)
        f = f @ wt[p + "linear2.weight"].T + wt[p + "linear2.bias"]
        x = layer_norm(x + f, wt[p + "norm2.weight"], wt[p + "norm2.bias"], 1e-5)
        li += 1
    return x


def mlp(wt, p, x):
    h = np.maximum(x @ wt[p + "fc1.weight"].T + wt[p + "fc1.bias"], 0)
    return h @ wt[p + "fc2.weight"].T + wt[p + "fc2.bias"]


def bert(wt, cfg, ids):
    p = "textencoder.backbone.bert."
    lin = lambda x, n: x @ wt[p + n + ".weight"].T + wt[p + n + ".bias"]  # noqa: E731
    ln = lambda x, n: layer_norm(x, wt[p + n + ".weight"], wt[p + n + ".bias"], 1e-12)  # noqa: E731
    L = len(ids)
    x = (wt[p + "embeddings.word_embeddings.weight"][ids]
         + wt[p + "embeddings.position_embeddings.weight"][:L]
         + wt[p + "embeddings.token_type_embeddings.weight"][0])
    x = ln(x, "embeddings.LayerNorm")
    li = 0
    while wt.has(p + "encoder.layer.%d.attention.self.query.weight" % li):
        e = "encoder.layer.%d." % li
        q, k, v = (lin(x, e + "attention.self." + n) for n in ("query", "key", "value"))
        a = attention(q, k, v, cfg["bert_heads"])  # no attention mask
        x = ln(x + lin(a, e + "attention.output.dense"), e + "attention.output.LayerNorm")
        h = lin(x, e + "intermediate.dense")
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = ln(x + lin(h, e + "output.dense"), e + "output.LayerNorm")
        li += 1
    return x


# ----------------------------------------------------------------------------- towers

def image_tower(wt, cfg, path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    x = np.asarray(img, dtype=np.float64).transpose(2, 0, 1) / 255.0
    x = resize_bilinear(x, cfg["image_size"], cfg["image_size"])
    x = (x - np.array(cfg["image_mean"])[:, None, None]) / np.array(cfg["image_std"])[:, None, None]
    fmap = backbone(wt, cfg, x)
    pooled = l2n(pool_boxes(wt, cfg, fmap))
    att = encoder(wt, "imgencoder.learnable.imgAtt.", pooled, cfg["img_att_heads"])
    emb = l2n(mlp(wt, "imgencoder.learnable.imgFC.", att.mean(0)))
    return dict(preprocessed_sum=x.sum(), backbone_shape=list(fmap.shape), backbone_sum=fmap.sum(),
                backbone_first8=fmap[:8, 0, 0], pooled_first8=pooled[0, :8], img_att_first8=att[0, :8],
                embedding=emb)


def text_tower(wt, cfg, ids):
    ids = np.array(ids)
    real = ids != 0
    hid = bert(wt, cfg, ids)
    att = encoder(wt, "textencoder.learnable.textAtt.", l2n(hid), cfg["text_att_heads"], key_ok=real)
    emb = l2n(mlp(wt, "textencoder.learnable.textFC.", att[real].mean(0)))
    return dict(bert_first8=hid[0, :8], text_att_first8=att[0, :8], embedding=emb)


def wordpiece_ids(texts, max_len):
    from tokenizers import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(VOCAB, lowercase=True)
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=0, pad_token="[PAD]")
    return [e.ids for e in tok.encode_batch(texts)]


# ----------------------------------------------------------------------------- compare

class Report:
    def __init__(self):
        self.fail = 0
        self.worst_cos = 1.0
        self.worst_rel = {}  # field -> largest error relative to the field's max |value|

    def vec(self, what, got, want, cos_min=0.99999, rel=2e-4):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        err = np.abs(got - want).max()
        scale = max(np.abs(want).max(), 1e-6)
        field = what.split()[-1]
        self.worst_rel[field] = max(self.worst_rel.get(field, 0.0), err / scale)
        ok = err <= rel * scale + 1e-6
        if got.size > 8:
            cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
            self.worst_cos = min(self.worst_cos, cos)
            ok = ok and cos >= cos_min
        if not ok:
            self.fail += 1
            print("  MISMATCH %s: max abs err %.3g (scale %.3g)" % (what, err, scale))
        return err

    def scalar(self, what, got, want, rel=1e-4):
        if abs(got - want) > rel * max(abs(want), 1.0):
            self.fail += 1
            print("  MISMATCH %s: %r vs %r" % (what, got, want))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture", help="folder with config.json, golden.json, the checkpoint, images/")
    ap.add_argument("--limit", type=int, default=0, help="check only the first N images and texts")
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.fixture, "config.json")))
    gold = json.load(open(os.path.join(args.fixture, "golden.json")))
    wt = Weights(os.path.join(args.fixture, cfg["checkpoint"]))
    rep = Report()
    lim = (lambda xs: xs[:args.limit]) if args.limit else (lambda xs: xs)

    for r in lim(gold["images"]):
        got = image_tower(wt, cfg, os.path.join(args.fixture, "images", r["file"]))
        if got["backbone_shape"] != r["backbone_shape"]:
            rep.fail += 1
            print("  MISMATCH backbone_shape", got["backbone_shape"], r["backbone_shape"])
        rep.scalar(r["file"] + " preprocessed_sum", got["preprocessed_sum"], r["preprocessed_sum"])
        rep.scalar(r["file"] + " backbone_sum", got["backbone_sum"], r["backbone_sum"], rel=1e-3)
        for k in ("backbone_first8", "pooled_first8", "img_att_first8"):
            # float32 vs float64 through the deep backbone: diagnostics get a looser bound
            rep.vec(r["file"] + " " + k, got[k], r[k], rel=1e-3)
        err = rep.vec(r["file"] + " embedding", got["embedding"], r["embedding"])
        cos = float(np.dot(got["embedding"], r["embedding"]))
        print("image %-24s cos %.8f  max abs err %.2e" % (r["file"], cos, err))

    for key, max_len in (("texts", gold["max_text_len"]), ("texts_l80", gold["max_text_len_l80"])):
        recs = lim(gold[key])
        ids2 = wordpiece_ids([r["text"] for r in recs], max_len)
        for r, i2 in zip(recs, ids2):
            if r["ids"] != i2:
                rep.fail += 1
                print("  MISMATCH ids (second tokenizer) %r:\n    %s\n    %s" % (r["text"], r["ids"], i2))
            got = text_tower(wt, cfg, r["ids"])
            for k in ("bert_first8", "text_att_first8"):
                rep.vec("%r %s" % (r["text"], k), got[k], r[k])
            err = rep.vec("%r embedding" % r["text"], got["embedding"], r["embedding"])
            cos = float(np.dot(got["embedding"], r["embedding"]))
            print("%s L=%d %-30s cos %.8f  max abs err %.2e" % (key, max_len, repr(r["text"][:14]), cos, err))

    for field, r in sorted(rep.worst_rel.items()):
        print("  %-16s worst error / max|value| %.2e" % (field, r))
    print("worst embedding cosine %.8f; %d mismatches" % (rep.worst_cos, rep.fail))
    sys.exit(1 if rep.fail else 0)


if __name__ == "__main__":
    main()
