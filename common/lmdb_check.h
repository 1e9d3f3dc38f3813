// A page-level check of an LMDB data file (data.mdb), made before LMDB is
// allowed to walk it.
//
// Why: LMDB trusts its pages. One flipped byte in a page header or a node
// (a key count, a data size, a child page number) makes liblmdb read outside
// the page or past the end of the memory-mapped file: SIGSEGV or SIGBUS, or a
// record silently skipped. Containing such a fault (a SIGSEGV handler with
// siglongjmp out of liblmdb, a child process) leaves LMDB's state undefined,
// so we detect instead: this module reads the file with pread() (never
// through a mapping, so a short file is an error, not a SIGBUS) and checks
// everything LMDB relies on to stay inside its pages, following LMDB 0.9's
// on-disk format (mdb.c: MDB_meta, MDB_page, MDB_node, MDB_db; the layout has
// been stable since 0.9.0):
//   - both meta pages: magic, version, page size, flags, and transaction ids
//     as commits leave them (transaction N writes meta page N % 2, and the two
//     differ by one), so LMDB picks the snapshot we check;
//   - every page reachable from that snapshot (the main, named and free-list
//     trees): its number, type, key count and free-space bounds; every node
//     inside its page, its key size, its data inside the page or on overflow
//     pages that exist, with the page count the size implies; keys strictly
//     increasing through the whole tree and inside their parent's bounds;
//     all leaves at the recorded depth; page and entry counts as recorded;
//   - "each page up to the last is reachable exactly once: used by a database
//     or listed free" (mdb.c's own invariant): no page used twice, none lost.
// Cost: one read of every branch and leaf page and of the first page of each
// overflow run: less than reading the records, which every caller then does.
// What it cannot see is damage inside a key or value that keeps the structure
// sound: the records carry their own checksums for that (cache.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

// An entry of a named database, with its value (valid during the call).
// Return non-zero to stop the walk (that value is returned).
typedef int (*LmdbEntryFn)(void *ctx, const char *db, const void *key, size_t klen, const void *val, size_t vlen);
// A problem found, as a sentence naming the page (and key where known).
typedef void (*LmdbProblemFn)(void *ctx, const char *msg);

typedef struct {
    // The snapshot to check: the transaction id of the meta page LMDB uses
    // (mdb_txn_id of a read transaction), or 0 for the newest one.
    uint64_t txnid;
    // Check the meta pages only (what mdb_env_open reads), no trees.
    int metas_only;
    // Every problem, each reported through `problem` (continuing past a
    // damaged subtree); otherwise stop at the first one, left in err_msg().
    int all;
    LmdbProblemFn problem;
    // Entries of named databases (not called for the main and free-list
    // trees); `first_db` is walked before the others when set.
    LmdbEntryFn entry;
    const char *first_db;
    // Each named database found (before its entries).
    void (*named)(void *ctx, const char *db);
    void *ctx;
} LmdbCheck;

// Checks data_path (a data.mdb). Returns the number of problems (0: sound;
// with all = 0, 1 at most, the message in err_msg()); -1 with err_set when
// the file cannot be read at all or an entry callback returned non-zero;
// -2 when opt->txnid is in neither meta page (a writer committed since).
long lmdb_check(const char *data_path, const LmdbCheck *opt);
