// MD5 and SHA-256 digests as lowercase hex, through OpenSSL's libcrypto.
//
// MD5 is what Keras publishes for its ImageNet weights files (get_file's
// file_hash), so it is used to check downloads and caches; SHA-256 is there
// for anything we fingerprint ourselves.
#pragma once
#include <stddef.h>

typedef enum { HASH_MD5, HASH_SHA256 } HashKind;

// Hex length of a digest: 32 for MD5, 64 for SHA-256 (out needs one more).
int hash_hex_len(HashKind kind);

// Digest of a whole file, read in chunks (constant memory whatever its size).
// out receives the lowercase hex digest, NUL-terminated. Returns 0, or -1 with
// err_set naming the file.
int hash_file_hex(const char *path, HashKind kind, char out[65]);

// Digest of a memory buffer. Returns 0 or -1.
int hash_buf_hex(const void *data, size_t n, HashKind kind, char out[65]);

// Incremental hashing (e.g. while data streams in).
typedef struct HashCtx HashCtx;
HashCtx *hash_begin(HashKind kind);                        // NULL on error
int hash_update(HashCtx *h, const void *data, size_t n);   // 0 or -1
int hash_end(HashCtx *h, char out[65]);                    // frees h; 0 or -1
void hash_abort(HashCtx *h);                               // frees h; NULL ok
