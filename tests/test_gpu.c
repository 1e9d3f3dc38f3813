// The GPU conv base against the CPU reference, in process and through
// extract. Skips without a usable GPU. Each comparison prints its measured
// error ("GPU vs CPU: ...") for the GPU run's summary.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "dataset.h"
#include "device.h"
#include "error.h"
#include "feature_set.h"
#include "forward.h"
#include "gpu.h"
#include "gpu_base.h"
#include "image.h"
#include "model.h"
#include "parallel.h"
#include "stop.h"
#include "testutil.h"
#include "weights_source.h"

static void need_gpu(void) {
    char why[512];
    if (test_show_gpus(why, sizeof why) == 0) cr_skip_test("no GPU: %s", why);
}

static Model build_hw(Arch arch, int h, int w, const char *cut) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.arch = arch;
    cfg.input_h = h, cfg.input_w = w;
    cfg.cut = cut;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_assert_eq(model_alloc_weights(&m, 1, m.n_base), 0);
    model_init_random(&m, 1, m.n_base, 3);
    return m;
}
static Model build(Arch arch, int size, const char *cut) { return build_hw(arch, size, size, cut); }

// Images of `pixels` pixels with values in the range of caffe-preprocessed pixels.
static float *images_px(int N, long pixels) {
    size_t n = (size_t)N * pixels * 3;
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 37 + i / 7) % 256) - 120.0f;
    return x;
}
static float *images(int N, int size) { return images_px(N, (long)size * size); }

// GPU vs base_forward_cpu on N images of h x w: max |diff| <= rel * the largest feature.
static void compare_hw(Arch arch, int h, int w, const char *cut, int N, GpuPrecision prec, float rel) {
    need_gpu();
    Model m = build_hw(arch, h, w, cut);
    long D = model_feature_size(&m);
    float *x = images_px(N, (long)h * w), *cpu = malloc(sizeof(float) * N * D), *gpu = malloc(sizeof(float) * N * D);
    BaseWorkspace ws;
    cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
    base_forward_cpu(&m, x, N, cpu, &ws);
    GpuBase *g = gpu_base_create(&m, N, prec);
    cr_assert_not_null(g, "%s", err_msg());
    cr_assert_eq(gpu_base_forward(g, x, N, gpu), 0, "%s", err_msg());
    float scale = 0;
    for (long i = 0; i < N * D; i++) scale = fmaxf(scale, fabsf(cpu[i]));
    float err = max_abs_diff(gpu, cpu, (size_t)(N * D));
    fprintf(stderr, "GPU vs CPU: %s %dx%d %s batch %d %s: max |diff| %.3g = %.3g of the largest feature %.4g\n",
            arch_name(arch), h, w, cut, N, gpu_precision_name(prec), err, scale > 0 ? err / scale : 0, scale);
    cr_expect_gt(scale, 0);
    cr_expect_leq(err, rel * scale, "GPU vs CPU at %dx%d (%s, batch %d, %s): max |diff| %g, largest %g", h, w,
                  cut, N, gpu_precision_name(prec), err, scale);
    gpu_base_free(g);
    base_workspace_free(&ws);
    free(x), free(cpu), free(gpu);
    model_free(&m);
}
static void compare(Arch arch, int size, const char *cut, int N, GpuPrecision prec, float rel) {
    compare_hw(arch, size, size, cut, N, prec, rel);
}

