// Hashing, downloads and Keras's weights cache. Downloads are served by the
// test itself: file:// URLs and a tiny HTTP/1.0 server forked on 127.0.0.1
// (port chosen by the kernel), which also counts the requests it gets so that
// a cache hit can be shown not to contact it.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "download.h"
#include "error.h"
#include "hash.h"
#include "testutil.h"

// --- hashing -------------------------------------------------------------------

Test(hash, rfc_vectors) {
    static const struct {
        const char *in;
        HashKind kind;
        const char *hex;
    } v[] = {
        {"", HASH_MD5, "d41d8cd98f00b204e9800998ecf8427e"},
        {"abc", HASH_MD5, "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", HASH_MD5, "f96b697d7cb7938d525a2f31aaf161d0"},
        {"", HASH_SHA256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", HASH_SHA256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", HASH_SHA256,
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char out[65];
        cr_assert_eq(hash_buf_hex(v[i].in, strlen(v[i].in), v[i].kind, out), 0, "%s", err_msg());
        cr_assert_str_eq(out, v[i].hex, "hash of \"%s\"", v[i].in);
        cr_assert_eq((int)strlen(out), hash_hex_len(v[i].kind));
    }
}

Test(hash, file_matches_buffer_and_streaming) {
    char *dir = make_temp_dir("hash");
    char path[512];
    snprintf(path, sizeof path, "%s/blob", dir);
    // Over 2 MiB, so that the file is read in several chunks.
    size_t n = (5u << 19) + 12345;
    unsigned char *b = malloc(n);
    unsigned s = 1;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)((s = s * 1103515245u + 12345u) >> 16);
    write_file(path, b, n);
    for (int k = 0; k < 2; k++) {
        HashKind kind = k ? HASH_SHA256 : HASH_MD5;
        char a[65], f[65], st[65];
        cr_assert_eq(hash_buf_hex(b, n, kind, a), 0);
        cr_assert_eq(hash_file_hex(path, kind, f), 0, "%s", err_msg());
        cr_assert_str_eq(a, f);
        HashCtx *h = hash_begin(kind);
        for (size_t off = 0; off < n; off += 77777) hash_update(h, b + off, n - off < 77777 ? n - off : 77777);
        cr_assert_eq(hash_end(h, st), 0);
        cr_assert_str_eq(a, st);
    }
    char out[65];
    snprintf(path, sizeof path, "%s/missing", dir);
    cr_assert_eq(hash_file_hex(path, HASH_MD5, out), -1);
    cr_assert(strstr(err_msg(), "missing") && strstr(err_msg(), "No such file"), "message: %s", err_msg());
    free(b);
    remove_tree(dir);
    free(dir);
}

// --- a one-file-at-a-time HTTP/1.0 server ------------------------------------------
//   GET /files/NAME     200 with the file srv_root/NAME, or 404
//   GET /redirect/NAME  302 to /files/NAME

static struct {
    pid_t pid;
    int port;
    int pipe_rd;  // one byte per request received
    int requests;
} srv = {.pid = -1, .pipe_rd = -1};
static char *tmp;       // the test's temp dir
static char srv_root[512];

static void send_all(int c, const void *p, size_t n) {
    const char *b = p;
    while (n > 0) {
        ssize_t w = send(c, b, n, MSG_NOSIGNAL);
        if (w <= 0) return;  // client went away (e.g. a cancelled download)
        b += w;
        n -= (size_t)w;
    }
}

static void serve_one(int c, int count_fd) {
    char req[8192];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t r = recv(c, req + len, sizeof req - 1 - len, 0);
        if (r <= 0) break;
        len += (size_t)r;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n")) break;
    }
    req[len] = '\0';
    // Counted before answering, so the client cannot see the answer first.
    if (write(count_fd, "r", 1) != 1) _exit(3);
    char path[1024] = "";
    sscanf(req, "GET %1023s", path);
    char hdr[2048];
    if (!strncmp(path, "/redirect/", 10)) {
        int n = snprintf(hdr, sizeof hdr, "HTTP/1.0 302 Found\r\nLocation: /files/%s\r\nContent-Length: 0\r\n\r\n",
                         path + 10);
        send_all(c, hdr, (size_t)n);
        return;
    }
    char file[2048];
    snprintf(file, sizeof file, "%s/%s", srv_root, path + 7);
    FILE *f = !strncmp(path, "/files/", 7) && !strstr(path, "..") ? fopen(file, "rb") : NULL;
    if (!f) {
        const char *nf = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n";
        send_all(c, nf, strlen(nf));
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %ld\r\n\r\n", size);
    send_all(c, hdr, (size_t)n);
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) send_all(c, buf, got);
    fclose(f);
}

