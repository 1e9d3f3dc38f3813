#!/usr/bin/env python3
"""Fixtures for tests/test_image.c: small images in every format we decode and
what Pillow (the library Keras loads images with) makes of them.

    python3 scripts/fixtures_images.py tests/fixtures/images

For each image NAME.EXT the expected pixels are NAME.npy, uint8 H,W,3: exactly
np.array(Image.open(NAME.EXT).convert('RGB')) -- Keras's load_img. Lossless
files whose pixels are the base image share base_rgb.npy (checked here).
Files Pillow cannot write (16-bit BMP, OS/2 BMP, plain PNM, 16-bit PNG...)
are written byte by byte below; their expected pixels are still what Pillow
reads from them, never what this script meant to write.

Resize fixtures (Keras resizes with PIL's Image.resize):
  resize_{nearest,bilinear}_WxH.npy   base_rgb resized to WxH
  nearest_1d.npy  / bilinear_1d.npy   many (in, out) width pairs on 1-row
                                      images, concatenated (see pairs_1d.npy)
Preprocessing: prep_src.npy (uint8 16x12x3) and prep_{caffe,rescale,torch}.npy
(float32) computed the Keras way.

Needs Pillow, numpy; Keras (any backend) for the caffe/torch preprocessing.
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/images"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20240607)


def path(name):
    return os.path.join(OUT, name)


def save_npy(name, arr):
    np.save(path(name), np.ascontiguousarray(arr))


def pil_rgb(fname):
    with Image.open(path(fname)) as im:
        return np.array(im.convert("RGB"))


def expect(fname, shared=None):
    """Record what PIL reads from fname. If shared (an array + npy name) is
    given, PIL's reading must equal it and no extra .npy is written."""
    got = pil_rgb(fname)
    stem = os.path.splitext(fname)[0]
    if shared is not None:
        arr, npy = shared
        assert got.shape == arr.shape and (got == arr).all(), fname
        return
    save_npy(stem + ".npy", got)


