#!/usr/bin/env python3
"""Checks that Keras 3 loads a weights file written by h5_write_layers.

Builds the equivalent Keras model, calls model.load_weights(path) (Keras's
own legacy-h5 loader, which assigns weights by position and rejects shape
mismatches), then compares every loaded tensor with the file's datasets read
directly with h5py. Not run by the tests (they need no Python); a manual and
CI cross-check.

The architecture comes from the file itself unless given:
  layers with a 4-D kernel     -> Conv2D(Cout, (kH, kW), padding="same")
  layers with a 2-D kernel     -> Dense(units)
  weightless layers, by name   -> *pool* MaxPooling2D(2), *flatten* Flatten,
                                  *dropout* Dropout(0.5), input* skipped
or with --layers "conv:NAME:FILTERS pool:NAME flatten:NAME dense:NAME:UNITS
dropout:NAME ...", or --vgg vgg16|vgg19 (keras.applications conv base,
weights=None) followed by the file's remaining layers.

A file whose layer_names holds a nested model (a group whose weight_names
belong to several inner layers: "vgg16" with "block1_conv1/kernel:0", ...,
the layout of the seeds' model and of our full model files) is checked
against the seeds' model
  Sequential([VGG16(include_top=False, weights=None, input_shape=...),
              Flatten(), Dense(...), Dropout(...), Dense(...)])
with VGG19 when the group holds blockN_conv4 layers (or with --vgg), the base
cut at the pool after its last block when the file stops before block5 (our
files with --layer block4_pool), and the head from the file's other layers.
Every inner layer's tensors are then compared too.

  KERAS_BACKEND=jax python3 scripts/check_keras_load.py model.h5 --input 150,150,3
  python3 scripts/check_keras_load.py model.h5 --input 150,150,3 --vgg vgg16

Exit status 0 when Keras loaded the file and every tensor is identical.
"""
import argparse
import os
import shutil
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def attr_list(group, name):
    """A string-list attribute, possibly split as name0, name1, ..."""
    if name in group.attrs:
        vals = group.attrs[name]
    else:
        vals, k = [], 0
        while f"{name}{k}" in group.attrs:
            vals.extend(group.attrs[f"{name}{k}"])
            k += 1
    return [v.decode("utf8") if hasattr(v, "decode") else str(v) for v in vals]


def owner(weight_name):
    """The layer a weight belongs to: "block1_conv1" in "block1_conv1/kernel:0"."""
    parts = weight_name.split("/")
    return parts[-2] if len(parts) >= 2 else None


def file_layers(path):
    """[(name, [arrays], inner)] in layer_names order; inner is None, or for a
    nested model [(inner layer name, [arrays])] in weight_names order (the
    same rule as common/weights_h5.c: weights of two or more inner layers,
    none named like the group)."""
    with h5py.File(path, "r") as f:
        root = f if ("layer_names" in f.attrs or "layer_names0" in f.attrs) else f["model_weights"]
        out = []
        for name in attr_list(root, "layer_names"):
            g = root[name]
            names = attr_list(g, "weight_names")
            ws = [np.asarray(g[w]) for w in names]
            owners = [owner(w) for w in names]
            inner = None
            if len(set(owners)) >= 2 and None not in owners and name not in owners:
                inner = []
                for o in dict.fromkeys(owners):
                    inner.append((o, [w for w, ow in zip(ws, owners) if ow == o]))
            out.append((name, ws, inner))
        return out


def infer_spec(layers):
    spec = []
    for name, ws, _ in layers:
        low = name.lower()
        if ws and ws[0].ndim == 4:
            spec.append(("conv", name, ws[0].shape[3], ws[0].shape[:2]))
        elif ws and ws[0].ndim == 2:
            spec.append(("dense", name, ws[0].shape[1], None))
        elif ws:
            sys.exit(f"{name}: cannot infer a layer from a {ws[0].ndim}-D first tensor; use --layers")
        elif "pool" in low:
            spec.append(("pool", name, None, None))
        elif "flatten" in low:
            spec.append(("flatten", name, None, None))
        elif "dropout" in low:
            spec.append(("dropout", name, None, None))
        elif low.startswith("input"):
            continue
        else:
            sys.exit(f"{name}: weightless layer of unknown kind; use --layers")
    return spec


def parse_spec(text):
    spec = []
    for item in text.replace(",", " ").split():
        parts = item.split(":")
        kind, name = parts[0], parts[1]
        n = int(parts[2]) if len(parts) > 2 else None
        spec.append((kind, name, n, (3, 3) if kind == "conv" else None))
    return spec


