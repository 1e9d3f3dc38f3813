// Writes a synthetic feature cache for the train benchmark: N records of
// 4x4x512 f16 features (the seeds' size: VGG16 block5_pool at 150x150),
// sparse and non-negative like ReLU + max-pool outputs, 2 classes.
//   build/bench_train_cache OUT [N]
#include <stdio.h>
#include <stdlib.h>

#include "cache.h"
#include "error.h"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s OUT [N]\n", argv[0]), 2;
    int n = argc > 2 ? atoi(argv[2]) : 3000;
    char *names[] = {"cats", "dogs"};
    CacheMeta m = {.input_h = 150, .input_w = 150, .feat_h = 4, .feat_w = 4, .feat_c = 512, .dtype = FEAT_F16,
                   .n_classes = 2, .class_names = names};
    snprintf(m.model, sizeof m.model, "vgg16");
    snprintf(m.weights, sizeof m.weights, "synthetic");
    snprintf(m.interpolation, sizeof m.interpolation, "nearest");
    snprintf(m.preprocess, sizeof m.preprocess, "caffe");
    snprintf(m.layer, sizeof m.layer, "block5_pool");
    Cache c;
    if (cache_open_write(&c, argv[1], &m, 1) < 0) return fprintf(stderr, "%s\n", err_msg()), 1;
    float f[8192];
    unsigned s = 1;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < 8192; j++) {
            s = s * 1103515245u + 12345u;
            f[j] = (s >> 16) % 3 ? 0.0f : (float)((s >> 8) % 4000) / 100.0f + (i % 2) * (j % 7 == 0);
        }
        char path[32];
        snprintf(path, sizeof path, "%s/%05d.jpg", names[i % 2], i);
        CacheRecord r = {.label = i % 2, .path = path, .features = f};
        if (cache_put(&c, (uint64_t)i, &r, 8192, FEAT_F16) < 0) return fprintf(stderr, "%s\n", err_msg()), 1;
    }
    if (cache_store_counts(&c, &m) < 0) return fprintf(stderr, "%s\n", err_msg()), 1;
    cache_close(&c);
    return 0;
}