static void server_start(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s >= 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(bind(s, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    cr_assert(listen(s, 16) == 0);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    srv.port = ntohs(a.sin_port);
    int p[2];
    cr_assert(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        // Dies with the test process, and in any case after a while.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm(60);
        close(p[0]);
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0) continue;
            serve_one(c, p[1]);
            close(c);
        }
    }
    close(s);
    close(p[1]);
    srv.pid = pid;
    srv.pipe_rd = p[0];
    fcntl(srv.pipe_rd, F_SETFL, O_NONBLOCK);
    srv.requests = 0;
}

static int server_requests(void) {
    char b[64];
    ssize_t n;
    while ((n = read(srv.pipe_rd, b, sizeof b)) > 0) srv.requests += (int)n;
    return srv.requests;
}

static void setup(void) {
    tmp = make_temp_dir("dl");
    snprintf(srv_root, sizeof srv_root, "%s/srv", tmp);
    mkdir(srv_root, 0777);
    // A proxy from the environment must not get between curl and 127.0.0.1.
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    unsetenv("VGGFT_WEIGHTS_URL");
    // Each test has its own Keras home, never the user's.
    char kh[600];
    snprintf(kh, sizeof kh, "%s/keras_home", tmp);
    setenv("KERAS_HOME", kh, 1);
    server_start();
}

static void teardown(void) {
    if (srv.pid > 0) {
        kill(srv.pid, SIGKILL);
        waitpid(srv.pid, NULL, 0);
        srv.pid = -1;
    }
    if (srv.pipe_rd >= 0) close(srv.pipe_rd);
    srv.pipe_rd = -1;
    remove_tree(tmp);
    free(tmp);
}

TestSuite(download, .init = setup, .fini = teardown, .timeout = 30);

// --- helpers ----------------------------------------------------------------------

// A served file of n pseudo-random bytes; its MD5 in md5.
static void make_served(const char *name, size_t n, unsigned seed, char md5[65]) {
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", srv_root, name);
    write_file(p, b, n);
    cr_assert_eq(hash_buf_hex(b, n, HASH_MD5, md5), 0);
    free(b);
}

static int same_file(const char *a, const char *b) {
    char ha[65], hb[65];
    return hash_file_hex(a, HASH_SHA256, ha) == 0 && hash_file_hex(b, HASH_SHA256, hb) == 0 && !strcmp(ha, hb);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

// Entries of a directory other than . and .. (temporary files would show).
static int count_entries(const char *d) {
    DIR *dd = opendir(d);
    if (!dd) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dd)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dd);
    return n;
}

typedef struct {
    int calls;
    long long last_done, last_total;
    int cancel;
} Prog;

static int on_progress(void *ctx, long long done, long long total) {
    Prog *p = ctx;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return p->cancel;
}

static char *url_of(const char *route, const char *name) {
    char *u = malloc(1024);
    snprintf(u, 1024, "http://127.0.0.1:%d/%s/%s", srv.port, route, name);
    return u;
}

// --- download_file ---------------------------------------------------------------

Test(download, file_url) {
    char md5[65], src[1024], url[1100], dest[1024];
    make_served("w.h5", 300000, 7, md5);
    snprintf(src, sizeof src, "%s/w.h5", srv_root);
    snprintf(url, sizeof url, "file://%s", src);
    snprintf(dest, sizeof dest, "%s/out.h5", tmp);
    Prog pr = {0};
    cr_assert_eq(download_file(url, dest, md5, on_progress, &pr), 0, "%s", err_msg());
    cr_assert(same_file(src, dest));
    cr_assert(pr.calls >= 1);
    cr_assert_eq(pr.last_done, 300000);
    cr_assert_eq(pr.last_total, 300000);
    cr_assert_eq(server_requests(), 0);
}

Test(download, http_with_progress_and_redirect) {
    char md5[65], dest[1024], src[1024];
    make_served("w.h5", 1 << 20, 11, md5);
    snprintf(src, sizeof src, "%s/w.h5", srv_root);
    snprintf(dest, sizeof dest, "%s/out.h5", tmp);
    char *u = url_of("files", "w.h5");
    Prog pr = {0};
    cr_assert_eq(download_file(u, dest, md5, on_progress, &pr), 0, "%s", err_msg());
    cr_assert(same_file(src, dest));
    cr_assert_eq(server_requests(), 1);
    cr_assert_eq(pr.last_done, 1 << 20);
    cr_assert_eq(pr.last_total, 1 << 20);
    free(u);

    // Redirects are followed (Google's storage redirects at times).
    unlink(dest);
    u = url_of("redirect", "w.h5");
    cr_assert_eq(download_file(u, dest, md5, NULL, NULL), 0, "%s", err_msg());
    cr_assert(same_file(src, dest));
    cr_assert_eq(server_requests(), 3);
    free(u);
}