def build(keras, spec, input_shape, vgg):
    layers = keras.layers
    if vgg:
        app = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[vgg]
        base = app(weights=None, include_top=False, input_shape=input_shape)
        x = base.output
        inp = base.input
        base_names = {layer.name for layer in base.layers}
        spec = [s for s in spec if s[1] not in base_names]
    else:
        inp = keras.Input(shape=input_shape)
        x = inp
    for kind, name, n, ks in spec:
        if kind == "conv":
            x = layers.Conv2D(n, tuple(ks), padding="same", activation="relu", name=name)(x)
        elif kind == "dense":
            x = layers.Dense(n, name=name)(x)
        elif kind == "pool":
            x = layers.MaxPooling2D(2, name=name)(x)
        elif kind == "flatten":
            x = layers.Flatten(name=name)(x)
        elif kind == "dropout":
            x = layers.Dropout(0.5, name=name)(x)
        else:
            sys.exit(f"unknown layer kind {kind}")
    return keras.Model(inp, x)


def build_nested(keras, stored, input_shape, vgg):
    """The seeds' Sequential for a file whose first layer is a nested VGG base."""
    name, _, inner = stored[0]
    convs = [n for n, _ in inner]
    if not vgg:
        vgg = name if name in ("vgg16", "vgg19") else None
        if not vgg:
            vgg = "vgg19" if any(n.endswith("_conv4") for n in convs) else "vgg16"
    app = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[vgg]
    base = app(weights=None, include_top=False, input_shape=input_shape)
    last_block = max(int(n.split("_")[0][len("block"):]) for n in convs)
    if last_block < 5:
        # Our files cut at blockN_pool: the base up to that pool.
        base = keras.Model(base.input, base.get_layer(f"block{last_block}_pool").output, name=vgg)
    layers = keras.layers
    seq = [keras.Input(shape=input_shape), base]
    for kind, lname, n, _ in infer_spec(stored[1:]):
        if kind == "dense":
            seq.append(layers.Dense(n, name=lname))
        elif kind == "flatten":
            seq.append(layers.Flatten(name=lname))
        elif kind == "dropout":
            seq.append(layers.Dropout(0.5, name=lname))
        else:
            sys.exit(f"{lname}: a {kind} layer after the nested base is not the seeds' head")
    return keras.Sequential(seq), base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--input", required=True, help="H,W,C")
    ap.add_argument("--layers", help="explicit spec (see above)")
    ap.add_argument("--vgg", choices=["vgg16", "vgg19"])
    args = ap.parse_args()

    import keras

    stored = file_layers(args.path)
    input_shape = tuple(int(v) for v in args.input.split(","))
    base = None
    if stored and stored[0][2] is not None and not args.layers:
        model, base = build_nested(keras, stored, input_shape, args.vgg)
        # The nested base's inner layers are compared one by one.
        stored = [(n, ws, None) for n, ws in stored[0][2]] + stored[1:]
        kind = f"the seeds' Sequential ({base.name} base nested, then {', '.join(n for n, _, _ in stored if not n.startswith('block'))})"
    else:
        if any(inner is not None for _, _, inner in stored):
            sys.exit("a nested model that is not the first layer: not supported")
        spec = parse_spec(args.layers) if args.layers else infer_spec(stored)
        model = build(keras, spec, input_shape, args.vgg)
        kind = "a flat model"

    # Keras 3 treats *.weights.h5 as its own format; load ours as legacy h5.
    path = args.path
    tmpdir = None
    if path.endswith(".weights.h5") or not path.endswith((".h5", ".hdf5")):
        tmpdir = tempfile.mkdtemp()
        path = os.path.join(tmpdir, "model.h5")
        shutil.copy(args.path, path)
    try:
        model.load_weights(path)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir)

    by_name = {layer.name: layer for layer in model.layers}
    if base is not None:
        by_name.update({layer.name: layer for layer in base.layers})
    n_layers = n_params = 0
    bad = 0
    for name, ws, _ in stored:
        if not ws:
            continue
        if name not in by_name:
            print(f"MISMATCH {name}: no layer of that name in the Keras model")
            bad += 1
            continue
        got = by_name[name].get_weights()
        if len(got) != len(ws):
            print(f"MISMATCH {name}: Keras has {len(got)} tensors, the file {len(ws)}")
            bad += 1
            continue
        for t, (g, w) in enumerate(zip(got, ws)):
            if g.shape != w.shape or not np.array_equal(g, w.astype(g.dtype)):
                diff = float(np.max(np.abs(g - w))) if g.shape == w.shape else float("nan")
                print(f"MISMATCH {name} tensor {t}: Keras {g.shape}, file {w.shape}, max |diff| {diff}")
                bad += 1
        n_layers += 1
        n_params += sum(w.size for w in ws)
    if bad:
        print(f"FAILED: {bad} mismatches")
        return 1
    print(f"OK: Keras {keras.__version__} ({keras.backend.backend()}) loaded {args.path} into {kind}: "
          f"{n_layers} layers, {n_params} parameters, identical to the file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
