#include "lmdb_check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

// LMDB 0.9's on-disk layout on 64-bit hosts (mdb.c), in host byte order.
_Static_assert(sizeof(size_t) == 8, "the checker reads LMDB's 64-bit layout");
#define PAGEHDRSZ 16           // mp_pgno u64, mp_pad u16, mp_flags u16, mp_lower u16, mp_upper u16
#define NODESIZE 8             // mn_lo u16, mn_hi u16, mn_flags u16, mn_ksize u16, then key and data
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define F_BIGDATA 0x01         // node data is the page number of an overflow run
#define F_SUBDATA 0x02         // node data is the MDB_db of a named database
#define MDB_MAGIC 0xBEEFC0DEu
#define MDB_DATA_VERSION 1
#define MDB_INTEGERKEY 0x08    // the free list's keys (transaction ids)
#define MAXKEYSIZE 511         // MDB_MAXKEYSIZE
#define MAX_DEPTH 32           // CURSOR_STACK: LMDB cannot descend deeper
#define P_INVALID UINT64_MAX   // root of an empty tree
#define DB_SIZE 48             // sizeof(MDB_db)
#define META_SIZE 136          // sizeof(MDB_meta)
#define MAX_NAMED 16

typedef struct {
    uint32_t pad;
    uint16_t flags, depth;
    uint64_t branch, leaf, overflow, entries, root;
} Db;

typedef struct {
    uint64_t pgno;
    uint16_t page_flags;
    uint32_t magic, version;
    uint64_t address, mapsize;
    Db dbs[2];                 // [0] free list (its pad is the page size), [1] main
    uint64_t last_pg, txnid;
} Meta;

static uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static Db parse_db(const uint8_t *p) {
    Db d = {rd32(p), rd16(p + 4), rd16(p + 6), rd64(p + 8), rd64(p + 16), rd64(p + 24), rd64(p + 32), rd64(p + 40)};
    return d;
}

typedef struct {
    int fd;
    uint32_t psize;
    uint64_t file_size, last_pg;
    uint8_t *seen;             // a bit per page up to last_pg: used or listed free
    uint8_t *page[MAX_DEPTH + 1];
    uint8_t *val;              // overflow values read for callbacks
    size_t val_cap;
    const LmdbCheck *o;
    long problems;
    int stop, failed;          // failed: I/O error or a callback's stop (err_msg set)
    // The tree being walked.
    char db[MAXKEYSIZE + 32];  // "the 'features' tree"
    int kind;                  // 0 main, 1 free list, 2 named
    const char *name;          // the named database, for callbacks
    uint16_t depth;
    uint64_t n_branch, n_leaf, n_overflow, n_entries;
    uint8_t prev[MAXKEYSIZE];
    size_t prev_len;
    int have_prev;
    struct {
        char name[MAXKEYSIZE + 1];
        Db db;
    } named[MAX_NAMED];
    int n_named;
} Walk;

static void problem(Walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(Walk *w, const char *fmt, ...) {
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (++w->problems == 1) err_set("%s", msg);
    if (w->o->problem) w->o->problem(w->o->ctx, msg);
    if (!w->o->all) w->stop = 1;
}

// A key for messages: printable bytes as they are, others as \xNN.
static const char *key_text(const uint8_t *k, size_t n, char *out, size_t size) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\'') out[o++] = (char)k[i];
        else o += (size_t)snprintf(out + o, size - o, "\\x%02x", k[i]);
    }
    out[o] = '\0';
    return out;
}

// 0: read, 1: the file ends before, -1: I/O error (err_set).
static int read_at(Walk *w, void *buf, size_t n, uint64_t off) {
    if (off > w->file_size || n > w->file_size - off) return 1;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(w->fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return err_set("reading the cache at byte %llu: %s", (unsigned long long)(off + got), strerror(errno));
        if (r == 0) return 1;  // shrank meanwhile
        got += (size_t)r;
    }
    return 0;
}

static int key_cmp(const Walk *w, const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    if (w->kind == 1) {  // MDB_INTEGERKEY: native size_t (sizes checked before)
        uint64_t x = rd64(a), y = rd64(b);
        return (x > y) - (x < y);
    }
    int c = memcmp(a, b, al < bl ? al : bl);  // LMDB's default, mdb_cmp_memn
    return c ? c : (al > bl) - (al < bl);
}

