#!/usr/bin/env python3
"""Trains the demo BriVL: the tiny architecture of brivl_ref.py (same key layout) at demo size,
with BriVL's objective (cross-modal InfoNCE against momentum encoders with negative queues,
temperature 0.07), on the synthetic scenes of demo_scenes.py. CPU only, about 30 minutes on
2 free cores with the defaults.

    python tests/reference/train_demo.py --out /tmp/brivl-demo

Writes OUT/brivl-demo.pth (released layout: {'learnable': ...} with the online towers and their
momentum twins), OUT/config.json (values the converter needs) and OUT/train_log.json. The epoch
with the best validation recall (validation combinations are never seen in training) is kept;
the log also has each epoch's recall on the held-out album, for information only.
"""
import argparse
import copy
import io
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brivl_ref as ref  # noqa: E402
import demo_scenes as scenes  # noqa: E402

# The demo model: brivl_ref's tiny EfficientNet generator (one block per stage) and transformer
# stacks, at 96 px (3x3 backbone output), small enough to train on 2 CPU cores.
DEMO = dict(
    name="brivl-demo",
    image_size=96, box_grid=6, pool_grid=4,
    backbone=dict(channel_multiplier=0.5, channel_divisor=8, stage_repeats=[1, 1, 1, 1, 1, 1, 1],
                  num_features=128, num_classes=8),
    img_att=dict(layers=1, heads=2, ff=128),
    bert=dict(hidden=64, layers=2, heads=2, intermediate=128, max_position=64, type_vocab=2, vocab=21128),
    text_att=dict(layers=1, heads=2, ff=128),
    emb_dim=128,
    max_text_len=32,
    seed=20220530,
)

TEMPERATURE = 0.07
MOMENTUM = 0.99


# ----------------------------------------------------------------------------- batched towers

def embed_images(enc, x, cfg):
    """Batched ImgEncoder.forward: x [B, 3, S, S] -> [B, D] (same maths, checked below)."""
    fmap = enc.backbone.forward_features(x)
    b, c, h, w = fmap.shape
    theta = enc.thetas(h, w).to(fmap.dtype)
    n, g = theta.shape[0], cfg["pool_grid"]
    grid = F.affine_grid(theta, [n, c, g, g], align_corners=False)  # [n, g, g, 2]
    grid = grid.reshape(1, n * g, g, 2).expand(b, n * g, g, 2)
    samples = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    samples = samples.reshape(b, c, n, g, g).permute(0, 2, 1, 3, 4).reshape(b * n, c, g, g)
    pooled = F.normalize(enc.learnable.max_pool(samples).flatten(1), p=2, dim=-1).reshape(b, n, c)
    att = enc.learnable.imgAtt(pooled)
    return F.normalize(enc.learnable.imgFC(att.mean(dim=1)), p=2, dim=-1)


def embed_texts(enc, ids, mask):
    """Batched TextEncoder.forward: ids, mask [B, L] -> [B, D]."""
    hid = enc.backbone.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    x = F.normalize(hid, p=2, dim=-1)
    att = enc.learnable.textAtt(x, src_key_padding_mask=(mask == 0))
    m = mask.unsqueeze(-1).to(att.dtype)
    return F.normalize(enc.learnable.textFC((att * m).sum(dim=1) / m.sum(dim=1)), p=2, dim=-1)


# ----------------------------------------------------------------------------- data

def to_input(jpeg, size):
    """JPEG bytes -> uint8 [3, S, S] after brivl_ref.preprocess's resize (normalised later)."""
    rgb = Image.open(io.BytesIO(jpeg)).convert("RGB")
    a = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / np.float32(255.0)).permute(2, 0, 1).unsqueeze(0)
    a = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (a[0] * 255.0).round().clamp(0, 255).to(torch.uint8)


