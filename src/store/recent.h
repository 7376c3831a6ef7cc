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
 * The table: open addressing with Robin Hood linear probing over 12-byte
 * slots, kept between 3/4 and 9/10 full, so at most 16 bytes per key (13.3
 * just before a rebuild, 16 just after one; the old table of 24-byte slots
 * kept 3/8 to 3/4 full cost 32 to 64). A slot holds:
 *  - tag: the high 32 bits of a 64-bit keyed hash of (tenant, key)
 *    (libsodium's crypto_shorthash, SipHash-2-4, under a random key drawn
 *    per table, so nobody outside can aim deliveries at one slot run); the
 *    tag also picks the home slot (tag * cap >> 32), 0 marks an empty slot;
 *  - the low 32 bits of the event's row number (events.seq): the full
 *    number is rebuilt from the newest row held, which is exact while the
 *    rows held span less than 2^32 (checked; past it the table forgets
 *    everything and lookups search the rows until the window has passed);
 *  - the arrival time in seconds (unsigned 32-bit unix time: until 2106).
 *
 * Collisions are correct by construction: the tag only finds candidates,
 * and the caller reads each candidate row and compares tenant, source and
 * key in full. Two keys with one tag (about n / 2^32 of lookups: 0.6% with
 * 26 million keys held) cost one extra row read; a row rolled back or
 * deleted, or a row number reused after a rollback, is told apart the same
 * way. Nothing can make a new delivery a duplicate, or drop a real one.
 *
 * Bounds and expiry: at most max_keys entries (LB_RECENT_MAX_KEYS by
 * default). When the table is 9/10 full it is rebuilt without the entries
 * that arrived before now - horizon, at the size that leaves it 3/4 full
 * (at least LB_RECENT_MIN_SLOTS slots): it grows and shrinks with the
 * window. An add past max_keys is not kept; then, until that key's arrival
 * plus the horizon, lb_recent_find answers LB_RECENT_SEARCH and the caller
 * searches the rows of the window instead (slower, never wrong). Owner:
 * the store thread (no locking). */
#ifndef LB_STORE_RECENT_H
#define LB_STORE_RECENT_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#define LB_RECENT_MIN_SLOTS 1024
/* 64 Mi keys (768 MiB of slots): 100 deliveries/s for 72 hours is 26 Mi. */
#define LB_RECENT_MAX_KEYS ((size_t)1 << 26)
/* lb_recent_find's answer when the table cannot say: search the rows. */
#define LB_RECENT_SEARCH SIZE_MAX

typedef struct {
    uint32_t tag; /* 0: an empty slot */
    uint32_t seq; /* the row number's low 32 bits */
    uint32_t at;  /* arrival, unix seconds */
} lb_recent_slot;

typedef struct {
    lb_recent_slot *slots;
    size_t cap; /* any size >= LB_RECENT_MIN_SLOTS, or 0 before the first add */
    size_t count;
    size_t max_keys;
    int64_t horizon_ms;
    int64_t seq_lo, seq_hi;  /* row numbers held: the least and the greatest */
    int64_t search_until_ms; /* > now: some key was not kept, search the rows */
    int64_t full_retry_ms;   /* at max_keys: when to look for expired entries */
    uint32_t tag_mask;       /* the tag bits kept: all; fewer in tests only */
    unsigned char key[crypto_shorthash_KEYBYTES];
} lb_recent;

/* max_keys 0: LB_RECENT_MAX_KEYS. Draws the table's hash key. In a
 * LB_FAULT_INJECTION build, LB_FAULT_RECENT_TAG_BITS=N (1..31) keeps only
 * N bits of each tag, so that distinct keys collide all the time and a
 * test can drive the collision path through the whole backend. */
void lb_recent_init(lb_recent *r, int64_t horizon_ms, size_t max_keys);
void lb_recent_free(lb_recent *r);

/* The 64-bit keyed hash of (tenant, key) under this table's key. */
uint64_t lb_recent_hash(const lb_recent *r, const char *tenant, const char *key);

/* Row numbers of the entries whose tag is this hash's, in no promised
 * order: at most max of them into seqs; returns how many there are in all
 * (more than max only after bad luck or a stale pile-up), or
 * LB_RECENT_SEARCH when a key of the window may be missing (the bound was
 * hit, or row numbers spanned 2^32) and the caller must search the rows. */
size_t lb_recent_find(const lb_recent *r, uint64_t hash, int64_t *seqs, size_t max, int64_t now_ms);

/* Adds an entry (rebuilding first when 9/10 full, see above). */
void lb_recent_add(lb_recent *r, uint64_t hash, int64_t seq, int64_t at_ms, int64_t now_ms);

/* Bytes held by the table. */
size_t lb_recent_bytes(const lb_recent *r);

#endif