// Claims pages [pgno, pgno + n) for `what`; -1 after reporting a problem.
static int claim(Walk *w, uint64_t pgno, uint64_t n, const char *what) {
    if (pgno < 2 || pgno > w->last_pg || n > w->last_pg - pgno + 1) {
        problem(w, "%s: page %llu%s is not a page of the database (pages 2 to %llu)", what, (unsigned long long)pgno,
                n > 1 ? " and the pages after it" : "", (unsigned long long)w->last_pg);
        return -1;
    }
    for (uint64_t p = pgno; p < pgno + n; p++) {
        if (w->seen[p >> 3] & (1u << (p & 7))) {
            problem(w, "%s: page %llu is used twice", what, (unsigned long long)p);
            return -1;
        }
        w->seen[p >> 3] |= (uint8_t)(1u << (p & 7));
    }
    return 0;
}

// The value of a leaf node: in the page, or read from its overflow run.
static const uint8_t *node_value(Walk *w, const uint8_t *node, size_t ksize, uint32_t dsize, int big) {
    if (!big) return node + NODESIZE + ksize;
    uint64_t ov = rd64(node + NODESIZE + ksize);
    if (w->val_cap < (size_t)dsize + 1) {
        uint8_t *v = realloc(w->val, (size_t)dsize + 1);
        if (!v) {
            err_set("out of memory reading a value of %u bytes", dsize);
            w->failed = w->stop = 1;
            return NULL;
        }
        w->val = v, w->val_cap = (size_t)dsize + 1;
    }
    int r = read_at(w, w->val, dsize, ov * w->psize + PAGEHDRSZ);
    if (r) {
        if (r > 0) problem(w, "%s: overflow page %llu lies past the end of the file", w->db, (unsigned long long)ov);
        else w->failed = w->stop = 1;
        return NULL;
    }
    return w->val;
}

// A free-list record: key = transaction id, value = count, then that many
// page numbers in decreasing order (an MDB_IDL).
static void free_record(Walk *w, uint64_t pgno, const uint8_t *key, size_t ksize, const uint8_t *v, uint32_t dsize) {
    char what[96];
    snprintf(what, sizeof what, "the free list (page %llu)", (unsigned long long)pgno);
    if (dsize < 8 || dsize % 8 || rd64(v) != dsize / 8 - 1) {
        problem(w, "%s: a list of %u bytes does not hold the count it starts with", what, dsize);
        return;
    }
    uint64_t n = rd64(v), prev = UINT64_MAX;
    for (uint64_t i = 1; i <= n && !w->stop; i++) {
        uint64_t pg = rd64(v + 8 * i);
        if (pg >= prev) {
            problem(w, "%s: free page numbers out of order (%llu after %llu)", what, (unsigned long long)pg,
                    (unsigned long long)prev);
            return;
        }
        prev = pg;
        claim(w, pg, 1, what);
    }
}

static void walk_page(Walk *w, uint64_t pgno, int level, const uint8_t *lo, size_t lol, const uint8_t *hi,
                      size_t hil);

