"""PyTorch's side of the GPU speed goals of issue 12: what torchvision's VGG16
does with the same JPEG folder, timed the way a PyTorch user would run it.

  python3 scripts/bench_torch.py extract --data DIR [--size 150] [--batch 64]
      [--workers 16] [--precision bf16|fp32|tf32] [--interpolation nearest|bilinear]
      [--preprocess-on worker|device] [--epochs 0] [--min-seconds 3]
      [--conv-iters 100] [--conv-batch B]
      JPEG files -> block5_pool features on the host: torchvision
      vgg16(weights=None).features in eval mode, channels_last, autocast,
      a DataLoader whose worker processes decode with PIL, convert to RGB,
      resize (nearest, Keras's default) and apply the caffe preprocessing
      (BGR minus the ImageNet means; with --preprocess-on device the workers
      hand over uint8 and the GPU does it), pinned memory, persistent
      workers, prefetch. Each batch's features are copied back to the host,
      as our extract must to write its cache.
      End to end: one untimed warm-up epoch (starts the workers, lets cuDNN
      pick its algorithms for every batch shape, fills the page cache), then
      timed epochs, each from the first batch request to the last feature on
      the host (each epoch restarts the loader's iterator, so each pays the
      pipeline's fill and drain, as one pass of our extract does); --epochs
      N, or by default as many whole epochs as fill --min-seconds (3), so
      that a small folder still gives a steady figure.
      Conv compute alone: the same model on a random on-device batch,
      synchronised, --conv-iters iterations of --conv-batch (default --batch)
      images after warm-up; images/s and TFLOP/s from the exact VGG16 conv
      FLOP count (printed), and the fraction of the GPU's dense tensor-core
      peak when the GPU is known (or --peak-tflops is given).
  python3 scripts/bench_torch.py finetune --data DIR [--size 150] [--batch 20]
      [--workers 16] [--steps 100] [--warmup-steps 10] [--optimizer sgd|rmsprop|adam]
      [--lr 1e-4] [--rotation 30] [--augment torchvision|keras]
      The seeds' fine-tuning job: VGG16 features frozen except block5
      (features[24:31]), head Flatten -> Dense(256, relu) -> Dropout(0.5) ->
      Dense(1, sigmoid) (softmax for more than 2 classes), binary (or
      categorical) cross-entropy, bf16 autocast, channels_last, the seeds'
      ImageDataGenerator augmentation on the DataLoader workers (rescale
      1/255): torchvision's RandomAffine + RandomHorizontalFlip by default
      (the standard PyTorch way; differences from Keras in augmentation()),
      or --augment keras for Keras's exact transform. Times --steps training
      steps after --warmup-steps; images/s.
      Optimizer: SGD lr 1e-4 by default, as our finetune's defaults (the
      seeds use SGD 1e-3 or Adam); --optimizer rmsprop --lr 1e-5 for RMSprop.

Common options: --device cuda|cpu (default cuda), --max-images N (the first N
files in flow_from_directory order), --workers, --seed. Every run prints one
line starting with "torch " and one line "json: {...}" with the figures, the
torch/torchvision versions and the GPU name. Random weights (weights=None):
nothing is ever downloaded; speed does not depend on the weights.

On the GPU machine (16 cores, one H200), e.g.:
  python3 scripts/bench_torch.py extract --data DIR --size 150 --batch 64 --workers 16
  python3 scripts/bench_torch.py extract --data DIR --size 224 --batch 64 --workers 16
  python3 scripts/bench_torch.py finetune --data DIR --size 150 --batch 20 --workers 16 --steps 100
Exit status: 0 on success, 2 for a bad folder or option (message on stderr).
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

# flow_from_directory's extensions (REFERENCE.md section 4).
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")
# Keras vgg16.preprocess_input ("caffe"): BGR order minus these means.
MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
# VGG16's convolutions per block (block1..block5); each block ends in a 2x2
# stride-2 max pool (floor, as Keras's 'valid' pooling and torch's default).
VGG16_BLOCKS = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
# Dense tensor-core peaks in TFLOP/s (NVIDIA datasheets; dense = half the
# "with sparsity" figure), for the fraction-of-peak line. fp32 = CUDA cores.
PEAK_TFLOPS = [  # (substring of the device name, {precision: TFLOP/s}); first match wins
    ("H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # H200 SXM
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # H100 SXM
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
]


def fail(msg):
    print(f"bench_torch: {msg}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------- the folder

def list_images(folder, max_images):
    """flow_from_directory order: classes are the sorted subfolder names, files
    found recursively under each, sorted, filtered by extension. A folder of
    images without subfolders is taken as one class. Returns (files, labels,
    class names); exits with status 2 when the folder is missing or empty."""
    if not os.path.isdir(folder):
        fail(f"{folder}: no such folder")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files, labels = [], []
    roots = [(os.path.join(folder, c), i) for i, c in enumerate(classes)] or [(folder, 0)]
    for root, label in roots:
        found = []
        for dirpath, _, names in os.walk(root, followlinks=True):
            found += [os.path.join(dirpath, n) for n in names if n.lower().endswith(EXTENSIONS)]
        found.sort()
        files += found
        labels += [label] * len(found)
    if not files:
        fail(f"{folder}: no images ({', '.join(EXTENSIONS)}) in it or its subfolders")
    if max_images:
        files, labels = files[:max_images], labels[:max_images]
    return files, labels, classes or [os.path.basename(os.path.normpath(folder))]


RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def load_resized(path, size, interpolation):
    """Keras load_img(target_size=(size, size)): PIL decode, RGB, resize."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), RESAMPLE[interpolation])
        return im


