#!/usr/bin/env python3
"""Generates the photo-decoding fixtures in tests/fixtures/photos/ and PIL's golden decode of each.

    pip install pillow numpy
    python3 tests/reference/make_photo_fixtures.py

Every fixture is small (a 32x24 picture, a few KB) and made deterministically from seeded data.
For each decodable fixture the golden is what the reference pipeline does with the file:

    im = ImageOps.exif_transpose(Image.open(path))   # first frame for GIF
    rgb = im.convert('RGB')

written raw (row-major RGB bytes) to pil/<name>.rgb, with one line per fixture in manifest.tsv:

    name  pil_mode  width  height  compare  tolerance  sha256(rgb)  mean_r  mean_g  mean_b

compare is `exact` (lossless formats: the Rust decode must match byte for byte) or `maxabs`
(lossy formats: JPEG and lossy WebP decoders differ in IDCT/upsampling, so the test allows a
max-abs difference of `tolerance` and reports what it saw).

One deliberate divergence: PIL's convert('RGB') of a 16-bit greyscale image ('I;16') CLAMPS each
sample to 255 (so nearly every 16-bit grey photo turns white), while its 16-bit RGB, RGBA and LA
paths keep the high byte (v >> 8). brivl keeps the high byte everywhere; the golden for
grey16.png is therefore v >> 8 computed here, with compare `exact` and pil_mode `I;16>>8`.

Files that must NOT decode (declared dimensions far past the limits) are listed in huge.tsv with
their declared width and height.
"""

import hashlib
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "photos"))
W, H = 32, 24  # multiples of 8 so JPEG blocks line up under rotation

