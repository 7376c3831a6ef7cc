/* The recent dedupe keys of Lever deliveries: see recent.h. */
#include "store/recent.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

/* Rebuilt when more than 9/10 full, to 3/4 full. */
#define LOAD_MAX_NUM 9
#define LOAD_MAX_DEN 10
#define LOAD_AFTER_NUM 3
#define LOAD_AFTER_DEN 4

void lb_recent_init(lb_recent *r, int64_t horizon_ms, size_t max_keys)
{
    memset(r, 0, sizeof(*r));
    r->horizon_ms = horizon_ms;
    r->max_keys = max_keys > 0 ? max_keys : LB_RECENT_MAX_KEYS;
    r->tag_mask = UINT32_MAX;
#ifdef LB_FAULT_INJECTION
    const char *bits = getenv("LB_FAULT_RECENT_TAG_BITS");
    int n = bits != NULL ? atoi(bits) : 0;
    if (n >= 1 && n <= 31) r->tag_mask = ~(UINT32_MAX >> n);
#endif
    if (sodium_init() < 0) abort();
    randombytes_buf(r->key, sizeof(r->key));
}

void lb_recent_free(lb_recent *r)
{
    lb_free(r->slots);
    r->slots = NULL;
    r->cap = r->count = 0;
    sodium_memzero(r->key, sizeof(r->key));
}

/* SipHash-2-4 of tenant, a NUL, key. */
uint64_t lb_recent_hash(const lb_recent *r, const char *tenant, const char *key)
{
    size_t tl = strlen(tenant), kl = strlen(key), n = tl + 1 + kl;
    unsigned char small[256];
    unsigned char *in = n <= sizeof(small) ? small : lb_malloc(n);
    memcpy(in, tenant, tl);
    in[tl] = '\0';
    memcpy(in + tl + 1, key, kl);
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, in, n, r->key);
    if (in != small) lb_free(in);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}

static uint32_t tag_of(const lb_recent *r, uint64_t hash)
{
    uint32_t t = (uint32_t)(hash >> 32) & r->tag_mask;
    return t ? t : 1;
}

/* The home slot of a tag: its place in [0, cap) in proportion. */
static size_t home_of(uint32_t tag, size_t cap)
{
    return (size_t)(((uint64_t)tag * (uint64_t)cap) >> 32);
}

static size_t dist(size_t i, size_t home, size_t cap)
{
    return i >= home ? i - home : i + cap - home;
}

/* The full row number from its low 32 bits: the greatest one held, less
 * how far below it these bits are. Exact while seq_hi - seq_lo < 2^32. */
static int64_t seq_full(const lb_recent *r, uint32_t low)
{
    return r->seq_hi - (int64_t)(uint32_t)((uint32_t)r->seq_hi - low);
}

size_t lb_recent_find(const lb_recent *r, uint64_t hash, int64_t *seqs, size_t max, int64_t now_ms)
{
    if (now_ms < r->search_until_ms) return LB_RECENT_SEARCH;
    if (r->cap == 0) return 0;
    uint32_t tag = tag_of(r, hash);
    size_t n = 0;
    size_t i = home_of(tag, r->cap);
    /* Robin Hood order: a run holds its entries by home slot, so the search
     * ends at an empty slot or at one nearer its home than we are to ours. */
    for (size_t d = 0;; d++) {
        const lb_recent_slot *e = &r->slots[i];
        if (e->tag == 0 || dist(i, home_of(e->tag, r->cap), r->cap) < d) return n;
        if (e->tag == tag) {
            if (n < max) seqs[n] = seq_full(r, e->seq);
            n++;
        }
        if (++i == r->cap) i = 0;
    }
}

