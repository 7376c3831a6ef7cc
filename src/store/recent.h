/* The recent dedupe keys of Lever deliveries, in memory, for the SQLite
 * backend (internal to src/store/).
 *
 * Why: Lever's delivery tokens are 48 random characters. Kept in a unique
 * B-tree index, every delivery lands on a different leaf page, and every
 * group commit writes one 4 KiB page per delivery to the WAL and again to
 * the database at checkpoint: measured, that index cut durable ingest by
 * about half. A delivery can only be a duplicate of one received within
 * the replay window (plus the clock skew allowed): an older one's
 * triggeredAt is refused as stale before the store is asked. So the backend
 * keeps the keys of that window here and writes events in arrival order
 * only.
 *
 * An entry holds a 64-bit hash of (tenant, key), the event's row number
 * (events.seq) and its arrival time; 24 bytes, in an open-addressed table
 * kept at most 3/4 full. The hash only finds candidates: the caller reads
 * the row and compares the key itself, so a collision, an entry whose row
 * was rolled back or deleted, or a row number reused after a rollback can
 * never make a new delivery a duplicate. Entries older than the horizon are
 * dropped when the table would otherwise grow. Owner: the store thread (no
 * locking). */
#ifndef LB_STORE_RECENT_H
#define LB_STORE_RECENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t hash;
    int64_t seq; /* 0: an empty slot (row numbers start at 1) */
    int64_t at_ms;
} lb_recent_entry;

typedef struct {
    lb_recent_entry *slots;
    size_t cap; /* a power of two, or 0 before the first add */
    size_t count;
    int64_t horizon_ms;
} lb_recent;

void lb_recent_init(lb_recent *r, int64_t horizon_ms);
void lb_recent_free(lb_recent *r);

/* The hash of (tenant, key); never 0. */
uint64_t lb_recent_hash(const char *tenant, const char *key);

/* Row numbers of the entries with this hash, newest first is not promised:
 * at most max of them into seqs; returns how many there are in all (more
 * than max only after 2^64-scale bad luck or a stale entry pile-up). */
size_t lb_recent_find(const lb_recent *r, uint64_t hash, int64_t *seqs, size_t max);

/* Adds an entry. When the table is 3/4 full it is rebuilt first, without
 * the entries that arrived before now_ms - horizon, at twice the size of
 * what is left (at least 1024 slots). */
void lb_recent_add(lb_recent *r, uint64_t hash, int64_t seq, int64_t at_ms, int64_t now_ms);

/* Bytes held by the table. */
size_t lb_recent_bytes(const lb_recent *r);

#endif