// Strict float32 on both sides, sums in another order: 1e-4 of the largest
// feature (the bound used for CPU vs Keras). TF32 rounds products to 10-bit
// mantissas: 2e-2 through 13 layers of random weights.
// No GPU needed: the batch limit of cuDNN's 2^31 - 1 values per tensor,
// checked before any GPU memory is taken (gpu_frozen_create, the walk).
Test(gpu, batch_limit_follows_cudnn_tensor_size) {
    ModelConfig cfg;
    model_config_defaults(&cfg);
    cfg.input_h = cfg.input_w = 512;
    Model m;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    // block1_conv1's output: 512 * 512 * 64 = 2^24 values per image.
    cr_expect_eq(device_gpu_batch_limit(&m, 1, m.n_base), 127);
    cr_expect_eq(device_gpu_batch_check(&m, 1, m.n_base, 127), 0, "%s", err_msg());
    cr_expect_eq(device_gpu_batch_check(&m, 1, m.n_base, 128), -1);
    cr_expect(strstr(err_msg(), "a batch of 128 is too large for the GPU at 512x512: block1_conv1") &&
                  strstr(err_msg(), "2147483648 values") && strstr(err_msg(), "at most --batch 127"),
              "%s", err_msg());
    // From block5_conv1 (a fine-tuning walk from a block4_pool cache): 32 x 32 x 512.
    int b5 = model_find_layer(&m, "block5_conv1");
    cr_assert_gt(b5, 0);
    cr_expect_eq(device_gpu_batch_limit(&m, b5, m.n_base), INT32_MAX / (32 * 32 * 512));
    model_free(&m);
    // At 224x224: 224 * 224 * 64 values per image, 668 images.
    cfg.input_h = cfg.input_w = 224;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
    cr_expect_eq(device_gpu_batch_limit(&m, 1, m.n_base), 668);
    cr_expect_eq(device_gpu_batch_check(&m, 1, m.n_base, 669), -1);
    model_free(&m);
}

Test(gpu, base_matches_cpu_48) { compare(ARCH_VGG16, 48, "block5_pool", 3, GPU_FP32, 1e-4f); }
Test(gpu, base_matches_cpu_150_block4) { compare(ARCH_VGG16, 150, "block4_pool", 2, GPU_FP32, 1e-4f); }
Test(gpu, vgg19_64) { compare(ARCH_VGG19, 64, "block5_pool", 3, GPU_FP32, 1e-4f); }
// Algorithms ranked by cuDNN's timing runs (VGGFT_GPU_AUTOTUNE=1), not its heuristics.
Test(gpu, autotuned_base_matches_cpu_48) {
    setenv("VGGFT_GPU_AUTOTUNE", "1", 1);
    compare(ARCH_VGG16, 48, "block5_pool", 3, GPU_FP32, 1e-4f);
}
Test(gpu, every_pooling_layer) {
    const char *cuts[] = {"block1_pool", "block2_pool", "block3_pool"};
    for (int i = 0; i < 3; i++) compare(ARCH_VGG16, 40, cuts[i], 2, GPU_FP32, 1e-4f);
}
// A GPU older than the build's oldest machine code (sm_80) is refused with
// the reason. The emulated GPU's compute capability is EMU_SM's: no real
// GPU can be made older.
Test(gpu, gpu_older_than_the_build_is_refused) {
    need_gpu();
    if (!test_gpu_emulated()) cr_skip_test("needs the emulated GPU (EMU_SM sets its compute capability)");
    char why[1000] = "";
    setenv("EMU_SM", "75", 1);
    cr_expect_eq(gpu_count(why, sizeof why), 0);
    cr_expect(strstr(why, "is sm_75, this build has code for sm_80 and newer") != NULL, "%s", why);
    setenv("EMU_SM", "80", 1);
    cr_expect_eq(gpu_count(why, sizeof why), 1, "%s", why);
    unsetenv("EMU_SM");
}

