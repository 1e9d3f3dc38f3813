#!/usr/bin/env python3
"""Accuracy of the frozen base's convolution methods on real photos.

Block5_pool features of real photos with real ImageNet weights, computed by
our base_forward_cpu under each VGGFT_WINOGRAD setting (scripts/bench_base.c
`features` mode: 0 direct, 2, 3, 4 F(2x2), F(3x3), F(4x4) everywhere,
unset: the per-layer choice of forward.c) and by Keras 3 (KERAS_BACKEND: jax by default; the figures in docs/DEVELOPMENT.md are tensorflow's), as
max |diff| / max |feature| per image: the largest over the images and the
mean.

  python3 scripts/winograd_accuracy.py BENCH_BASE WEIGHTS.h5 SIZE N IMAGE...

BENCH_BASE: scripts/bench_base.c built (see scripts/bench.sh's link_tool).
PLANS="0222... ..." in the environment adds VGGFT_WINOGRAD_PLAN settings.
Images are loaded as the seeds' flow_from_directory does (PIL, RGB,
nearest resize to SIZE x SIZE, caffe preprocess_input). Not a test: it
needs the photos, the weights and Keras.
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def preprocess(path, size):
    img = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST)
    x = np.asarray(img, np.float32)[..., ::-1]  # RGB -> BGR, minus the ImageNet mean (Keras caffe mode)
    return (x - np.array([103.939, 116.779, 123.68], np.float32)).astype(np.float32)


def main():
    bench, weights, size, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    files = sys.argv[5:]
    files = files[:: max(1, len(files) // n)][:n]
    x = np.stack([preprocess(f, size) for f in files])
    tmp = tempfile.mkdtemp()
    x.tofile(os.path.join(tmp, "in.f32"))
    import keras
    m = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    m.load_weights(weights)
    keras_f = np.asarray(m.predict(x, batch_size=8, verbose=0), np.float32).reshape(len(files), -1)
    feats = {}
    settings = [("direct", "0"), ("F2 all", "2"), ("F3 all", "3"), ("F4 all", "4"), ("default", None)]
    for plan in os.environ.get("PLANS", "").split():
        settings.append(("plan " + plan, "plan:" + plan))
    for name, v in settings:
        env = dict(os.environ)
        env.pop("VGGFT_WINOGRAD", None)
        env.pop("VGGFT_WINOGRAD_PLAN", None)
        if v and v.startswith("plan:"):
            env["VGGFT_WINOGRAD_PLAN"] = v[5:]
        elif v:
            env["VGGFT_WINOGRAD"] = v
        out = os.path.join(tmp, "out.f32")
        subprocess.run([bench, "features", str(size), os.path.join(tmp, "in.f32"), out, weights], env=env, check=True)
        feats[name] = np.fromfile(out, np.float32).reshape(len(files), -1)
    print(f"{len(files)} photos at {size}x{size}, block5_pool, max |diff| / max |feature| per image (max, mean):")
    for name, f in feats.items():
        big = np.abs(keras_f).max(1)
        vk = np.abs(f - keras_f).max(1) / big
        vd = np.abs(f - feats["direct"]).max(1) / big
        print(f"  {name:22s} vs Keras: {vk.max():.2e} {vk.mean():.2e}   vs direct: {vd.max():.2e} {vd.mean():.2e}")


if __name__ == "__main__":
    main()
