#include "engine/outbound.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "engine/backoff.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* One tenant's queue and limiter. Owned by the outbound's map; freed when
 * removed and no call of it is in flight. */
struct lb_ob_tenant {
    char *id;
    lb_outbound *ob;
    lb_rl rl;
    int unlimited;
    lb_ob_call *head, *tail; /* FIFO of queued calls */
    size_t count;
    lb_ob_tenant *ring_next; /* round-robin queue link */
    int in_ring;
    lb_heap_node sleep;    /* in ob->sleepers while waiting for a token */
    int64_t hold_until_us; /* nothing before this (429) */
    int64_t hold_began_us; /* start of the current throttling episode */
    unsigned episodes_429; /* consecutive throttling episodes */
    int64_t refill_ms;     /* ceiling of a hold without Retry-After */
    int paused;
    int removed;
    size_t inflight;
};

struct lb_outbound {
    uv_loop_t *loop;
    lb_http_client *client;
    lb_map tenants;
    lb_ob_tenant *ring_head, *ring_tail;
    lb_heap sleepers;
    uv_timer_t timer;
    int pumping, again, closing;
    lb_outbound_stats stats;
    void (*close_cb)(void *);
    void *close_data;
    lb_metric *delay_hist;
    lb_metric *request_hist;
};

static void pump(lb_outbound *ob);

static int64_t now_us(void)
{
    return (int64_t)(uv_hrtime() / 1000);
}

/* ---- queues ------------------------------------------------------------ */

static void ring_push(lb_outbound *ob, lb_ob_tenant *t)
{
    if (t->in_ring || t->paused || t->count == 0 || lb_heap_contains(&t->sleep)) return;
    t->in_ring = 1;
    t->ring_next = NULL;
    if (ob->ring_tail)
        ob->ring_tail->ring_next = t;
    else
        ob->ring_head = t;
    ob->ring_tail = t;
}

static lb_ob_tenant *ring_pop(lb_outbound *ob)
{
    lb_ob_tenant *t = ob->ring_head;
    if (t == NULL) return NULL;
    ob->ring_head = t->ring_next;
    if (ob->ring_head == NULL) ob->ring_tail = NULL;
    t->in_ring = 0;
    return t;
}

static void ring_remove(lb_outbound *ob, lb_ob_tenant *t)
{
    if (!t->in_ring) return;
    lb_ob_tenant **pp = &ob->ring_head, *prev = NULL;
    while (*pp != t) {
        prev = *pp;
        pp = &(*pp)->ring_next;
    }
    *pp = t->ring_next;
    if (ob->ring_tail == t) ob->ring_tail = prev;
    t->in_ring = 0;
}

static void fifo_push(lb_ob_tenant *t, lb_ob_call *c)
{
    c->next = NULL;
    if (t->tail)
        t->tail->next = c;
    else
        t->head = c;
    t->tail = c;
    t->count++;
    t->ob->stats.queued++;
}

static void fifo_push_front(lb_ob_tenant *t, lb_ob_call *c)
{
    c->next = t->head;
    t->head = c;
    if (t->tail == NULL) t->tail = c;
    t->count++;
    t->ob->stats.queued++;
}

static lb_ob_call *fifo_pop(lb_ob_tenant *t)
{
    lb_ob_call *c = t->head;
    if (c == NULL) return NULL;
    t->head = c->next;
    if (t->head == NULL) t->tail = NULL;
    t->count--;
    t->ob->stats.queued--;
    c->next = NULL;
    return c;
}

static void sleep_until(lb_outbound *ob, lb_ob_tenant *t, int64_t wake_us)
{
    ring_remove(ob, t);
    lb_heap_remove(&ob->sleepers, &t->sleep);
    t->sleep.key = wake_us;
    lb_heap_push(&ob->sleepers, &t->sleep);
}

/* ---- timer ------------------------------------------------------------- */

static void timer_cb(uv_timer_t *timer)
{
    lb_outbound *ob = timer->data;
    int64_t now = now_us();
    lb_heap_node *n;
    while ((n = lb_heap_min(&ob->sleepers)) != NULL && n->key <= now + 500) {
        lb_heap_pop(&ob->sleepers);
        ring_push(ob, LB_CONTAINER_OF(n, lb_ob_tenant, sleep));
    }
    pump(ob);
}