// Checks the nodes of a page already read into w->page[level].
static void check_nodes(Walk *w, uint64_t pgno, int level, const uint8_t *lo, size_t lol, const uint8_t *hi,
                        size_t hil) {
    const uint8_t *p = w->page[level];
    const uint32_t psize = w->psize;
    const uint16_t lower = rd16(p + 12), upper = rd16(p + 14);
    const int leaf = level == w->depth;
    const int n = (lower - PAGEHDRSZ) / 2;
    char kt[160], kt2[160];
    // Every node first: inside the page, key size sane, keys in order.
    for (int i = 0; i < n && !w->stop; i++) {
        uint16_t ptr = rd16(p + PAGEHDRSZ + 2 * i);
        if (ptr < upper || ptr > psize - NODESIZE || (ptr & 1)) {
            problem(w, "page %llu of %s: node %d starts at byte %u, outside the page's node area (%u to %u)",
                    (unsigned long long)pgno, w->db, i, ptr, upper, psize - NODESIZE);
            return;
        }
        const uint8_t *nd = p + ptr;
        uint16_t nflags = rd16(nd + 4), ksize = rd16(nd + 6);
        if (ksize > MAXKEYSIZE || (size_t)ptr + NODESIZE + ksize > psize) {
            problem(w, "page %llu of %s: node %d has a %u-byte key, past the end of the page", (unsigned long long)pgno,
                    w->db, i, ksize);
            return;
        }
        const uint8_t *key = nd + NODESIZE;
        if (!leaf) {
            if (i == 0) continue;  // a branch page's first key is not used (LMDB leaves it empty)
            const uint8_t *pk = NULL;
            size_t pkl = 0;
            if (i > 1) {
                const uint8_t *pn = p + rd16(p + PAGEHDRSZ + 2 * (i - 1));
                pk = pn + NODESIZE, pkl = rd16(pn + 6);
            }
            if ((w->kind == 1 && ksize != 8) || (pk && key_cmp(w, pk, pkl, key, ksize) >= 0) ||
                (lo && key_cmp(w, key, ksize, lo, lol) < 0) || (hi && key_cmp(w, key, ksize, hi, hil) >= 0)) {
                problem(w, "page %llu of %s: branch key '%s' is out of order", (unsigned long long)pgno, w->db,
                        key_text(key, ksize, kt, sizeof kt));
                return;
            }
            continue;
        }
        // Leaf: the key in order through the whole tree and inside the parent's bounds.
        if (w->kind == 1 && ksize != 8) {
            problem(w, "page %llu of %s: a %u-byte key where transaction ids are 8 bytes", (unsigned long long)pgno,
                    w->db, ksize);
            return;
        }
        if (w->have_prev && key_cmp(w, w->prev, w->prev_len, key, ksize) >= 0) {
            problem(w, "page %llu of %s: key '%s' is out of order (it follows '%s')", (unsigned long long)pgno, w->db,
                    key_text(key, ksize, kt, sizeof kt), key_text(w->prev, w->prev_len, kt2, sizeof kt2));
            return;
        }
        if ((lo && key_cmp(w, key, ksize, lo, lol) < 0) || (hi && key_cmp(w, key, ksize, hi, hil) >= 0)) {
            problem(w, "page %llu of %s: key '%s' is outside the key range its parent page gives it",
                    (unsigned long long)pgno, w->db, key_text(key, ksize, kt, sizeof kt));
            return;
        }
        memcpy(w->prev, key, ksize);
        w->prev_len = ksize;
        w->have_prev = 1;
        if (nflags & ~(F_BIGDATA | F_SUBDATA) || (nflags & F_SUBDATA && (w->kind != 0 || nflags & F_BIGDATA))) {
            problem(w, "page %llu of %s: key '%s' has node flags 0x%x, which a feature cache never uses",
                    (unsigned long long)pgno, w->db, key_text(key, ksize, kt, sizeof kt), nflags);
            return;
        }
        uint32_t dsize = rd16(nd) | (uint32_t)rd16(nd + 2) << 16;
        size_t after_key = (size_t)ptr + NODESIZE + ksize;
        if (nflags & F_BIGDATA) {
            if (after_key + 8 > psize) {
                problem(w, "page %llu of %s: key '%s': its overflow page number runs past the end of the page",
                        (unsigned long long)pgno, w->db, key_text(key, ksize, kt, sizeof kt));
                return;
            }
            // The run may be longer than the value needs: LMDB rewrites a
            // smaller value in place.
            uint64_t ov = rd64(nd + NODESIZE + ksize), need = (PAGEHDRSZ - 1 + (uint64_t)dsize) / psize + 1;
            char what[MAXKEYSIZE * 4 + 160];
            snprintf(what, sizeof what, "page %llu of %s: the %u-byte value of key '%s'", (unsigned long long)pgno,
                     w->db, dsize, key_text(key, ksize, kt, sizeof kt));
            if (ov < 2 || ov > w->last_pg) {
                claim(w, ov, need, what);  // reports it
                return;
            }
            uint8_t h[PAGEHDRSZ];
            int r = read_at(w, h, PAGEHDRSZ, ov * psize);
            if (r == 0 && ov * psize + PAGEHDRSZ + dsize > w->file_size) r = 1;
            if (r < 0) {
                w->failed = w->stop = 1;
                return;
            }
            uint32_t pages = r ? 0 : rd32(h + 12);
            if (r > 0 || rd64(h) != ov || rd16(h + 10) != P_OVERFLOW || pages < need) {
                problem(w, "%s: overflow page %llu %s", what, (unsigned long long)ov,
                        r > 0 ? "lies past the end of the file" : "is not the start of a run of enough pages");
                return;
            }
            if (claim(w, ov, pages, what) < 0) return;
            w->n_overflow += pages;
        } else if (after_key + dsize > psize) {
            problem(w, "page %llu of %s: the %u-byte value of key '%s' runs past the end of the page",
                    (unsigned long long)pgno, w->db, dsize, key_text(key, ksize, kt, sizeof kt));
            return;
        }
        w->n_entries++;
        int big = (nflags & F_BIGDATA) != 0;
        if (nflags & F_SUBDATA) {
            if (dsize != DB_SIZE || w->n_named == MAX_NAMED) {
                problem(w, "page %llu of %s: named database '%s' has a %u-byte record (expected %d)",
                        (unsigned long long)pgno, w->db, key_text(key, ksize, kt, sizeof kt), dsize, DB_SIZE);
                return;
            }
            memcpy(w->named[w->n_named].name, key, ksize);
            w->named[w->n_named].name[ksize] = '\0';
            w->named[w->n_named].db = parse_db(nd + NODESIZE + ksize);
            w->n_named++;
        } else if (w->kind == 1) {
            const uint8_t *v = node_value(w, nd, ksize, dsize, big);
            if (v) free_record(w, pgno, key, ksize, v, dsize);
        } else if (w->kind == 2 && w->o->entry) {
            const uint8_t *v = node_value(w, nd, ksize, dsize, big);
            if (v) {
                int rc = w->o->entry(w->o->ctx, w->name, key, ksize, v, dsize);
                if (rc) w->failed = w->stop = 1;
            }
        }
    }
    if (leaf || w->stop) return;
    // Then the children, each between its separator and the next one.
    for (int i = 0; i < n && !w->stop; i++) {
        const uint8_t *nd = p + rd16(p + PAGEHDRSZ + 2 * i);
        uint64_t child = rd16(nd) | (uint64_t)rd16(nd + 2) << 16 | (uint64_t)rd16(nd + 4) << 32;
        const uint8_t *clo = lo, *chi = hi;
        size_t clol = lol, chil = hil;
        if (i > 0) clo = nd + NODESIZE, clol = rd16(nd + 6);
        if (i + 1 < n) {
            const uint8_t *nx = p + rd16(p + PAGEHDRSZ + 2 * (i + 1));
            chi = nx + NODESIZE, chil = rd16(nx + 6);
        }
        walk_page(w, child, level + 1, clo, clol, chi, chil);
    }
}

