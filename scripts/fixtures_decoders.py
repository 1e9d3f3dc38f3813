#!/usr/bin/env python3
"""Fixtures for tests/test_decoders.c: RLE8 / RLE4 BMPs, palette BMPs, PNGs
that lack their IEND chunk or are damaged where Pillow does not look, and what Pillow (the library Keras loads images with) makes
of them.

    python3 scripts/fixtures_decoders.py tests/fixtures/decoders

Pillow cannot write RLE BMPs, so this script writes their bytes itself:
a few hand-made streams for each rule of Pillow's BmpRleDecoder (runs cut
at the row end, absolute runs that wrap, odd absolute runs and their
padding, end of line, delta, end of bitmap, a stream that ends early, a
top-down bitmap, a gray palette) and random streams of the same operations.
The expected result is always what Pillow reads from the file, never what
the script meant to write:

    rle_NN.bmp, png_NN.png, pal_NN.bmp   the inputs
    rle_verdicts.npy, png_verdicts.npy, pal_verdicts.npy
                             uint8 per input: 1 = Pillow loads it, 0 = raises
    rle_NN.npy, png_NN.npy, pal_NN.npy
                             for those Pillow loads: uint8 H,W,3,
                             np.array(Image.open(f).convert('RGB')) (load_img)

Needs Pillow and numpy.
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/decoders"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(20240611)


def path(name):
    return os.path.join(OUT, name)


def pillow_rgb(data):
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))
    except Exception:
        return None


def record(prefix, cases):
    verdicts = []
    for i, data in enumerate(cases):
        ext = "png" if prefix == "png" else "bmp"
        with open(path(f"{prefix}_{i:02d}.{ext}"), "wb") as f:
            f.write(data)
        rgb = pillow_rgb(data)
        verdicts.append(rgb is not None)
        if rgb is not None:
            np.save(path(f"{prefix}_{i:02d}.npy"), rgb)
    np.save(path(f"{prefix}_verdicts.npy"), np.array(verdicts, np.uint8))
    print(f"{prefix}: {len(cases)} files, Pillow loads {sum(verdicts)}")


# ---------------------------------------------------------------- RLE BMP

def bmp_rle(w, h, rle4, stream, palette, topdown=False):
    """BITMAPINFOHEADER BMP with compression RLE8 (1) or RLE4 (2)."""
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if topdown else h, 1, 4 if rle4 else 8,
                       2 if rle4 else 1, len(stream), 2835, 2835, len(palette), 0)
    off = 14 + len(info) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(stream), 0, 0, off) + info + pal + stream


def enc(count, value):      # encoded run
    return bytes([count, value])


def absolute(values, rle4):  # absolute run, padded to a 16-bit boundary
    n = len(values)
    if rle4:
        v = list(values) + [0] * (n % 2)
        body = bytes((v[i] << 4) | v[i + 1] for i in range(0, len(v), 2))
    else:
        body = bytes(values)
    return bytes([0, n]) + body + b"\x00" * (len(body) % 2)


EOL, EOB = b"\x00\x00", b"\x00\x01"


def delta(dx, dy):
    return bytes([0, 2, dx, dy])


pal16 = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(16)]
pal40 = [tuple(int(x) for x in rng.integers(0, 256, 3)) for _ in range(40)]
gray16 = [(i, i, i) for i in range(16)]
cases = []
W, H = 13, 5
for rle4 in (False, True):
    top = 16 if rle4 else 40
    pal = pal16 if rle4 else pal40
    # 0/1: every row full, encoded and absolute runs (odd lengths: padding).
    s = b""
    for y in range(H):
        s += enc(4, 0x12 if rle4 else 3 + y) + absolute([(y + k) % top for k in range(5)], rle4)
        s += enc(4, 0x9A if rle4 else 7) + EOL
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal))
    # 2/3: short rows closed by end of line, a delta, an end of bitmap after
    # the last row.
    s = enc(3, 0x35 if rle4 else 5) + EOL + delta(4, 1) + enc(2, 0x11 if rle4 else 9) + EOL
    s += enc(W, 0x77 if rle4 else 11) + EOL + enc(W, 0x21 if rle4 else 12) + EOL + EOB
    cases.append(bmp_rle(W, H, rle4, s, pal))
    # 4/5: an encoded run longer than the row (cut), then an absolute run
    # that wraps into the next row (and makes that row's encoded runs empty).
    s = enc(W + 7, 0x45 if rle4 else 6) + enc(3, 1) + EOL
    s += absolute([k % top for k in range(W + 4)], rle4) + enc(5, 0x33 if rle4 else 2) + EOL
    for y in range(H - 3):
        s += enc(W, 0x56 if rle4 else 8) + EOL
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal))
    # 6/7: end of bitmap before the last rows (Pillow: not enough image data).
    cases.append(bmp_rle(W, H, rle4, enc(W, 3) + EOL + EOB, pal))
    # 8/9: a stream cut inside an absolute run.
    full = (enc(W, 4) + EOL) * (H - 1) + absolute(list(range(W)), rle4)
    cases.append(bmp_rle(W, H, rle4, full[:-3], pal))
    # 10/11: top-down (negative height).
    s = b"".join(enc(W, (y * 17) % top) + EOL for y in range(H))
    cases.append(bmp_rle(W, H, rle4, s + EOB, pal, topdown=True))
    # 12/13: a gray palette (Pillow: mode L, indices are the gray levels), a
    # delta past the end of the image.
    s = enc(W, 0x5A if rle4 else 10) + EOL + delta(200, 9)
    cases.append(bmp_rle(W, H, rle4, s + EOB, gray16))
    # 14/15: no end of bitmap at all, every pixel set: loads.
    s = b"".join(enc(W, 0x3C if rle4 else 13) + EOL for _ in range(H - 1)) + enc(W, 1)
    cases.append(bmp_rle(W, H, rle4, s, pal))
    # 16/17: a black and white palette (Pillow: mode "1"; indices above 1
    # come out white).
    s = b"".join(enc(3, 0x15 if rle4 else v) + enc(3, 0) + enc(W - 6, 0xF1 if rle4 else 200) + EOL
                 for v in (1, 5, 0, 255, 2)) + EOB
    cases.append(bmp_rle(W, H, rle4, s, [(0, 0, 0), (255, 255, 255)]))


def random_stream(w, h, rle4, top):
    ops = []
    for _ in range(int(rng.integers(h, 4 * h))):
        r = rng.random()
        if r < 0.40:
            ops.append(enc(int(rng.integers(1, w + 4)), int(rng.integers(0, 256 if rle4 else top))))
        elif r < 0.65:
            ops.append(absolute([int(v) for v in rng.integers(0, top, int(rng.integers(3, w + 6)))], rle4))
        elif r < 0.85:
            ops.append(EOL)
        elif r < 0.95:
            ops.append(delta(int(rng.integers(0, w)), int(rng.integers(0, 2))))
        else:
            ops.append(EOB)
    s = b"".join(ops)
    if rng.random() < 0.15:
        s = s[:int(rng.integers(0, len(s) + 1))]
    return s + (EOB if rng.random() < 0.7 else b"")


for i in range(24):
    rle4 = bool(i % 2)
    w, h = int(rng.integers(1, 19)), int(rng.integers(1, 9))
    pal = pal16 if rle4 else pal40
    cases.append(bmp_rle(w, h, rle4, random_stream(w, h, rle4, len(pal)), pal, topdown=rng.random() < 0.2))
record("rle", cases)

# ---------------------------------------------------------------- PNG without IEND

def chunks(png):
    pos, out = 8, []
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        out.append((png[pos + 4:pos + 8], png[pos:pos + 12 + n]))
        pos += 12 + n
    return out


def text_chunk(key, value):
    d = key + b"\x00" + value
    return struct.pack(">I", len(d)) + b"tEXt" + d + struct.pack(">I", zlib.crc32(b"tEXt" + d))


img = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
buf = io.BytesIO()
Image.fromarray(img).save(buf, "PNG")
png = buf.getvalue()
sig, parts = png[:8], chunks(png)
assert parts[-1][0] == b"IEND"
body = sig + b"".join(c for _, c in parts[:-1])
# Several IDAT chunks: the image data split in three.
idat = b"".join(c[8:-4] for t, c in parts if t == b"IDAT")
split = b"".join(struct.pack(">I", len(p)) + b"IDAT" + p + struct.pack(">I", zlib.crc32(b"IDAT" + p))
                 for p in (idat[:10], idat[10:25], idat[25:]))
multi = sig + b"".join(c for t, c in parts[:-1] if t != b"IDAT") + split
pngs = [
    png,                                        # 00 complete
    body,                                       # 01 no IEND
    body + parts[-1][1][:5],                    # 02 IEND header cut
    body + text_chunk(b"Comment", b"after the image"),  # 03 a tEXt after IDAT, no IEND
    multi,                                      # 04 three IDATs, no IEND
    body[:-4],                                  # 05 last IDAT's CRC missing
    body[:-20],                                 # 06 cut inside the image data
    multi[:len(multi) - len(split) + 12 + 10],  # 07 only the first IDAT
]


def chunk(ctype, data, crc=None):
    c = zlib.crc32(ctype + data) if crc is None else crc
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", c & 0xFFFFFFFF)


# Damage PIL never looks at (IDAT's CRC and later chunks)
# and chunks it drops (unknown ones, critical too), and one it refuses (a
# bad CRC before the image data).
idat_c = [c for t, c in parts if t == b"IDAT"][0]
pre = sig + b"".join(c for t, c in parts if t not in (b"IDAT", b"IEND"))
bad_idat = idat_c[:-4] + bytes(b ^ 0xFF for b in idat_c[-4:])
split_bad = b"".join(chunk(b"IDAT", p, crc=0x12345678 if k == 0 else None)
                     for k, p in enumerate((idat[:10], idat[10:25], idat[25:])))
iend_c = parts[-1][1]
pngs += [
    pre + bad_idat + iend_c,                                  # 08 IDAT's CRC wrong
    pre + idat_c + iend_c[:-4] + b"\x00\x00\x00\x00",          # 09 IEND's CRC wrong
    pre + idat_c + iend_c[:-1],                               # 10 ends inside IEND's CRC
    pre + idat_c + iend_c[:-4],                               # 11 IEND's CRC missing
    pre + idat_c + b"\x00" * 4 + iend_c,                       # 12 junk before IEND
    pre + chunk(b"QXZW", b"critical, unknown") + idat_c + iend_c,  # 13 an unknown critical chunk
    pre + chunk(b"tEXt", b"Comment\x00x", crc=1) + idat_c + iend_c,  # 14 bad CRC before IDAT: PIL refuses
    pre + split_bad + iend_c,                                 # 15 the first of three IDATs with a wrong CRC
    pre + idat_c + chunk(b"ZZZZ", b"after", crc=7) + iend_c,   # 16 a damaged chunk after the image data
    pre + idat_c + chunk(b"tEXt", b"Comment\x00after the image")[:20],  # 17 one cut in its body: PIL refuses
]
record("png", pngs)

# ---------------------------------------------------------------- palette BMP
# Uncompressed 1/4/8-bit BMPs and PIL's palette modes: a palette of grays i
# (black and white for 2 colours) is dropped ("L": the index is the level,
# past the palette too; "1": the rows are read as 1-bit rows even at 4 or 8
# bits), any other is mode "P", whose entries past the palette are black.
# Its own generator, after the others: their bytes do not change.
prng = np.random.default_rng(20261130)


def bmp_plain(w, h, bits, palette, rows, topdown=False):
    """BITMAPINFOHEADER BMP, no compression; rows of indices, top first."""
    stride = ((w * bits + 31) >> 3) & ~3
    packed = []
    for r in rows:
        if bits == 8:
            b = bytes(r)
        elif bits == 4:
            v = list(r) + [0] * (len(r) % 2)
            b = bytes((v[i] << 4) | v[i + 1] for i in range(0, len(v), 2))
        else:
            v = list(r) + [0] * (-len(r) % 8)
            b = bytes(sum(v[i + k] << (7 - k) for k in range(8)) for i in range(0, len(v), 8))
        packed.append(b.ljust(stride, b"\0"))
    data = b"".join(packed if topdown else packed[::-1])
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if topdown else h, 1, bits, 0, len(data), 2835, 2835,
                       len(palette), 0)
    off = 14 + len(info) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + info + pal + data


def idx_rows(w, h, top):
    return [[int(v) for v in prng.integers(0, top, w)] for _ in range(h)]


colour3 = [(10, 20, 30), (200, 40, 60), (70, 250, 90)]
colour5 = [tuple(int(x) for x in prng.integers(0, 256, 3)) for _ in range(5)]
bw = [(0, 0, 0), (255, 255, 255)]
pals = [
    bmp_plain(13, 7, 8, colour3, idx_rows(13, 7, 256)),             # 00 indices past a 3-colour palette: black
    bmp_plain(11, 6, 4, colour5, idx_rows(11, 6, 16)),              # 01 the same at 4 bits
    bmp_plain(13, 5, 8, bw, idx_rows(13, 5, 2)),                    # 02 black and white at 8 bits: mode "1"
    bmp_plain(21, 4, 4, bw, idx_rows(21, 4, 16)),                   # 03 ... at 4 bits
    bmp_plain(9, 5, 8, [(i, i, i) for i in range(3)], idx_rows(9, 5, 256)),  # 04 3 grays: "L", level = index
    bmp_plain(17, 3, 1, [(255, 255, 255), (0, 0, 0)], idx_rows(17, 3, 2)),   # 05 white/black at 1 bit: "P"
    bmp_plain(17, 3, 1, bw, idx_rows(17, 3, 2), topdown=True),      # 06 black/white at 1 bit, top-down
    bmp_plain(10, 4, 8, [(0, 0, 0)], idx_rows(10, 4, 3)),           # 07 one black entry: "1"
    bmp_plain(12, 6, 8, [(i, i, i) for i in range(256)], idx_rows(12, 6, 256)),  # 08 a full gray ramp
    bmp_plain(12, 6, 8, [(3, 3, 3)] + [(i, i, i) for i in range(1, 40)], idx_rows(12, 6, 256)),  # 09 almost a ramp
]
# A gray palette at 1 or 4 bits: PIL reads its rows as bytes (mode "L"),
# failing where a row has fewer bytes than pixels.
pals += [
    bmp_plain(4, 3, 4, [(i, i, i) for i in range(16)], idx_rows(4, 3, 16)),  # 11 4 wide: the rows' bytes
    bmp_plain(3, 2, 1, [(i, i, i) for i in range(3)], idx_rows(3, 2, 2)),    # 12 1 bit, 3 grays, 3 wide
    bmp_plain(8, 2, 4, [(i, i, i) for i in range(16)], idx_rows(8, 2, 16)),  # 13 8 wide: PIL refuses
]
# A palette of more than 256 entries (PIL refuses it).
big = bmp_plain(5, 2, 8, colour3 * 100, idx_rows(5, 2, 3))
pals.append(big)
# RLE8 with indices past a colour palette (black, as uncompressed).
pals.append(bmp_rle(13, 4, False, enc(5, 1) + enc(8, 100) + EOL + absolute([0, 2, 7, 250, 1], False) + enc(8, 3) +
                    EOL + enc(13, 200) + EOL + enc(13, 2) + EOB, colour3))
record("pal", pals)
