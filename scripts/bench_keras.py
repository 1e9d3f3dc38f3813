"""Keras CPU's VGG16 conv base, timed the way scripts/bench_base.c times ours
(issue: the conv base on the CPU at least as fast as Keras).

  python bench_keras.py conv SIZE BATCH REPS [WEIGHTS.h5]
      the conv base alone on one batch of preprocessed images (model(x),
      no data pipeline): prints "keras conv SIZE: MEDIAN BEST s/batch"
  python bench_keras.py extract SIZE DIR [WEIGHTS.h5]
      JPEG files -> block5_pool features, the seeds' way (load_img with
      nearest resize, img_to_array, preprocess_input, predict in batches of
      32): prints "keras extract SIZE: N images, T s, R img/s"
  python bench_keras.py finetune SIZE DIR EPOCHS [WEIGHTS.h5]
      the seeds' fine-tuning: VGG16 frozen below block5_conv1, Flatten,
      Dense(256, relu), Dropout(0.5), Dense (sigmoid for 2 classes, else
      softmax), SGD(1e-4, momentum 0.9), fit on ImageDataGenerator's
      flow_from_directory with the seeds' augmentation (rotation 30, shifts,
      shear and zoom 0.2, horizontal flip; caffe preprocessing), batch 20;
      the first epoch is a warm-up: prints "keras finetune SIZE: N images,
      T s, R img/s" for the best later epoch (finetune's own figure is the
      epoch time of its history CSV, the same span)

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


def finetune(size, folder, epochs, weights=None):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # needs scipy
    from keras import layers
    gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, height_shift_range=0.2,
                             shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                             preprocessing_function=preprocess_input)
    n_class = len([d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))])
    binary = n_class == 2
    it = gen.flow_from_directory(folder, target_size=(size, size), batch_size=20,
                                 class_mode="binary" if binary else "categorical", seed=1)
    conv_base = base(size, weights)
    trainable = False
    for layer in conv_base.layers:
        trainable = trainable or layer.name == "block5_conv1"
        layer.trainable = trainable
    model = keras.Sequential([keras.Input((size, size, 3)), conv_base, layers.Flatten(),
                              layers.Dense(256, activation="relu"), layers.Dropout(0.5),
                              layers.Dense(1 if binary else n_class,
                                           activation="sigmoid" if binary else "softmax")])
    model.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9),
                  loss="binary_crossentropy" if binary else "categorical_crossentropy",
                  metrics=["accuracy"])

    class Times(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    seconds = []
    model.fit(it, epochs=epochs, verbose=0, callbacks=[Times()])
    dt = min(seconds[1:]) if len(seconds) > 1 else seconds[0]
    print(f"keras finetune {size}: {it.samples} images, {dt:.2f} s, {it.samples / dt:.2f} img/s")


if __name__ == "__main__":
    what, size = sys.argv[1], int(sys.argv[2])
    if what == "conv":
        conv(size, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    elif what == "finetune":
        finetune(size, sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        extract(size, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