// cuDNN 9 without its sub-libraries (a partial install) is "unusable",
// named in --version, and the tools stay on the CPU: cuDNN's wrapper would
// otherwise stop the process at its first use. Beside the wrapper they are
// found whatever the library path. The emulation plays a split cuDNN when
// EMU_CUDNN_SUBLIBRARIES is set (kernels/cudnn_api.cu, open_sublibraries).
Test(gpu, cudnn_without_its_sublibraries_is_unusable_not_fatal) {
    need_gpu();
    if (!test_gpu_emulated()) cr_skip_test("needs the emulated cuDNN (it plays a partial install)");
    char *dir = make_temp_dir("gpu_cudnn_split"), wrapper[1100], sub[1100], *out;
    snprintf(wrapper, sizeof wrapper, "%s/libcudnn.so.9", dir);
    cr_assert_eq(symlink(TEST_BUILD "/emu/libcudnn_emu.so", wrapper), 0);
    setenv("VGGFT_CUDNN_LIBRARY", wrapper, 1);
    setenv("EMU_CUDNN_SUBLIBRARIES", "1", 1);
    int rc = run_tool_timeout("extract", "--version", 60, &out);
    cr_expect_eq(rc, 0, "%s", out);
    char want[1400];
    snprintf(want, sizeof want, "\ncuDNN: unusable: %s needs libcudnn_graph.so.9, found neither beside it", wrapper);
    cr_expect(strstr(out, want), "want '%s' in:\n%s", want, out);
    free(out);
    // The same folder with them (links to the emulation: already loaded).
    const char *subs[] = {"graph", "ops", "cnn"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/libcudnn_%s.so.9", dir, subs[i]);
        cr_assert_eq(symlink(TEST_BUILD "/emu/libcudnn_emu.so", sub), 0);
    }
    rc = run_tool_timeout("extract", "--version", 60, &out);
    snprintf(want, sizeof want, "\ncuDNN: 9.");
    cr_expect(rc == 0 && strstr(out, want) && strstr(out, wrapper) && !strstr(out, "unusable"), "%s", out);
    free(out);
    unsetenv("EMU_CUDNN_SUBLIBRARIES");
    unsetenv("VGGFT_CUDNN_LIBRARY");
    remove_tree(dir);
    free(dir);
}

// Height and width apart (a descriptor with the two swapped is square-blind).
Test(gpu, non_square_48x80) { compare_hw(ARCH_VGG16, 48, 80, "block5_pool", 3, GPU_FP32, 1e-4f); }
Test(gpu, non_square_80x48_bf16) { compare_hw(ARCH_VGG16, 80, 48, "block5_pool", 2, GPU_BF16, 1e-1f); }
Test(gpu, smallest_input_32) { compare(ARCH_VGG16, 32, "block5_pool", 1, GPU_FP32, 1e-4f); }
Test(gpu, largest_input_512) { compare(ARCH_VGG16, 512, "block5_pool", 1, GPU_FP32, 1e-4f); }
Test(gpu, batch_256) { compare(ARCH_VGG16, 32, "block5_pool", 256, GPU_FP32, 1e-4f); }
Test(gpu, tf32_within_its_tolerance) { compare(ARCH_VGG16, 64, "block5_pool", 4, GPU_TF32, 2e-2f); }
// BF16 rounds every activation and weight to an 8-bit mantissa: 1e-1.
Test(gpu, bf16_within_its_tolerance) {
    compare(ARCH_VGG16, 64, "block5_pool", 4, GPU_BF16, 1e-1f);
    compare(ARCH_VGG16, 150, "block5_pool", 3, GPU_BF16, 1e-1f);
    compare(ARCH_VGG16, 40, "block1_pool", 2, GPU_BF16, 1e-1f);
}

