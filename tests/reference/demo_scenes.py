#!/usr/bin/env python3
"""Synthetic bilingual scenes for the demo model (deterministic from a seed).

Each scene: 1-3 objects of one kind and one colour on a background, under random lighting, blur,
noise and JPEG compression, captioned in Chinese and English from the word pairs in
scene_words.tsv (e.g. 两只黄色的鸭子在水面上 / two yellow ducks on the water). Objects sit at random
positions; positions are not captioned (BriVL's image tower averages its 37 box features after a
transformer without position embeddings, so left/right is hard for it to tell).

A combination is (kind, colour, count, background); a colour equal to the background's own
(blue on water, green on grass, white on snow, yellow on the beach) is left out. The
combinations are split once, by seed, into train / validation / held-out: validation and
held-out combinations never occur in training.

    python tests/reference/demo_scenes.py --album www/demo/album   # writes the held-out album

Used as a module by train_demo.py (training and validation images are made in memory).
"""
import argparse
import io
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = os.path.join(HERE, "scene_words.tsv")

WIDTH, HEIGHT = 256, 192  # stored photo size (4:3); the model squashes it to its square input
SPLIT_SEED = 4
N_HELDOUT = 180
N_VAL = 60

COLOUR_RGB = {
    "red": (205, 35, 35), "yellow": (245, 205, 30), "green": (40, 165, 55),
    "blue": (35, 75, 215), "purple": (135, 55, 185), "white": (242, 242, 242),
}
# Base colours of the backgrounds, and the object colour each one hides.
BACKGROUND_RGB = {
    "water": (60, 120, 190), "grass": (80, 150, 60), "snow": (228, 232, 240),
    "beach": (222, 196, 140), "road": (105, 105, 110),
}
BACKGROUND_HIDES = {"water": "blue", "grass": "green", "snow": "white", "beach": "yellow"}


def load_words(path=WORDS):
    """{category: [(zh, en, en_plural, measure), ...]} in file order."""
    words = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t") + ["", "", ""]
            words.setdefault(cols[0], []).append(tuple(cols[1:5]))
    return words


WORDS_BY_CAT = load_words()
KINDS = [w[1] for w in WORDS_BY_CAT["kind"]]
COLOURS = [w[1] for w in WORDS_BY_CAT["colour"]]
BACKGROUNDS = [w[1] for w in WORDS_BY_CAT["background"]]
COUNTS = [1, 2, 3]
_ZH = {w[1]: w[0] for cat in ("kind", "colour", "background") for w in WORDS_BY_CAT[cat]}
_PLURAL = {w[1]: w[2] for w in WORDS_BY_CAT["kind"]}
_MEASURE = {w[1]: w[3] for w in WORDS_BY_CAT["kind"]}
_COUNT_ZH = {1: "一", 2: "两", 3: "三"}
_COUNT_EN = {1: "a", 2: "two", 3: "three"}
assert set(KINDS) and set(COLOURS) == set(COLOUR_RGB) and set(BACKGROUNDS) == set(BACKGROUND_RGB)


def all_combos():
    return [(k, c, n, b) for k in KINDS for c in COLOURS for n in COUNTS for b in BACKGROUNDS
            if BACKGROUND_HIDES.get(b) != c]


def split_combos(seed=SPLIT_SEED):
    """(train, val, heldout) lists of combos, disjoint."""
    combos = all_combos()
    random.Random(seed).shuffle(combos)
    held = sorted(combos[:N_HELDOUT])
    val = sorted(combos[N_HELDOUT:N_HELDOUT + N_VAL])
    train = sorted(combos[N_HELDOUT + N_VAL:])
    return train, val, held


def caption_zh(combo):
    k, c, n, b = combo
    return "%s%s%s的%s在%s上" % (_COUNT_ZH[n], _MEASURE[k], _ZH[c], _ZH[k], _ZH[b])


def caption_en(combo):
    k, c, n, b = combo
    return "%s %s %s on the %s" % (_COUNT_EN[n], c, k if n == 1 else _PLURAL[k], b)


