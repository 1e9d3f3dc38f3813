"""Keras CPU's VGG16 conv base, timed the way scripts/bench_base.c times ours
(issue: the conv base on the CPU at least as fast as Keras).

  python bench_keras.py conv SIZE BATCH REPS [WEIGHTS.h5]
      the conv base alone on one batch of preprocessed images (model(x),
      no data pipeline): prints "keras conv SIZE: MEDIAN BEST s/batch"
  python bench_keras.py extract SIZE DIR [WEIGHTS.h5]
      JPEG files -> block5_pool features, the seeds' way (load_img with
      nearest resize, img_to_array, preprocess_input, predict in batches of
      32): prints "keras extract SIZE: N images, T s, R img/s"

Run it inside the virtual environment scripts/bench_keras.sh makes
(tensorflow-cpu from PyPI); the tests never need it. Threads: TensorFlow's
default (all cores it may use), as a user gets.
"""
import os, sys, time, glob
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras
from keras.applications.vgg16 import VGG16, preprocess_input


def base(size, weights):
    m = VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    if weights:
        m.load_weights(weights)  # our Keras-layout notop file (ImageNet)
    return m


def conv(size, batch, reps, weights=None):
    m = base(size, weights)
    rng = np.random.default_rng(0)
    x = preprocess_input(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    m(x, training=False)  # build and warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        m(x, training=False).numpy()
        times.append(time.perf_counter() - t)
    print(f"keras conv {size}: {np.median(times):.4f} {min(times):.4f} s/batch of {batch}")


def extract(size, folder, weights=None):
    m = base(size, weights)
    files = sorted(f for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    m(np.zeros((1, size, size, 3), "float32"), training=False)
    t = time.perf_counter()
    for i in range(0, len(files), 32):
        x = np.stack([keras.utils.img_to_array(keras.utils.load_img(f, target_size=(size, size)))
                      for f in files[i:i + 32]])
        m(preprocess_input(x), training=False).numpy()
    dt = time.perf_counter() - t
    print(f"keras extract {size}: {len(files)} images, {dt:.2f} s, {len(files) / dt:.2f} img/s")


if __name__ == "__main__":
    what, size = sys.argv[1], int(sys.argv[2])
    if what == "conv":
        conv(size, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        extract(size, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
