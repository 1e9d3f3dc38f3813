// `--weights imagenet`: find Keras's ImageNet weights in Keras's cache or
// download them, the way keras.utils.get_file does.
//
// Cache: $KERAS_HOME/models if KERAS_HOME is set, else ~/.keras/models (and,
// like Keras, /tmp/.keras/models when that base is not writable). A cached
// file is used when its MD5 matches; a file with another MD5 is downloaded
// again (Keras prints a warning then; here the return value says so and the
// caller prints). Downloads go through libcurl (HTTPS, redirects), to a
// temporary file in the cache directory that is MD5-checked and then renamed,
// so the cache never holds a partial or corrupt file under the real name.
//
// The library prints nothing: progress goes through a callback and messages
// through err_msg(). Base URL override (for mirrors and tests): the base_url
// argument, else the environment variable VGGFT_WEIGHTS_URL, else Keras's
// https://storage.googleapis.com/tensorflow/keras-applications/<arch>/ . An
// override is the directory that holds the files themselves (URL = base +
// "/" + file name); a plain absolute path is taken as a file:// URL.
#pragma once
#include <stddef.h>

// Bytes received so far and the expected total (0 when unknown). Called
// repeatedly during a download and once more at the end with done == total.
// Return nonzero to cancel (the download then fails with "cancelled").
typedef int (*DownloadProgressFn)(void *ctx, long long done, long long total);

// Downloads url (http, https, file) to dest, following redirects. HTTP errors
// fail ("URL fetch failure on URL: HTTP status 404"). Writes to a temporary
// file beside dest, checks its MD5 against expected_md5 (NULL: no check),
// then renames it over dest; on any failure dest is untouched and no
// temporary file is left. fn may be NULL. Returns 0 or -1.
int download_file(const char *url, const char *dest, const char *expected_md5,
                  DownloadProgressFn fn, void *ctx);

// Keras's cache directory for `subdir` ("models"), created if missing.
// Returns 0 or -1.
int keras_cache_dir(const char *subdir, char *out, size_t out_size);

typedef enum {
    CACHE_MISSING = 0,  // not in the cache
    CACHE_OK = 1,       // cached and its MD5 matches
    CACHE_STALE = 2,    // cached but its MD5 differs: will be downloaded again
} CacheState;

// Where get_file keeps fname and whether it is usable (md5 NULL: any file
// there is usable). Creates the cache directory. Returns a CacheState or -1.
int cache_lookup(const char *fname, const char *md5, char *out_path, size_t out_size);

// Like keras.utils.get_file(fname, url, file_hash=md5, cache_subdir="models"):
// puts the cached file's path in out_path, downloading it first if needed.
// Returns 0 (cache hit), 1 (downloaded), 2 (downloaded again because the
// cached copy's MD5 differed: the caller may warn), or -1.
int get_file(const char *fname, const char *url, const char *md5,
             DownloadProgressFn fn, void *ctx, char *out_path, size_t out_size);

// --- Keras's ImageNet weights files ------------------------------------------

typedef struct {
    const char *arch;       // "vgg16" or "vgg19"
    int include_top;        // 1: with fc1/fc2/predictions
    const char *file_name;  // e.g. "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    const char *md5;        // Keras's file_hash
} ImagenetWeights;

// The entry for arch/include_top, or NULL with err_set for an unknown arch.
const ImagenetWeights *imagenet_weights(const char *arch, int include_top);

// The URL the file is downloaded from (see the override rules above).
// Returns 0 or -1.
int weights_imagenet_url(const char *arch, int include_top, const char *base_url_or_NULL,
                         char *url, size_t url_size);

typedef struct {
    char url[2048];    // where it would be downloaded from
    char path[4096];   // where it is (or will be) cached
    const char *md5;   // the expected MD5
    CacheState state;
} WeightsLookup;

// Checks the cache without downloading, so that the caller can print
// "Downloading data from URL" (or the stale-file warning) first.
// Returns 0 or -1.
int weights_imagenet_lookup(const char *arch, int include_top, const char *base_url_or_NULL,
                            WeightsLookup *out);

// The path of the ImageNet weights file for arch ("vgg16" | "vgg19"),
// downloaded into the cache if needed. Return values as get_file's:
// 0 cache hit, 1 downloaded, 2 downloaded again (stale cache), -1 error.
int weights_imagenet_path(const char *arch, int include_top, const char *base_url_or_NULL,
                          DownloadProgressFn fn, void *ctx, char *out_path, size_t out_size);
