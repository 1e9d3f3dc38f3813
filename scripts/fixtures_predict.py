#!/usr/bin/env python3
"""Fixtures for tests/test_predict.c: a small whole model written by Keras,
a few images, and what Keras's model.predict gives on them.

    KERAS_BACKEND=jax python3 scripts/fixtures_predict.py tests/fixtures/predict

The model is the seeds' Sequential in the layout `finetune` writes, cut early
so that the file stays small (420 KB):

    Sequential([keras.Model(vgg.input, vgg.get_layer("block1_pool").output,
                            name="vgg16"),            # vgg = VGG16(32x32, no top)
                Flatten(), Dense(4, relu), Dropout(0.5), Dense(3, softmax)])

with Keras's own random initialisation (seeded), the last kernel scaled so
that the logits span a few units and its bias centring them over the five
images (probabilities neither 0/1 nor all equal; the top class varies).
Its weights are written by Keras itself (legacy_h5_format's
save_weights_to_hdf5_group, what Keras 2's model.save_weights(".h5") wrote),
and our root attributes vggft_* are added with h5py, as model_save writes
them: contents "full", input 32x32, block1_pool, caffe preprocessing,
bilinear interpolation, classes ant, bee, wasp.

Images (PNG, made here; sizes around and below 32 so that both shrinking and
enlarging resizes run; one grayscale, one RGBA):
  img0.png 48x40 RGB, img1.png 32x32 RGB, img2.png 20x28 RGB,
  img3.png 64x33 L (gray), img4.png 45x37 RGBA
Keras's pipeline on each: load_img(target_size=(32, 32),
interpolation="bilinear") -> img_to_array -> vgg16.preprocess_input, then
model.predict on the batch.

Files:
  model.h5     the model (Keras-written weights + vggft_* attributes)
  img*.png     the images
  probs.npy    (5, 3) float32: model.predict, rows in img0..img4 order
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402
from PIL import Image  # noqa: E402

H = W = 32
CLASSES = ["ant", "bee", "wasp"]
SIZES = [(48, 40, "RGB"), (32, 32, "RGB"), (20, 28, "RGB"), (64, 33, "L"), (45, 37, "RGBA")]  # (w, h, mode)


def make_images(outdir):
    rng = np.random.default_rng(20241107)
    paths = []
    for i, (w, h, mode) in enumerate(SIZES):
        # Smooth gradients plus noise and a bright block: resizing matters.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // (w + h)], -1)
        img = np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        img[h // 4:h // 2, w // 3:w // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        pil = Image.fromarray(img, "RGB")
        if mode == "L":
            pil = pil.convert("L")
        elif mode == "RGBA":
            a = rng.integers(0, 256, (h, w), dtype=np.uint8)
            pil = Image.fromarray(np.dstack([img, a]), "RGBA")
        p = os.path.join(outdir, f"img{i}.png")
        pil.save(p)
        paths.append(p)
    return paths


def build():
    keras.utils.set_random_seed(11)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(H, W, 3))
    base = keras.Model(vgg.input, vgg.get_layer("block1_pool").output, name="vgg16")
    model = keras.Sequential([
        keras.Input((H, W, 3)),
        base,
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(4, activation="relu", name="dense"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(len(CLASSES), activation="softmax", name="dense_1"),
    ])
    return model


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    paths = make_images(outdir)
    x = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(H, W), interpolation="bilinear"))
                  for p in paths])
    x = keras.applications.vgg16.preprocess_input(x)

    model = build()
    # Logits of a few units: scale the last kernel by the hidden layer's reach.
    hidden = keras.Model(model.inputs, model.get_layer("dense").output).predict(x, verbose=0)
    k, b = model.get_layer("dense_1").get_weights()
    reach = np.abs(hidden @ k).max()
    if reach > 0:
        k = (k * (3.0 / reach)).astype(np.float32)
        # Centred logits: each class wins somewhere, so the top-k order varies.
        b = (-(hidden @ k).mean(0)).astype(np.float32)
        model.get_layer("dense_1").set_weights([k, b])
    probs = np.asarray(model.predict(x, verbose=0), dtype="<f4")
    np.save(os.path.join(outdir, "probs.npy"), probs)

    path = os.path.join(outdir, "model.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
        attrs = {
            "vggft_format": "1", "vggft_version": "keras " + keras.__version__, "vggft_contents": "full",
            "vggft_model": "vgg16", "vggft_input_size": f"{W}x{H}", "vggft_layer": "block1_pool",
            "vggft_preprocess": "caffe", "vggft_interpolation": "bilinear", "vggft_classes": str(len(CLASSES)),
            "vggft_class_mode": "categorical", "vggft_class_names": "\n".join(CLASSES), "vggft_hidden": "4",
            "vggft_dropout": "0.5", "vggft_unfreeze": "", "vggft_weights": "",
            "vggft_training": "written by scripts/fixtures_predict.py",
        }
        for key, v in attrs.items():
            f.attrs[key] = v
    print("probs\n", probs, "\nargmax", probs.argmax(1), "\nmodel.h5", os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/predict")