class ExtractSet(Dataset):
    """One image -> HWC tensor: float32 caffe-preprocessed (BGR minus means)
    when caffe_on_worker, else uint8 RGB (the device preprocesses). HWC per
    image stacks to NHWC, which permute(0, 3, 1, 2) turns into an NCHW view
    that is already channels_last: no host-side copy."""

    def __init__(self, files, size, interpolation, caffe_on_worker):
        self.files, self.size, self.interp, self.caffe = files, size, interpolation, caffe_on_worker

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        a = np.array(load_resized(self.files[i], self.size, self.interp))  # writable (asarray is read-only)
        if self.caffe:
            a = a[..., ::-1].astype(np.float32) - MEAN_BGR
        return torch.from_numpy(np.ascontiguousarray(a))


def augmentation(rotation, shift, shear, zoom, flip):
    """The seeds' ImageDataGenerator(rotation_range=30, width_shift_range=0.2,
    height_shift_range=0.2, shear_range=0.2, zoom_range=0.2,
    horizontal_flip=True, fill_mode='nearest') (REFERENCE.md section 5) as the
    standard torchvision equivalent, applied after the resize as Keras does.
    Where it differs from Keras (same cost, other pixels):
    - fill: Keras 'nearest' replicates the edge pixels; RandomAffine only
      fills with a constant (0, black).
    - zoom: Keras draws zx and zy independently from [1-z, 1+z]; RandomAffine
      draws one isotropic scale from (1-z, 1+z) (and Keras's zx > 1 shrinks
      the content where torchvision's scale > 1 enlarges it: the same range).
    - shear: both in degrees (Keras >= 2.1.3), both one axis; shifts both
      uniform in +-shift * size (torchvision rounds them to whole pixels).
    - interpolation: bilinear in both.
    Takes a PIL image, returns an HWC uint8 array."""
    from torchvision.transforms import v2, InterpolationMode
    t = [v2.RandomAffine(degrees=rotation, translate=(shift, shift), scale=(1 - zoom, 1 + zoom),
                         shear=shear, interpolation=InterpolationMode.BILINEAR, fill=0)]
    if flip:
        t.append(v2.RandomHorizontalFlip(0.5))
    compose = v2.Compose(t)
    return lambda im: np.asarray(compose(im))


