#include "download.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileutil.h"
#include "hash.h"

#ifndef VGGFT_VERSION
#define VGGFT_VERSION "dev"
#endif

#define KERAS_APPS_URL "https://storage.googleapis.com/tensorflow/keras-applications/"

// From keras/src/applications/vgg16.py and vgg19.py (file_hash=...).
static const ImagenetWeights IMAGENET[] = {
    {"vgg16", 0, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"},
    {"vgg16", 1, "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"},
    {"vgg19", 0, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"},
    {"vgg19", 1, "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318"},
};

// --- directories ----------------------------------------------------------------


static int writable_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode) && access(p, W_OK | X_OK) == 0;
}

int keras_cache_dir(const char *subdir, char *out, size_t out_size) {
    // keras/src/backend/config.py + utils/file_utils.py: KERAS_HOME, else
    // ~/.keras; a base that cannot be written falls back to /tmp/.keras.
    char base[4096];
    const char *kh = getenv("KERAS_HOME");
    if (kh && *kh) {
        snprintf(base, sizeof base, "%s", kh);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (home && writable_dir(home))
            snprintf(base, sizeof base, "%s/.keras", home);
        else
            snprintf(base, sizeof base, "/tmp/.keras");
    }
    make_lasting_dirs(base);  // Keras creates it on import; a failure shows below
    if (!writable_dir(base)) snprintf(base, sizeof base, "/tmp/.keras");
    int n = snprintf(out, out_size, "%s/%s", base, subdir && *subdir ? subdir : "");
    if (n < 0 || (size_t)n >= out_size) return err_set("cache directory path too long: %s/%s", base, subdir);
    if (make_lasting_dirs(out) < 0) return err_prefix("Keras cache: ");
    return 0;
}

// --- downloading ----------------------------------------------------------------

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct {
    FILE *f;
    int write_errno;
    DownloadProgressFn fn;
    void *ctx;
    int cancelled;
    curl_off_t last_now, last_total;
} Xfer;

static size_t on_write(char *p, size_t size, size_t n, void *u) {
    Xfer *x = u;
    size_t k = size * n;
    if (fwrite(p, 1, k, x->f) != k) {
        x->write_errno = errno ? errno : EIO;
        return 0;  // makes curl stop with CURLE_WRITE_ERROR
    }
    return k;
}

static int on_progress(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)ultotal, (void)ulnow;
    Xfer *x = u;
    // curl calls this about once a second even when idle; pass on changes only.
    if (!x->fn || (dlnow == x->last_now && dltotal == x->last_total)) return 0;
    x->last_now = dlnow;
    x->last_total = dltotal;
    if (x->fn(x->ctx, (long long)dlnow, (long long)dltotal)) {
        x->cancelled = 1;
        return 1;
    }
    return 0;
}

int download_file(const char *url, const char *dest, const char *expected_md5, DownloadProgressFn fn,
                  void *ctx) {
    if (!url || !*url || !dest || !*dest) return err_set("download_file: empty URL or destination");
    if (expected_md5 && strlen(expected_md5) != 32)
        return err_set("download_file: expected MD5 \"%s\" is not 32 hex digits", expected_md5);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) return err_set("cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));

    size_t tn = strlen(dest) + 16;
    char *tmp = malloc(tn);
    if (!tmp) return err_set("out of memory");
    snprintf(tmp, tn, "%s.part.XXXXXX", dest);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        err_set("cannot create a temporary file beside %s: %s", dest, strerror(errno));
        free(tmp);
        return -1;
    }
    fchmod(fd, 0644);  // mkstemp makes 0600; a cache file is readable like any download
    Xfer x = {.f = fdopen(fd, "wb"), .fn = fn, .ctx = ctx, .last_now = -1, .last_total = -1};
    CURL *c = x.f ? curl_easy_init() : NULL;
    int rc = 0;
    if (!x.f || !c) {
        rc = err_set("cannot start the download of %s", url);
        if (!x.f) close(fd);
        goto done;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    // Without this an HTTP 404 page would be saved as the weights file.
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "vggft/" VGGFT_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM: safe beside threads
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    // A stalled connection fails after a minute instead of hanging forever.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);

    CURLcode res = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        if (x.cancelled)
            rc = err_set("download of %s cancelled", url);
        else if (res == CURLE_HTTP_RETURNED_ERROR && status > 0)
            rc = err_set("URL fetch failure on %s: HTTP status %ld", url, status);
        else if (x.write_errno)
            rc = err_set("downloading %s: cannot write %s: %s", url, tmp, strerror(x.write_errno));
        else
            rc = err_set("URL fetch failure on %s: %s", url, *errbuf ? errbuf : curl_easy_strerror(res));
    }
    curl_off_t got = 0;
    curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &got);
    curl_easy_cleanup(c);
    if (fflush(x.f) != 0 || fsync(fileno(x.f)) != 0) {
        if (rc == 0) rc = err_set("downloading %s: cannot write %s: %s", url, tmp, strerror(errno));
    }
    if (fclose(x.f) != 0 && rc == 0) rc = err_set("downloading %s: cannot write %s: %s", url, tmp, strerror(errno));
    if (rc < 0) goto done;

    if (expected_md5) {
        char md5[65];
        if (hash_file_hex(tmp, HASH_MD5, md5) < 0) {
            rc = -1;
            goto done;
        }
        if (strcasecmp(md5, expected_md5) != 0) {
            rc = err_set("%s: the downloaded file's MD5 is %s, expected %s (incomplete or corrupted download)",
                         url, md5, expected_md5);
            goto done;
        }
    }
    if (rename(tmp, dest) < 0) {
        rc = err_set("cannot rename %s to %s: %s", tmp, dest, strerror(errno));
        goto done;
    }
    if (fn) fn(ctx, (long long)got, (long long)got);
