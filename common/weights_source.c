#include "weights_source.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

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
            // A warning: shown even when quiet.
            if (look.state == CACHE_STALE)
                log_printf(stderr, "warning: %s does not have the expected MD5 %s; downloading it again\n", look.path,
                           look.md5);
            if (!quiet) log_printf(stderr, "Downloading data from %s\n", look.url);
        }
        Progress p;
        progress_start(&p, stderr, 0, "KiB");
        if (quiet) p.enabled = 0;
        int rc = weights_imagenet_path(arch, 0, NULL, download_progress, &p, path, sizeof path);
        if (rc < 0) {
            // Compute nodes often have no network: say how to do without.
            if (look.state == CACHE_STALE)  // the file there is not Keras's: copying it again would not help
                return err_set("--weights imagenet: %s. The file at %s is not Keras's (its MD5 is not %s): replace it "
                               "with Keras's own file, or give the file you have as --weights FILE",
                               err_msg(), look.path, look.md5);
            return err_set("--weights imagenet: %s. Without network access, copy Keras's file to %s (it is checked "
                           "by MD5) or give it as --weights FILE",
                           err_msg(), look.path);
        }
        if (rc > 0) progress_finish(&p, NULL);
    } else {
        snprintf(path, sizeof path, "%s", spec);
        struct stat st;
        if (stat(path, &st) < 0)
            return err_set("--weights %s: %s (give a Keras HDF5 weights file, imagenet or random)", path,
                           errno == ENOENT ? "no such file" : strerror(errno));
        if (S_ISDIR(st.st_mode))
            return err_set("--weights %s: is a folder, not a weights file (give a Keras HDF5 file, imagenet or "
                           "random)",
                           path);
        // A FIFO or device would block the hash (and Keras would not read
        // it either): only regular files are weights files.
        if (!S_ISREG(st.st_mode))
            return err_set("--weights %s: not a regular file (give a Keras HDF5 file, imagenet or random)", path);
    }
    char hex[65];
    if (hash_file_hex(path, HASH_SHA256, hex) < 0) return -1;
    snprintf(id, id_size, "sha256:%s", hex);
    return model_load_base(m, path);
}

// The --weights value of the extract command recorded in cmd (as
// cli_command_line quotes it: 'a b' and '\'' inside), into out; 0 when the
// command has none.
static int command_weights(const char *cmd, char *out, size_t size) {
    const char *p = cmd;
    while (p && (p = strstr(p, " --weights"))) {
        p += strlen(" --weights");
        if (*p == ' ' || *p == '=') break;
    }
    if (!p || !*p) return 0;
    p++;
    size_t n = 0;
    if (*p != '\'') {
        while (*p && *p != ' ' && n + 1 < size) out[n++] = *p++;
    } else {
        for (p++; *p && n + 1 < size;) {
            if (!strncmp(p, "'\\''", 4)) out[n++] = '\'', p += 4;
            else if (*p == '\'') break;
            else out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return n > 0;
}

int load_head_base_weights(Model *m, const char *spec, long seed, int quiet, const char *head,
                           const ModelMeta *head_meta, char *id, size_t id_size) {
    unsigned long head_seed = 1;
    const int head_random = sscanf(head_meta->weights, "random:seed=%lu", &head_seed) == 1;
    // No --weights: the ones the head records (random, or the file or
    // imagenet its features' extract command was given), as the head fixes
    // the input size, cut and preprocessing; checked below as any.
    char recorded[4096];
    if (!spec) {
        if (head_random) spec = "random";
        else if (head_meta->features_made_by && command_weights(head_meta->features_made_by, recorded, sizeof recorded))
            spec = recorded;
        else spec = "imagenet";
        if (!quiet) log_printf(stderr, "note: base weights %s, as the head %s records (--weights overrides)\n", spec, head);
    }
    const int seed_given = seed >= 0;
    if (!seed_given) seed = (long)head_seed;
    char note[2200], hint[96];
    if (!head_random) snprintf(hint, sizeof hint, "give that file with --weights FILE");
    else if (seed_given) snprintf(hint, sizeof hint, "give --weights random --seed %lu, or leave out --seed", head_seed);
    else snprintf(hint, sizeof hint, "give --weights random");
    if (load_base_weights(m, spec, (uint64_t)seed, quiet, id, id_size) < 0) {
        if (head_meta->weights[0])
            err_set("%s (the head %s was trained on the base weights %s%s: %s)", err_msg(), head, head_meta->weights,
                    model_meta_made_by_note(head_meta, note, sizeof note), hint);
        return -1;
    }
    if (head_meta->weights[0] && strcmp(head_meta->weights, id))
        return err_set("--weights %s (%s) are not the base weights the head was trained on (%s: %s%s): %s", spec, id,
                       head, head_meta->weights, model_meta_made_by_note(head_meta, note, sizeof note), hint);
    return 0;
}