Test(download, md5_mismatch_leaves_nothing) {
    char md5[65], dest[1100], ddir[1024];
    make_served("w.h5", 5000, 3, md5);
    snprintf(ddir, sizeof ddir, "%s/d", tmp);
    mkdir(ddir, 0777);
    snprintf(dest, sizeof dest, "%s/out.h5", ddir);
    char *u = url_of("files", "w.h5");
    const char *wrong = "0123456789abcdef0123456789abcdef";
    cr_assert_eq(download_file(u, dest, wrong, NULL, NULL), -1);
    cr_assert(strstr(err_msg(), md5) && strstr(err_msg(), wrong), "message names both hashes: %s", err_msg());
    cr_assert(strstr(err_msg(), u), "message names the URL: %s", err_msg());
    cr_assert(!exists(dest));
    cr_assert_eq(count_entries(ddir), 0, "temporary file left behind");
    free(u);
}

Test(download, http_404_names_status_and_url) {
    char dest[1024];
    snprintf(dest, sizeof dest, "%s/out.h5", tmp);
    char *u = url_of("files", "absent.h5");
    cr_assert_eq(download_file(u, dest, NULL, NULL, NULL), -1);
    cr_assert(strstr(err_msg(), "404"), "message: %s", err_msg());
    cr_assert(strstr(err_msg(), u), "message: %s", err_msg());
    cr_assert(!exists(dest), "an error page must not be saved");
    cr_assert_eq(server_requests(), 1);
    free(u);

    // A missing file:// file and a refused connection fail too.
    char url[1100];
    snprintf(url, sizeof url, "file://%s/nothing.h5", tmp);
    cr_assert_eq(download_file(url, dest, NULL, NULL, NULL), -1);
    cr_assert(strstr(err_msg(), url), "message: %s", err_msg());
    cr_assert(!exists(dest));
}

Test(download, cancel_from_progress) {
    char md5[65], dest[1100], ddir[1024];
    make_served("w.h5", 4 << 20, 5, md5);
    snprintf(ddir, sizeof ddir, "%s/d", tmp);
    mkdir(ddir, 0777);
    snprintf(dest, sizeof dest, "%s/out.h5", ddir);
    char *u = url_of("files", "w.h5");
    Prog pr = {.cancel = 1};
    cr_assert_eq(download_file(u, dest, md5, on_progress, &pr), -1);
    cr_assert(strstr(err_msg(), "cancelled"), "message: %s", err_msg());
    cr_assert(!exists(dest));
    cr_assert_eq(count_entries(ddir), 0, "temporary file left behind");
    free(u);
}

// --- the cache --------------------------------------------------------------------

Test(download, keras_home_resolution) {
    char d[1024], want[1024];
    cr_assert_eq(keras_cache_dir("models", d, sizeof d), 0, "%s", err_msg());
    snprintf(want, sizeof want, "%s/keras_home/models", tmp);
    cr_assert_str_eq(d, want);
    cr_assert(exists(want), "cache directory is created");

    // Without KERAS_HOME: ~/.keras/models.
    unsetenv("KERAS_HOME");
    char home[1024];
    snprintf(home, sizeof home, "%s/home", tmp);
    mkdir(home, 0777);
    setenv("HOME", home, 1);
    cr_assert_eq(keras_cache_dir("models", d, sizeof d), 0, "%s", err_msg());
    snprintf(want, sizeof want, "%s/home/.keras/models", tmp);
    cr_assert_str_eq(d, want);
    cr_assert(exists(want));
}

