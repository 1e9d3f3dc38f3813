#!/usr/bin/env python3
"""Fixtures for tests/test_augment.c: Keras's ImageDataGenerator.apply_transform
on small images with fixed transform parameters.

    KERAS_BACKEND=jax python3 scripts/fixtures_augment.py tests/fixtures/augment

For each test image NAME (H x W x 3, integer values 0..255 stored as float32,
as img_to_array gives them):
  NAME_in.npy      float32 H,W,3    a gradient with a disc, a bar and a checker
                                    patch (edges in every direction, so a wrong
                                    axis, sign or centre shows)
  NAME_params.npy  float32 N,7      theta, tx, ty, shear, zx, zy, flip per case
                                    (Keras's transform_parameters: degrees, tx =
                                    row shift, ty = column shift in pixels)
  NAME_out.npy     float32 N,H,W,3  ImageDataGenerator(fill_mode='nearest')
                                    .apply_transform(in, params) for each case
The parameters are rounded to float32 before Keras sees them, so the C test
feeds exactly the values Keras used. NAME is 37x29 (rows != cols, so the
row/column swap Keras does is checked) and 32x32; the 32x32 cases are draws of
Keras's own get_random_transform with the seeds' generator settings.

Keras 3's legacy preprocessing (keras.src.legacy.preprocessing.image) is the
same code as keras_preprocessing / tf.keras's ImageDataGenerator except for
transform_matrix_offset_center's centre (size / 2 - 0.5 since Keras 3; older
versions used + 0.5). Needs numpy, scipy, keras 3 (any backend).
"""
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/augment"
os.makedirs(OUT, exist_ok=True)


def test_image(h, w, seed):
    """Gradient + disc + bar + checker patch, integer values in 0..255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    img[..., 0] = 255 * x / (w - 1)
    img[..., 1] = 255 * y / (h - 1)
    img[..., 2] = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 5.0)
    cy, cx, r = 0.35 * h, 0.6 * w, 0.2 * min(h, w)
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    img[disc] = [250, 30, 40]
    img[int(0.7 * h):int(0.7 * h) + 3, 2:w - 5] = [20, 20, 230]
    cb = ((y // 2 + x // 2) % 2 == 0) & (y < 0.3 * h) & (x < 0.3 * w)
    img[cb] = [255, 255, 255]
    img += rng.integers(-6, 7, size=img.shape)  # a little texture
    return np.clip(np.round(img), 0, 255).astype(np.float32)


def params_dict(row):
    theta, tx, ty, shear, zx, zy, flip = (float(v) for v in row)
    return {"theta": theta, "tx": tx, "ty": ty, "shear": shear,
            "zx": zx, "zy": zy, "flip_horizontal": bool(flip)}


def run(name, img, rows):
    gen = ImageDataGenerator(fill_mode="nearest")
    params = np.array(rows, dtype=np.float32)
    outs = []
    for row in params:
        out = gen.apply_transform(img.copy(), params_dict(row))
        assert out.dtype == np.float32 and out.shape == img.shape
        outs.append(out)
    np.save(os.path.join(OUT, name + "_in.npy"), img)
    np.save(os.path.join(OUT, name + "_params.npy"), params)
    np.save(os.path.join(OUT, name + "_out.npy"), np.stack(outs))


# 37 rows x 29 columns: one case per transform, then combinations.
#        theta   tx     ty    shear  zx    zy    flip
cases = [
    [0.0,    0.0,   0.0,  0.0,   1.0,  1.0,  0],  # 0 identity
    [23.7,   0.0,   0.0,  0.0,   1.0,  1.0,  0],  # 1 rotation
    [0.0,    3.4,  -5.7,  0.0,   1.0,  1.0,  0],  # 2 shift, both axes
    [0.0,    0.0,   0.0,  17.3,  1.0,  1.0,  0],  # 3 shear
    [0.0,    0.0,   0.0,  0.0,   0.83, 1.17, 0],  # 4 zoom, zx != zy
    [-28.1, -4.2,   2.9,  8.5,   1.12, 0.91, 0],  # 5 all combined
    [0.0,    0.0,   0.0,  0.0,   1.0,  1.0,  1],  # 6 flip alone
    [-28.1, -4.2,   2.9,  8.5,   1.12, 0.91, 1],  # 7 combined + flip
    [0.0,   20.0, -25.0,  0.0,   1.0,  1.0,  0],  # 8 large shift: mostly nearest fill
    [90.0,   0.0,   0.0,  0.0,   1.0,  1.0,  0],  # 9 quarter turn of a non-square image
    [0.0,    2.0,  -3.0,  0.0,   1.0,  1.0,  0],  # 10 integer shift: pure copies + edge
]
run("r37x29", test_image(37, 29, 1), cases)

# 32 x 32: six draws of the seeds' generator, as Keras draws them.
seeds_gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2,
                               height_shift_range=0.2, shear_range=0.2,
                               zoom_range=0.2, horizontal_flip=True,
                               fill_mode="nearest")
draws = []
for s in range(6):
    p = seeds_gen.get_random_transform((32, 32, 3), seed=100 + s)
    draws.append([p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"],
                  float(p["flip_horizontal"])])
run("r32x32", test_image(32, 32, 2), draws)

total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
print(f"wrote {OUT}: {len(os.listdir(OUT))} files, {total} bytes")
