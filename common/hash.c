#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct HashCtx {
    EVP_MD_CTX *md;
};

static const EVP_MD *md_of(HashKind kind) {
    switch (kind) {
    case HASH_MD5: return EVP_md5();
    case HASH_SHA256: return EVP_sha256();
    }
    return NULL;
}

int hash_hex_len(HashKind kind) { return kind == HASH_MD5 ? 32 : 64; }

HashCtx *hash_begin(HashKind kind) {
    const EVP_MD *type = md_of(kind);
    if (!type) {
        err_set("hash: unknown hash kind %d", (int)kind);
        return NULL;
    }
    HashCtx *h = malloc(sizeof *h);
    if (!h) {
        err_set("hash: out of memory");
        return NULL;
    }
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, type, NULL) != 1) {
        EVP_MD_CTX_free(h->md);
        free(h);
        err_set("hash: cannot initialise %s digest", kind == HASH_MD5 ? "MD5" : "SHA-256");
        return NULL;
    }
    return h;
}

int hash_update(HashCtx *h, const void *data, size_t n) {
    if (n && EVP_DigestUpdate(h->md, data, n) != 1) return err_set("hash: digest update failed");
    return 0;
}

int hash_end(HashCtx *h, char out[65]) {
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(h->md, dig, &len) == 1;
    hash_abort(h);
    if (!ok) return err_set("hash: digest finalisation failed");
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < len; i++) {
        out[2 * i] = hex[dig[i] >> 4];
        out[2 * i + 1] = hex[dig[i] & 15];
    }
    out[2 * len] = '\0';
    return 0;
}

void hash_abort(HashCtx *h) {
    if (!h) return;
    EVP_MD_CTX_free(h->md);
    free(h);
}

int hash_buf_hex(const void *data, size_t n, HashKind kind, char out[65]) {
    HashCtx *h = hash_begin(kind);
    if (!h) return -1;
    if (hash_update(h, data, n) < 0) {
        hash_abort(h);
        return -1;
    }
    return hash_end(h, out);
}

int hash_file_hex(const char *path, HashKind kind, char out[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open for hashing: %s", path, strerror(errno));
    HashCtx *h = hash_begin(kind);
    if (!h) {
        fclose(f);
        return err_prefix("%s: ", path);
    }
    // 1 MiB chunks: the syscalls cost nothing next to the digest. On the heap
    // so that worker threads with small stacks can hash too.
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        hash_abort(h);
        fclose(f);
        return err_set("%s: out of memory hashing", path);
    }
    size_t got;
    int rc = 0;
    while ((got = fread(buf, 1, cap, f)) > 0) {
        if (hash_update(h, buf, got) < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) rc = err_set("%s: read error while hashing: %s", path, strerror(errno));
    free(buf);
    fclose(f);
    if (rc < 0) {
        hash_abort(h);
        return rc;
    }
    return hash_end(h, out);
}