def augment_zh(combo, rng):
    """A training variant of the Chinese caption: the canonical one about half the time, else
    with 的 / measure word / 色 / 在 / 上 dropped, 两 as 二, or the attributes reordered, so that
    a word-by-word Chinese rendering of the English caption (两 黄色 鸭子 在 水面) still matches."""
    k, c, n, b = combo
    if rng.random() < 0.45:
        return caption_zh(combo)
    num = _COUNT_ZH[n]
    if n == 2 and rng.random() < 0.2:
        num = "二"
    meas = "" if rng.random() < 0.35 else _MEASURE[k]
    col = _ZH[c]
    if rng.random() < 0.2:
        col = col[:-1]  # 黄色 -> 黄
    de = "" if rng.random() < 0.4 else "的"
    zai = "" if rng.random() < 0.2 else "在"
    shang = "" if rng.random() < 0.3 else "上"
    obj = col + de + _ZH[k]
    where = zai + _ZH[b] + shang
    r = rng.random()
    if r < 0.15:  # colour before the count: 黄色的两只鸭子在水面上
        return col + de + num + meas + _ZH[k] + where
    if r < 0.3:  # place first: 水面上有两只黄色的鸭子
        return _ZH[b] + "上有" + num + meas + obj
    return num + meas + obj + where


def partial_zh(combo, rng):
    """A training caption that names the kind and only some of the other attributes (两只鸭子,
    黄色的鸭子, 水面上的鸭子, 鸭子, ...), as people search. Returns (caption, attributes) with None
    for each attribute left unsaid: a scene matching the said ones is no negative for it."""
    k, c, n, b = combo
    keep = [rng.random() < 0.5 for _ in range(3)]  # colour, count, background
    if all(keep):
        keep[rng.randrange(3)] = False
    col = _ZH[c] + ("的" if rng.random() < 0.7 else "") if keep[0] else ""
    num = _COUNT_ZH[n] + (_MEASURE[k] if rng.random() < 0.7 else "") if keep[1] else ""
    text = num + col + _ZH[k]
    if keep[2]:
        text = _ZH[b] + "上的" + text if rng.random() < 0.4 else text + "在" + _ZH[b] + "上"
    return text, (k, c if keep[0] else None, n if keep[1] else None, b if keep[2] else None)


def training_caption(combo, rng, partial=0.15):
    """(caption, attributes) for one training image: a full caption variant (augment_zh) or, with
    probability `partial`, a partial one (partial_zh)."""
    if rng.random() < partial:
        return partial_zh(combo, rng)
    return augment_zh(combo, rng), combo


# ----------------------------------------------------------------------------- drawing

def _jitter(rgb, rng, amount=18):
    return tuple(int(np.clip(v + rng.uniform(-amount, amount), 0, 255)) for v in rgb)


def _darker(rgb, f=0.55):
    return tuple(int(v * f) for v in rgb)


def draw_background(kind, rng):
    base = np.array(_jitter(BACKGROUND_RGB[kind], rng, 14), dtype=np.float32)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.broadcast_to(base, (HEIGHT, WIDTH, 3)).copy()
    # A gentle gradient: farther (top) lighter.
    img *= (1.0 + 0.12 * (0.5 - yy / HEIGHT) * rng.uniform(0.5, 1.5))[..., None]
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    if kind == "water":
        phase = rng.uniform(0, 6.3)
        f = rng.uniform(0.08, 0.14)
        waves = np.sin(xx * 0.05 + np.sin(yy * f + phase) * 2.0 + yy * 0.6)
        img += (waves > 0.85)[..., None] * np.array([40, 45, 45], np.float32)
    elif kind == "grass":
        img += nrng.normal(0, 14, (HEIGHT, WIDTH, 1)).astype(np.float32) * np.array([0.6, 1.0, 0.4], np.float32)
    elif kind == "snow":
        img += nrng.normal(0, 5, (HEIGHT, WIDTH, 1)).astype(np.float32)
    elif kind == "beach":
        img += nrng.normal(0, 10, (HEIGHT, WIDTH, 1)).astype(np.float32)
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(pil)
    if kind == "grass":
        for _ in range(120):
            x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
            col = _jitter((60, 130, 45), rng, 25)
            d.line([x, y, x + rng.uniform(-3, 3), y - rng.uniform(4, 9)], fill=col, width=1)
    elif kind == "snow":
        for _ in range(40):
            x, y, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(1, 2.5)
            d.ellipse([x - r, y - r, x + r, y + r], fill=(250, 252, 255))
    elif kind == "beach":
        for _ in range(25):
            x, y, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(1, 3)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter((170, 140, 100), rng, 20))
    elif kind == "road":
        y = rng.uniform(0.35, 0.65) * HEIGHT
        lane = (235, 235, 225) if rng.random() < 0.6 else (230, 190, 40)
        x = rng.uniform(-30, 0)
        while x < WIDTH:
            d.rectangle([x, y - 2, x + 22, y + 2], fill=lane)
            x += 40
    return pil