// extract on the GPU sends RGB8 pixels that the GPU preprocesses with the
// host's prep_pixel: the features equal those of the host's floats bit for
// bit, for every preprocessing, in a full and in a padded batch.
Test(gpu, rgb8_input_equals_host_preprocessed_floats) {
    need_gpu();
    const int size = 48, B = 4;
    Model m = build(ARCH_VGG16, size, "block5_pool");
    const long D = model_feature_size(&m);
    const size_t pixels = (size_t)size * size;
    uint8_t *rgb = malloc(pixels * 3 * B);
    for (size_t i = 0; i < pixels * 3 * B; i++) rgb[i] = (uint8_t)((i * 131 + i / 5) % 256);
    float *x = malloc(sizeof(float) * pixels * 3 * B), *a = malloc(sizeof(float) * D * B),
          *b = malloc(sizeof(float) * D * B);
    GpuBase *g = gpu_base_create(&m, B, GPU_FP32);
    cr_assert_not_null(g, "%s", err_msg());
    for (int prep = 0; prep < 3; prep++)
        for (int N = B; N >= B - 1; N--) {
            image_preprocess(rgb, pixels * N, (PrepMode)prep, x);
            cr_assert_eq(gpu_base_forward(g, x, N, a), 0, "%s", err_msg());
            cr_assert_eq(gpu_base_submit_rgb8(g, rgb, N, (PrepMode)prep), 0, "%s", err_msg());
            cr_assert_eq(gpu_base_collect(g, b), N, "%s", err_msg());
            cr_expect(!memcmp(a, b, sizeof(float) * D * N), "%s, %d images: RGB8 input gives other features",
                      prep_name((PrepMode)prep), N);
        }
    gpu_base_free(g);
    free(rgb), free(x), free(a), free(b);
    model_free(&m);
}

// An image's features are the same bits whatever else is in its batch and
// however many images the batch holds (batches are padded to the planned
// size): what makes a resumed extraction equal an uninterrupted one.
Test(gpu, per_image_bits_do_not_depend_on_the_batch) {
    need_gpu();
    const int N = 5, size = 64;
    Model m = build(ARCH_VGG16, size, "block5_pool");
    long D = model_feature_size(&m);
    size_t img = (size_t)size * size * 3;
    float *x = images(N, size), *all = malloc(sizeof(float) * N * D), *one = malloc(sizeof(float) * D);
    GpuBase *g = gpu_base_create(&m, 8, GPU_FP32);
    cr_assert_not_null(g, "%s", err_msg());
    cr_assert_eq(gpu_base_forward(g, x, N, all), 0, "%s", err_msg());
    for (int i = 0; i < N; i++) {
        cr_assert_eq(gpu_base_forward(g, x + i * img, 1, one), 0, "%s", err_msg());
        cr_expect(!memcmp(one, all + i * D, sizeof(float) * D), "image %d alone differs from image %d of a batch of %d",
                  i, i, N);
    }
    // A second GpuBase (a rerun) picks the same algorithms: the same bits.
    GpuBase *g2 = gpu_base_create(&m, 8, GPU_FP32);
    cr_assert_not_null(g2, "%s", err_msg());
    float *again = malloc(sizeof(float) * N * D);
    cr_assert_eq(gpu_base_forward(g2, x, N, again), 0, "%s", err_msg());
    cr_expect(!memcmp(again, all, sizeof(float) * N * D), "a second plan computes other bits");
    gpu_base_free(g2);
    gpu_base_free(g);
    free(x), free(all), free(one), free(again);
    model_free(&m);
}

// --- through extract -------------------------------------------------------------

static int extract(const char *top, const char *cache, const char *extra, char **out) {
    char args[3000];
    snprintf(args, sizeof args,
             "--data '%s/data' --cache '%s' --weights random --input-size 64 --batch 4 --dtype f32 --quiet %s 2>&1; "
             "exit $?",
             top, cache, extra);
    return run_tool_timeout("extract", args, 300, out);
}

static void load(const char *cache, FeatureSet *fs) {
    CacheMeta meta;
    cr_assert_eq(features_load(fs, cache, 1 << 26, 1, &meta), 0, "%s", err_msg());
    cache_meta_free(&meta);
}

