#!/usr/bin/env python3
"""Fixtures for the whole VGG16 base + head forward pass, computed by Keras.

Weights are not stored: they follow a formula that the C test evaluates the
same way (integer arithmetic, then one float64 -> float32 cast), so the
fixture stays a few KB while the network is the real 13-conv VGG16.

    h = (i * 7919 + L * 104729) % 2003
    h = (h * h * 31 + i) % 2003               (conv layers only: see below)
    w[i] = float32((h / 2003 - 0.5) * 2 * limit)
    limit = sqrt(6 / fan_in)     (He-uniform scale: activations keep their size
                                  through 13 ReLU layers, so the features are not
                                  just the biases)

The quadratic step on the conv kernels breaks the linear pattern of the first
line, under which every output channel's filter is a shifted copy of its
neighbour's: with it alone the sums cancelled, the largest block5_pool
feature was 0.02 (the biases' size), and float32 forward passes differed from
float64 by 3e-5 of it, where the ImageNet weights on real photos give 1e-6.
Scrambled, the features are O(10) and float32 lands at 3e-6, as on real
photos, so the test's bound measures our arithmetic, not the fixture's
cancellation. (The Dense layers keep the linear formula.)
    b[j] = float32(0.001 * ((j * 31 + L) % 7 - 3))
    x[i] = float32((i * 37 + n * 11) % 256 - 128)   for image n, H,W,C order

L counts the layers with weights from 1 (block1_conv1) upward, the head's
Dense layers included. Writes vgg_<H>x<W>_features.npy and _probs.npy, and
headtrain_*.npy: three train_on_batch steps of the head (see below). into the output folder.
Run (any Keras 3 backend): KERAS_BACKEND=tensorflow python3 scripts/fixtures_vgg.py tests/fixtures/vgg
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np  # noqa: E402
import keras  # noqa: E402


def formula_kernel(shape, L, fan_in, fan_out, scramble=False):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    limit = np.sqrt(6.0 / fan_in)
    h = (i * 7919 + L * 104729) % 2003
    if scramble:
        h = (h * h * 31 + i) % 2003
    v = h.astype(np.float64) / 2003.0 - 0.5
    return (v * 2.0 * limit).astype(np.float32).reshape(shape)


def formula_bias(n, L):
    j = np.arange(n, dtype=np.int64)
    return (0.001 * ((j * 31 + L) % 7 - 3).astype(np.float64)).astype(np.float32)


def formula_input(N, H, W):
    out = np.empty((N, H, W, 3), np.float32)
    i = np.arange(H * W * 3, dtype=np.int64)
    for n in range(N):
        out[n] = ((i * 37 + n * 11) % 256 - 128).astype(np.float32).reshape(H, W, 3)
    return out


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    for (H, W, hidden, classes) in [(32, 32, 8, 2), (64, 48, 8, 3)]:
        base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(H, W, 3))
        L = 0
        for layer in base.layers:
            if isinstance(layer, keras.layers.Conv2D):
                L += 1
                k, b = layer.get_weights()
                fan_in, fan_out = 9 * k.shape[2], 9 * k.shape[3]
                layer.set_weights([formula_kernel(k.shape, L, fan_in, fan_out, scramble=True),
                                   formula_bias(b.shape[0], L)])
        binary = classes == 2
        head = keras.Sequential([
            keras.Input(base.output_shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1 if binary else classes, activation="sigmoid" if binary else "softmax"),
        ])
        for layer in head.layers:
            if isinstance(layer, keras.layers.Dense):
                L += 1
                k, b = layer.get_weights()
                layer.set_weights([formula_kernel(k.shape, L, k.shape[0], k.shape[1]), formula_bias(b.shape[0], L)])
        x = formula_input(2, H, W)
        feats = base.predict(x, verbose=0)
        probs = head.predict(feats, verbose=0)
        tag = f"vgg_{H}x{W}"
        np.save(os.path.join(outdir, tag + "_features.npy"), feats.astype(np.float32))
        np.save(os.path.join(outdir, tag + "_probs.npy"), probs.astype(np.float32))
        print(tag, "features", feats.shape, "mean |f|", float(np.abs(feats).mean()), "probs", probs.ravel())


def head_training_fixtures(outdir):
    """Three training steps of the seeds' head in Keras (train_on_batch with
    class weights, dropout 0 so no randomness), from formula weights: the
    loss Keras reports at each step and the weights after the last one."""
    D, H = 512, 8
    rng = np.random.default_rng(3)
    feats = rng.uniform(0, 2, size=(12, D)).astype(np.float32) * (rng.uniform(size=(12, D)) < 0.4)
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1], dtype=np.int32)
    np.save(os.path.join(outdir, "headtrain_features.npy"), feats.astype(np.float32))
    np.save(os.path.join(outdir, "headtrain_labels.npy"), labels)
    for name, opt in [("sgd", lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)),
                      ("adam", lambda: keras.optimizers.Adam(learning_rate=0.01))]:
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(H, activation="relu"),
            keras.layers.Dropout(0.0),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        L = 0
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                L += 1
                k, b = layer.get_weights()
                layer.set_weights([formula_kernel(k.shape, L, k.shape[0], k.shape[1]),
                                   (formula_bias(b.shape[0], L) * 50).astype(np.float32)])
        # from_logits would not be what users run: the seeds compile with
        # loss='binary_crossentropy' on a sigmoid output, as here.
        model.compile(optimizer=opt(), loss="binary_crossentropy")
        losses = []
        for step in range(3):
            sl = slice(4 * step, 4 * step + 4)
            losses.append(model.train_on_batch(feats[sl], labels[sl].astype(np.float32).reshape(-1, 1),
                                               class_weight={0: 0.75, 1: 1.5}))
        np.save(os.path.join(outdir, f"headtrain_{name}_losses.npy"), np.array(losses, dtype=np.float32))
        w = np.concatenate([v.ravel() for v in model.get_weights()]).astype(np.float32)
        np.save(os.path.join(outdir, f"headtrain_{name}_weights.npy"), w)
        print(name, "losses", losses)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/vgg"
    main(out)
    head_training_fixtures(out)