class KerasAugment:
    """--augment keras: Keras's own ImageDataGenerator.random_transform
    (keras.src.legacy.preprocessing.image: get_random_transform,
    apply_affine_transform) in torch, for a like-for-like comparison: theta
    ~ U(-r, r) degrees, tx ~ U(-shift, shift) * rows, ty ~ U(-shift, shift) *
    cols, shear ~ U(-s, s) degrees, zx, zy ~ U(1-z, 1+z) independently;
    matrix rotation . shift . shear . zoom about the centre, inverse warp,
    bilinear, fill 'nearest' (edge replicate = grid_sample's border
    padding), on float32 pixels, then the flip with p = 0.5. Random numbers
    from torch's generator, which the DataLoader seeds per worker (numpy's
    is the same in every forked worker). Takes a PIL image, returns an HWC
    float32 array 0..255."""

    def __init__(self, rotation, shift, shear, zoom, flip):
        self.r, self.shift, self.shear, self.zoom, self.flip = rotation, shift, shear, zoom, flip
        self.grids = {}  # (h, w) -> output pixel coordinates (i, j, 1)

    def params(self, h, w):
        u = lambda lo, hi: lo + (hi - lo) * float(torch.rand(()))
        theta = u(-self.r, self.r)
        tx = u(-self.shift, self.shift) * h
        ty = u(-self.shift, self.shift) * w
        shear = u(-self.shear, self.shear)
        zx, zy = u(1 - self.zoom, 1 + self.zoom), u(1 - self.zoom, 1 + self.zoom)
        flip = self.flip and float(torch.rand(())) < 0.5
        return theta, tx, ty, shear, zx, zy, flip

    @staticmethod
    def matrix(h, w, theta, tx, ty, shear, zx, zy):
        """apply_affine_transform's final matrix for channels-last images:
        input (row, col, 1) = M @ output (row, col, 1)."""
        t, s = np.deg2rad(theta), np.deg2rad(shear)
        m = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        m = m @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        m = m @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
        m = m @ np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        ox, oy = h / 2 - 0.5, w / 2 - 0.5  # transform_matrix_offset_center(m, h, w)
        m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
        m[:, [0, 1]] = m[:, [1, 0]]  # Keras's swap for col_axis > row_axis
        m[[0, 1]] = m[[1, 0]]
        return m

    def warp(self, a, m, flip):
        h, w = a.shape[:2]
        if (h, w) not in self.grids:
            i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                  indexing="ij")
            self.grids[(h, w)] = torch.stack([i, j, torch.ones_like(i)], -1)
        src = self.grids[(h, w)] @ torch.from_numpy(m[:2]).T  # (h, w, 2): input (row, col)
        # grid_sample wants (x = col, y = row) in [-1, 1]; align_corners: -1 and 1 are the edge pixel centres.
        g = torch.stack([src[..., 1] * (2 / max(w - 1, 1)) - 1, src[..., 0] * (2 / max(h - 1, 1)) - 1], -1)
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
        y = torch.nn.functional.grid_sample(x, g[None].float(), mode="bilinear", padding_mode="border",
                                            align_corners=True)[0].permute(1, 2, 0)
        if flip:
            y = y.flip(1)
        return y.contiguous().numpy()

    def __call__(self, im):
        a = np.array(im)  # writable, for torch.from_numpy
        h, w = a.shape[:2]
        theta, tx, ty, shear, zx, zy, flip = self.params(h, w)
        return self.warp(a, self.matrix(h, w, theta, tx, ty, shear, zx, zy), flip)


class FinetuneSet(Dataset):
    """One image -> (HWC float32 tensor, label): load_img nearest resize, the
    augmentation (PIL image -> HWC array), then rescale 1/255 (the seeds) or caffe."""

    def __init__(self, files, labels, size, interpolation, augment, preprocess):
        self.files, self.labels, self.size, self.interp = files, labels, size, interpolation
        self.augment, self.preprocess = augment, preprocess

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        a = self.augment(load_resized(self.files[i], self.size, self.interp))
        if self.preprocess == "rescale":
            a = a.astype(np.float32) * np.float32(1 / 255)
        else:
            a = a[..., ::-1].astype(np.float32) - MEAN_BGR
        return torch.from_numpy(np.ascontiguousarray(a)), self.labels[i]


