// extract --info PATH and extract --merge OUT IN...
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache.h"
#include "error.h"
#include "extract.h"

typedef struct {
    int n_classes;
    long *per_class;
    long long bytes;
    long records, damaged;
    int n_features;
    void *dctx;
    float *buf;
    long long nonzero, values;
} InfoStats;

static int info_visit(void *vctx, uint64_t key, const void *val, size_t len) {
    InfoStats *s = vctx;
    int32_t label;
    s->records++;
    s->bytes += (long long)len;
    if (cache_record_decode(s->dctx, key, val, len, s->n_features, &label, NULL, NULL, NULL, s->buf) < 0) {
        fprintf(stderr, "warning: %s\n", err_msg());
        s->damaged++;
        return 0;
    }
    if (label >= 0 && label < s->n_classes) s->per_class[label]++;
    for (int i = 0; i < s->n_features; i++) s->nonzero += s->buf[i] != 0.0f;
    s->values += s->n_features;
    return 0;
}

int extract_info(const char *path) {
    Cache c;
    CacheMeta m;
    if (cache_open_read(&c, path, &m) < 0) return -1;
    printf("cache:          %s\n", path);
    printf("model:          %s\n", m.model);
    printf("weights:        %s\n", m.weights);
    printf("input size:     %dx%d\n", m.input_w, m.input_h);
    printf("interpolation:  %s\n", m.interpolation);
    printf("preprocessing:  %s\n", m.preprocess);
    printf("layer:          %s\n", m.layer);
    printf("features:       %dx%dx%d (H,W,C), %s\n", m.feat_h, m.feat_w, m.feat_c, feat_dtype_name(m.dtype));
    if (m.shard[0]) printf("shard:          %s\n", m.shard);
    printf("made by:        vggft %s: %s\n", m.version, m.command);
    InfoStats s = {0};
    s.n_classes = m.n_classes;
    s.per_class = calloc((size_t)m.n_classes, sizeof(long));
    s.n_features = m.feat_h * m.feat_w * m.feat_c;
    s.buf = malloc(sizeof(float) * (size_t)s.n_features);
    s.dctx = c.dctx;
    int rc = cache_visit(&c, info_visit, &s);
    if (rc == 0) {
        printf("classes:        %d\n", m.n_classes);
        for (int k = 0; k < m.n_classes; k++) printf("  %3d %-24s %ld records\n", k, m.class_names[k], s.per_class[k]);
        double raw = (double)s.n_features * (m.dtype == FEAT_F16 ? 2 : 4);
        printf("records:        %ld%s\n", s.records, s.damaged ? " (some damaged, see the warnings)" : "");
        if (s.damaged) printf("damaged:        %ld\n", s.damaged);
        if (s.records) {
            printf("stored:         %.2f MB, %.0f bytes per record (raw features %.0f bytes: ratio %.2fx)\n",
                   s.bytes / 1e6, (double)s.bytes / s.records, raw, raw * s.records / (double)s.bytes);
            printf("non-zero:       %.1f%% of feature values\n", s.values ? 100.0 * s.nonzero / s.values : 0.0);
        }
        char data[1100];
        struct stat st;
        snprintf(data, sizeof data, "%s/data.mdb", path);
        if (stat(data, &st) == 0) printf("on disk:        %.2f MB (data.mdb)\n", st.st_size / 1e6);
    }
    free(s.per_class);
    free(s.buf);
    cache_meta_free(&m);
    cache_close(&c);
    return rc < 0 ? -1 : (s.damaged ? err_set("%s: %ld damaged record%s", path, s.damaged, s.damaged == 1 ? "" : "s") : 0);
}

// --- merge ---------------------------------------------------------------------

typedef struct {
    Cache *out;
    const char *in_path;
    long copied, clashes;
    int n_classes;
    void *dctx;
} MergeCtx;

