#!/usr/bin/env python3
"""Fixtures for tests/test_walk.c: fine-tuning steps of VGG16's block5 and
the head, computed by Keras 3 (jax backend) train_on_batch.

    KERAS_BACKEND=jax python3 scripts/fixtures_finetune.py tests/fixtures/finetune

The model is the seeds' fine-tuning setup at 32x32, without dropout so that
nothing is random:

    VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    -> Flatten -> Dense(8, relu) -> Dense(1, sigmoid)

with block1..block4 frozen (layer.trainable = False) and block5 + the head
trainable (--unfreeze block5_conv1), loss binary_crossentropy, two
train_on_batch steps on one batch of 4 inputs, once with SGD(0.01,
momentum 0.9) and once with Adam(1e-3).

Weights are not stored (VGG16 at 32x32 holds 14.7M parameters, block5 alone
7M = 28 MB). Both sides make them the same way instead: this script is a
numpy port of the C library's model_init_random(m, 1, n_layers, seed=7)
(common/model.c, common/layers.c, common/rng.h): Keras's glorot_uniform
drawn from a counter-based splitmix64 hash, per model layer index i
(input_layer = 0, block1_conv1 = 1, ..., block5_pool = 18, flatten = 19,
dense = 20, dense_1 = 21), zero biases. The port uses the same integer and
float64 arithmetic and one float64 -> float32 cast, so the values are equal
bit for bit; init_sample.npy lets the test check that.

Files (little-endian float32 unless noted, 1 MB in all):
  x.npy            (4, 32, 32, 3) the batch, caffe-range values U(-128, 128)
  y.npy            (4,) int32 labels
  block4_pool.npy  (4, 2, 2, 512) Keras's output of the frozen part on x
  init_sample.npy  the initial weights sampled as below (checks the port)
  <opt>_losses.npy (2,) the loss train_on_batch returned at each step
                   (computed before that step's update, as Keras does)
  <opt>_weights.npy the trainable weights after the two steps, sampled:
                   for block5_conv1, block5_conv2, block5_conv3, dense,
                   dense_1 in this order, kernel[::S] then the whole bias,
                   S = 101 for the 3x3x512x512 kernels and 1 for the head's
                   (kernels flattened in Keras layout): 75,729 values per
                   optimizer instead of 7.1M.
<opt> is sgd or adam.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import keras  # noqa: E402
import numpy as np  # noqa: E402

assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"

H = W = 32
N = 4
SEED = 7
STRIDE_BIG = 101
TRAINABLE = ["block5_conv1", "block5_conv2", "block5_conv3", "dense", "dense_1"]


# --- numpy port of common/rng.h and glorot_uniform (common/layers.c) ---------

def rng_hash(seed, counter):
    """splitmix64 finaliser over a Weyl sequence keyed by the seed (uint64)."""
    u = np.uint64
    with np.errstate(over="ignore"):
        c = np.asarray(counter, dtype=u)
        z = u(seed) * u(0x9E3779B97F4A7C15) + c * u(0xD1B54A32D192ED03) + u(0x632BE59BD9B4E019)
        z = (z ^ (z >> u(30))) * u(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u(27))) * u(0x94D049BB133111EB)
        return z ^ (z >> u(31))


def glorot_uniform(shape, fan_in, fan_out, seed):
    n = int(np.prod(shape))
    # rng_uniform: 24 random bits as a float32 in [0, 1) (exact).
    u = (rng_hash(seed, np.arange(n, dtype=np.uint64)) >> np.uint64(40)).astype(np.float64) / 16777216.0
    limit = np.sqrt(6.0 / (float(fan_in) + float(fan_out)))
    return ((2.0 * u - 1.0) * limit).astype(np.float32).reshape(shape)


def init_like_c(layers):
    """model_init_random(m, 1, n_layers, SEED) on the Keras layers, listed
    in the C model's layer order."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        k, b = layer.get_weights()
        fan_in, fan_out = (9 * k.shape[2], 9 * k.shape[3]) if k.ndim == 4 else k.shape
        layer.set_weights([glorot_uniform(k.shape, fan_in, fan_out, int(rng_hash(SEED, i))),
                           np.zeros(b.shape, np.float32)])


def sample(model):
    out = []
    for name in TRAINABLE:
        k, b = model.get_layer(name).get_weights() if name.startswith("dense") else \
            model.layers[0].get_layer(name).get_weights()
        stride = STRIDE_BIG if k.size > 100000 else 1
        out += [k.ravel()[::stride], b.ravel()]
    return np.concatenate(out).astype("<f4")


def build():
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(H, W, 3))
    model = keras.Sequential([
        keras.Input((H, W, 3)),
        base,
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense"),
        keras.layers.Dense(1, activation="sigmoid", name="dense_1"),
    ])
    init_like_c(list(base.layers) + list(model.layers[1:]))
    for layer in base.layers:
        if layer.name.split("_")[0] in ("block1", "block2", "block3", "block4"):
            layer.trainable = False
    return model, base


def main(outdir):
    os.makedirs(outdir, exist_ok=True)

    def save(name, a):
        np.save(os.path.join(outdir, name + ".npy"), np.ascontiguousarray(a))

    rng = np.random.default_rng(20240917)
    x = rng.uniform(-128, 128, size=(N, H, W, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int32)
    save("x", x.astype("<f4"))
    save("y", y.astype("<i4"))

    model, base = build()
    save("init_sample", sample(model))
    cut4 = keras.Model(base.input, base.get_layer("block4_pool").output)
    save("block4_pool", np.asarray(cut4.predict(x, verbose=0), dtype="<f4"))
    n_trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert n_trainable == 3 * (9 * 512 * 512 + 512) + 512 * 8 + 8 + 8 + 1, n_trainable

    for name, make in [("sgd", lambda: keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)),
                       ("adam", lambda: keras.optimizers.Adam(learning_rate=1e-3))]:
        model, base = build()
        frozen_before = [w.copy() for layer in base.layers if not layer.trainable for w in layer.get_weights()]
        # The seeds compile with loss='binary_crossentropy' on a sigmoid output.
        model.compile(optimizer=make(), loss="binary_crossentropy")
        losses = [float(model.train_on_batch(x, y.astype(np.float32).reshape(-1, 1))) for _ in range(2)]
        frozen_after = [w for layer in base.layers if not layer.trainable for w in layer.get_weights()]
        assert all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after)), "a frozen layer changed"
        save(f"{name}_losses", np.array(losses, dtype="<f4"))
        w = sample(model)
        save(f"{name}_weights", w)
        d = w.astype(np.float64) - np.load(os.path.join(outdir, "init_sample.npy")).astype(np.float64)
        print(name, "losses", losses, "sampled weights", w.size, "max |update|", np.abs(d).max())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/finetune")
