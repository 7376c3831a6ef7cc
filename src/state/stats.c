/* Hourly counts: a ring of LB_STATS_HOURS slots per tenant, each stamped
 * with its hour, so a slot from a day ago is reused (zeroed) when its hour
 * comes round again. The total is kept as its own ring, so deleting a
 * tenant does not change the past. */
#include "state/stats.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"

#define MOD "stats"
#define TOTAL "\x01total" /* not a tenant id: those are [A-Za-z0-9._-] */

typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1];
    int64_t hour[LB_STATS_HOURS];                     /* 0: never used */
    uint32_t count[LB_STATS_HOURS][LB_STATS_KINDS];   /* what is shown */
    uint32_t pending[LB_STATS_HOURS][LB_STATS_KINDS]; /* counted here, not written yet */
    uint32_t dirty;                                   /* bit i: slot i has pending counts */
} ring;

struct lb_stats {
    uv_timer_t timer;
    lb_store *store;
    int64_t flush_ms;
    lb_map rings; /* tenant (TOTAL, "" for no tenant) -> ring */
    int shared;   /* other replicas add to the same rows: read them back */
    lb_store_op op;
    lb_store_op load;   /* shared: the current hours read back after a write */
    lb_stats_rec *recs; /* the op's rows, LB_STORE_STATS_MAX */
    int busy, closing;
    void (*close_cb)(void *data);
    void *close_data;
};

static ring *ring_get(lb_stats *st, const char *tenant, int create)
{
    ring *r = lb_map_get(&st->rings, tenant);
    if (r == NULL && create) {
        r = LB_NEW(ring);
        snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
        lb_map_put(&st->rings, r->tenant, r);
    }
    return r;
}

/* The slot for `hour`, zeroed if it held another hour. */
static size_t slot(ring *r, int64_t hour)
{
    size_t i = (size_t)(hour % LB_STATS_HOURS);
    if (r->hour[i] != hour) {
        r->hour[i] = hour;
        memset(r->count[i], 0, sizeof(r->count[i]));
        memset(r->pending[i], 0, sizeof(r->pending[i]));
        r->dirty &= ~(1u << i);
    }
    return i;
}

static void bump(lb_stats *st, const char *tenant, lb_stat what, int64_t hour)
{
    ring *r = ring_get(st, tenant, 1);
    size_t i = slot(r, hour);
    if (r->count[i][what] < UINT32_MAX) r->count[i][what]++;
    if (r->pending[i][what] < UINT32_MAX) r->pending[i][what]++;
    r->dirty |= 1u << i;
}

void lb_stats_add(lb_stats *st, const char *tenant, lb_stat what, int64_t now_ms)
{
    if (st == NULL || (unsigned)what >= LB_STATS_KINDS) return;
    int64_t hour = now_ms / LB_HOUR_MS;
    bump(st, TOTAL, what, hour);
    bump(st, tenant ? tenant : "", what, hour);
}

void lb_stats_load(lb_stats *st, const lb_stats_rec *recs, size_t n, int64_t now_ms)
{
    int64_t first = now_ms / LB_HOUR_MS - (LB_STATS_HOURS - 1);
    for (size_t k = 0; k < n; k++) {
        const lb_stats_rec *rec = &recs[k];
        if (rec->hour < first) continue;
        ring *r = ring_get(st, rec->tenant_id, 1);
        size_t i = slot(r, rec->hour);
        memcpy(r->count[i], rec->count, sizeof(r->count[i]));
    }
}

void lb_stats_get(const lb_stats *st, const char *tenant, int64_t now_ms, lb_stats_series *out)
{
    memset(out, 0, sizeof(*out));
    int64_t last = now_ms / LB_HOUR_MS;
    const ring *r = lb_map_get(&st->rings, tenant ? tenant : TOTAL);
    for (int k = 0; k < LB_STATS_HOURS; k++) {
        int64_t hour = last - (LB_STATS_HOURS - 1) + k;
        out->hour[k] = hour;
        size_t i = (size_t)(hour % LB_STATS_HOURS);
        if (r != NULL && r->hour[i] == hour)
            memcpy(out->count[k], r->count[i], sizeof(out->count[k]));
    }
}

void lb_stats_forget(lb_stats *st, const char *tenant)
{
    if (st == NULL) return;
    ring *r = lb_map_del(&st->rings, tenant);
    lb_free(r);
}

/* ---- writing ------------------------------------------------------------------ */

static void flush(lb_stats *st);

static void closed_cb(uv_handle_t *h)
{
    lb_stats *st = h->data;
    void (*cb)(void *) = st->close_cb;
    void *data = st->close_data;
    size_t pos = 0;
    ring *r;
    while ((r = lb_map_next(&st->rings, &pos)) != NULL)
        lb_free(r);
    lb_map_free(&st->rings);
    lb_free(st->recs);
    lb_free(st);
    if (cb != NULL) cb(data);
}

/* The write of the first n rows went through: what they carried is no
 * longer pending (what was counted meanwhile still is). */
static void written_off(lb_stats *st, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const lb_stats_rec *rec = &st->recs[k];
        ring *r = ring_get(st, rec->tenant_id, 0);
        size_t i = (size_t)(rec->hour % LB_STATS_HOURS);
        if (r == NULL || r->hour[i] != rec->hour) continue;
        int left = 0;
        for (int w = 0; w < LB_STATS_KINDS; w++) {
            uint32_t sent = rec->count[w];
            r->pending[i][w] = r->pending[i][w] > sent ? r->pending[i][w] - sent : 0;
            left |= r->pending[i][w] != 0;
        }
        if (!left) r->dirty &= ~(1u << i);
    }
}