static void arm_timer(lb_outbound *ob)
{
    lb_heap_node *n = lb_heap_min(&ob->sleepers);
    if (n == NULL || ob->closing) {
        uv_timer_stop(&ob->timer);
        return;
    }
    int64_t d = n->key - now_us();
    uint64_t ms = d <= 0 ? 0 : (uint64_t)((d + 999) / 1000);
    uv_timer_start(&ob->timer, timer_cb, ms, 0);
}

/* ---- completion ---------------------------------------------------------- */

/* Series pointers live until lb_metrics_reset, which runs after the loop. */
static lb_metric *code_counter(int status)
{
    static lb_metric *cache[600];
    static lb_metric *err;
    if (status <= 0 || status >= 600) {
        if (err == NULL)
            err = lb_metrics_counter("leverbridge_lever_requests_total",
                                     "Calls to Lever by response status.", "code=\"error\"");
        return err;
    }
    if (cache[status] == NULL) {
        char labels[32];
        snprintf(labels, sizeof(labels), "code=\"%d\"", status);
        cache[status] = lb_metrics_counter("leverbridge_lever_requests_total",
                                           "Calls to Lever by response status.", labels);
    }
    return cache[status];
}

static lb_metric *request_seconds(void)
{
    return lb_metrics_histogram("leverbridge_lever_request_seconds", "Duration of calls to Lever.",
                                "", lb_metrics_latency_bounds, lb_metrics_latency_nbounds);
}

static void record(lb_outbound *ob, const lb_http_response *res)
{
    lb_metric_add(code_counter(res->status), 1);
    lb_metric_observe(ob->request_hist, res->seconds);
}

static void tenant_free(lb_outbound *ob, lb_ob_tenant *t)
{
    ring_remove(ob, t);
    lb_heap_remove(&ob->sleepers, &t->sleep);
    lb_free(t->id);
    lb_free(t);
}

int64_t lb_outbound_refill_ms(double rate, int burst)
{
    if (rate <= 0) {
        rate = 10;
        burst = 20;
    }
    double ms = (burst > 1 ? burst : 1) * 1000.0 / rate;
    if (ms < LB_OUTBOUND_REFILL_MIN_MS) return LB_OUTBOUND_REFILL_MIN_MS;
    if (ms > LB_OUTBOUND_REFILL_MAX_MS) return LB_OUTBOUND_REFILL_MAX_MS;
    return (int64_t)ceil(ms);
}

int64_t lb_outbound_hold_ms(const char *retry_after, int64_t now_ms, unsigned episodes,
                            int64_t ceiling_ms)
{
    int64_t ms;
    if (retry_after != NULL && lb_http_retry_after_ms(retry_after, now_ms, &ms) == 0) {
        if (ms < LB_OUTBOUND_HOLD_MIN_MS) ms = LB_OUTBOUND_HOLD_MIN_MS;
        if (ms > LB_OUTBOUND_HOLD_MAX_MS) ms = LB_OUTBOUND_HOLD_MAX_MS;
        return ms;
    }
    unsigned attempt = episodes > 0 ? episodes - 1 : 0;
    ms = lb_backoff_delay(LB_OUTBOUND_HOLD_MIN_MS, ceiling_ms, attempt);
    /* Never retry a throttled call at once: at least a fraction of the base. */
    return ms < LB_OUTBOUND_HOLD_MIN_MS / 4 ? LB_OUTBOUND_HOLD_MIN_MS / 4 : ms;
}

