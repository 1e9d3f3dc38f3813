#include "checkpoint.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h"
#include "fileutil.h"

int checkpoint_add(Checkpoint *c, const char *name, const float *data, size_t n) {
    int i = c->n_arrays++;
    c->names = realloc(c->names, sizeof(char *) * (size_t)c->n_arrays);
    c->sizes = realloc(c->sizes, sizeof(size_t) * (size_t)c->n_arrays);
    c->data = realloc(c->data, sizeof(float *) * (size_t)c->n_arrays);
    if (!c->names || !c->sizes || !c->data) return err_set("out of memory");
    c->names[i] = strdup(name);
    c->sizes[i] = n;
    c->data[i] = malloc(sizeof(float) * (n ? n : 1));
    if (!c->data[i]) return err_set("out of memory");
    memcpy(c->data[i], data, sizeof(float) * n);
    return 0;
}

void checkpoint_free(Checkpoint *c) {
    for (int i = 0; i < c->n_arrays; i++) free(c->names[i]), free(c->data[i]);
    free(c->names), free(c->sizes), free(c->data), free(c->text);
    memset(c, 0, sizeof *c);
}

static int put(FILE *f, const void *p, size_t n, uLong *crc) {
    *crc = crc32(*crc, p, (uInt)n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

int checkpoint_write(const Checkpoint *c, const char *path) {
    AtomicFile af;
    FILE *f = atomic_open(&af, path);
    if (!f) return -1;
    uLong crc = crc32(0L, Z_NULL, 0);
    uint32_t tl = (uint32_t)strlen(c->text ? c->text : ""), na = (uint32_t)c->n_arrays;
    int bad = put(f, "VGGFTCK1", 8, &crc) || put(f, &tl, 4, &crc) || put(f, c->text ? c->text : "", tl, &crc) ||
              put(f, &na, 4, &crc);
    for (int i = 0; i < c->n_arrays && !bad; i++) {
        uint32_t nl = (uint32_t)strlen(c->names[i]);
        uint64_t n = c->sizes[i];
        bad = put(f, &nl, 4, &crc) || put(f, c->names[i], nl, &crc) || put(f, &n, 8, &crc) ||
              put(f, c->data[i], sizeof(float) * n, &crc);
    }
    uint32_t crc32v = (uint32_t)crc;
    if (!bad) bad = fwrite(&crc32v, 4, 1, f) != 1;
    if (bad) {
        atomic_abort(&af);
        return err_set("%s: cannot write the checkpoint: %s", path, strerror(errno));
    }
    return atomic_commit(&af);
}

int checkpoint_read(Checkpoint *c, const char *path) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf || size < 20 || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        return err_set("%s: not a training checkpoint (too short)", path);
    }
    fclose(f);
    uint32_t want;
    memcpy(&want, buf + size - 4, 4);
    if (memcmp(buf, "VGGFTCK1", 8) != 0) {
        free(buf);
        return err_set("%s: not a training checkpoint written by train", path);
    }
    if ((uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4)) != want) {
        free(buf);
        return err_set("%s: the checkpoint is damaged (checksum mismatch)", path);
    }
    // Every length is checked against what is left before it is used.
    const size_t end = (size_t)size - 4;
    size_t at = 8;
    uint32_t tl, na;
#define NEED(k) if ((k) > end - at) goto damaged
    NEED(4);
    memcpy(&tl, buf + at, 4), at += 4;
    NEED(tl);
    c->text = strndup((const char *)buf + at, tl), at += tl;
    NEED(4);
    memcpy(&na, buf + at, 4), at += 4;
    for (uint32_t i = 0; i < na; i++) {
        uint32_t nl;
        uint64_t n;
        NEED(4);
        memcpy(&nl, buf + at, 4), at += 4;
        NEED((size_t)nl + 8);
        char *name = strndup((const char *)buf + at, nl);
        at += nl;
        memcpy(&n, buf + at, 8), at += 8;
        if (n > (end - at) / 4) {
            free(name);
            goto damaged;
        }
        int rc = checkpoint_add(c, name, (const float *)(buf + at), n);
        free(name);
        if (rc < 0) {
            free(buf);
            checkpoint_free(c);
            return -1;
        }
        at += n * 4;
    }
#undef NEED
    free(buf);
    return 0;
damaged:
    free(buf);
    checkpoint_free(c);
    return err_set("%s: the checkpoint is damaged (a length overruns the file)", path);
}

int checkpoint_get(const Checkpoint *c, const char *path, const char *name, float *dst, size_t n) {
    for (int i = 0; i < c->n_arrays; i++) {
        if (strcmp(c->names[i], name)) continue;
        if (c->sizes[i] != n)
            return err_set("%s: %s has %zu values, this run needs %zu", path, name, c->sizes[i], n);
        memcpy(dst, c->data[i], sizeof(float) * n);
        return 0;
    }
    return err_set("%s: the checkpoint has no %s", path, name);
}

char *checkpoint_setting(const Checkpoint *c, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = c->text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > kl && !strncmp(p, key, kl) && p[kl] == '=') return strndup(p + kl + 1, len - kl - 1);
        p = nl ? nl + 1 : p + len;
    }
    return NULL;
}