def fit_prefetch(args, sample_bytes):
    """Worker batches travel through /dev/shm: workers * prefetch batches in
    flight. A container's small /dev/shm (Docker's default is 64 MB) makes
    the workers die with a bus error, so lower the prefetch to fit half the
    free space, and say so."""
    if args.workers == 0:
        return
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return
    batch_bytes = sample_bytes * args.batch
    fit = int(free // (2 * args.workers * batch_bytes))
    if fit < args.prefetch:
        print(f"bench_torch: warning: /dev/shm has {free / 2**20:.0f} MiB free, {args.workers} workers x "
              f"{args.prefetch} batches of {batch_bytes / 2**20:.1f} MiB do not fit; prefetch {max(fit, 1)}"
              + ("" if fit else " (may still fail: use fewer --workers or --preprocess-on device)"),
              file=sys.stderr)
        args.prefetch = max(fit, 1)


def make_loader(dataset, args, device, shuffle, drop_last):
    kw = {}
    if args.workers > 0:
        # Persistent workers: later epochs reuse the processes (the warm-up
        # epoch pays their start). Workers run torch with 1 thread each.
        kw = dict(persistent_workers=True, prefetch_factor=args.prefetch)
    return DataLoader(dataset, batch_size=args.batch, shuffle=shuffle, drop_last=drop_last,
                      num_workers=args.workers, pin_memory=device.type == "cuda", **kw)


# ----------------------------------------------------------------- the model

def set_precision(precision, device):
    """fp32: IEEE float32 convolutions and matmuls; tf32: float32 tensors on
    TF32 tensor cores; bf16: autocast to bfloat16 (float32 weights, as AMP)."""
    mode = "tf32" if precision == "tf32" else "ieee"
    try:  # torch >= 2.9: the fp32_precision API (mixing it with allow_tf32 is an error)
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.benchmark = True  # cuDNN's fastest algorithm per shape


def autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def vgg16_conv_flops(size):
    """Multiply-adds x 2 of VGG16's 13 convolutions (3x3, 'same') for one
    size x size image: sum of 2 * H * W * Cin * Cout * 9 at each conv's map
    size; pools and ReLUs not counted. 150 -> 13.231 GFLOP, 224 -> 30.693
    (the same as torch.utils.flop_counter on torchvision's model)."""
    flops, hw, cin = 0, size, 3
    for block in VGG16_BLOCKS:
        for cout in block:
            flops += 2 * hw * hw * cin * cout * 9
            cin = cout
        hw //= 2
    return flops


def conv_base(device):
    base = torchvision.models.vgg16(weights=None).features  # random weights: nothing downloaded
    return base.to(device, memory_format=torch.channels_last)


def device_info(device):
    info = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "device": device.type, "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    sm=f"{p.major}.{p.minor}", gpu_mem_gib=round(p.total_memory / 2**30, 1))
    else:
        info["gpu"] = "none"
    return info


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_for(info, precision, given):
    if given:
        return given
    for name, peaks in PEAK_TFLOPS:
        if name in info.get("gpu", ""):
            return peaks[precision]
    return None


# ------------------------------------------------------------------- extract

_MEAN = {}  # device -> the caffe means as a (1, 3, 1, 1) tensor there


def to_input(batch, device, caffe_on_device):
    """NHWC host batch -> NCHW channels_last device tensor (caffe on device
    when the workers sent uint8 RGB)."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NCHW view, channels_last strides
    if caffe_on_device:
        if device not in _MEAN:
            _MEAN[device] = torch.tensor(MEAN_BGR, device=device).view(1, 3, 1, 1)
        mean = _MEAN[device]
        x = x.flip(1).float() - mean  # RGB -> BGR, minus the means
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def run_extract(args, device, info):
    files, _, classes = list_images(args.data, args.max_images)
    model = conv_base(device).eval()
    set_precision(args.precision, device)
    on_device = args.preprocess_on == "device"
    fit_prefetch(args, args.size * args.size * 3 * (1 if on_device else 4))
    loader = make_loader(ExtractSet(files, args.size, args.interpolation, not on_device), args, device,
                         shuffle=False, drop_last=False)

    def epoch():
        n, check = 0, 0.0
        with torch.inference_mode(), autocast(device, args.precision):
            for batch in loader:
                feats = model(to_input(batch, device, on_device))
                host = feats.float().cpu()  # back on the host, as our cache writer needs them
                n += host.shape[0]
                check += float(host[:, 0, 0, 0].sum())  # touch the copy
        return n, check

    t0 = time.perf_counter()
    epoch()  # warm-up: worker start, cuDNN autotuning for both batch shapes, page cache
    warm_s = time.perf_counter() - t0
    times = []  # --epochs N, or (0) epochs until --min-seconds have passed: small folders take many
    while len(times) < args.epochs or (not args.epochs and (not times or sum(times) < args.min_seconds)):
        t = time.perf_counter()
        n, _ = epoch()
        times.append(time.perf_counter() - t)
    e2e = n * len(times) / sum(times)

    # Conv compute alone: a random on-device batch, no data pipeline, no copy back.
    flops = vgg16_conv_flops(args.size)
    cb = args.conv_batch or args.batch
    x = torch.randn(cb, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, args.precision):
        for _ in range(args.conv_warmup):
            model(x)
        sync(device)
        t = time.perf_counter()
        for _ in range(args.conv_iters):
            model(x)
        sync(device)
        conv_s = time.perf_counter() - t
    conv_ips = cb * args.conv_iters / conv_s
    tflops = conv_ips * flops / 1e12
    peak = peak_for(info, args.precision, args.peak_tflops)
    with torch.inference_mode():
        out_shape = list(model(x[:1]).shape[1:])

    fig = dict(info, mode="extract", size=args.size, batch=args.batch, workers=args.workers,
               precision=args.precision, interpolation=args.interpolation, preprocess_on=args.preprocess_on,
               prefetch=args.prefetch,
               images=n, classes=len(classes), feature_shape=out_shape,
               warmup_epoch_s=round(warm_s, 3), timed_epochs=len(times), epoch_s=[round(t, 4) for t in times],
               end_to_end_img_s=round(e2e, 2), timing="second and later epochs (first epoch is warm-up)",
               conv_flops_per_image=flops, conv_batch=cb, conv_iters=args.conv_iters, conv_img_s=round(conv_ips, 2),
               conv_tflops=round(tflops, 3), peak_tflops=peak,
               conv_fraction_of_peak=round(tflops / peak, 4) if peak else None)
    frac = f" = {100 * tflops / peak:.1f}% of {peak:g} TFLOP/s peak {args.precision}" if peak else ""
    print(f"torch extract {args.size}x{args.size} {args.precision}: end to end {e2e:.1f} img/s "
          f"({n} images x {len(times)} epoch(s) after a warm-up epoch, batch {args.batch}, "
          f"{args.workers} workers, preprocess on {args.preprocess_on}); conv alone (batch {cb}) {conv_ips:.1f} img/s, "
          f"{tflops:.2f} TFLOP/s at {flops / 1e9:.4f} GFLOP/image{frac}; "
          f"torch {info['torch']}, torchvision {info['torchvision']}, {info.get('gpu')}")
    print("json: " + json.dumps(fig))


# ------------------------------------------------------------------ finetune

class FinetuneModel(nn.Module):
    """Sequential([VGG16 base (block1-4 frozen, block5 trainable), Flatten,
    Dense(256, relu), Dropout(0.5), Dense(1 or K)]). The sigmoid/softmax is
    folded into the loss (BCEWithLogits / CrossEntropy: the same function,
    computed stably). Flatten of an NCHW map orders features (c, h, w) where
    Keras's NHWC Flatten gives (h, w, c): a permutation, same cost."""

    def __init__(self, device, size, outputs):
        super().__init__()
        base = conv_base(device)
        self.frozen = base[:24]     # block1_conv1 .. block4_pool
        self.block5 = base[24:31]   # block5_conv1 .. block5_pool
        for p in self.frozen.parameters():
            p.requires_grad_(False)               # autograd keeps no activations for these
        hw = size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(512 * hw * hw, 256), nn.ReLU(inplace=True),
                                  nn.Dropout(0.5), nn.Linear(256, outputs)).to(device)

    def forward(self, x):
        return self.head(self.block5(self.frozen(x)))