/* Shared: the stored counts of the hours since `since` (every replica's),
 * plus what this one counted and has not written, become what is shown. */
static void loaded(lb_store_op *op)
{
    lb_stats *st = op->data;
    st->busy = 0;
    if (op->status == 0) {
        int64_t since = op->stats_load.since;
        size_t pos = 0;
        ring *r;
        while ((r = lb_map_next(&st->rings, &pos)) != NULL)
            for (size_t i = 0; i < LB_STATS_HOURS; i++)
                if (r->hour[i] >= since) memcpy(r->count[i], r->pending[i], sizeof(r->count[i]));
        for (size_t k = 0; k < op->stats_load.count; k++) {
            const lb_stats_rec *rec = &op->stats_load.recs[k];
            if (rec->hour < since) continue;
            r = ring_get(st, rec->tenant_id, 1);
            size_t i = slot(r, rec->hour);
            for (int w = 0; w < LB_STATS_KINDS; w++) {
                uint64_t v = (uint64_t)rec->count[w] + r->pending[i][w];
                r->count[i][w] = v < UINT32_MAX ? (uint32_t)v : UINT32_MAX;
            }
        }
    } else {
        lb_debug(MOD, "hourly counts not read back: %s", lb_strerror(op->status));
    }
    lb_free(op->stats_load.recs);
    if (st->closing) uv_close((uv_handle_t *)&st->timer, closed_cb);
}

static void written(lb_store_op *op)
{
    lb_stats *st = op->data;
    st->busy = 0;
    if (op->status == 0)
        written_off(st, op->stats_put.count);
    else
        lb_debug(MOD, "hourly counts not written: %s", lb_strerror(op->status));
    if (!st->closing && st->shared) {
        /* The hour now and the one before: the only ones still counted. */
        st->load = (lb_store_op){.kind = LB_STORE_STATS_LOAD, .cb = loaded, .data = st};
        st->load.stats_load.since = lb_time_now_ms() / LB_HOUR_MS - 1;
        if (lb_store_submit(st->store, &st->load) == 0) {
            st->busy = 1;
            return;
        }
    }
    if (st->closing) uv_close((uv_handle_t *)&st->timer, closed_cb);
}

static int rec_cmp(const void *pa, const void *pb)
{
    const lb_stats_rec *a = pa, *b = pb;
    int c = strcmp(a->tenant_id, b->tenant_id);
    return c != 0 ? c : (a->hour > b->hour) - (a->hour < b->hour);
}

/* One op adding the pending counts (at most LB_STORE_STATS_MAX hours; the
 * rest wait for the next tick), in the store's order. */
static void flush(lb_stats *st)
{
    if (st->busy || st->store == NULL) return;
    size_t n = 0, pos = 0;
    ring *r;
    while (n < LB_STORE_STATS_MAX && (r = lb_map_next(&st->rings, &pos)) != NULL) {
        for (size_t i = 0; i < LB_STATS_HOURS && n < LB_STORE_STATS_MAX; i++) {
            if (!(r->dirty & (1u << i))) continue;
            lb_stats_rec *rec = &st->recs[n++];
            memset(rec, 0, sizeof(*rec));
            snprintf(rec->tenant_id, sizeof(rec->tenant_id), "%s", r->tenant);
            rec->hour = r->hour[i];
            memcpy(rec->count, r->pending[i], sizeof(rec->count));
        }
    }
    qsort(st->recs, n, sizeof(*st->recs), rec_cmp);
    st->op = (lb_store_op){.kind = LB_STORE_STATS_PUT, .cb = written, .data = st};
    st->op.stats_put.recs = st->recs;
    st->op.stats_put.count = n;
    st->op.stats_put.forget_before = lb_time_now_ms() / LB_HOUR_MS - 2 * LB_STATS_HOURS;
    if (lb_store_submit(st->store, &st->op) == 0) st->busy = 1;
    /* else a full queue or a closing store: still pending, next time */
}

static void on_timer(uv_timer_t *t)
{
    flush(t->data);
}

int lb_stats_new(uv_loop_t *loop, lb_store *store, int64_t flush_ms, int shared, lb_stats **out)
{
    *out = NULL;
    lb_stats *st = LB_NEW(lb_stats);
    st->store = store;
    st->shared = shared;
    st->flush_ms = flush_ms > 0 ? flush_ms : 60 * 1000;
    lb_map_init(&st->rings);
    st->recs = lb_calloc(LB_STORE_STATS_MAX, sizeof(*st->recs));
    int rc = uv_timer_init(loop, &st->timer);
    if (rc != 0) {
        lb_map_free(&st->rings);
        lb_free(st->recs);
        lb_free(st);
        return rc;
    }
    st->timer.data = st;
    if (store != NULL)
        uv_timer_start(&st->timer, on_timer, (uint64_t)st->flush_ms, (uint64_t)st->flush_ms);
    *out = st;
    return 0;
}

void lb_stats_close(lb_stats *st, void (*cb)(void *data), void *data)
{
    st->close_cb = cb;
    st->close_data = data;
    uv_timer_stop(&st->timer);
    flush(st); /* the last minute */
    st->closing = 1;
    if (!st->busy) uv_close((uv_handle_t *)&st->timer, closed_cb);
}
