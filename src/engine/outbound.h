/* The outbound queue to Lever: every Lever call of every tenant goes through
 * here. Each tenant has a FIFO of calls and a GCRA limiter; tenants with
 * work are served round-robin, one call per turn, while the HTTP client has
 * room under the global in-flight cap. A tenant without a token sleeps in a
 * heap until its next token, behind one timer for all tenants.
 *
 * A 429 from Lever never reaches the caller: the tenant is held back for
 * Retry-After (clamped to 1 s .. 5 min) or, without one, for a full-jitter
 * backoff that grows with consecutive throttling episodes up to the time
 * Lever's bucket needs to refill (burst / rate, at least 1 s, at most 1 min),
 * and the call goes back to the head of its tenant's queue. An episode starts
 * with the first 429 for a call sent after the current hold began: the other
 * calls of a burst that were already in flight come back 429 too, and they
 * neither lengthen the hold nor escalate the next one. Every other answer
 * completes the call.
 *
 * Owner: main creates one lb_outbound; tenants are created on first use and
 * freed with lb_outbound_tenant_remove once their calls have completed. Loop
 * thread only.
 *
 * The limiter keeps one token of the burst in reserve (for bursts above 2)
 * as a margin against network jitter: see margin() in outbound.c. */
#ifndef LB_ENGINE_OUTBOUND_H
#define LB_ENGINE_OUTBOUND_H

#include "core/heap.h"
#include "engine/ratelimit.h"
#include "http/client.h"

#include <stdint.h>
#include <uv.h>

/* Most calls queued for one tenant; past it, submit refuses with LB_ETOOBIG. */
#define LB_OUTBOUND_QUEUE_MAX 100000
#define LB_OUTBOUND_HOLD_MIN_MS 1000
#define LB_OUTBOUND_HOLD_MAX_MS 300000
/* Bounds of the hold without Retry-After: the refill time of the tenant's
 * bucket (burst / rate), clamped to these. */
#define LB_OUTBOUND_REFILL_MIN_MS 1000
#define LB_OUTBOUND_REFILL_MAX_MS 60000

typedef struct lb_outbound lb_outbound;
typedef struct lb_ob_tenant lb_ob_tenant;
typedef struct lb_ob_call lb_ob_call;

/* Runs once per call on the loop thread, with Lever's answer (never a 429)
 * or a transport failure (res->status 0). */
typedef void (*lb_ob_cb)(lb_ob_call *call, const lb_http_response *res);

/* A call, allocated by the caller (usually inside its own context) and left
 * untouched from submit until its callback. The request's strings must live
 * as long. */
struct lb_ob_call {
    lb_http_request req;
    lb_ob_cb cb;
    void *data;
    /* private */
    lb_ob_call *next;
    lb_ob_tenant *tenant;
    lb_http_call *http;
    uint64_t queued_ns; /* when submitted, for the scheduling delay */
    int64_t sent_us;    /* when handed to the HTTP client (monotonic) */
    int requeues;       /* 429s absorbed */
};

typedef struct {
    uint64_t dispatched; /* calls handed to the HTTP client */
    uint64_t throttled;  /* 429s absorbed */
    uint64_t queued;     /* calls waiting now, all tenants */
    double delay_sum_s;  /* sum of scheduling delays */
} lb_outbound_stats;

int lb_outbound_new(uv_loop_t *loop, lb_http_client *client, lb_outbound **out);
/* Completes every queued call with error LB_ECLOSED, frees every tenant and
 * the timer in its close callback, then calls cb. In-flight calls belong to
 * the HTTP client: close it first. */
void lb_outbound_close(lb_outbound *ob, void (*cb)(void *data), void *data);

/* The tenant's queue, created with rate/burst on first use; on later uses
 * rate/burst update the limiter. rate <= 0 means unlimited. */
lb_ob_tenant *lb_outbound_tenant(lb_outbound *ob, const char *tenant_id, double rate, int burst);
lb_ob_tenant *lb_outbound_tenant_find(lb_outbound *ob, const char *tenant_id);
/* A paused tenant keeps its queue but dispatches nothing (needs_reauth). */
void lb_outbound_tenant_pause(lb_ob_tenant *t, int paused);
/* Completes the tenant's queued calls with error LB_ECLOSED and forgets it;
 * calls in flight still complete through their callbacks. */
void lb_outbound_tenant_remove(lb_outbound *ob, const char *tenant_id);
size_t lb_outbound_tenant_queued(const lb_ob_tenant *t);

/* Queues call for the tenant. 0, or LB_ETOOBIG / LB_ECLOSED and the callback
 * never runs. */
int lb_outbound_submit(lb_ob_tenant *t, lb_ob_call *call);
/* Removes a call that is still queued (1) or stops one in flight (1); its
 * callback will not run. 0 when it was not found. */
int lb_outbound_cancel(lb_ob_call *call);

void lb_outbound_stats_get(const lb_outbound *ob, lb_outbound_stats *out);

/* The hold a 429 imposes: Retry-After clamped to 1 s..5 min, or a full-jitter
 * backoff from 1 s doubling per consecutive episode up to ceiling_ms (at
 * least 250 ms). */
int64_t lb_outbound_hold_ms(const char *retry_after, int64_t now_ms, unsigned episodes,
                            int64_t ceiling_ms);
/* The ceiling of a hold without Retry-After for a bucket of rate/burst: the
 * time it takes to refill from empty, clamped to LB_OUTBOUND_REFILL_*_MS;
 * Lever's default 20 / 10 per s when rate <= 0 (unlimited here). */
int64_t lb_outbound_refill_ms(double rate, int burst);

#endif