def make_optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":  # Keras Adam's epsilon
        return torch.optim.Adam(params, lr=lr, eps=1e-7)
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)  # Keras RMSprop rho=0.9, epsilon=1e-7


def run_finetune(args, device, info):
    files, labels, classes = list_images(args.data, args.max_images)
    binary = len(classes) <= 2
    if len(files) < args.batch:
        fail(f"{args.data}: {len(files)} images, fewer than one batch of {args.batch}")
    torch.manual_seed(args.seed)
    model = FinetuneModel(device, args.size, 1 if binary else len(classes))
    set_precision(args.precision, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(args.optimizer, trainable, args.lr)
    loss_fn = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()
    fit_prefetch(args, args.size * args.size * 3 * 4)
    aug = (KerasAugment if args.augment == "keras" else augmentation)(args.rotation, args.shift, args.shear,
                                                                       args.zoom, not args.no_flip)
    loader = make_loader(FinetuneSet(files, labels, args.size, args.interpolation, aug, args.preprocess),
                         args, device, shuffle=True, drop_last=True)
    model.frozen.eval()  # no dropout/BN in VGG16's base: eval/train are the same; the head trains
    model.block5.train()
    model.head.train()

    def batches():  # endless, epoch after epoch, on the persistent workers
        while True:
            for b in loader:
                yield b

    stream = batches()

    def steps(count):
        total = torch.zeros((), device=device)
        for _ in range(count):
            x, y = next(stream)
            x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)  # channels_last NCHW view
            y = y.to(device, non_blocking=True)
            with autocast(device, args.precision):
                logits = model(x)
            logits = logits.float()
            loss = loss_fn(logits.squeeze(1), y.float()) if binary else loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        return total

    t0 = time.perf_counter()
    steps(args.warmup_steps)
    sync(device)
    warm_s = time.perf_counter() - t0
    t = time.perf_counter()
    total = steps(args.steps)
    mean_loss = float(total) / max(args.steps, 1)  # synchronises
    dt = time.perf_counter() - t
    ips = args.steps * args.batch / dt
    n_train = sum(p.numel() for p in trainable)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    fig = dict(info, mode="finetune", size=args.size, batch=args.batch, workers=args.workers, prefetch=args.prefetch,
               precision=args.precision, images=len(files), classes=len(classes),
               loss="binary_crossentropy" if binary else "categorical_crossentropy",
               optimizer=args.optimizer, lr=args.lr, preprocess=args.preprocess,
               augment=dict(kind=args.augment, rotation=args.rotation, shift=args.shift, shear=args.shear,
                            zoom=args.zoom, flip=not args.no_flip,
                            fill="nearest" if args.augment == "keras" else "constant 0"),
               trainable_params=n_train, frozen_params=n_frozen,
               warmup_steps=args.warmup_steps, warmup_s=round(warm_s, 3), steps=args.steps,
               seconds=round(dt, 4), img_s=round(ips, 2), step_ms=round(1000 * dt / max(args.steps, 1), 3),
               mean_loss=round(mean_loss, 5))
    print(f"torch finetune {args.size}x{args.size} {args.precision}: {ips:.1f} img/s "
          f"({args.steps} steps of {args.batch} after {args.warmup_steps} warm-up steps, {args.workers} workers, "
          f"block5 + head trainable: {n_train:,} parameters, {args.optimizer} lr {args.lr:g}, "
          f"mean loss {mean_loss:.4f}); torch {info['torch']}, torchvision {info['torchvision']}, {info.get('gpu')}")
    print("json: " + json.dumps(fig))


