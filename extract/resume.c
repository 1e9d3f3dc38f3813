#include "resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "hash.h"

// One stored record as found: where it is and what it says it is.
typedef struct {
    CacheKey key;
    char *path;          // NULL: damaged
    uint8_t sha256[32];
    long target;         // the file's index now, -1: not in this shard
} Stored;

typedef struct {
    Stored *s;
    long n, cap;
} StoredList;

static int collect(void *ctx, const CacheKey *key, const void *val, size_t len) {
    StoredList *l = ctx;
    if (l->n == l->cap) {
        long cap = l->cap ? l->cap * 2 : 256;
        Stored *s = realloc(l->s, (size_t)cap * sizeof *s);
        if (!s) return err_set("out of memory listing the cache");
        l->s = s, l->cap = cap;
    }
    Stored *s = &l->s[l->n++];
    memset(s, 0, sizeof *s);
    s->key = *key;
    s->target = -1;
    const char *path;
    int plen;
    if (!key->damaged &&
        cache_record_decode(NULL, key->index, val, len, -1, NULL, &path, &plen, s->sha256, NULL) == 0) {
        s->path = strndup(path, (size_t)plen);
        if (!s->path) return err_set("out of memory listing the cache");
    }
    return 0;
}

// This shard's files by path, to find a record's target index.
typedef struct {
    const char *path;
    long index;
} PathIndex;

static int cmp_path_index(const void *a, const void *b) {
    return strcmp(((const PathIndex *)a)->path, ((const PathIndex *)b)->path);
}

// Damaged first (NULL path), then by path; within a path, a record already
// in place at its target first.
static int cmp_stored(const void *a, const void *b) {
    const Stored *x = a, *y = b;
    if (!x->path || !y->path) return (x->path != NULL) - (y->path != NULL);
    int c = strcmp(x->path, y->path);
    if (c) return c;
    int xi = !x->key.moving && (long)x->key.index == x->target, yi = !y->key.moving && (long)y->key.index == y->target;
    return yi - xi;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const CachedEntry *)a)->path, ((const CachedEntry *)b)->path);
}

CachedEntry *find_cached(const CachedSet *s, const char *path) {
    CachedEntry key = {.path = (char *)path};
    return s->n ? bsearch(&key, s->e, (size_t)s->n, sizeof *s->e, cmp_entry) : NULL;
}

void cached_set_free(CachedSet *s) {
    for (long i = 0; i < s->n; i++) free(s->e[i].path);
    free(s->e);
    memset(s, 0, sizeof *s);
}

int resume_plan(Cache *c, const Dataset *ds, const long *items, long n_items, CachedSet *out) {
    memset(out, 0, sizeof *out);
    StoredList l = {0};
    PathIndex *pi = malloc(sizeof *pi * (size_t)(n_items ? n_items : 1));
    int rc = pi ? cache_visit_keys(c, collect, &l) : err_set("out of memory");
    if (rc == 0) {
        for (long i = 0; i < n_items; i++) pi[i] = (PathIndex){ds->items[items[i]].path, items[i]};
        if (n_items) qsort(pi, (size_t)n_items, sizeof *pi, cmp_path_index);
        for (long i = 0; i < l.n; i++) {
            if (!l.s[i].path) continue;
            PathIndex key = {l.s[i].path, 0};
            PathIndex *hit = n_items ? bsearch(&key, pi, (size_t)n_items, sizeof *pi, cmp_path_index) : NULL;
            l.s[i].target = hit ? hit->index : -1;
        }
        if (l.n) qsort(l.s, (size_t)l.n, sizeof *l.s, cmp_stored);
        out->e = malloc(sizeof *out->e * (size_t)(l.n ? l.n : 1));
        if (!out->e) rc = err_set("out of memory");
    }
    // Deletions first (they may free target keys), then moves to temporary
    // keys, then from temporary keys into place.
    long *moves = rc == 0 ? malloc(sizeof(long) * (size_t)(l.n ? l.n : 1)) : NULL;
    long n_moves = 0;
    for (long i = 0; i < l.n && rc == 0; i++) {
        Stored *s = &l.s[i];
        int keeper = s->path && s->target >= 0 && (i == 0 || !l.s[i - 1].path || strcmp(l.s[i - 1].path, s->path));
        if (!keeper) {
            rc = cache_del_key(c, &s->key);
            if (s->path) out->removed++;
            else out->damaged++;
            continue;
        }
        CachedEntry *e = &out->e[out->n++];
        e->path = s->path;
        s->path = NULL;  // owned by out now
        e->key = (uint64_t)s->target;
        memcpy(e->sha256, s->sha256, 32);
        if (s->key.moving || (long)s->key.index != s->target) moves[n_moves++] = i;
    }
    for (long m = 0; m < n_moves && rc == 0; m++) {
        Stored *s = &l.s[moves[m]];
        if (!(s->key.moving && (long)s->key.index == s->target)) rc = cache_move(c, &s->key, (uint64_t)s->target, 1);
    }
    for (long m = 0; m < n_moves && rc == 0; m++) {
        Stored *s = &l.s[moves[m]];
        CacheKey temp = {.moving = 1, .index = (uint64_t)s->target, .klen = 11};
        snprintf(temp.key, sizeof temp.key, "t%010llu", (unsigned long long)s->target);
        rc = cache_move(c, &temp, (uint64_t)s->target, 0);
        out->moved++;
    }
    if (rc == 0) rc = cache_commit(c);
    for (long i = 0; i < l.n; i++) free(l.s[i].path);
    free(l.s);
    free(pi);
    free(moves);
    if (rc < 0) {
        cached_set_free(out);
        return -1;
    }
    if (out->n) qsort(out->e, (size_t)out->n, sizeof *out->e, cmp_entry);
    return 0;
}