def _poly(cx, cy, pts, s, flip):
    return [(cx + (-px if flip else px) * s, cy + py * s) for px, py in pts]


def draw_object(d, kind, cx, cy, s, rgb, rng, flip):
    """One object of size ~s (pixels) centred at (cx, cy), outlined so it reads on any
    background."""
    out = _darker(rgb, 0.45)
    ow = max(1, int(s / 22))
    # Soft shadow on the ground.
    d.ellipse([cx - 0.45 * s, cy + 0.36 * s, cx + 0.45 * s, cy + 0.5 * s], fill=(0, 0, 0, 60))
    if kind == "duck":
        d.ellipse(_box(cx - 0.05 * s * (-1 if flip else 1), cy + 0.1 * s, 0.42 * s, 0.26 * s), fill=rgb, outline=out, width=ow)
        hx = cx + (0.22 * s if not flip else -0.22 * s)
        d.ellipse(_box(hx, cy - 0.2 * s, 0.16 * s, 0.16 * s), fill=rgb, outline=out, width=ow)
        d.polygon(_poly(hx, cy - 0.2 * s, [(0.13, -0.04), (0.3, 0.0), (0.13, 0.05)], s, flip), fill=(240, 130, 20))
        ex = hx + (0.05 * s if not flip else -0.05 * s)
        d.ellipse(_box(ex, cy - 0.24 * s, 0.03 * s, 0.03 * s), fill=(10, 10, 10))
    elif kind == "fish":
        d.ellipse(_box(cx, cy, 0.36 * s, 0.2 * s), fill=rgb, outline=out, width=ow)
        d.polygon(_poly(cx, cy, [(-0.3, 0), (-0.5, -0.2), (-0.5, 0.2)], s, flip), fill=rgb, outline=out)
        ex = cx + (0.2 * s if not flip else -0.2 * s)
        d.ellipse(_box(ex, cy - 0.04 * s, 0.035 * s, 0.035 * s), fill=(10, 10, 10))
    elif kind == "ball":
        d.ellipse(_box(cx, cy, 0.36 * s, 0.36 * s), fill=rgb, outline=out, width=ow)
        d.arc(_box(cx, cy, 0.36 * s, 0.14 * s), 0, 180, fill=out, width=ow)
        d.ellipse(_box(cx - 0.12 * s, cy - 0.14 * s, 0.07 * s, 0.07 * s), fill=(255, 255, 255))
    elif kind == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            r = 0.45 if i % 2 == 0 else 0.19
            pts.append((r * math.cos(a), r * math.sin(a)))
        d.polygon(_poly(cx, cy, pts, s, False), fill=rgb, outline=out, width=ow)
    elif kind == "flower":
        d.line([cx, cy + 0.1 * s, cx, cy + 0.5 * s], fill=(40, 120, 40), width=max(2, int(s / 14)))
        for i in range(6):
            a = i * math.pi / 3
            px, py = cx + 0.2 * s * math.cos(a), cy - 0.05 * s + 0.2 * s * math.sin(a)
            d.ellipse(_box(px, py, 0.14 * s, 0.14 * s), fill=rgb, outline=out, width=ow)
        d.ellipse(_box(cx, cy - 0.05 * s, 0.1 * s, 0.1 * s), fill=(250, 190, 30) if rgb[2] > 100 or rgb[0] < 200 else (120, 70, 20))
    elif kind == "tree":
        d.rectangle([cx - 0.06 * s, cy + 0.1 * s, cx + 0.06 * s, cy + 0.5 * s], fill=(110, 70, 35))
        d.polygon(_poly(cx, cy, [(0, -0.55), (0.34, 0.18), (-0.34, 0.18)], s, False), fill=rgb, outline=out, width=ow)
    elif kind == "house":
        d.rectangle([cx - 0.32 * s, cy - 0.05 * s, cx + 0.32 * s, cy + 0.45 * s], fill=rgb, outline=out, width=ow)
        d.polygon(_poly(cx, cy, [(0, -0.45), (0.42, -0.05), (-0.42, -0.05)], s, False), fill=(130, 45, 35), outline=(60, 20, 15))
        d.rectangle([cx - 0.07 * s, cy + 0.2 * s, cx + 0.07 * s, cy + 0.45 * s], fill=(80, 50, 30))
    elif kind == "car":
        d.rounded_rectangle([cx - 0.48 * s, cy - 0.05 * s, cx + 0.48 * s, cy + 0.25 * s], radius=0.06 * s, fill=rgb, outline=out, width=ow)
        d.polygon(_poly(cx, cy, [(-0.28, -0.05), (-0.18, -0.3), (0.2, -0.3), (0.32, -0.05)], s, flip), fill=rgb, outline=out, width=ow)
        d.polygon(_poly(cx, cy, [(-0.2, -0.07), (-0.13, -0.25), (0.15, -0.25), (0.24, -0.07)], s, flip), fill=(170, 210, 235))
        for wx in (-0.28, 0.28):
            d.ellipse(_box(cx + wx * s, cy + 0.27 * s, 0.11 * s, 0.11 * s), fill=(25, 25, 25))
    else:
        raise ValueError(kind)