# ---------------------------------------------------------------------- main

def positive(kind):
    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{s}: must be > 0")
        return v
    return parse


def nonneg_int(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s}: must be >= 0")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True, help="folder of class subfolders of images")
    common.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    common.add_argument("--size", type=positive(int), default=150, help="input is SIZE x SIZE (default 150)")
    common.add_argument("--workers", type=nonneg_int, default=16, help="DataLoader worker processes (default 16)")
    common.add_argument("--prefetch", type=positive(int), default=4, help="batches prefetched per worker (default 4)")
    common.add_argument("--precision", choices=["bf16", "fp32", "tf32"], default="bf16")
    common.add_argument("--interpolation", choices=["nearest", "bilinear"], default="nearest",
                        help="PIL resize filter (Keras load_img's default: nearest)")
    common.add_argument("--max-images", type=nonneg_int, default=0, help="use only the first N files (0: all)")
    common.add_argument("--seed", type=int, default=1)
    e = sub.add_parser("extract", parents=[common], help="JPEG folder -> block5_pool features on the host")
    e.add_argument("--batch", type=positive(int), default=64)
    e.add_argument("--epochs", type=nonneg_int, default=0,
                   help="timed epochs after the warm-up epoch (default 0: as many as fill --min-seconds)")
    e.add_argument("--min-seconds", type=positive(float), default=3.0,
                   help="with --epochs 0, time whole epochs until this many seconds have passed (default 3)")
    e.add_argument("--preprocess-on", choices=["worker", "device"], default="worker",
                   help="caffe preprocessing in the workers (float32 batches) or on the device (uint8 batches)")
    e.add_argument("--conv-iters", type=positive(int), default=100, help="timed iterations of conv compute alone")
    e.add_argument("--conv-batch", type=nonneg_int, default=0, help="batch of conv compute alone (default: --batch)")
    e.add_argument("--conv-warmup", type=positive(int), default=5)
    e.add_argument("--peak-tflops", type=positive(float), default=None,
                   help="the GPU's peak for --precision (default: from a table of known GPUs)")
    f = sub.add_parser("finetune", parents=[common], help="fine-tune block5 + head with augmentation")
    f.add_argument("--batch", type=positive(int), default=20)
    f.add_argument("--steps", type=positive(int), default=100, help="timed training steps")
    f.add_argument("--warmup-steps", type=nonneg_int, default=10)
    f.add_argument("--optimizer", choices=["sgd", "rmsprop", "adam"], default="sgd",
                   help="default sgd, as our finetune (the seeds: SGD lr 1e-3 or Adam)")
    f.add_argument("--lr", type=positive(float), default=1e-4)
    f.add_argument("--preprocess", choices=["rescale", "caffe"], default="rescale",
                   help="rescale 1/255 (the seeds) or caffe")
    f.add_argument("--rotation", type=float, default=30.0, help="degrees (the seeds: 30)")
    f.add_argument("--shift", type=float, default=0.2)
    f.add_argument("--shear", type=float, default=0.2, help="degrees")
    f.add_argument("--zoom", type=float, default=0.2)
    f.add_argument("--no-flip", action="store_true")
    f.add_argument("--augment", choices=["torchvision", "keras"], default="torchvision",
                   help="torchvision v2 RandomAffine + RandomHorizontalFlip (PIL), or Keras's exact transform "
                        "(edge fill, independent zooms) on torch's grid_sample")
    args = ap.parse_args(argv)
    if args.size < 32:
        ap.error(f"--size {args.size}: VGG16's five 2x2 pools need at least 32x32")

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: torch sees no CUDA device (torch %s, built for CUDA %s); use --device cpu"
             % (torch.__version__, torch.version.cuda))
    device = torch.device(args.device)
    info = device_info(device)
    (run_extract if args.mode == "extract" else run_finetune)(args, device, info)


if __name__ == "__main__":
    main()