MEAN = torch.tensor(ref.IMAGE_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(ref.IMAGE_STD).view(1, 3, 1, 1)


def normalise(u8):
    return (u8.float() / 255.0 - MEAN) / STD


def make_images(combos, renders, tag, size):
    xs, ys = [], []
    for ci, combo in enumerate(combos):
        for r in range(renders):
            xs.append(to_input(scenes.render(combo, "%s-%d" % (tag, r)), size))
            ys.append(ci)
    return torch.stack(xs), torch.tensor(ys)


def attributes(combo):
    """(kind, colour, count, background) as indices, -1 for an attribute a caption leaves unsaid."""
    lists = (scenes.KINDS, scenes.COLOURS, scenes.COUNTS, scenes.BACKGROUNDS)
    return [-1 if v is None else lst.index(v) for v, lst in zip(combo, lists)]


def tokenize_all(texts, max_len):
    ids, masks = zip(*(ref.tokenize(t, max_len) for t in texts))
    return torch.cat(ids), torch.cat(masks)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def recall(img_emb, img_caps, queries, txt_emb, ks=(1, 5)):
    """Text-to-image recall: a hit at k when one of the top k photos has the query's caption."""
    sims = txt_emb @ img_emb.T
    top = sims.topk(max(ks), dim=1).indices
    out = {}
    for k in ks:
        hits = [any(img_caps[j] == q for j in top[i, :k].tolist()) for i, q in enumerate(queries)]
        out["R@%d" % k] = sum(hits) / len(hits)
    return out


@torch.no_grad()
def evaluate(img_enc, txt_enc, x_u8, combos_of_images, cfg, query_combos=None, batch=128):
    """Recall of the captions of `query_combos` (default: of every image) over the images."""
    img_enc.eval()
    txt_enc.eval()
    embs = torch.cat([embed_images(img_enc, normalise(x_u8[i:i + batch]), cfg) for i in range(0, len(x_u8), batch)])
    caps = [scenes.caption_zh(c) for c in combos_of_images]
    queries = sorted(set(scenes.caption_zh(c) for c in (query_combos or combos_of_images)))
    ids, mask = tokenize_all(queries, cfg["max_text_len"])
    t = embed_texts(txt_enc, ids, mask)
    return recall(embs, caps, queries, t)


# ----------------------------------------------------------------------------- training

def check_batched(model, cfg):
    """The batched towers equal brivl_ref's one-item forward."""
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, cfg["image_size"], cfg["image_size"])
        a = embed_images(model.imgencoder, x, cfg)
        for i in range(2):
            assert torch.allclose(a[i], model.imgencoder(x[i:i + 1]), atol=1e-5)
        texts = ["两只黄色的鸭子在水面上", "一棵树"]
        ids, mask = tokenize_all(texts, cfg["max_text_len"])
        b = embed_texts(model.textencoder, ids, mask)
        for i in range(2):
            assert torch.allclose(b[i], model.textencoder(ids[i:i + 1], mask[i:i + 1]), atol=1e-5)


@torch.no_grad()
def momentum_update(online, mom, m):
    for p, q in zip(online.parameters(), mom.parameters()):
        q.mul_(m).add_(p.detach(), alpha=1 - m)
    for b, c in zip(online.buffers(), mom.buffers()):
        c.copy_(b)


