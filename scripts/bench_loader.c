// The image loader alone (common/loader.c, no network, no GPU): images/s of
// the items finetune's and extract's loader threads make from an image
// folder, to tell whether a GPU run waits for its images (the GPU node's
// CPU cores set the ceiling of end-to-end images/s):
//   finetune  read + decode + resize + the seeds' augmentation + rescale:
//             float items, as finetune's load_item (finetune/finetune.c)
//   extract   read + decode + resize: RGB8 items, as extract's GPU path
//             (image_load_rgb8)
// Each pass reads every image of DIR's class folders (flow_from_directory's
// listing) once after an untimed pass (page cache, thread start).
//
//   build/bench_loader DIR SIZE THREADS [PASSES]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "augment.h"
#include "dataset.h"
#include "error.h"
#include "image.h"
#include "loader.h"
#include "progress.h"

typedef struct {
    const Dataset *ds;
    LoadOptions load;
    AugmentSpec aug;
    int rgb8;
    long pass;
} Ctx;

static int load(void *vctx, long index, float *out, void *extra) {
    const Ctx *c = vctx;
    char *path = dataset_item_path(c->ds, (int)index);
    if (!path) return err_set("out of memory");
    int rc;
    if (c->rgb8) {
        rc = image_load_rgb8(path, &c->load, (uint8_t *)out, NULL);
    } else {
        AugmentParams p;
        augment_draw(&c->aug, 1, c->pass, index, c->load.h, c->load.w, &p);
        rc = image_load(path, &c->load, &p, out, NULL);
    }
    free(path);
    return rc;
}

// One pass over the folder; returns images/s (failed images count too: they
// were read).
static double pass(Ctx *c, int threads) {
    const long n = c->ds->n_items;
    const size_t floats = (size_t)c->load.w * c->load.h * 3;
    double t0 = progress_now();
    Loader *l = loader_start(n, threads, 2 * 20 + threads, floats, 0, load, c);
    if (!l) {
        fprintf(stderr, "bench_loader: %s\n", err_msg());
        exit(1);
    }
    for (LoaderItem *it; (it = loader_next(l));) loader_release(l, it);
    loader_stop(l);
    c->pass++;
    return n / (progress_now() - t0);
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: bench_loader DIR SIZE THREADS [PASSES]\n");
        return 2;
    }
    int size = atoi(argv[2]), threads = atoi(argv[3]), passes = argc > 4 ? atoi(argv[4]) : 3;
    if (size < 32 || threads < 1 || passes < 1) {
        fprintf(stderr, "bench_loader: bad arguments\n");
        return 2;
    }
    Dataset ds;
    if (dataset_scan(argv[1], NULL, 0, &ds) < 0) {
        fprintf(stderr, "bench_loader: %s\n", err_msg());
        return 1;
    }
    Ctx c = {&ds, {size, size, INTERP_NEAREST, PREP_RESCALE, 0, 0}, {0}, 0, 0};
    augment_spec_seeds(&c.aug);
    for (c.rgb8 = 0; c.rgb8 < 2; c.rgb8++) {
        pass(&c, threads);  // untimed
        double best = 0;
        for (int k = 0; k < passes; k++) {
            double r = pass(&c, threads);
            if (r > best) best = r;
        }
        printf("loader alone, %s items (%s), %dx%d, %d threads: %.0f img/s (best of %d passes over %d images)\n",
               c.rgb8 ? "extract" : "finetune",
               c.rgb8 ? "decode, resize: RGB8" : "decode, resize, the seeds' augmentation, rescale: floats", size,
               size, threads, best, passes, ds.n_items);
    }
    dataset_free(&ds);
    return 0;
}