static void walk_page(Walk *w, uint64_t pgno, int level, const uint8_t *lo, size_t lol, const uint8_t *hi,
                      size_t hil) {
    if (w->stop) return;
    if (claim(w, pgno, 1, w->db) < 0) return;
    uint8_t *p = w->page[level];
    int r = read_at(w, p, w->psize, pgno * w->psize);
    if (r < 0) {
        w->failed = w->stop = 1;
        return;
    }
    if (r > 0) {
        problem(w, "page %llu of %s lies past the end of the file (%llu bytes)", (unsigned long long)pgno, w->db,
                (unsigned long long)w->file_size);
        return;
    }
    const int leaf = level == w->depth;
    uint16_t flags = rd16(p + 10), lower = rd16(p + 12), upper = rd16(p + 14);
    if (rd64(p) != pgno) {
        problem(w, "page %llu of %s says it is page %llu", (unsigned long long)pgno, w->db,
                (unsigned long long)rd64(p));
    } else if (flags != (leaf ? P_LEAF : P_BRANCH)) {
        problem(w, "page %llu of %s has page flags 0x%x where a %s page (0x%x) belongs", (unsigned long long)pgno,
                w->db, flags, leaf ? "leaf" : "branch", leaf ? P_LEAF : P_BRANCH);
    } else if (lower < PAGEHDRSZ + 2 || upper > w->psize || lower > upper || (lower - PAGEHDRSZ) % 2) {
        problem(w, "page %llu of %s: its bounds (lower %u, upper %u) are impossible for a %u-byte page",
                (unsigned long long)pgno, w->db, lower, upper, w->psize);
    } else {
        if (leaf) w->n_leaf++;
        else w->n_branch++;
        check_nodes(w, pgno, level, lo, lol, hi, hil);
    }
}

