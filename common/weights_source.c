#include "weights_source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "download.h"
#include "error.h"
#include "hash.h"
#include "model_io.h"
#include "progress.h"
#include "weights_h5.h"

static int download_progress(void *ctx, long long done, long long total) {
    Progress *p = ctx;
    if (p->total <= 0 && total > 0) p->total = (long)(total >> 10);
    progress_update(p, (long)(done >> 10), NULL);
    return 0;
}

int weights_spec_check(const char *spec) {
    if (!strcmp(spec, "random") || !strcmp(spec, "imagenet")) return 0;
    struct stat st;
    if (stat(spec, &st) < 0)
        return err_set("--weights %s: %s (give a Keras HDF5 weights file, imagenet or random)", spec,
                       errno == ENOENT ? "no such file" : strerror(errno));
    if (S_ISDIR(st.st_mode))
        return err_set("--weights %s: is a folder, not a weights file (give a Keras HDF5 file, imagenet or random)",
                       spec);
    // A FIFO or device would block the hash (and Keras would not read it
    // either): only regular files are weights files.
    if (!S_ISREG(st.st_mode))
        return err_set("--weights %s: not a regular file (give a Keras HDF5 file, imagenet or random)", spec);
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
        if (weights_spec_check(spec) < 0) return -1;
        snprintf(path, sizeof path, "%s", spec);
    }
    // A file vggft wrote: a whole model's base is a base (its fine-tuned
    // layers included: say so); a head has none (say what to give).
    char *contents = NULL;
    if (strcmp(spec, "imagenet") && h5_read_attr(path, "vggft_contents", &contents) > 0) {
        int head = !strcmp(contents, "head"), full = !strcmp(contents, "full");
        free(contents);
        if (head)
            return err_set("--weights %s: a dense head trained by `train`, not the weights of a conv base: give the "
                           "base it was trained on (imagenet, a Keras weights file such as "
                           "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or random)",
                           path);
        if (full)
            log_printf(stderr, "note: --weights %s is a whole model (from `finetune`): its conv base is used, the "
                               "layers fine-tuning trained included\n",
                       path);
    }
    char hex[65];
    if (hash_file_hex(path, HASH_SHA256, hex) < 0) return -1;
    snprintf(id, id_size, "sha256:%s", hex);
    return model_load_base(m, path);
}

// The next word of a command line as cli_command_line writes it (plain, or
// in single quotes with '\'' for a quote), unquoted into out; returns the
// text after it, NULL at the end.
static const char *next_word(const char *p, char *out, size_t size) {
    while (*p == ' ') p++;
    if (!*p) return NULL;
    size_t n = 0;
    while (*p && *p != ' ') {
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (n + 1 < size) out[n++] = *p;
            if (*p) p++;
        } else if (!strncmp(p, "\\'", 2)) {
            if (n + 1 < size) out[n++] = '\'';
            p += 2;
        } else {
            if (n + 1 < size) out[n++] = *p;
            p++;
        }
    }
    out[n] = '\0';
    return p;
}

// The --weights value of the extract command recorded in cmd (its last,
// as the option parser keeps the last of a repeated option; "--weights X"
// or "--weights=X", whatever the quoting), into out; 0 when it has none.
static int command_weights(const char *cmd, char *out, size_t size) {
    char word[4096];
    int found = 0, take_next = 0;
    for (const char *p = cmd; (p = next_word(p, word, sizeof word));) {
        if (take_next) {
            snprintf(out, size, "%s", word);
            found = 1, take_next = 0;
        } else if (!strcmp(word, "--weights")) {
            take_next = 1;
        } else if (!strncmp(word, "--weights=", 10)) {
            snprintf(out, size, "%s", word + 10);
            found = 1;
        } else if (!strcmp(word, "--")) {
            break;
        }
    }
    return found && out[0];
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
        else spec = NULL;
        if (!spec) {
            // An older head: its weights' SHA-256 only, no command.
            spec = "imagenet";
            if (!quiet)
                log_printf(stderr, "note: base weights imagenet: the head %s names no weights file, only their %s "
                           "(give --weights FILE if they were not Keras's ImageNet weights)\n", head,
                           head_meta->weights[0] ? head_meta->weights : "digest");
        } else if (!quiet) {
            log_printf(stderr, "note: base weights %s, as the head %s records (--weights overrides)\n", spec, head);
        }
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
        return err_set("--weights %s (%s) are not the base weights the head was trained on (%s: %s%s; files are "
                       "compared by their SHA-256, so a copy of the same weights saved again, by Keras or h5py, "
                       "counts as other weights too): %s",
                       spec, id, head, head_meta->weights, model_meta_made_by_note(head_meta, note, sizeof note), hint);
    return 0;
}