static int merge_visit(void *vctx, uint64_t key, const void *val, size_t len) {
    MergeCtx *mc = vctx;
    int32_t label;
    // Verify each record before copying it: a damaged shard must not taint the merge.
    if (cache_record_decode(mc->dctx, key, val, len, -1, &label, NULL, NULL, NULL, NULL) < 0)
        return err_prefix("%s: ", mc->in_path);
    MDB_val k, v;
    char kt[24];
    snprintf(kt, sizeof kt, "%010llu", (unsigned long long)key);
    k.mv_size = 10, k.mv_data = kt;
    if (mdb_get(mc->out->txn, mc->out->dbi_features, &k, &v) == 0) {
        mc->clashes++;
        return err_set("%s: record %s is also in another input: these caches are not disjoint shards of one folder",
                       mc->in_path, kt);
    }
    v.mv_size = len, v.mv_data = (void *)val;
    int rc = mdb_put(mc->out->txn, mc->out->dbi_features, &k, &v, 0);
    if (rc) return err_set("%s: writing record %s: %s", mc->out->path, kt, mdb_strerror(rc));
    mc->copied++;
    return 0;
}

int extract_merge(const char *out, char **inputs, int n_inputs, int overwrite) {
    if (n_inputs < 1) return err_set("--merge OUT IN...: no input caches given");
    CacheMeta first = {0}, meta;
    int total_shards = 0;
    // All inputs must be shards of the same run settings.
    for (int i = 0; i < n_inputs; i++) {
        Cache c;
        if (cache_open_read(&c, inputs[i], &meta) < 0) return -1;
        cache_close(&c);
        int si = 0, sn = 1;
        if (meta.shard[0]) sscanf(meta.shard, "%d/%d", &si, &sn);
        if (i == 0) {
            first = meta;
            total_shards = sn;
            continue;
        }
        char diff[600];
        snprintf(meta.shard, sizeof meta.shard, "%s", first.shard);  // shards differ by design
        if (cache_meta_diff(&first, &meta, diff, sizeof diff)) {
            cache_meta_free(&meta);
            cache_meta_free(&first);
            return err_set("%s and %s were made with other settings (%s)", inputs[0], inputs[i], diff);
        }
        if (sn != total_shards) {
            cache_meta_free(&meta);
            cache_meta_free(&first);
            return err_set("%s is a shard of %d, %s of %d", inputs[0], total_shards, inputs[i], sn);
        }
        cache_meta_free(&meta);
    }
    CacheMeta want = first;
    want.shard[0] = '\0';
    if (n_inputs != total_shards)
        fprintf(stderr, "warning: merging %d caches of %d shards: the result does not cover the whole folder\n",
                n_inputs, total_shards);
    Cache dst;
    if (cache_open_write(&dst, out, &want, overwrite) < 0) {
        cache_meta_free(&first);
        return -1;
    }
    if (cache_count(&dst) > 0 && !overwrite) {
        cache_close(&dst);
        cache_meta_free(&first);
        return err_set("%s: already holds records; merge into a new cache or use --overwrite", out);
    }
    int rc = 0;
    long total = 0;
    for (int i = 0; i < n_inputs && rc == 0; i++) {
        Cache src;
        if (cache_open_read(&src, inputs[i], NULL) < 0) {
            rc = -1;
            break;
        }
        // One write transaction per input: the map is grown first to hold it.
        MDB_envinfo info;
        mdb_env_info(src.env, &info);
        MDB_envinfo dinfo;
        mdb_env_info(dst.env, &dinfo);
        size_t need = dinfo.me_mapsize + info.me_mapsize;
        mdb_env_set_mapsize(dst.env, need);
        dst.map_size = need;
        int trc = mdb_txn_begin(dst.env, NULL, 0, &dst.txn);
        if (trc) {
            rc = err_set("%s: %s", out, mdb_strerror(trc));
            cache_close(&src);
            break;
        }
        MergeCtx mc = {&dst, inputs[i], 0, 0, first.n_classes, src.dctx};
        rc = cache_visit(&src, merge_visit, &mc);
        if (rc == 0) rc = cache_commit(&dst);
        else {
            mdb_txn_abort(dst.txn);
            dst.txn = NULL;
        }
        total += mc.copied;
        cache_close(&src);
        if (rc == 0) printf("%s: %ld records\n", inputs[i], mc.copied);
    }
    if (rc == 0) {
        want.class_counts = NULL;
        rc = cache_store_counts(&dst, &want);
        free(want.class_counts);
        printf("Merged %ld records from %d caches into %s\n", total, n_inputs, out);
    }
    cache_close(&dst);
    cache_meta_free(&first);
    return rc;
}