Test(download, get_file_caches) {
    char md5[65], src[1024], path[1024], want[1024];
    make_served("model.h5", 200000, 9, md5);
    snprintf(src, sizeof src, "%s/model.h5", srv_root);
    char *u = url_of("files", "model.h5");

    cr_assert_eq(get_file("model.h5", u, md5, NULL, NULL, path, sizeof path), 1, "%s", err_msg());
    snprintf(want, sizeof want, "%s/keras_home/models/model.h5", tmp);
    cr_assert_str_eq(path, want);
    cr_assert(same_file(src, path));
    cr_assert_eq(server_requests(), 1);

    // Cache hit: the server is not contacted.
    Prog pr = {0};
    cr_assert_eq(get_file("model.h5", u, md5, on_progress, &pr, path, sizeof path), 0, "%s", err_msg());
    cr_assert_eq(server_requests(), 1, "a cache hit must not download");
    cr_assert_eq(pr.calls, 0);
    char p2[1024];
    cr_assert_eq(cache_lookup("model.h5", md5, p2, sizeof p2), CACHE_OK);

    // A cached file with another MD5 (truncated download) is fetched again.
    write_file(path, "truncated", 9);
    cr_assert_eq(cache_lookup("model.h5", md5, p2, sizeof p2), CACHE_STALE);
    cr_assert_eq(get_file("model.h5", u, md5, NULL, NULL, path, sizeof path), 2, "%s", err_msg());
    cr_assert_eq(server_requests(), 2);
    cr_assert(same_file(src, path));
    free(u);
}

Test(download, imagenet_names_urls_and_md5) {
    const ImagenetWeights *w = imagenet_weights("vgg16", 0);
    cr_assert_not_null(w);
    cr_assert_str_eq(w->file_name, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
    cr_assert_str_eq(w->md5, "6d6bbae143d832006294945121d1f1fc");
    cr_assert_str_eq(imagenet_weights("vgg16", 1)->md5, "64373286793e3c8b2b4e3219cbf3544b");
    cr_assert_str_eq(imagenet_weights("vgg19", 0)->md5, "253f8cb515780f3b799900260a226db6");
    cr_assert_str_eq(imagenet_weights("vgg19", 1)->file_name, "vgg19_weights_tf_dim_ordering_tf_kernels.h5");
    cr_assert_null(imagenet_weights("resnet50", 0));
    cr_assert(strstr(err_msg(), "resnet50"), "message: %s", err_msg());

    char url[2048];
    cr_assert_eq(weights_imagenet_url("vgg19", 0, NULL, url, sizeof url), 0);
    cr_assert_str_eq(url, "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
                          "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5");
    cr_assert_eq(weights_imagenet_url("vgg16", 0, "http://mirror/x/", url, sizeof url), 0);
    cr_assert_str_eq(url, "http://mirror/x/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
    setenv("VGGFT_WEIGHTS_URL", "/srv/mirror", 1);
    cr_assert_eq(weights_imagenet_url("vgg16", 1, NULL, url, sizeof url), 0);
    cr_assert_str_eq(url, "file:///srv/mirror/vgg16_weights_tf_dim_ordering_tf_kernels.h5");
    // The argument wins over the environment.
    cr_assert_eq(weights_imagenet_url("vgg16", 1, "http://a", url, sizeof url), 0);
    cr_assert_str_eq(url, "http://a/vgg16_weights_tf_dim_ordering_tf_kernels.h5");

    WeightsLookup lk;
    cr_assert_eq(weights_imagenet_lookup("vgg16", 0, "http://a", &lk), 0, "%s", err_msg());
    char want[1024];
    snprintf(want, sizeof want, "%s/keras_home/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", tmp);
    cr_assert_str_eq(lk.path, want);
    cr_assert_eq(lk.state, CACHE_MISSING);
    cr_assert_str_eq(lk.md5, "6d6bbae143d832006294945121d1f1fc");
    cr_assert_str_eq(lk.url, "http://a/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
}

Test(download, imagenet_download_is_md5_checked) {
    // We cannot serve a file with the real MD5; a look-alike must be refused
    // and leave nothing in the cache.
    char md5[65];
    make_served("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 10000, 1, md5);
    char base[128], path[2048];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/files", srv.port);
    cr_assert_eq(weights_imagenet_path("vgg16", 0, base, NULL, NULL, path, sizeof path), -1);
    cr_assert(strstr(err_msg(), "6d6bbae143d832006294945121d1f1fc") && strstr(err_msg(), md5), "message: %s",
              err_msg());
    cr_assert_eq(server_requests(), 1);
    char models[1024];
    snprintf(models, sizeof models, "%s/keras_home/models", tmp);
    cr_assert_eq(count_entries(models), 0, "nothing may be left in the cache");

    // Through the environment variable, as the executables use it.
    setenv("VGGFT_WEIGHTS_URL", base, 1);
    cr_assert_eq(weights_imagenet_path("vgg16", 0, NULL, NULL, NULL, path, sizeof path), -1);
    cr_assert_eq(server_requests(), 2);
    // Unknown file on the mirror: 404.
    cr_assert_eq(weights_imagenet_path("vgg19", 0, NULL, NULL, NULL, path, sizeof path), -1);
    cr_assert(strstr(err_msg(), "404") && strstr(err_msg(), "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
              "message: %s", err_msg());
}
