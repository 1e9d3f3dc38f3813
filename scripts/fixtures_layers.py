#!/usr/bin/env python3
"""Fixtures for tests/test_layers.c and tests/test_optim.c.

    python3 scripts/fixtures_layers.py tests/fixtures/layers

Every value comes from Keras 3 (jax backend) layers, losses and optimizers;
gradients from jax.grad through those same Keras ops. The conv, pool and
dense results are cross-checked here against plain numpy implementations
(float64) so a Keras quirk cannot slip into the fixtures unnoticed.
Writes little-endian float32 / int32 .npy files, a few KB in all.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/layers"
rng = np.random.default_rng(20240611)


def save(name, a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a.astype("<f4")
    elif a.dtype.kind in "iu" and a.dtype != np.uint8:
        a = a.astype("<i4")
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(a))


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def check(name, got, want, tol):
    err = np.max(np.abs(np.asarray(got, np.float64) - want) / (np.abs(want) + 1))
    assert err < tol, f"{name}: keras vs numpy differ by {err}"


# --- numpy references (float64) ---------------------------------------------

def np_conv_same(x, k, b):
    n, h, w, c = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((n, h, w, k.shape[3])) + b
    for dy in range(3):
        for dx in range(3):
            y += xp[:, dy:dy + h, dx:dx + w, :] @ k[dy, dx].astype(np.float64)
    return y


def np_conv_grads(x, k, g):
    n, h, w, c = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    g = g.astype(np.float64)
    dk = np.zeros(k.shape)
    dxp = np.zeros(xp.shape)
    for dy in range(3):
        for dx in range(3):
            win = xp[:, dy:dy + h, dx:dx + w, :]
            dk[dy, dx] = np.einsum("nhwc,nhwk->ck", win, g)
            dxp[:, dy:dy + h, dx:dx + w, :] += g @ k[dy, dx].T.astype(np.float64)
    return dxp[:, 1:-1, 1:-1, :], dk, g.sum(axis=(0, 1, 2))


# --- conv ---------------------------------------------------------------------

def conv_case(tag, n, h, w, c, k):
    x, ker, b = f32(n, h, w, c), f32(3, 3, c, k, scale=0.3), f32(k, scale=0.5)
    layer = keras.layers.Conv2D(k, 3, padding="same")
    layer.build((None, h, w, c))
    layer.set_weights([ker, b])
    y = np.asarray(layer(x))
    g = f32(n, h, w, k)

    def f(x, ker, b):
        return jnp.sum((keras.ops.conv(x, ker, strides=1, padding="same") + b) * g)

    dx, dk, db = jax.grad(f, argnums=(0, 1, 2))(x, ker, b)
    check(tag + " y", y, np_conv_same(x, ker, b), 1e-5)
    for name, got, want in zip(("dx", "dk", "db"), (dx, dk, db), np_conv_grads(x, ker, g)):
        check(f"{tag} {name}", got, want, 1e-4)
    for name, a in dict(x=x, kernel=ker, bias=b, y=y, dy=g, dx=dx, dkernel=dk, dbias=db).items():
        save(f"{tag}_{name}", a)


# --- max pool -----------------------------------------------------------------

def pool_case(tag, n, h, w, c):
    x = f32(n, h, w, c)
    y = np.asarray(keras.layers.MaxPooling2D(2)(x))
    g = f32(*y.shape)
    dx = jax.grad(lambda x: jnp.sum(keras.ops.max_pool(x, 2, 2, "valid") * g))(x)
    ref = x[:, :h // 2 * 2, :w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    check(tag + " y", y, ref, 1e-7)
    for name, a in dict(x=x, y=y, dy=g, dx=dx).items():
        save(f"{tag}_{name}", a)


# --- dense + relu ----------------------------------------------------------------

def dense_case(tag, n, d, u):
    x, W, b = f32(n, d), f32(d, u, scale=0.4), f32(u, scale=0.5)
    layer = keras.layers.Dense(u)
    layer.build((None, d))
    layer.set_weights([W, b])
    y = np.asarray(layer(x))
    g = f32(n, u)
    dx, dW, db = jax.grad(lambda x, W, b: jnp.sum((keras.ops.matmul(x, W) + b) * g),
                          argnums=(0, 1, 2))(x, W, b)
    check(tag + " y", y, x.astype(np.float64) @ W + b, 1e-5)
    check(tag + " dW", dW, x.T.astype(np.float64) @ g, 1e-5)
    check(tag + " dx", dx, g.astype(np.float64) @ W.T, 1e-5)
    for name, a in dict(x=x, W=W, b=b, y=y, dy=g, dx=dx, dW=dW, db=db).items():
        save(f"{tag}_{name}", a)


# --- activations and losses ---------------------------------------------------------

def losses():
    # Binary: one sigmoid output per sample. Logits include saturated ones
    # (|z| = 20, 40) where Keras's from-probabilities path would clip.
    z = np.array([0.3, -1.2, 2.5, -0.7, 20.0, -40.0, 4.0, 0.0], np.float32)
    t = np.array([1, 0, 0, 1, 1, 1, 0, 1], np.float32)
    w = np.array([1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 3.0, 1.0], np.float32)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    f = lambda z, sw: bce(t[:, None], z[:, None], sample_weight=sw)  # noqa: E731
    save("bce_logits", z)
    save("bce_targets", t)
    save("bce_weights", w)
    save("bce_probs", keras.activations.sigmoid(z))
    save("bce_loss_w", [f(z, w)])
    save("bce_loss", [f(z, None)])
    save("bce_grad_w", jax.grad(f)(z, w))
    save("bce_grad", jax.grad(f)(z, None))
    # Non-saturated case: Keras's probability path (with its 1e-7 clipping)
    # gives the same number as the logits path.
    zs = z[[0, 1, 2, 3, 6, 7]]
    ts, ws = t[[0, 1, 2, 3, 6, 7]], w[[0, 1, 2, 3, 6, 7]]
    save("bce_ns_logits", zs)
    save("bce_ns_targets", ts)
    save("bce_ns_weights", ws)
    save("bce_ns_loss_from_probs", [keras.losses.BinaryCrossentropy()(
        ts[:, None], keras.activations.sigmoid(zs)[:, None], sample_weight=ws)])

    # Categorical: K = 4 classes, one-hot targets, logits in one saturated row.
    zc = f32(6, 4, scale=2.0)
    zc[5] = [30.0, -30.0, 0.0, 5.0]
    y = np.array([0, 3, 1, 2, 2, 1], np.int32)
    onehot = np.eye(4, dtype=np.float32)[y]
    wc = np.array([1.0, 2.0, 0.5, 1.0, 0.0, 1.5], np.float32)
    cce = keras.losses.CategoricalCrossentropy(from_logits=True)
    g = lambda z, sw: cce(onehot, z, sample_weight=sw)  # noqa: E731
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, zc, sample_weight=wc)
    assert abs(float(sparse) - float(g(zc, wc))) < 1e-6
    save("cce_logits", zc)
    save("cce_labels", y)
    save("cce_weights", wc)
    save("cce_probs", keras.activations.softmax(zc))
    save("cce_loss_w", [g(zc, wc)])
    save("cce_loss", [g(zc, None)])
    save("cce_grad_w", jax.grad(g)(zc, wc))
    save("cce_grad", jax.grad(g)(zc, None))
    ns = slice(0, 5)
    save("cce_ns_loss_from_probs", [keras.losses.CategoricalCrossentropy()(
        onehot[ns], keras.activations.softmax(zc[ns]), sample_weight=wc[ns])])

    xr = f32(3, 5)
    save("relu_x", xr)
    save("relu_y", keras.activations.relu(xr))


# --- optimizers ------------------------------------------------------------------

OPTIMIZERS = {
    # name: Keras constructor; the same settings are spelled out in test_optim.c
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.1),
    "sgd_momentum": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(learning_rate=0.01),
    "adam_default": lambda: keras.optimizers.Adam(),
    "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate=0.01),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.5),
}


def optimizers():
    n, steps = 7, 5
    w0 = f32(n)
    grads = f32(steps, n)
    grads[:, 3] = 0.0               # a parameter that never gets a gradient
    grads[2, 5] = 0.0               # one that misses a step
    grads[:, 6] *= 1e-4             # tiny gradients: epsilon matters
    save("optim_w0", w0)
    save("optim_grads", grads)
    for name, make in OPTIMIZERS.items():
        opt = make()
        var = keras.Variable(w0)
        traj = []
        for s in range(steps):
            opt.apply_gradients([(jnp.asarray(grads[s]), var)])
            traj.append(np.asarray(var.value))
        save("optim_traj_" + name, np.stack(traj))


def main():
    os.makedirs(OUT, exist_ok=True)
    conv_case("conv_a", 2, 7, 5, 3, 4)
    conv_case("conv_b", 3, 4, 6, 8, 5)
    conv_case("conv_c", 1, 1, 1, 2, 3)   # a 1x1 image: only the centre tap sees data
    pool_case("pool_a", 2, 7, 5, 3)
    pool_case("pool_b", 1, 4, 6, 2)
    dense_case("dense", 3, 7, 4)
    losses()
    optimizers()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