def info_nce(q, k, queue_k, q_attr, k_attr, queue_attr):
    """InfoNCE of queries q [B, D] against their keys k [B, D] (positives on the diagonal), the
    other keys of the batch and the queue. A key whose attributes [., 4] agree with the query's
    (-1: unsaid, agrees with all) is no negative: the data repeat each combination, and a partial
    caption fits many scenes."""
    keys = torch.cat([k, queue_k])
    ka = torch.cat([k_attr, queue_attr]).unsqueeze(0)
    qa = q_attr.unsqueeze(1)
    logits = q @ keys.T / TEMPERATURE
    agree = ((qa == ka) | (qa < 0) | (ka < 0)).all(dim=-1)
    eye = torch.zeros_like(agree)
    eye[:, :len(q)] = torch.eye(len(q), dtype=torch.bool)
    logits = logits.masked_fill(agree & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(q)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=28)
    ap.add_argument("--renders", type=int, default=12, help="training images per combination")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--queue", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=float, default=DEMO["backbone"]["channel_multiplier"],
                    help="EfficientNet channel multiplier of the image backbone")
    ap.add_argument("--partial", type=float, default=0.15, help="share of partial training captions")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this")
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.backends.mha.set_fastpath_enabled(False)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(DEMO["seed"])
    cfg = copy.deepcopy(DEMO)
    cfg["backbone"]["channel_multiplier"] = args.width
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    train_c, val_c, held_c = scenes.split_combos()
    print("combinations: %d train, %d validation, %d held-out" % (len(train_c), len(val_c), len(held_c)))
    x_train, y_train = make_images(train_c, args.renders, "train", cfg["image_size"])
    # Validation: two photos of each validation combination among one photo of each of 120
    # training combinations, so that near misses (another kind, same colour, count and place)
    # are there as in the held-out album.
    x_val, y_val = make_images(val_c, 2, "val", cfg["image_size"])
    distract = train_c[::len(train_c) // 120][:120]
    x_dis, y_dis = make_images(distract, 1, "distract", cfg["image_size"])
    x_val = torch.cat([x_val, x_dis])
    val_combos = [val_c[i] for i in y_val.tolist()] + [distract[i] for i in y_dis.tolist()]
    # The held-out album itself, evaluated for the log only (never to choose an epoch).
    x_held = torch.stack([to_input(scenes.album_photo(c), cfg["image_size"]) for c in held_c])
    train_attr = torch.tensor([attributes(c) for c in train_c])
    t_data = time.time() - t0
    print("rendered %d training, %d validation and %d held-out images in %.0f s" % (
        len(x_train), len(x_val), len(x_held), t_data))

    model = ref.BriVL(cfg, with_mom=False)
    check_batched(model, cfg)
    img, txt = model.imgencoder, model.textencoder
    img_m, txt_m = copy.deepcopy(img), copy.deepcopy(txt)
    for p in list(img_m.parameters()) + list(txt_m.parameters()):
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    steps_per_epoch = len(x_train) // args.batch
    total = steps_per_epoch * args.epochs
    warm = max(1, min(300, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / total))))

    d = cfg["emb_dim"]
    queue_i = F.normalize(torch.randn(0, d), dim=-1)
    queue_t = F.normalize(torch.randn(0, d), dim=-1)
    queue_ai = torch.zeros(0, 4, dtype=torch.long)
    queue_at = torch.zeros(0, 4, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    rng = random.Random(2)
    log = {"config": cfg, "args": vars(args), "epochs": []}
    best = None
    t_train = time.time()
    for epoch in range(args.epochs):
        img.train(), txt.train(), img_m.train(), txt_m.train()
        perm = torch.randperm(len(x_train), generator=g)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            x = x_train[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x = normalise(x)
            ys = y_train[idx]
            caps, said = zip(*(scenes.training_caption(train_c[i], rng, args.partial) for i in ys.tolist()))
            ids, mask = tokenize_all(caps, cfg["max_text_len"])
            ai = train_attr[ys]
            at = torch.tensor([attributes(a) for a in said])
            qi = embed_images(img, x, cfg)
            qt = embed_texts(txt, ids, mask)
            with torch.no_grad():
                momentum_update(img, img_m, MOMENTUM)
                momentum_update(txt, txt_m, MOMENTUM)
                ki = embed_images(img_m, x, cfg)
                kt = embed_texts(txt_m, ids, mask)
            loss = 0.5 * (info_nce(qi, kt, queue_t, ai, at, queue_at) + info_nce(qt, ki, queue_i, at, ai, queue_ai))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            queue_i = torch.cat([ki, queue_i])[:args.queue]
            queue_t = torch.cat([kt, queue_t])[:args.queue]
            queue_ai = torch.cat([ai, queue_ai])[:args.queue]
            queue_at = torch.cat([at, queue_at])[:args.queue]
            if s % 25 == 0:
                print("  epoch %d step %d/%d loss %.3f (%.0f s)" % (epoch, s, steps_per_epoch, np.mean(losses[-25:]),
                                                                   time.time() - t0), flush=True)
        r = evaluate(img, txt, x_val, val_combos, cfg, query_combos=val_c)
        h = evaluate(img, txt, x_held, held_c, cfg)
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "val": r, "heldout": h,
               "minutes": (time.time() - t_train) / 60}
        log["epochs"].append(rec)
        print("epoch %d: loss %.3f, validation R@1 %.3f R@5 %.3f, held-out R@1 %.3f R@5 %.3f (%.1f min)" % (
            epoch, rec["loss"], r["R@1"], r["R@5"], h["R@1"], h["R@5"], rec["minutes"]), flush=True)
        score = (r["R@1"], r["R@5"])
        if best is None or score >= best[0]:  # ties: the later, longer-trained epoch
            best = (score, epoch, copy.deepcopy(img.state_dict()), copy.deepcopy(txt.state_dict()),
                    copy.deepcopy(img_m.state_dict()), copy.deepcopy(txt_m.state_dict()))
        if args.max_minutes is not None and rec["minutes"] > args.max_minutes:
            print("time budget reached")
            break

    _, best_epoch, si, st, sim, stm = best
    model.imgencoder.load_state_dict(si)
    model.textencoder.load_state_dict(st)
    model.imgencoder_mom = copy.deepcopy(model.imgencoder)
    model.imgencoder_mom.load_state_dict(sim)
    model.textencoder_mom = copy.deepcopy(model.textencoder)
    model.textencoder_mom.load_state_dict(stm)
    model.eval()
    sd = ref.released_state_dict(model, cfg)
    ckpt = os.path.join(out, cfg["name"] + ".pth")
    torch.save({"learnable": sd}, ckpt)
    loaded, _ = ref.load_released(ckpt, cfg)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(ref.config_json(cfg, cfg["name"] + ".pth", loaded), f, indent=2, ensure_ascii=False)
        f.write("\n")
    log.update(best_epoch=best_epoch, best_val=log["epochs"][best_epoch]["val"],
               data_seconds=t_data, train_minutes=(time.time() - t_train) / 60, total_minutes=(time.time() - t0) / 60,
               torch=torch.__version__, threads=args.threads)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1, ensure_ascii=False)
    print("best epoch %d (validation %s); wrote %s (%d bytes); %.1f min in all" % (
        best_epoch, log["best_val"], ckpt, os.path.getsize(ckpt), log["total_minutes"]))


if __name__ == "__main__":
    main()