static void http_done(const lb_http_response *res, void *data)
{
    lb_ob_call *call = data;
    lb_ob_tenant *t = call->tenant;
    lb_outbound *ob = t->ob;
    call->http = NULL;
    t->inflight--;
    record(ob, res);
    if (res->status == 429 && !t->removed && !ob->closing) {
        call->requeues++;
        ob->stats.throttled++;
        int64_t now = now_us();
        /* A 429 for a call sent before the current hold began belongs to the
         * episode that hold answers: requeue it behind the same hold. */
        if (call->sent_us >= t->hold_began_us) {
            t->episodes_429++;
            t->hold_began_us = now;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t hold = lb_outbound_hold_ms(res->retry_after,
                                               (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                                               t->episodes_429, t->refill_ms);
            lb_debug("outbound", "429 for tenant %s: holding %lld ms", t->id, (long long)hold);
            if (!t->unlimited) lb_rl_hold(&t->rl, (double)now / 1000.0, (double)hold);
            if (now + hold * 1000 > t->hold_until_us) t->hold_until_us = now + hold * 1000;
        }
        fifo_push_front(t, call);
        sleep_until(ob, t, t->hold_until_us);
    } else {
        if (res->status != 429) t->episodes_429 = 0;
        call->cb(call, res); /* a 429 arrives here only when removed or closing */
    }
    if (t->removed && t->inflight == 0 && t->count == 0) {
        tenant_free(ob, t);
        return;
    }
    pump(ob);
}

/* ---- dispatch ---------------------------------------------------------- */

static void complete_now(lb_ob_call *call, int error, const char *text)
{
    lb_http_response res = {.status = 0, .error = error, .error_text = text, .body = ""};
    call->cb(call, &res);
}

static void pump(lb_outbound *ob)
{
    if (ob->pumping) {
        ob->again = 1;
        return;
    }
    ob->pumping = 1;
    do {
        ob->again = 0;
        while (ob->ring_head != NULL && lb_http_client_has_room(ob->client)) {
            lb_ob_tenant *t = ring_pop(ob);
            int64_t now = now_us();
            if (now < t->hold_until_us) {
                sleep_until(ob, t, t->hold_until_us);
                continue;
            }
            if (!t->unlimited) {
                double w = lb_rl_acquire(&t->rl, (double)now / 1000.0);
                if (w > 0) {
                    sleep_until(ob, t, now + (int64_t)ceil(w * 1000.0));
                    continue;
                }
            }
            lb_ob_call *call = fifo_pop(t);
            ring_push(ob, t);
            uint64_t now_ns = uv_hrtime();
            double delay = (double)(now_ns - call->queued_ns) / 1e9;
            ob->stats.delay_sum_s += delay;
            lb_metric_observe(ob->delay_hist, delay);
            call->sent_us = now;
            int rc = lb_http_client_start(ob->client, &call->req, http_done, call, &call->http);
            if (rc == 0) {
                t->inflight++;
                ob->stats.dispatched++;
            } else if (rc == LB_ETOOBIG) {
                fifo_push_front(t, call);
                ring_push(ob, t);
                break;
            } else {
                lb_warn("outbound", "tenant=%s: cannot start a call: %s", t->id, lb_strerror(rc));
                complete_now(call, rc, "the call could not be started");
            }
        }
    } while (ob->again);
    arm_timer(ob);
    ob->pumping = 0;
}

/* ---- public ------------------------------------------------------------ */

int lb_outbound_new(uv_loop_t *loop, lb_http_client *client, lb_outbound **out)
{
    lb_outbound *ob = LB_NEW(lb_outbound);
    ob->loop = loop;
    ob->client = client;
    lb_map_init(&ob->tenants);
    lb_heap_init(&ob->sleepers);
    uv_timer_init(loop, &ob->timer);
    ob->timer.data = ob;
    lb_metrics_declare_counter("leverbridge_lever_requests_total",
                               "Calls to Lever by response status.");
    ob->request_hist = request_seconds();
    static const double delay_bounds[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05,
                                          0.1,    0.5,    1,     5,     30,   300};
    ob->delay_hist = lb_metrics_histogram(
        "leverbridge_lever_queue_seconds",
        "Time a Lever call waited for its tenant's rate limit and a free slot.", "", delay_bounds,
        LB_COUNTOF(delay_bounds));
    *out = ob;
    return 0;
}

/* One token of the burst is held back: the burst's calls each open a
 * connection while the next one reuses a warm one, so it can reach Lever a
 * little less than one interval after the burst, before Lever's bucket has a
 * whole token again. Measured against the simulator: a 429 on the first call
 * after every burst without the margin, none with it. */
static int margin(int burst)
{
    return burst > 2 ? burst - 1 : burst;
}

lb_ob_tenant *lb_outbound_tenant_find(lb_outbound *ob, const char *tenant_id)
{
    return lb_map_get(&ob->tenants, tenant_id);
}

lb_ob_tenant *lb_outbound_tenant(lb_outbound *ob, const char *tenant_id, double rate, int burst)
{
    lb_ob_tenant *t = lb_map_get(&ob->tenants, tenant_id);
    if (t == NULL) {
        t = LB_NEW(lb_ob_tenant);
        t->id = lb_strdup(tenant_id);
        t->ob = ob;
        if (rate > 0) lb_rl_init(&t->rl, rate, margin(burst));
        lb_map_put(&ob->tenants, t->id, t);
    } else if (rate > 0) {
        if (t->unlimited)
            lb_rl_init(&t->rl, rate, margin(burst));
        else
            lb_rl_set(&t->rl, rate, margin(burst));
    }
    t->unlimited = rate <= 0;
    t->refill_ms = lb_outbound_refill_ms(rate, burst);
    return t;
}

void lb_outbound_tenant_pause(lb_ob_tenant *t, int paused)
{
    lb_outbound *ob = t->ob;
    t->paused = paused ? 1 : 0;
    if (t->paused) {
        ring_remove(ob, t);
        lb_heap_remove(&ob->sleepers, &t->sleep);
    } else {
        ring_push(ob, t);
        pump(ob);
    }
}

size_t lb_outbound_tenant_queued(const lb_ob_tenant *t)
{
    return t->count;
}

static void cancel_queued(lb_ob_tenant *t)
{
    lb_ob_call *c;
    while ((c = fifo_pop(t)) != NULL)
        complete_now(c, LB_ECLOSED, "cancelled");
}

void lb_outbound_tenant_remove(lb_outbound *ob, const char *tenant_id)
{
    lb_ob_tenant *t = lb_map_del(&ob->tenants, tenant_id);
    if (t == NULL) return;
    t->removed = 1;
    ring_remove(ob, t);
    lb_heap_remove(&ob->sleepers, &t->sleep);
    cancel_queued(t);
    if (t->inflight == 0) tenant_free(ob, t);
}

int lb_outbound_submit(lb_ob_tenant *t, lb_ob_call *call)
{
    lb_outbound *ob = t->ob;
    if (ob->closing || t->removed) return LB_ECLOSED;
    if (t->count >= LB_OUTBOUND_QUEUE_MAX) return LB_ETOOBIG;
    call->tenant = t;
    call->http = NULL;
    call->requeues = 0;
    call->queued_ns = uv_hrtime();
    fifo_push(t, call);
    ring_push(ob, t);
    pump(ob);
    return 0;
}

int lb_outbound_cancel(lb_ob_call *call)
{
    lb_ob_tenant *t = call->tenant;
    if (call->http != NULL) {
        lb_http_call_cancel(call->http);
        call->http = NULL;
        t->inflight--;
        if (t->removed && t->inflight == 0 && t->count == 0)
            tenant_free(t->ob, t);
        else
            pump(t->ob);
        return 1;
    }
    lb_ob_call **pp = &t->head, *prev = NULL;
    while (*pp != NULL && *pp != call) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL) return 0;
    *pp = call->next;
    if (t->tail == call) t->tail = prev;
    t->count--;
    t->ob->stats.queued--;
    if (t->count == 0) ring_remove(t->ob, t);
    return 1;
}

void lb_outbound_stats_get(const lb_outbound *ob, lb_outbound_stats *out)
{
    *out = ob->stats;
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_outbound *ob = h->data;
    void (*cb)(void *) = ob->close_cb;
    void *data = ob->close_data;
    lb_map_free(&ob->tenants);
    lb_heap_free(&ob->sleepers);
    lb_free(ob);
    if (cb != NULL) cb(data);
}

void lb_outbound_close(lb_outbound *ob, void (*cb)(void *data), void *data)
{
    ob->closing = 1;
    ob->close_cb = cb;
    ob->close_data = data;
    size_t pos = 0;
    lb_ob_tenant *t;
    while ((t = lb_map_next(&ob->tenants, &pos)) != NULL) {
        cancel_queued(t);
        tenant_free(ob, t); /* the map itself is freed after the timer closes */
    }
    uv_close((uv_handle_t *)&ob->timer, timer_closed_cb);
}