def _box(cx, cy, rx, ry):
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def place(n, s, rng):
    """n non-overlapping centres for objects of size s (retries, then shrinks)."""
    for _ in range(200):
        pts = [(rng.uniform(0.55 * s, WIDTH - 0.55 * s), rng.uniform(0.6 * s, HEIGHT - 0.55 * s)) for _ in range(n)]
        if all(math.hypot(a[0] - b[0], a[1] - b[1]) > 1.05 * s for i, a in enumerate(pts) for b in pts[i + 1:]):
            return pts, s
    return place(n, s * 0.9, rng)


def render(combo, seed, quality=None):
    """The scene as JPEG bytes (deterministic from combo and seed)."""
    kind, colour, count, bg = combo
    rng = random.Random("%s/%s" % (seed, "/".join(map(str, combo))))
    img = draw_background(bg, rng).convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    s = rng.uniform(0.3, 0.4) * HEIGHT * (1.0 if count < 3 else 0.85)
    pts, s = place(count, s, rng)
    base = COLOUR_RGB[colour]
    for cx, cy in sorted(pts, key=lambda p: p[1]):
        draw_object(d, kind, cx, cy, s * rng.uniform(0.9, 1.1), _jitter(base, rng, 14), rng, rng.random() < 0.5)
    img = Image.alpha_composite(img, layer).convert("RGB")
    # Lighting: brightness, colour temperature, a directional gradient; then blur and sensor noise.
    a = np.asarray(img, dtype=np.float32)
    gain = rng.uniform(0.75, 1.15) * np.array([rng.uniform(0.92, 1.08) for _ in range(3)], np.float32)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    grad = 1.0 + rng.uniform(0, 0.18) * ((xx / WIDTH - 0.5) * math.cos(ang) + (yy / HEIGHT - 0.5) * math.sin(ang))
    a = a * gain * grad[..., None]
    img = Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    a = np.asarray(img, dtype=np.float32)
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    a = a + nrng.normal(0, rng.uniform(1, 7), a.shape).astype(np.float32)
    img = Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality or rng.randint(70, 92))
    return buf.getvalue()


def album_photo(combo, seed=1):
    """The album's photo of a held-out combination (JPEG bytes)."""
    return render(combo, "album-%d" % seed, quality=85)


def write_album(folder, seed=1):
    """The held-out split, one photo per combination, in a shuffled order, plus captions.tsv."""
    _, _, held = split_combos()
    order = list(held)
    random.Random(seed).shuffle(order)
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        if f.endswith(".jpg"):
            os.remove(os.path.join(folder, f))
    lines = []
    total = 0
    for i, combo in enumerate(order):
        name = "scene-%03d.jpg" % i
        data = album_photo(combo, seed)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        total += len(data)
        lines.append("%s\t%s\t%s\n" % (name, caption_zh(combo), caption_en(combo)))
    with open(os.path.join(folder, "captions.tsv"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    print("wrote %d photos (%.2f MB) and captions.tsv to %s" % (len(order), total / 1e6, folder))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--album", required=True, help="folder for the held-out album")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    train, val, held = split_combos()
    print("combinations: %d train, %d validation, %d held-out" % (len(train), len(val), len(held)))
    write_album(args.album, args.seed)


if __name__ == "__main__":
    main()