static void walk_tree(Walk *w, const char *label, int kind, const char *name, const Db *db) {
    if (w->stop) return;
    snprintf(w->db, sizeof w->db, "%s", label);
    w->kind = kind, w->name = name;
    w->n_branch = w->n_leaf = w->n_overflow = w->n_entries = 0;
    w->have_prev = 0;
    if (db->root == P_INVALID) {
        if (db->depth || db->entries || db->branch || db->leaf || db->overflow)
            problem(w, "%s is recorded empty but with %llu entries and depth %u", w->db,
                    (unsigned long long)db->entries, db->depth);
        return;
    }
    if (db->depth < 1 || db->depth >= MAX_DEPTH) {
        problem(w, "%s has a recorded depth of %u", w->db, db->depth);
        return;
    }
    w->depth = db->depth;
    long before = w->problems;
    walk_page(w, db->root, 1, NULL, 0, NULL, 0);
    if (w->stop || w->problems > before) return;  // the counts of a damaged tree say nothing more
    if (w->n_entries != db->entries || w->n_leaf != db->leaf || w->n_branch != db->branch ||
        w->n_overflow != db->overflow)
        problem(w,
                "%s records %llu entries on %llu leaf, %llu branch and %llu overflow pages; its pages hold %llu on "
                "%llu, %llu and %llu",
                w->db, (unsigned long long)db->entries, (unsigned long long)db->leaf, (unsigned long long)db->branch,
                (unsigned long long)db->overflow, (unsigned long long)w->n_entries, (unsigned long long)w->n_leaf,
                (unsigned long long)w->n_branch, (unsigned long long)w->n_overflow);
}

static int is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

// Reads and checks meta page i (page size psize; 0 for page 0, which says it).
static int read_meta(Walk *w, int i, Meta *m) {
    uint8_t b[PAGEHDRSZ + META_SIZE];
    int r = read_at(w, b, sizeof b, (uint64_t)i * w->psize);
    if (r < 0) return -1;
    if (r > 0) {
        problem(w, "meta page %d lies past the end of the file (%llu bytes): the file is truncated", i,
                (unsigned long long)w->file_size);
        return 1;
    }
    const uint8_t *q = b + PAGEHDRSZ;
    m->pgno = rd64(b), m->page_flags = rd16(b + 10);
    m->magic = rd32(q), m->version = rd32(q + 4), m->address = rd64(q + 8), m->mapsize = rd64(q + 16);
    m->dbs[0] = parse_db(q + 24), m->dbs[1] = parse_db(q + 24 + DB_SIZE);
    m->last_pg = rd64(q + 24 + 2 * DB_SIZE), m->txnid = rd64(q + 32 + 2 * DB_SIZE);
    const char *bad = NULL;
    char why[160];
    if (m->magic != MDB_MAGIC) bad = "not an LMDB meta page (bad magic number)";
    else if (m->pgno != (uint64_t)i || m->page_flags != P_META) bad = "its page header is damaged";
    else if (m->version != MDB_DATA_VERSION) bad = "unknown LMDB data version";
    else if (!is_pow2(m->dbs[0].pad) || m->dbs[0].pad < 512 || m->dbs[0].pad > 32768 ||
             (i == 1 && m->dbs[0].pad != w->psize)) {
        snprintf(why, sizeof why, "impossible page size %u", m->dbs[0].pad);
        bad = why;
    } else if (m->address || m->dbs[0].flags != MDB_INTEGERKEY || m->dbs[1].flags)
        bad = "flags a feature cache never uses";
    // The file may end before the last page when the pages at its end are
    // free (never written): by far less than the file itself.
    else if (m->last_pg < 1 || m->last_pg > (1ull << 47) / m->dbs[0].pad ||
             m->last_pg > 2 * (w->file_size / m->dbs[0].pad) + 65536) {
        snprintf(why, sizeof why, "impossible last page %llu", (unsigned long long)m->last_pg);
        bad = why;
    }
    if (bad) {
        problem(w, "meta page %d: %s", i, bad);
        return 1;
    }
    return 0;
}