static void put(lb_recent_slot *slots, size_t cap, lb_recent_slot e)
{
    size_t i = home_of(e.tag, cap);
    for (size_t d = 0;; d++) {
        if (slots[i].tag == 0) {
            slots[i] = e;
            return;
        }
        size_t ds = dist(i, home_of(slots[i].tag, cap), cap);
        if (ds < d) { /* take the place of the richer entry, carry it on */
            lb_recent_slot t = slots[i];
            slots[i] = e;
            e = t;
            d = ds;
        }
        if (++i == cap) i = 0;
    }
}

static uint32_t seconds_of(int64_t ms)
{
    if (ms <= 0) return 0;
    int64_t s = ms / 1000;
    return s > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* Rebuilds without the entries older than now - horizon (to the second,
 * rounded so that none of the window goes), at the size that leaves room
 * for `extra` more at 3/4 full. */
static void rebuild(lb_recent *r, int64_t now_ms, size_t extra)
{
    uint32_t cutoff = seconds_of(now_ms - r->horizon_ms);
    size_t live = 0;
    for (size_t i = 0; i < r->cap; i++)
        live += r->slots[i].tag != 0 && r->slots[i].at >= cutoff;
    size_t want = live + extra;
    size_t cap = want * LOAD_AFTER_DEN / LOAD_AFTER_NUM; /* at least 3/4 full: 16 B a key */
    if (cap < LB_RECENT_MIN_SLOTS) cap = LB_RECENT_MIN_SLOTS;
    lb_recent_slot *slots = lb_calloc(cap, sizeof(*slots));
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < r->cap; i++) {
        const lb_recent_slot *e = &r->slots[i];
        if (e->tag == 0 || e->at < cutoff) continue;
        int64_t full = seq_full(r, e->seq);
        lo = full < lo ? full : lo;
        hi = full > hi ? full : hi;
        put(slots, cap, *e);
    }
    lb_free(r->slots);
    r->slots = slots;
    r->cap = cap;
    r->count = live;
    r->seq_lo = live ? lo : 0;
    r->seq_hi = live ? hi : 0;
}

void lb_recent_add(lb_recent *r, uint64_t hash, int64_t seq, int64_t at_ms, int64_t now_ms)
{
    if (r->count > 0 &&
        (seq - r->seq_lo >= ((int64_t)1 << 32) || r->seq_hi - seq >= ((int64_t)1 << 32))) {
        /* Rows held would span 2^32 numbers (four billion events inside
         * the window): the low bits become ambiguous. Forget them all and
         * search the rows until every one of them is past the window. */
        lb_free(r->slots);
        r->slots = NULL;
        r->cap = r->count = 0;
        int64_t until = now_ms + r->horizon_ms;
        if (until > r->search_until_ms) r->search_until_ms = until;
    }
    if (r->cap == 0 || LOAD_MAX_DEN * (r->count + 1) > LOAD_MAX_NUM * r->cap ||
        (r->count >= r->max_keys && now_ms >= r->full_retry_ms)) {
        rebuild(r, now_ms, 1);
        r->full_retry_ms = 0;
    }
    if (r->count >= r->max_keys) {
        /* The bound: this key is not kept, so the table cannot answer for
         * the window until it has passed. Rebuilding to find expired
         * entries is retried only now and then, not on every add. */
        int64_t until = at_ms + r->horizon_ms;
        if (until > r->search_until_ms) r->search_until_ms = until;
        r->full_retry_ms = now_ms + r->horizon_ms / 64 + 1;
        return;
    }
    lb_recent_slot e = {.tag = tag_of(r, hash), .seq = (uint32_t)seq, .at = seconds_of(at_ms)};
    put(r->slots, r->cap, e);
    if (r->count == 0) {
        r->seq_lo = r->seq_hi = seq;
    } else {
        r->seq_lo = seq < r->seq_lo ? seq : r->seq_lo;
        r->seq_hi = seq > r->seq_hi ? seq : r->seq_hi;
    }
    r->count++;
}

size_t lb_recent_bytes(const lb_recent *r)
{
    return r->cap * sizeof(lb_recent_slot);
}