// --- a cache made from another folder ---------------------------------------------

typedef struct {
    const Dataset *ds;
    long step, seen;
    int sampled, matched;
} MovedSample;

static int sample_record(void *ctx, uint64_t key, const void *val, size_t len) {
    MovedSample *m = ctx;
    if (m->seen++ % m->step) return 0;
    if (m->sampled == 64) return 1;  // enough
    const char *p;
    int plen;
    uint8_t sha[32];
    if (cache_record_decode(NULL, key, val, len, -1, NULL, &p, &plen, sha, NULL) < 0) return 0;  // damaged: no sample
    m->sampled++;
    char full[4200], hex[65], want[65];
    snprintf(full, sizeof full, "%s/%.*s", m->ds->root, plen, p);
    struct stat st;
    if (stat(full, &st) < 0 || !S_ISREG(st.st_mode) || hash_file_hex(full, HASH_SHA256, hex) < 0) return 0;
    for (int i = 0; i < 32; i++) snprintf(want + 2 * i, 3, "%02x", sha[i]);
    m->matched += !strcmp(hex, want);
    return 0;
}

int resume_folder_moved(void *ctx, Cache *c, const CacheMeta *have, const CacheMeta *want) {
    const Dataset *ds = ctx;
    int same_classes = have->n_classes == want->n_classes;
    for (int k = 0; same_classes && k < have->n_classes; k++)
        same_classes = !strcmp(have->class_names[k], want->class_names[k]);
    long n = cache_count(c);
    MovedSample m = {ds, n > 64 ? n / 64 : 1, 0, 0, 0};
    if (same_classes && n > 0 && cache_visit(c, sample_record, &m) < 0) return -1;
    // An empty cache has nothing to lose; otherwise most sampled files must be there, unchanged.
    if (same_classes && (n == 0 || 2 * m.matched > m.sampled)) {
        fprintf(stderr, "note: %s was made from %s; %s has the same classes and files (%d of %d sampled): taking it "
                        "as the same folder, moved\n",
                c->path, have->data_dir, want->data_dir, m.matched, m.sampled);
        return 1;
    }
    char why[160];
    if (!same_classes) snprintf(why, sizeof why, "other classes");
    else snprintf(why, sizeof why, "only %d of %d sampled files with the same bytes", m.matched, m.sampled);
    err_set("%s: this cache was made from %s, and this run reads %s (%s): a cache belongs to its folder, so it is left "
            "untouched. Check --cache, or use --overwrite to replace it with this folder's features (a folder that "
            "moved is recognised by its files)",
            c->path, have->data_dir, want->data_dir, why);
    return 0;
}