ORIENT_TO_STORED = {
    # stored = inverse of the transform EXIF orientation o asks the viewer to apply
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # viewer rotates 270 (90 clockwise); undo it
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_rgb():
    """A smooth, clearly asymmetric 32x24 picture (gradients, a red corner block, a diagonal)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 40 + 180 * x / (W - 1)
    g = 30 + 170 * y / (H - 1)
    b = 120 + 60 * np.sin(x / 5.0) * np.cos(y / 4.0)
    img = np.stack([r, g, b], -1)
    img[2:8, 2:10] = [230, 40, 40]  # red block top-left
    for i in range(min(W, H) - 6):
        img[4 + i, 12 + i // 2] = [20, 20, 200]  # blue stroke heading down-right
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def rng_bytes(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint16).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_raw(width, height, bit_depth, color_type, rows_bytes):
    raw = b"".join(b"\x00" + r for r in rows_bytes)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def png16(arr, color_type):
    h, w = arr.shape[:2]
    return png_raw(w, h, 16, color_type, [arr[y].astype(">u2").tobytes() for y in range(h)])


def save(im, name, **kw):
    buf = io.BytesIO()
    im.save(buf, **kw)
    write(name, buf.getvalue())


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def pil_rgb(name):
    with Image.open(os.path.join(OUT, name)) as im:
        im.seek(0)
        mode = im.mode
        im = ImageOps.exif_transpose(im)
        return mode, np.asarray(im.convert("RGB"))


def main():
    os.makedirs(os.path.join(OUT, "pil"), exist_ok=True)
    up = upright_rgb()
    rows = []  # (name, compare, tolerance, override_rgb, override_mode)

    def add(name, compare="exact", tol=0, override=None, mode=None):
        rows.append((name, compare, tol, override, mode))

    # --- PNG --------------------------------------------------------------------------------
    save(Image.fromarray(up, "RGB"), "rgb.png", format="PNG", optimize=True)
    add("rgb.png")
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    alpha[:, :4] = 0  # fully transparent columns whose colour must survive (no compositing)
    save(Image.fromarray(np.dstack([up, alpha]), "RGBA"), "rgba.png", format="PNG", optimize=True)
    add("rgba.png")
    grey = np.asarray(Image.fromarray(up, "RGB").convert("L"))
    save(Image.fromarray(grey, "L"), "grey.png", format="PNG", optimize=True)
    add("grey.png")
    save(Image.fromarray(np.dstack([grey, 255 - alpha]), "LA"), "grey_alpha.png", format="PNG")
    add("grey_alpha.png")
    pal = Image.fromarray(up, "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save(pal, "palette.png", format="PNG", transparency=3)  # index 3 transparent via tRNS
    add("palette.png")
    save(Image.fromarray(grey, "L").point(lambda v: 255 if v > 120 else 0).convert("1"), "bilevel.png", format="PNG")
    add("bilevel.png")
    # 16-bit: PIL cannot write these, so they are written by hand; samples use the full range
    # with low bytes that differ from the high bytes, so "high byte" and "round(v/257)" disagree.
    r16 = np.random.default_rng(16).integers(0, 65536, size=(H, W, 4), dtype=np.uint32).astype(np.uint16)
    write("rgb16.png", png16(r16[..., :3], 2))
    add("rgb16.png")
    write("rgba16.png", png16(r16, 6))
    add("rgba16.png")
    write("la16.png", png16(r16[..., :2], 4))
    add("la16.png")
    write("grey16.png", png16(r16[..., 0], 0))
    g8 = (r16[..., 0] >> 8).astype(np.uint8)
    add("grey16.png", override=np.dstack([g8, g8, g8]), mode="I;16>>8")

    # --- BMP --------------------------------------------------------------------------------
    save(Image.fromarray(up, "RGB"), "rgb.bmp", format="BMP")
    add("rgb.bmp")
    save(pal.convert("RGB").quantize(colors=16, dither=Image.Dither.NONE), "palette.bmp", format="BMP")
    add("palette.bmp")

    # --- TIFF -------------------------------------------------------------------------------
    save(Image.fromarray(up, "RGB"), "rgb.tiff", format="TIFF")
    add("rgb.tiff")
    save(Image.fromarray(up, "RGB"), "rgb_lzw.tiff", format="TIFF", compression="tiff_lzw")
    add("rgb_lzw.tiff")
    save(Image.fromarray(grey, "L"), "grey_deflate.tiff", format="TIFF", compression="tiff_adobe_deflate")
    add("grey_deflate.tiff")

    # --- WebP -------------------------------------------------------------------------------
    save(Image.fromarray(up, "RGB"), "lossless.webp", format="WEBP", lossless=True)
    add("lossless.webp")
    save(Image.fromarray(np.dstack([up, alpha]), "RGBA"), "lossless_alpha.webp", format="WEBP", lossless=True, exact=True)
    add("lossless_alpha.webp")
    save(Image.fromarray(up, "RGB"), "lossy.webp", format="WEBP", quality=90, method=4)
    add("lossy.webp", "maxabs", 8)

    # --- GIF: animated, palette, transparency; only frame 0 counts --------------------------
    f0 = Image.fromarray(up, "RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    f1 = Image.fromarray(up[::-1, ::-1].copy(), "RGB").quantize(palette=f0, dither=Image.Dither.NONE)
    save(f0, "anim.gif", format="GIF", save_all=True, append_images=[f1], duration=100, loop=0, transparency=5)
    add("anim.gif")

    # --- JPEG -------------------------------------------------------------------------------
    save(Image.fromarray(up, "RGB"), "rgb420.jpg", format="JPEG", quality=90)
    add("rgb420.jpg", "maxabs", 8)
    save(Image.fromarray(up, "RGB"), "rgb444.jpg", format="JPEG", quality=90, subsampling=0)
    add("rgb444.jpg", "maxabs", 8)
    save(Image.fromarray(up, "RGB"), "progressive.jpg", format="JPEG", quality=85, progressive=True)
    add("progressive.jpg", "maxabs", 8)
    save(Image.fromarray(grey, "L"), "grey.jpg", format="JPEG", quality=90)
    add("grey.jpg", "maxabs", 8)
    save(Image.fromarray(up, "RGB").convert("CMYK"), "cmyk.jpg", format="JPEG", quality=95)
    add("cmyk.jpg", "maxabs", 8)

    # --- EXIF orientation: every file shows `up` once its orientation is applied -------------
    for o, t in ORIENT_TO_STORED.items():
        stored = Image.fromarray(up, "RGB")
        if t is not None:
            stored = stored.transpose(t)
        ex = Image.Exif()
        ex[0x0112] = o
        save(stored, f"orient_{o}.jpg", format="JPEG", quality=100, subsampling=0, exif=ex.tobytes())
        add(f"orient_{o}.jpg", "maxabs", 8)
    for o, fmt, ext in [(6, "PNG", "png"), (3, "WEBP", "webp"), (8, "TIFF", "tiff")]:
        stored = Image.fromarray(up, "RGB").transpose(ORIENT_TO_STORED[o])
        ex = Image.Exif()
        ex[0x0112] = o
        kw = {"lossless": True} if fmt == "WEBP" else {}
        if fmt == "TIFF":
            kw["tiffinfo"] = {0x0112: o}
        else:
            kw["exif"] = ex.tobytes()
        save(stored, f"orient_{o}.{ext}", format=fmt, **kw)
        add(f"orient_{o}.{ext}")

    # --- goldens ----------------------------------------------------------------------------
    lines = ["# name\tpil_mode\twidth\theight\tcompare\ttolerance\tsha256_rgb\tmean_r\tmean_g\tmean_b"]
    for name, compare, tol, override, mode in rows:
        pmode, rgb = pil_rgb(name)
        if override is not None:
            assert rgb.shape == override.shape
            rgb, pmode = override, mode
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        data = rgb.tobytes()
        with open(os.path.join(OUT, "pil", name + ".rgb"), "wb") as f:
            f.write(data)
        mean = rgb.reshape(-1, 3).mean(0)
        lines.append(
            f"{name}\t{pmode}\t{w}\t{h}\t{compare}\t{tol}\t{hashlib.sha256(data).hexdigest()}\t"
            f"{mean[0]:.3f}\t{mean[1]:.3f}\t{mean[2]:.3f}"
        )
        if name.startswith("orient_"):  # PIL itself must see the upright picture
            diff = np.abs(rgb.astype(int) - up.astype(int)).max()
            assert (w, h) == (W, H) and diff <= 8, (name, w, h, diff)
    with open(os.path.join(OUT, "manifest.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")

    # --- headers declaring absurd sizes (must be refused before any pixel is decoded) --------
    huge = []
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    write("huge.png", b"\x89PNG\r\n\x1a\n"
          + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + idat + png_chunk(b"IEND", b""))
    huge.append(("huge.png", 100000, 100000))
    gif = bytearray(open(os.path.join(OUT, "anim.gif"), "rb").read())
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    write("huge.gif", bytes(gif))
    huge.append(("huge.gif", 65535, 65535))
    jpg = bytearray(open(os.path.join(OUT, "rgb420.jpg"), "rb").read())
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    write("huge.jpg", bytes(jpg))
    huge.append(("huge.jpg", 65000, 65000))
    bmp = bytearray(open(os.path.join(OUT, "rgb.bmp"), "rb").read())
    bmp[18:26] = struct.pack("<ii", 60000, 60000)
    write("huge.bmp", bytes(bmp))
    huge.append(("huge.bmp", 60000, 60000))
    # LZW, one strip: only ImageWidth, ImageLength and RowsPerStrip need changing to stay consistent.
    tif = bytearray(open(os.path.join(OUT, "rgb_lzw.tiff"), "rb").read())
    assert tif[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        at = ifd + 2 + 12 * k
        if struct.unpack_from("<H", tif, at)[0] in (256, 257, 278):  # -> LONG 200000
            struct.pack_into("<HII", tif, at + 2, 4, 1, 200000)
    write("huge.tiff", bytes(tif))
    huge.append(("huge.tiff", 200000, 200000))
    webp = bytearray(open(os.path.join(OUT, "orient_3.webp"), "rb").read())
    assert webp[12:16] == b"VP8X"
    webp[24:30] = (16383).to_bytes(3, "little") * 2  # canvas 16384x16384, stored minus one
    write("huge_vp8x.webp", bytes(webp))
    huge.append(("huge_vp8x.webp", 16384, 16384))
    webp = bytearray(open(os.path.join(OUT, "lossless.webp"), "rb").read())
    assert webp[12:16] == b"VP8L" and webp[20] == 0x2F
    bits = struct.unpack_from("<I", webp, 21)[0] & ~((1 << 28) - 1)
    struct.pack_into("<I", webp, 21, bits | 15999 | (15999 << 14))  # 14-bit width-1, height-1
    write("huge_vp8l.webp", bytes(webp))
    huge.append(("huge_vp8l.webp", 16000, 16000))
    with open(os.path.join(OUT, "huge.tsv"), "w") as f:
        f.write("# name\tdeclared_width\tdeclared_height\n")
        f.write("".join(f"{n}\t{w}\t{h}\n" for n, w, h in huge))

    print(f"wrote {len(rows)} fixtures + {len(huge)} oversized headers to {OUT}")


if __name__ == "__main__":
    main()