// extract --device cuda writes what --device cpu writes, within tolerance;
// stopped by SIGTERM and rerun, the same bits as an uninterrupted GPU run.
Test(gpu, extract_cuda_equals_cpu_and_resumes_bit_for_bit) {
    need_gpu();
    char *top = make_shape_folder("gpu_extract", 9, 100);
    char cpu[1100], cuda[1100], resumed[1100];
    snprintf(cpu, sizeof cpu, "%s/cpu", top);
    snprintf(cuda, sizeof cuda, "%s/cuda", top);
    snprintf(resumed, sizeof resumed, "%s/resumed", top);
    char *out;
    cr_assert_eq(extract(top, cpu, "--device cpu", &out), 0, "%s", out);
    free(out);
    cr_assert_eq(extract(top, cuda, "--device cuda", &out), 0, "%s", out);
    free(out);
    setenv("VGGFT_TEST_SIGNAL_AFTER", "7", 1);
    int rc = extract(top, resumed, "--device cuda", &out);
    unsetenv("VGGFT_TEST_SIGNAL_AFTER");
    cr_assert_eq(rc, EXIT_STOPPED, "%s", out);
    free(out);
    cr_assert_eq(extract(top, resumed, "--device cuda", &out), 0, "%s", out);
    free(out);

    FeatureSet a, b, c;
    load(cpu, &a), load(cuda, &b), load(resumed, &c);
    cr_assert_eq(a.n, 18);
    cr_assert(a.n == b.n && b.n == c.n && a.D == b.D && b.D == c.D);
    size_t n = (size_t)a.n * a.D;
    const float *fa = a.data, *fb = b.data, *fc = c.data;
    float scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmaxf(scale, fabsf(fa[i]));
    float err = max_abs_diff(fb, fa, n);
    fprintf(stderr, "GPU vs CPU: extract 64x64 block5_pool: max |diff| %.3g = %.3g of the largest feature\n", err,
            err / scale);
    cr_expect_leq(err, 1e-4f * scale, "extract --device cuda vs cpu: max |diff| %g, largest %g", err, scale);
    cr_expect(!memcmp(fb, fc, n * sizeof(float)), "a stopped and resumed GPU extraction differs from an uninterrupted one");
    features_free(&a), features_free(&b), features_free(&c);
    remove_tree(top);
    free(top);
}

// A --batch past cuDNN's tensor size (at 512x512, 128 and more) runs on the
// GPU in batches that fit, with a note, rather than fail or fall back to the
// CPU (--device auto would have).
Test(gpu, extract_batch_past_cudnn_limit_runs_in_batches_that_fit, .timeout = 300) {
    need_gpu();
    if (test_gpu_emulated()) cr_skip_test("the emulated GPU's memory is the host's: 127 images at 512x512 need 8.5 GB a tensor");
    char *top = make_shape_folder("gpu_big_batch", 2, 100);
    char cache[1100];
    snprintf(cache, sizeof cache, "%s/c", top);
    char *out;
    int rc = extract(top, cache, "--device auto --input-size 512 --batch 130 --layer block1_pool", &out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "note: --batch 130 runs on the GPU in batches of 127 at 512x512") != NULL, "%s", out);
    cr_expect(strstr(out, "GPU unusable") == NULL, "%s", out);
    free(out);
    FeatureSet a;
    load(cache, &a);
    cr_expect_eq(a.n, 4);
    features_free(&a);
    remove_tree(top);
    free(top);
}