def make_content(w, h, seed_shift=0):
    """Gradients + noise + hard-edged shapes, all 256 levels reachable."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x * 255.0 / (w - 1), y * 255.0 / (h - 1),
                    (x + y) * 127.0 / (w + h)], -1)
    img += rng.normal(0, 24, (h, w, 3))
    img[(x - 0.62 * w) ** 2 + (y - 0.4 * h) ** 2 < (0.2 * h) ** 2] = (250, 30, 40)
    img[int(0.6 * h):int(0.85 * h), int(0.1 * w):int(0.4 * w)] = (10, 200, 90)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    img[0, 0] = (0, 0, 0)
    img[-1, -1] = (255, 255, 255)
    return img


base = make_content(64, 48)          # H=48, W=64
small = make_content(23, 18)         # odd sizes for the crafted formats
save_npy("base_rgb.npy", base)
BASE = (base, "base_rgb.npy")
im_base = Image.fromarray(base, "RGB")

# ---------------------------------------------------------------- JPEG
im_base.save(path("jpeg420.jpg"), quality=90, subsampling=2)
im_base.save(path("jpeg422.jpg"), quality=90, subsampling=1)
im_base.save(path("jpeg444.jpg"), quality=95, subsampling=0)
im_base.save(path("jpeg_progressive.jpg"), quality=85, progressive=True)
Image.fromarray(make_content(37, 29), "RGB").save(path("jpeg_odd.jpg"), quality=80)
im_base.convert("L").save(path("jpeg_gray.jpg"), quality=90)
# CMYK with a real K channel (PIL's own RGB->CMYK leaves K at 0). PIL writes
# CMYK JPEGs Adobe-style (inverted), and reads all CMYK JPEGs as inverted.
cmyk = np.concatenate([255 - base, (np.arange(64)[None, :, None] * 3
                                     + np.zeros((48, 1, 1))).astype(np.uint8)], -1)
cmyk[..., 3] = np.clip(cmyk[..., 3].astype(int) + rng.integers(0, 40, (48, 64)), 0, 255)
Image.frombytes("CMYK", (64, 48), cmyk.tobytes()).save(path("jpeg_cmyk.jpg"), quality=95)
for f in ["jpeg420.jpg", "jpeg422.jpg", "jpeg444.jpg", "jpeg_progressive.jpg",
          "jpeg_odd.jpg", "jpeg_gray.jpg", "jpeg_cmyk.jpg"]:
    expect(f)
with Image.open(path("jpeg_cmyk.jpg")) as im:
    assert im.mode == "CMYK"

# ---------------------------------------------------------------- PNG
im_base.save(path("png_rgb.png"))
expect("png_rgb.png", BASE)
rgba = np.concatenate([base, rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)], -1)
Image.fromarray(rgba, "RGBA").save(path("png_rgba.png"))
expect("png_rgba.png", BASE)           # alpha dropped, no compositing
im_small = Image.fromarray(small, "RGB")
im_small.quantize(60).save(path("png_pal8.png"))
im_small.quantize(12).save(path("png_pal4.png"), bits=4)
q = im_small.quantize(30)
q.info["transparency"] = 3
q.save(path("png_pal_trns.png"), transparency=3)
im_small.convert("L").save(path("png_gray.png"))
im_small.convert("L").convert("1").save(path("png_gray1.png"))
la = Image.merge("LA", [im_small.convert("L"), Image.fromarray(small[..., 0])])
la.save(path("png_la.png"))
g16 = (small[..., 1].astype(np.uint16) * 3)          # 0..765: PIL clips >255
Image.fromarray(g16).save(path("png_gray16.png"))
im_small.convert("L").save(path("png_gray_trns.png"), transparency=77)
im_small.save(path("png_rgb_trns.png"), transparency=tuple(int(v) for v in small[3, 4]))
for f in ["png_gray_trns.png", "png_rgb_trns.png", "png_pal8.png", "png_pal4.png", "png_pal_trns.png", "png_gray.png",
          "png_gray1.png", "png_la.png", "png_gray16.png"]:
    expect(f)
with Image.open(path("png_pal4.png")) as im:
    assert im.mode == "P"
with Image.open(path("png_gray16.png")) as im:
    assert im.mode.startswith("I")


def png_bytes(w, h, color_type, depth, raw, interlace=0):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_rows(arr):  # filter type 0 on every row
    return b"".join(b"\x00" + row.tobytes() for row in arr)


# 16-bit RGB and 16-bit gray+alpha: PIL keeps the high byte.
rgb16 = small.astype(np.uint16) * 257 + rng.integers(0, 256, small.shape).astype(np.uint16)
rgb16 = np.minimum(rgb16, 65535).astype(">u2")
with open(path("png_rgb16.png"), "wb") as f:
    f.write(png_bytes(23, 18, 2, 16, png_rows(rgb16)))
la16 = np.stack([rgb16[..., 0], rgb16[..., 2]], -1).astype(">u2")
with open(path("png_la16.png"), "wb") as f:
    f.write(png_bytes(23, 18, 4, 16, png_rows(la16)))
# Adam7 interlaced RGB (Pillow does not write interlaced PNG).
passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
          (1, 0, 2, 2), (0, 1, 1, 2)]
raw = b""
for x0, y0, dx, dy in passes:
    sub = base[y0::dy, x0::dx]
    if sub.size:
        raw += png_rows(sub)
with open(path("png_interlaced.png"), "wb") as f:
    f.write(png_bytes(64, 48, 2, 8, raw, interlace=1))
for f in ["png_rgb16.png", "png_la16.png"]:
    expect(f)
expect("png_interlaced.png", BASE)

# ---------------------------------------------------------------- BMP
im_base.save(path("bmp24.bmp"))
expect("bmp24.bmp", BASE)
im_small.quantize(50).save(path("bmp8.bmp"))
im_small.convert("L").save(path("bmp_gray8.bmp"))
im_small.convert("1").save(path("bmp1.bmp"))


def bmp_bytes(w, h, bits, rows, palette=b"", compression=0, header=40,
              masks=None, topdown=False):
    """rows: list of h byte strings, top row first, unpadded."""
    stride = ((w * bits + 31) // 32) * 4
    order = rows if topdown else rows[::-1]
    data = b"".join(r + b"\x00" * (stride - len(r)) for r in order)
    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", header, w, -h if topdown else h, 1,
                           bits, compression, len(data), 2835, 2835, 0, 0)
        extra = b""
        if header >= 52 and masks:
            extra = struct.pack("<IIII", *(list(masks) + [0] * (4 - len(masks))))
        info += extra
        info += b"\x00" * (header - len(info))
        if header == 40 and masks:
            info += struct.pack("<III", *masks[:3])
    off = 14 + len(info) + len(palette)
    return (b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off)
            + info + palette + data)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


# 32-bit BGRX, top-down (negative height): same pixels as base.
write("bmp32_topdown.bmp", bmp_bytes(
    64, 48, 32, [np.concatenate([r[:, ::-1], np.full((64, 1), 77, np.uint8)], 1).tobytes()
                 for r in base], topdown=True))
expect("bmp32_topdown.bmp", BASE)
# V5 header, BI_BITFIELDS with an alpha mask (PIL: RGBA, then alpha dropped).
write("bmp32_v5.bmp", bmp_bytes(
    64, 48, 32, [np.concatenate([r[:, ::-1], rng.integers(0, 256, (64, 1), dtype=np.uint8)],
                                1).tobytes() for r in base],
    compression=3, header=124, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)))
expect("bmp32_v5.bmp", BASE)
# 16-bit: 5-6-5 bitfields and the default 5-5-5.
v = rng.integers(0, 65536, (18, 23), dtype=np.uint16)
write("bmp16_565.bmp", bmp_bytes(23, 18, 16, [r.astype("<u2").tobytes() for r in v],
                                 compression=3, masks=(0xF800, 0x7E0, 0x1F)))
write("bmp16_555.bmp", bmp_bytes(23, 18, 16, [(r & 0x7FFF).astype("<u2").tobytes() for r in v]))
# 4-bit palette, odd width (half-byte at row end + padding).
pal16 = rng.integers(0, 256, (16, 3), dtype=np.uint8)
idx = rng.integers(0, 16, (18, 23), dtype=np.uint8)
rows4 = []
for r in idx:
    rr = np.concatenate([r, [0]]) if len(r) % 2 else r
    rows4.append(((rr[0::2] << 4) | rr[1::2]).astype(np.uint8).tobytes())
write("bmp4.bmp", bmp_bytes(23, 18, 4, rows4,
                            palette=b"".join(bytes([b, g, r, 0]) for r, g, b in pal16)))
# OS/2 1.x core header, 8-bit, 3-byte palette entries, only 40 colours used.
pal40 = rng.integers(0, 256, (40, 3), dtype=np.uint8)
idx8 = rng.integers(0, 40, (18, 23), dtype=np.uint8)
pal_core = b"".join(bytes([b, g, r]) for r, g, b in pal40) + b"\x00" * 3 * (256 - 40)
write("bmp_core8.bmp", bmp_bytes(23, 18, 8, [r.tobytes() for r in idx8],
                                 palette=pal_core, header=12))
for f in ["bmp8.bmp", "bmp_gray8.bmp", "bmp1.bmp", "bmp16_565.bmp", "bmp16_555.bmp",
          "bmp4.bmp", "bmp_core8.bmp"]:
    expect(f)

# ---------------------------------------------------------------- PNM
im_base.save(path("ppm_p6.ppm"))
expect("ppm_p6.ppm", BASE)
im_small.convert("L").save(path("pgm_p5.pgm"))
gray = np.array(im_small.convert("L"))


def plain(magic, w, h, maxval, vals, per_line=17):
    txt = [f"{magic}\n# a comment\n{w} {h}\n"]
    if maxval is not None:
        txt.append(f"{maxval}\n")
    flat = [str(int(x)) for x in np.asarray(vals).ravel()]
    for i in range(0, len(flat), per_line):
        txt.append(" ".join(flat[i:i + per_line]) + "\n")
    return "".join(txt).encode()


write("ppm_p3.ppm", plain("P3", 23, 18, 255, small))
write("pgm_p2_max100.pgm", plain("P2", 23, 18, 100, gray * 100 // 255))
write("pbm_p1.pbm", plain("P1", 23, 18, None, (gray > 128).astype(int), per_line=23))
# P4: 1 = black, rows padded to a byte.
write("pbm_p4.pbm", b"P4\n23 18\n" + np.packbits(gray <= 128, axis=1).tobytes())
# Binary with maxval != 255: P6 16-bit, P5 maxval 31 (PIL rescales, rounding
# half to even), P5 16-bit (PIL mode I, then clipped to 255 by convert).
write("ppm_p6_max1000.ppm", b"P6\n23 18\n1000\n"
      + (small.astype(np.uint32) * 1000 // 255).astype(">u2").tobytes())
write("pgm_p5_max31.pgm", b"P5 23 18 31\n" + (gray // 8).astype(np.uint8).tobytes())
write("pgm_p5_16bit.pgm", b"P5\n#c\n23 18\n65535\n" + (gray.astype(np.uint16) * 2).astype(">u2").tobytes())
# maxval 30 has exact .5 ties (1/30*255 = 8.5): Python's round() goes to even.
# Binary samples above maxval are allowed and clip at 255.
ties = (np.arange(23 * 18) % 41).reshape(18, 23).astype(np.uint8)
write("pgm_p5_max30.pgm", b"P5 23 18 30\n" + ties.tobytes())
write("pgm_p2_max30.pgm", plain("P2", 23, 18, 30, np.minimum(ties, 30)))
for f in ["pgm_p5_max30.pgm", "pgm_p2_max30.pgm", "pgm_p5.pgm", "ppm_p3.ppm", "pgm_p2_max100.pgm", "pbm_p1.pbm", "pbm_p4.pbm",
          "ppm_p6_max1000.ppm", "pgm_p5_max31.pgm", "pgm_p5_16bit.pgm"]:
    expect(f)

# ---------------------------------------------------------------- resize
for w, h in [(23, 17), (97, 71), (64, 31), (41, 48), (7, 5), (1, 1)]:
    for name, rs in [("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR)]:
        save_npy(f"resize_{name}_{w}x{h}.npy", np.array(im_base.resize((w, h), rs)))

# 2-D BILINEAR on shapes where the order of the two passes matters: Pillow
# 13 resizes vertically first when the height shrinks by more than twice
# the pixels the width loses (tall photos at a square target size), older
# Pillows horizontally first. (sw, sh, dw, dh) from a random image each; the
# source pixels and the outputs concatenated.
shapes2d = [(20, 50, 33, 33), (32, 34, 33, 33), (149, 254, 45, 45), (48, 141, 45, 45), (100, 200, 75, 75),
            (14, 92, 1, 51), (79, 90, 57, 45), (79, 90, 57, 46), (100, 200, 50, 100), (100, 200, 50, 99),
            (64, 48, 23, 17), (90, 60, 30, 40), (30, 120, 60, 60), (60, 40, 90, 90)]
src2d, out2d = [], []
for k, (sw, sh, dw, dh) in enumerate(shapes2d):
    a = np.random.default_rng(100 + k).integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    src2d.append(a.reshape(-1))
    out2d.append(np.array(Image.fromarray(a).resize((dw, dh), Image.BILINEAR)).reshape(-1))
save_npy("shapes_2d.npy", np.array(shapes2d, dtype=np.int32))
save_npy("bilinear_2d_src.npy", np.concatenate(src2d))
save_npy("bilinear_2d.npy", np.concatenate(out2d))

# 1-D tables: source indices picked by NEAREST (ties decided by PIL's
# accumulated double), and BILINEAR on a random row, for many width pairs.
ins = [1, 2, 3, 5, 7, 10, 17, 31, 48, 64, 99, 100, 128, 150, 200, 224, 255, 256]
outs = [1, 2, 3, 4, 7, 16, 23, 32, 48, 64, 100, 112, 150, 224, 256, 300]
pairs, near, bil = [], [], []
row = rng.integers(0, 256, (1, 256, 3), dtype=np.uint8)
row[0, ::7] = 255
row[0, 3::11] = 0
for i in ins:
    ramp = Image.fromarray(np.arange(i, dtype=np.uint8)[None, :], "L")
    src = Image.fromarray(row[:, :i], "RGB")
    for o in outs:
        pairs.append((i, o))
        near.append(np.array(ramp.resize((o, 1), Image.NEAREST))[0])
        bil.append(np.array(src.resize((o, 1), Image.BILINEAR))[0])
save_npy("pairs_1d.npy", np.array(pairs, dtype=np.int32))
save_npy("nearest_1d.npy", np.concatenate(near).astype(np.uint8))
save_npy("bilinear_src.npy", row[0])
save_npy("bilinear_1d.npy", np.concatenate(bil).astype(np.uint8))

# ---------------------------------------------------------------- preprocessing
src = base[10:22, 20:36].copy()              # 12 x 16 x 3
src[0, 0] = (0, 0, 0)
src[0, 1] = (255, 255, 255)
save_npy("prep_src.npy", src)
x = src.astype(np.float32)
# ImageDataGenerator(rescale=1./255): x *= rescale, in float32.
resc = x.copy()
resc *= 1.0 / 255
save_npy("prep_rescale.npy", resc.astype(np.float32))
try:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from keras.applications import imagenet_utils, vgg16
    caffe = vgg16.preprocess_input(x.copy())
    torch = imagenet_utils.preprocess_input(x.copy(), mode="torch")
except ImportError:  # the same formulas Keras applies to numpy arrays
    caffe = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    torch = (x / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) \
        / np.array([0.229, 0.224, 0.225], np.float32)
save_npy("prep_caffe.npy", np.asarray(caffe, np.float32))
save_npy("prep_torch.npy", np.asarray(torch, np.float32))

total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")