long lmdb_check(const char *data_path, const LmdbCheck *opt) {
    Walk w;
    memset(&w, 0, sizeof w);
    w.o = opt;
    w.fd = open(data_path, O_RDONLY | O_CLOEXEC);
    if (w.fd < 0) return err_set("%s: %s", data_path, strerror(errno));
    struct stat st;
    if (fstat(w.fd, &st) < 0) {
        err_set("%s: %s", data_path, strerror(errno));
        close(w.fd);
        return -1;
    }
    w.file_size = (uint64_t)st.st_size;
    long ret = -1;
    Meta m[2];
    // Page 0 says the page size; page 1 follows at that offset.
    w.psize = 0;
    int r = read_meta(&w, 0, &m[0]);
    if (r == 0) {
        w.psize = m[0].dbs[0].pad;
        r = read_meta(&w, 1, &m[1]);
    }
    if (r < 0) goto out;
    if (r > 0) goto done;
    // Transaction N writes meta page N % 2 and follows N - 1: LMDB then picks
    // the right page (the greater id, or the lock file's id & 1) only if
    // the ids are as commits leave them.
    uint64_t t0 = m[0].txnid, t1 = m[1].txnid;
    if ((t0 % 2) || (t1 % 2 != 1 && t1) || (t0 + 1 != t1 && t1 + 1 != t0 && (t0 || t1))) {
        problem(&w, "meta pages: transaction ids %llu and %llu are not those of two successive commits",
                (unsigned long long)t0, (unsigned long long)t1);
        goto done;
    }
    const Meta *use = t1 > t0 ? &m[1] : &m[0];
    if (opt->txnid) {
        use = m[0].txnid == opt->txnid ? &m[0] : m[1].txnid == opt->txnid ? &m[1] : NULL;
        if (!use) {
            ret = -2;  // a writer committed meanwhile: the caller takes a new snapshot
            err_set("%s: the cache changed while it was being checked", data_path);
            goto out;
        }
    }
    if (opt->metas_only) goto done;

    w.last_pg = use->last_pg;
    w.seen = calloc((size_t)(w.last_pg / 8 + 1), 1);
    for (int i = 0; i <= MAX_DEPTH; i++) w.page[i] = malloc(w.psize);
    for (int i = 0; i <= MAX_DEPTH; i++)
        if (!w.page[i]) w.seen = (free(w.seen), NULL);
    if (!w.seen) {
        err_set("%s: out of memory checking %llu pages", data_path, (unsigned long long)w.last_pg + 1);
        goto out;
    }
    w.seen[0] |= 3;  // the meta pages
    walk_tree(&w, "the main database", 0, NULL, &use->dbs[1]);
    walk_tree(&w, "the free list", 1, NULL, &use->dbs[0]);
    // The named databases, `first_db` first.
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < w.n_named && !w.stop; i++) {
            int first = opt->first_db && !strcmp(w.named[i].name, opt->first_db);
            if (first != (pass == 0)) continue;
            char label[sizeof w.named[0].name + 16], kt[MAXKEYSIZE * 4 + 1];
            snprintf(label, sizeof label, "the '%s' tree",
                     key_text((const uint8_t *)w.named[i].name, strlen(w.named[i].name), kt, sizeof kt));
            const Db *d = &w.named[i].db;
            if (d->flags || d->pad) {
                problem(&w, "%s has database flags 0x%x, which a feature cache never uses", label, d->flags);
                continue;
            }
            if (opt->named) opt->named(opt->ctx, w.named[i].name);
            walk_tree(&w, label, 2, w.named[i].name, d);
        }
    // mdb.c: "each non-metapage up to mm_last_pg is reachable exactly once".
    // (Only when all was readable: a damaged subtree leaves its pages unseen.)
    if (!w.stop && !w.problems)
        for (uint64_t p = 2; p <= w.last_pg; p++)
            if (!(w.seen[p >> 3] & (1u << (p & 7)))) {
                problem(&w, "page %llu is neither used nor listed free: the page structure is damaged",
                        (unsigned long long)p);
                break;
            }
done:
    ret = w.failed ? -1 : w.problems;
out:
    close(w.fd);
    free(w.seen);
    for (int i = 0; i <= MAX_DEPTH; i++) free(w.page[i]);
    free(w.val);
    return ret;
}