// Real photos through real weights: the GPU run carries them (made by
// scripts/real_photos.sh: ImageNet VGG16 weights rounded to 10-bit mantissas
// to fit the device tool's carry limit, and flowers5 photos) and names the
// folder in VGGFT_REAL_DIR (weights.h5, photos/CLASS/*.jpg). Skipped unless
// both it and a GPU are there. Each precision against the CPU path, over
// every image and feature, at 150x150 and 224x224 with caffe preprocessing:
// the figures the README's GPU table states for real photos.
Test(gpu, real_photos_and_imagenet_weights, .timeout = 900) {
    const char *dir = getenv("VGGFT_REAL_DIR");
    if (!dir || !*dir) cr_skip_test("VGGFT_REAL_DIR is not set (scripts/real_photos.sh makes the folder)");
    need_gpu();
    char weights[1024], photos[1024], id[96];
    snprintf(weights, sizeof weights, "%s/weights.h5", dir);
    snprintf(photos, sizeof photos, "%s/photos", dir);
    Dataset ds;
    cr_assert_eq(dataset_scan(photos, NULL, 0, &ds), 0, "%s", err_msg());
    const int N = ds.n_items < 64 ? ds.n_items : 64, B = 16;
    cr_assert_gt(N, 0, "no photos in %s", photos);
    parallel_set_threads(parallel_cpus());
    const int sizes[2] = {150, 224};
    const GpuPrecision precs[3] = {GPU_FP32, GPU_TF32, GPU_BF16};
    const float bound[3] = {1e-4f, 2e-2f, 1e-1f};  // as the tests above
    for (int si = 0; si < 2; si++) {
        const int size = sizes[si];
        ModelConfig cfg;
        model_config_defaults(&cfg);
        cfg.input_h = cfg.input_w = size;
        Model m;
        cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_msg());
        cr_assert_eq(load_base_weights(&m, weights, 0, 1, id, sizeof id), 0, "%s", err_msg());
        const long D = model_feature_size(&m);
        const size_t img = (size_t)size * size * 3;
        float *x = malloc(sizeof(float) * img * (N + B)), *cpu = malloc(sizeof(float) * D * N),
              *gpu = malloc(sizeof(float) * D * (N + B));
        cr_assert(x && cpu && gpu);
        LoadOptions load = {.w = size, .h = size, .interp = INTERP_NEAREST, .prep = PREP_CAFFE};
        for (int i = 0; i < N; i++) {
            char *path = dataset_item_path(&ds, i);
            cr_assert_eq(image_load(path, &load, NULL, x + img * i, NULL), 0, "%s", err_msg());
            free(path);
        }
        BaseWorkspace ws;
        cr_assert_eq(base_workspace_alloc(&ws, &m), 0);
        base_forward_cpu(&m, x, N, cpu, &ws);
        base_workspace_free(&ws);
        float scale = 0;
        for (long i = 0; i < N * D; i++) scale = fmaxf(scale, fabsf(cpu[i]));
        for (int p = 0; p < 3; p++) {
            GpuBase *g = gpu_base_create(&m, B, precs[p]);
            cr_assert_not_null(g, "%s", err_msg());
            for (int i = 0; i < N; i += B)
                cr_assert_eq(gpu_base_forward(g, x + img * i, N - i < B ? N - i : B, gpu + D * i), 0, "%s",
                             err_msg());
            gpu_base_free(g);
            // Also the worst image on its own scale (an image whose features
            // are all small is not hidden by the others').
            float err = max_abs_diff(gpu, cpu, (size_t)(N * D)), worst = 0;
            for (int i = 0; i < N; i++) {
                float s = 0;
                for (long k = 0; k < D; k++) s = fmaxf(s, fabsf(cpu[D * i + k]));
                float e = max_abs_diff(gpu + D * i, cpu + D * i, (size_t)D);
                if (s > 0) worst = fmaxf(worst, e / s);
            }
            fprintf(stderr,
                    "GPU vs CPU: real photos (%d, %s), ImageNet VGG16 (10-bit mantissas) %dx%d %s: max |diff| %.3g "
                    "= %.3g of the largest feature %.4g; worst image %.3g of its own largest\n",
                    N, ds.root, size, size, gpu_precision_name(precs[p]), err, err / scale, scale, worst);
            cr_expect_leq(err, bound[p] * scale, "real photos %dx%d %s: max |diff| %g, largest %g", size, size,
                          gpu_precision_name(precs[p]), err, scale);
        }
        free(x), free(cpu), free(gpu);
        model_free(&m);
    }
    dataset_free(&ds);
}