done:
    if (rc < 0) unlink(tmp);
    free(tmp);
    return rc;
}

// --- cache ------------------------------------------------------------------------

int cache_lookup(const char *fname, const char *md5, char *out_path, size_t out_size) {
    if (!fname || !*fname || strchr(fname, '/'))
        return err_set("cache file name \"%s\" must be a plain file name", fname ? fname : "");
    char dir[4096];
    if (keras_cache_dir("models", dir, sizeof dir) < 0) return -1;
    int n = snprintf(out_path, out_size, "%s/%s", dir, fname);
    if (n < 0 || (size_t)n >= out_size) return err_set("cache path too long: %s/%s", dir, fname);
    struct stat st;
    if (stat(out_path, &st) < 0) return CACHE_MISSING;
    if (!md5) return CACHE_OK;
    char got[65];
    // An unreadable cached file is treated like a corrupt one: fetch it again.
    if (hash_file_hex(out_path, HASH_MD5, got) < 0) return CACHE_STALE;
    return strcasecmp(got, md5) == 0 ? CACHE_OK : CACHE_STALE;
}

int get_file(const char *fname, const char *url, const char *md5, DownloadProgressFn fn, void *ctx,
             char *out_path, size_t out_size) {
    int state = cache_lookup(fname, md5, out_path, out_size);
    if (state < 0) return -1;
    if (state == CACHE_OK) return 0;
    if (download_file(url, out_path, md5, fn, ctx) < 0) return -1;
    return state == CACHE_STALE ? 2 : 1;
}

// --- ImageNet weights -------------------------------------------------------------

const ImagenetWeights *imagenet_weights(const char *arch, int include_top) {
    for (size_t i = 0; i < sizeof IMAGENET / sizeof *IMAGENET; i++)
        if (arch && !strcmp(IMAGENET[i].arch, arch) && IMAGENET[i].include_top == !!include_top)
            return &IMAGENET[i];
    err_set("no ImageNet weights known for architecture \"%s\" (expected vgg16 or vgg19)", arch ? arch : "");
    return NULL;
}

int weights_imagenet_url(const char *arch, int include_top, const char *base_url, char *url, size_t url_size) {
    const ImagenetWeights *w = imagenet_weights(arch, include_top);
    if (!w) return -1;
    if (!base_url || !*base_url) base_url = getenv("VGGFT_WEIGHTS_URL");
    int n;
    if (!base_url || !*base_url) {
        n = snprintf(url, url_size, KERAS_APPS_URL "%s/%s", w->arch, w->file_name);
    } else {
        size_t len = strlen(base_url);
        const char *sep = base_url[len - 1] == '/' ? "" : "/";
        const char *scheme = base_url[0] == '/' ? "file://" : "";
        n = snprintf(url, url_size, "%s%s%s%s", scheme, base_url, sep, w->file_name);
    }
    if (n < 0 || (size_t)n >= url_size) return err_set("weights URL too long (base %s)", base_url ? base_url : "");
    return 0;
}

int weights_imagenet_lookup(const char *arch, int include_top, const char *base_url, WeightsLookup *out) {
    memset(out, 0, sizeof *out);
    const ImagenetWeights *w = imagenet_weights(arch, include_top);
    if (!w) return -1;
    if (weights_imagenet_url(arch, include_top, base_url, out->url, sizeof out->url) < 0) return -1;
    int state = cache_lookup(w->file_name, w->md5, out->path, sizeof out->path);
    if (state < 0) return -1;
    out->md5 = w->md5;
    out->state = (CacheState)state;
    return 0;
}

int weights_imagenet_path(const char *arch, int include_top, const char *base_url, DownloadProgressFn fn,
                          void *ctx, char *out_path, size_t out_size) {
    const ImagenetWeights *w = imagenet_weights(arch, include_top);
    if (!w) return -1;
    char url[2048];
    if (weights_imagenet_url(arch, include_top, base_url, url, sizeof url) < 0) return -1;
    return get_file(w->file_name, url, w->md5, fn, ctx, out_path, out_size);
}
