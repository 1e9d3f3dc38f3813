#include "weights_source.h"

#include <stdio.h>
#include <string.h>

#include "download.h"
#include "error.h"
#include "hash.h"
#include "model_io.h"
#include "progress.h"

static int download_progress(void *ctx, long long done, long long total) {
    Progress *p = ctx;
    if (p->total <= 0 && total > 0) p->total = (long)(total >> 10);
    progress_update(p, (long)(done >> 10), NULL);
    return 0;
}

int load_base_weights(Model *m, const char *spec, uint64_t seed, int quiet, char *id, size_t id_size) {
    if (!strcmp(spec, "random")) {
        if (model_alloc_weights(m, 1, m->n_base) < 0) return -1;
        model_init_random(m, 1, m->n_base, seed);
        snprintf(id, id_size, "random:seed=%llu", (unsigned long long)seed);
        return 0;
    }
    char path[4096];
    if (!strcmp(spec, "imagenet")) {
        const char *arch = arch_name(m->cfg.arch);
        WeightsLookup look;
        if (weights_imagenet_lookup(arch, 0, NULL, &look) < 0) return -1;
        if (look.state != CACHE_OK) {
            if (look.state == CACHE_STALE && !quiet)
                fprintf(stderr, "warning: %s does not have the expected MD5 %s; downloading it again\n", look.path,
                        look.md5);
            if (!quiet) fprintf(stderr, "Downloading data from %s\n", look.url);
        }
        Progress p;
        progress_start(&p, stderr, 0, "KiB");
        if (quiet) p.enabled = 0;
        int rc = weights_imagenet_path(arch, 0, NULL, download_progress, &p, path, sizeof path);
        if (rc < 0) return err_prefix("--weights imagenet: ");
        if (rc > 0) progress_finish(&p, NULL);
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    char hex[65];
    if (hash_file_hex(path, HASH_SHA256, hex) < 0) return -1;
    snprintf(id, id_size, "sha256:%s", hex);
    return model_load_base(m, path);
}
