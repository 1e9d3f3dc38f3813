#!/usr/bin/env python3
"""Fixtures for tests/test_jpeg_damage.c: which damaged JPEGs Pillow (so
Keras's load_img) decodes and which it refuses.

    python3 scripts/fixtures_jpeg_damage.py tests/fixtures/jpeg_damage

Writes a few small JPEGs made by Pillow (srcN.jpg) and, for each, the
verdict of every damaged variant (srcN.npy, uint8 [KINDS, n], 1 = Pillow
loads it, 0 = Pillow raises). Variant (kind, k) of a source d of n bytes is
made by this rule, which the C test repeats byte for byte:

    kind 0  d[:k]                       cut at k
    kind 1  d with d[k] ^= 0xFF         every bit of one byte
    kind 2  d with d[k] ^= 1 << (k % 8) one bit
    kind 3  d with d[k] = 0xFF          a marker prefix in the data
    kind 4  d with d[k] = 0x00
    kind 5  d[:k] + b"\\xff\\xd9"        cut at k, then an EOI marker

"Loads" is what keras.utils.load_img does with Pillow's defaults
(LOAD_TRUNCATED_IMAGES = False): Image.open on the bytes, then
convert('RGB') (which loads the pixels); any exception is a refusal.

Needs Pillow and numpy.
"""
import io
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageFile

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/jpeg_damage"
os.makedirs(OUT, exist_ok=True)
assert not ImageFile.LOAD_TRUNCATED_IMAGES
KINDS = 6


def variant(d, kind, k):
    if kind == 0:
        return d[:k]
    if kind == 5:
        return d[:k] + b"\xff\xd9"
    b = bytearray(d)
    if kind == 1:
        b[k] ^= 0xFF
    elif kind == 2:
        b[k] ^= 1 << (k % 8)
    elif kind == 3:
        b[k] = 0xFF
    else:
        b[k] = 0x00
    return bytes(b)


def pillow_loads(b):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(b)) as im:
                if im.format != "JPEG":
                    return 0  # another plugin took it: not a JPEG decode
                im.convert("RGB")
        return 1
    except Exception:
        return 0


def content(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x * 255 / (w - 1), y * 255 / (h - 1), (x + y) * 127 / (w + h)], -1)
    img += rng.normal(0, 30, (h, w, 3))
    img[h // 3:2 * h // 3, w // 4:w // 2] = (240, 20, 60)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save(name, im, **kw):
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


sources = {
    # baseline 4:2:0 with JFIF (what most photos are)
    "src0.jpg": save("src0.jpg", Image.fromarray(content(24, 16, 1)), quality=85),
    # grayscale, odd size
    "src1.jpg": save("src1.jpg", Image.fromarray(content(19, 13, 2)).convert("L"), quality=90),
    # progressive (several scans, a DHT between scans)
    "src2.jpg": save("src2.jpg", Image.fromarray(content(24, 16, 3)), quality=80, progressive=True),
    # 4:4:4 with restart markers every MCU row and an ICC_PROFILE chunk
    "src3.jpg": save("src3.jpg", Image.fromarray(content(16, 16, 4)), quality=90, subsampling=0,
                     restart_marker_rows=1, icc_profile=bytes(range(40))),
    # CMYK (Adobe APP14 marker, 4 components)
    "src4.jpg": save("src4.jpg", Image.fromarray(
        np.concatenate([content(16, 8, 5), content(16, 8, 6)[..., :1]], -1), "CMYK"), quality=90),
}

total_loads = total = 0
for name, d in sources.items():
    assert pillow_loads(d), name
    n = len(d)
    verdict = np.zeros((KINDS, n), np.uint8)
    for kind in range(KINDS):
        for k in range(n):
            verdict[kind, k] = pillow_loads(variant(d, kind, k))
    np.save(os.path.join(OUT, name.replace(".jpg", ".npy")), verdict)
    total += verdict.size
    total_loads += int(verdict.sum())
    print(f"{name}: {n} bytes, loads per kind {verdict.sum(1).tolist()} of {n}")
print(f"{total} variants, {total_loads} load, {total - total_loads} refused")
