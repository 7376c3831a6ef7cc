/* lever-sim: webhook deliveries on command (POST /_sim/deliver), sent with
 * the project's curl-multi client on the loop, so the simulator keeps
 * serving while they run. A delivery is a set of sends (targets x count),
 * run `parallel` at a time, each retried up to `retries` times on a non-2xx
 * or a transport error. The control request is answered when all are done
 * (or at once with {"async":true}; results then via GET /_sim/deliveries). */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENDS 100000
#define MAX_FINISHED 1000
#define RESPONSE_KEEP 512

typedef enum { S_PENDING, S_RUNNING, S_WAIT_RETRY, S_DONE } send_state;

typedef struct {
    lv_delivery *d;
    char *webhook_id, *url, *event, *id, *token, *signature;
    int64_t triggered;
    char *body;
    size_t body_len;
    send_state st;
    int attempts, status;
    char *error, *response;
    double ms;
    uint64_t retry_at; /* mono ms */
    lb_http_call *call;
} lv_send;

/* Owned by lv_sim.deliveries from POST /_sim/deliver until all its sends
 * are done; freed in the close callback of its timer. */
struct lv_delivery {
    lv_sim *s;
    char id[32];
    lb_http_req *req; /* the control request awaiting the results, or NULL */
    SIM_VEC(lv_send) sends;
    size_t next, running, done, waiting;
    int parallel, retries;
    int64_t retry_delay_ms;
    long timeout_ms;
    uv_timer_t timer;
    lv_delivery *prev, *nextd;
};

static void pump(lv_delivery *d);

static void ctl_bad(lb_http_req *req, const char *msg)
{
    sim_control_error(req, 400, "bad_request", msg);
}

/* ---- results ---------------------------------------------------------------------- */

static char *render(const lv_delivery *d, size_t *len)
{
    size_t delivered = 0, failed = 0;
    for (size_t i = 0; i < d->sends.n; i++) {
        const lv_send *x = &d->sends.v[i];
        if (x->st != S_DONE) continue;
        if (x->status >= 200 && x->status < 300)
            delivered++;
        else
            failed++;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "delivery_id", d->id);
    lb_json_kv_bool(g, "done", d->done == d->sends.n);
    lb_json_kv_int(g, "delivered", (int64_t)delivered);
    lb_json_kv_int(g, "failed", (int64_t)failed);
    lb_json_key(g, "results");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < d->sends.n; i++) {
        const lv_send *x = &d->sends.v[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "webhook_id", x->webhook_id);
        lb_json_kv_str(g, "url", x->url);
        lb_json_kv_str(g, "event", x->event);
        lb_json_kv_str(g, "state",
                       x->st == S_DONE      ? "done"
                       : x->st == S_PENDING ? "pending"
                                            : "running");
        if (x->status)
            lb_json_kv_int(g, "status", x->status);
        else
            lb_json_kv_null(g, "status");
        lb_json_kv_str(g, "error", x->error);
        lb_json_kv_int(g, "attempts", x->attempts);
        lb_json_kv_double(g, "ms", x->ms);
        lb_json_kv_str(g, "response", x->response);
        lb_json_kv_str(g, "id", x->id);
        lb_json_kv_str(g, "token", x->token);
        lb_json_kv_int(g, "triggeredAt", x->triggered);
        lb_json_kv_str(g, "signature", x->signature);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    yajl_gen_get_buf(g, &buf, len);
    char *out = lb_strndup((const char *)buf, *len);
    yajl_gen_free(g);
    return out;
}

static void send_free(lv_send *x)
{
    lb_free(x->webhook_id);
    lb_free(x->url);
    lb_free(x->event);
    lb_free(x->id);
    lb_free(x->token);
    lb_free(x->signature);
    lb_free(x->body);
    lb_free(x->error);
    lb_free(x->response);
}

static void delivery_close_cb(uv_handle_t *h)
{
    lv_delivery *d = h->data;
    for (size_t i = 0; i < d->sends.n; i++)
        send_free(&d->sends.v[i]);
    SIM_VEC_FREE(d->sends);
    lb_free(d);
}

static void delivery_unlink(lv_delivery *d)
{
    lv_sim *s = d->s;
    if (d->prev)
        d->prev->nextd = d->nextd;
    else
        s->deliveries = d->nextd;
    if (d->nextd) d->nextd->prev = d->prev;
}

static void finish(lv_delivery *d)
{
    lv_sim *s = d->s;
    size_t len;
    char *out = render(d, &len);
    if (d->req != NULL) {
        lb_http_req *req = d->req;
        d->req = NULL;
        sim_respond_copy(req, 200, "application/json", NULL, out, len);
    }
    if (s->finished.n == MAX_FINISHED) {
        lb_free(s->finished.v[0]);
        memmove(&s->finished.v[0], &s->finished.v[1], (s->finished.n - 1) * sizeof(char *));
        s->finished.n--;
    }
    SIM_PUSH(s->finished, out);
    lb_debug("lever-sim", "delivery %s done", d->id);
    delivery_unlink(d);
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, delivery_close_cb);
}

/* ---- sending ------------------------------------------------------------------------ */

/* One attempt is over: retry later or done. Never calls pump. */
static void attempt_over(lv_delivery *d, lv_send *x)
{
    int ok = x->status >= 200 && x->status < 300;
    if (!ok && x->attempts <= d->retries) {
        int shift = x->attempts - 1 < 16 ? x->attempts - 1 : 16;
        x->st = S_WAIT_RETRY;
        x->retry_at = sim_mono_ms() + (uint64_t)d->retry_delay_ms * ((uint64_t)1 << shift);
        d->waiting++;
    } else {
        x->st = S_DONE;
        d->done++;
        if (ok) d->s->deliveries_sent++;
    }
}

static void send_done_cb(const lb_http_response *res, void *data)
{
    lv_send *x = data;
    lv_delivery *d = x->d;
    x->call = NULL;
    d->running--;
    x->status = res->status;
    lb_free(x->error);
    lb_free(x->response);
    x->error = res->error ? lb_strdup(res->error_text ? res->error_text : "transport error") : NULL;
    x->response =
        lb_strndup(res->body, res->body_len < RESPONSE_KEEP ? res->body_len : RESPONSE_KEEP);
    x->ms = res->seconds * 1000;
    lb_debug("lever-sim", "delivery %s to %s: %d", d->id, x->url, x->status);
    attempt_over(d, x);
    pump(d);
}

static void send_start(lv_delivery *d, lv_send *x)
{
    static const char *const headers[] = {"Content-Type: application/json",
                                          "User-Agent: Lever-Webhooks", NULL};
    lb_http_request r = {.method = "POST",
                         .url = x->url,
                         .headers = headers,
                         .body = x->body,
                         .body_len = x->body_len,
                         .timeout_ms = d->timeout_ms};
    x->attempts++;
    x->st = S_RUNNING;
    int rc = lb_http_client_start(d->s->app.client, &r, send_done_cb, x, &x->call);
    if (rc != 0) {
        x->call = NULL;
        x->status = 0;
        lb_free(x->error);
        x->error = lb_strdup(rc == LB_ETOOBIG ? "too many deliveries in flight" : "client error");
        attempt_over(d, x);
        return;
    }
    d->running++;
}

static void timer_cb(uv_timer_t *t)
{
    pump(t->data);
}

static void pump(lv_delivery *d)
{
    if (d->s->app.stopping) return;
    uint64_t now = sim_mono_ms();
    if (d->waiting > 0) {
        for (size_t i = 0; i < d->sends.n && d->running < (size_t)d->parallel; i++) {
            lv_send *x = &d->sends.v[i];
            if (x->st == S_WAIT_RETRY && x->retry_at <= now) {
                d->waiting--;
                send_start(d, x);
            }
        }
    }
    while (d->running < (size_t)d->parallel && d->next < d->sends.n)
        send_start(d, &d->sends.v[d->next++]);
    if (d->done == d->sends.n) {
        finish(d);
        return;
    }
    if (d->waiting > 0) {
        uint64_t first = UINT64_MAX;
        for (size_t i = 0; i < d->sends.n; i++)
            if (d->sends.v[i].st == S_WAIT_RETRY && d->sends.v[i].retry_at < first)
                first = d->sends.v[i].retry_at;
        uv_timer_start(&d->timer, timer_cb, first > now ? first - now : 0, 0);
    }
}

/* ---- building ---------------------------------------------------------------------- */

typedef struct {
    const char *webhook_id, *url, *event, *key;
} target;

typedef struct {
    yajl_val data;
    const char *id, *token, *signature, *raw;
    int64_t triggered;
    int has_triggered, tamper;
} payload_opts;

static void build_send(lv_send *x, const target *t, const payload_opts *o)
{
    char buf[49];
    x->webhook_id = t->webhook_id ? lb_strdup(t->webhook_id) : NULL;
    x->url = lb_strdup(t->url);
    x->event = lb_strdup(t->event);
    if (o->id != NULL) {
        x->id = lb_strdup(o->id);
    } else {
        char uuid[37];
        sim_uuid(uuid);
        x->id = lb_strdup(uuid);
    }
    if (o->token != NULL) {
        x->token = lb_strdup(o->token);
    } else {
        sim_random_chars(buf, 48);
        x->token = lb_strdup(buf);
    }
    x->triggered = o->has_triggered ? o->triggered : lb_time_now_ms();
    if (o->signature != NULL) {
        x->signature = lb_strdup(o->signature);
    } else {
        size_t msz = strlen(x->token) + 24;
        char *msg = lb_malloc(msz);
        int n = snprintf(msg, msz, "%s%lld", x->token, (long long)x->triggered);
        uint8_t mac[32];
        lb_hmac_sha256(t->key, strlen(t->key), msg, (size_t)n, mac);
        lb_free(msg);
        char hex[65];
        lb_hex_encode(mac, sizeof(mac), hex);
        if (o->tamper) hex[0] = hex[0] == '0' ? '1' : '0';
        x->signature = lb_strdup(hex);
    }
    if (o->raw != NULL) {
        x->body = lb_strdup(o->raw);
        x->body_len = strlen(o->raw);
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", x->id);
    lb_json_kv_str(g, "event", x->event);
    lb_json_kv_int(g, "triggeredAt", x->triggered);
    lb_json_kv_str(g, "token", x->token);
    lb_json_kv_str(g, "signature", x->signature);
    lb_json_key(g, "data");
    if (o->data != NULL) {
        sim_json_emit(g, o->data);
    } else {
        yajl_gen_map_open(g);
        yajl_gen_map_close(g);
    }
    yajl_gen_map_close(g);
    const unsigned char *b;
    yajl_gen_get_buf(g, &b, &x->body_len);
    x->body = lb_strndup((const char *)b, x->body_len);
    yajl_gen_free(g);
}

static void copy_send(lv_send *dst, const lv_send *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->webhook_id = src->webhook_id ? lb_strdup(src->webhook_id) : NULL;
    dst->url = lb_strdup(src->url);
    dst->event = lb_strdup(src->event);
    dst->id = lb_strdup(src->id);
    dst->token = lb_strdup(src->token);
    dst->signature = lb_strdup(src->signature);
    dst->triggered = src->triggered;
    dst->body = lb_memdup(src->body, src->body_len + 1);
    dst->body_len = src->body_len;
}

static void r_deliver(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    if (!YAJL_IS_OBJECT(b)) {
        yajl_tree_free(b);
        ctl_bad(req, "The body must be an object");
        return;
    }
    lv_account *a = lv_control_account(s, req, b, 0);
    const char *hook_id = sim_json_str(b, "webhook_id");
    const char *url = sim_json_str(b, "url");
    const char *event = sim_json_str(b, "event");
    const char *key = sim_json_str(b, "signature_token");
    SIM_VEC(target) targets = {0};
    int status = 0;
    const char *msg = NULL;
    int64_t count = 1, n;
    int parallel = 1, retries = 0;
    int64_t retry_delay = 200, timeout = 10000;
    if (lb_json_get_int(b, "count", &n) == 0) count = n;
    if (lb_json_get_int(b, "parallel", &n) == 0) parallel = n >= 1 && n <= 64 ? (int)n : 0;
    if (lb_json_get_int(b, "retries", &n) == 0) retries = n >= 0 && n <= 10 ? (int)n : -1;
    if (lb_json_get_int(b, "retry_delay_ms", &n) == 0) retry_delay = n;
    if (lb_json_get_int(b, "timeout_ms", &n) == 0) timeout = n;
    yajl_val dv = lb_json_get(b, "data");

    if (a == NULL) {
        status = 404, msg = "No such account.";
    } else if (!a->deliveries_enabled) {
        status = 409, msg = "Webhook deliveries are switched off in this account (the "
                            "\"Candidate state change\" toggle).";
    } else if (count < 1 || count > MAX_SENDS || parallel == 0 || retries < 0 || retry_delay < 0 ||
               timeout < 1) {
        status = 400, msg = "count 1..100000, parallel 1..64, retries 0..10, retry_delay_ms >= "
                            "0, timeout_ms >= 1";
    } else if (dv != NULL && !YAJL_IS_OBJECT(dv)) {
        status = 400, msg = "data must be an object";
    } else if (hook_id != NULL) {
        lv_webhook *w = lv_hook_find(a, hook_id, NULL);
        if (w == NULL) {
            status = 404, msg = "No such webhook.";
        } else {
            target t = {w->id, w->url, event ? event : w->event, key ? key : w->token};
            SIM_PUSH(targets, t);
        }
    } else if (url != NULL) {
        for (size_t i = 0; i < a->hooks.n; i++) {
            lv_webhook *w = a->hooks.v[i];
            if (strcmp(w->url, url) == 0 && (event == NULL || strcmp(event, w->event) == 0)) {
                target t = {w->id, w->url, w->event, key ? key : w->token};
                SIM_PUSH(targets, t);
            }
        }
        if (targets.n == 0 && key != NULL) {
            target t = {NULL, url, event ? event : "candidateStageChange", key};
            SIM_PUSH(targets, t);
        }
        if (targets.n == 0)
            status = 404, msg = "No webhook with this url (give signature_token to send anyway).";
    } else if (event == NULL) {
        status = 400, msg = "Give webhook_id, url or event.";
    } else {
        for (size_t i = 0; i < a->hooks.n; i++) {
            lv_webhook *w = a->hooks.v[i];
            if (strcmp(w->event, event) == 0) {
                target t = {w->id, w->url, w->event, key ? key : w->token};
                SIM_PUSH(targets, t);
            }
        }
        if (targets.n == 0) status = 404, msg = "No webhook subscribed to this event.";
    }
    for (size_t i = 0; status == 0 && i < targets.n; i++)
        if (!sim_url_is_loopback(targets.v[i].url))
            status = 400, msg = "Refusing to deliver to a URL that is not on a loopback address.";
    if (status == 0 && (uint64_t)count * targets.n > MAX_SENDS)
        status = 400, msg = "Too many sends (targets x count > 100000).";
    if (status != 0) {
        SIM_VEC_FREE(targets);
        yajl_tree_free(b);
        sim_control_error(req, status, status == 404 ? "not_found" : "bad_request", msg);
        return;
    }

    payload_opts po = {.data = dv,
                       .id = sim_json_str(b, "id"),
                       .token = sim_json_str(b, "token"),
                       .signature = sim_json_str(b, "signature"),
                       .raw = sim_json_str(b, "raw_body"),
                       .tamper = sim_json_bool(b, "tamper", 0)};
    po.has_triggered = lb_json_get_int(b, "triggeredAt", &po.triggered) == 0;
    int same = sim_json_bool(b, "same", 0);
    int async = sim_json_bool(b, "async", 0);

    lv_delivery *d = LB_NEW(lv_delivery);
    d->s = s;
    snprintf(d->id, sizeof(d->id), "d%llu", (unsigned long long)++s->delivery_seq);
    d->parallel = parallel;
    d->retries = retries;
    d->retry_delay_ms = retry_delay;
    d->timeout_ms = (long)timeout;
    d->sends.cap = targets.n * (size_t)count;
    d->sends.v = lb_calloc(d->sends.cap, sizeof(lv_send));
    for (size_t t = 0; t < targets.n; t++) {
        for (int64_t c = 0; c < count; c++) {
            lv_send *x = &d->sends.v[d->sends.n++];
            if (same && c > 0)
                copy_send(x, x - 1);
            else
                build_send(x, &targets.v[t], &po);
            x->d = d;
        }
    }
    SIM_VEC_FREE(targets);
    yajl_tree_free(b);
    uv_timer_init(&s->app.loop, &d->timer);
    d->timer.data = d;
    d->nextd = s->deliveries;
    if (s->deliveries) s->deliveries->prev = d;
    s->deliveries = d;
    if (async) {
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "delivery_id", d->id);
        lb_json_kv_int(g, "sends", (int64_t)d->sends.n);
        yajl_gen_map_close(g);
        sim_respond_json(req, 202, g);
    } else {
        d->req = req;
    }
    pump(d);
}

/* ---- GET /_sim/deliveries ----------------------------------------------------------- */

static void r_deliveries(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    char id[64];
    int one = sim_query_get(req, "id", id, sizeof(id));
    char needle[96];
    snprintf(needle, sizeof(needle), "{\"delivery_id\":\"%s\",", id);
    lb_strbuf b;
    lb_strbuf_init(&b, (size_t)1 << 30);
    int first = 1;
    if (!one) lb_strbuf_cat(&b, "{\"data\":[");
    for (size_t i = 0; i < s->finished.n; i++) {
        const char *r = s->finished.v[i];
        if (one && strncmp(r, needle, strlen(needle)) != 0) continue;
        if (!first) lb_strbuf_cat(&b, ",");
        lb_strbuf_cat(&b, r);
        first = 0;
    }
    for (lv_delivery *d = s->deliveries; d != NULL; d = d->nextd) {
        if (one && strcmp(d->id, id) != 0) continue;
        size_t len;
        char *r = render(d, &len);
        if (!first) lb_strbuf_cat(&b, ",");
        lb_strbuf_add(&b, r, len);
        lb_free(r);
        first = 0;
    }
    if (one && first) {
        lb_strbuf_free(&b);
        sim_control_error(req, 404, "not_found", "No such delivery.");
        return;
    }
    if (!one) lb_strbuf_cat(&b, "]}");
    size_t len;
    char *body = lb_strbuf_steal(&b, &len);
    sim_respond(req, 200, "application/json", NULL, body, len, lb_free, body);
}

void lv_deliver_shutdown(lv_sim *s)
{
    while (s->deliveries != NULL) {
        lv_delivery *d = s->deliveries;
        for (size_t i = 0; i < d->sends.n; i++) {
            if (d->sends.v[i].call != NULL) {
                lb_http_call_cancel(d->sends.v[i].call);
                d->sends.v[i].call = NULL;
            }
        }
        if (d->req != NULL) {
            lb_http_req *req = d->req;
            d->req = NULL;
            sim_control_error(req, 503, "shutting_down", "The simulator is stopping.");
        }
        delivery_unlink(d);
        uv_timer_stop(&d->timer);
        uv_close((uv_handle_t *)&d->timer, delivery_close_cb);
    }
}

void lv_deliver_register(lv_sim *s)
{
    lb_router_add(s->app.router, "POST", "/_sim/deliver", r_deliver, s);
    lb_router_add(s->app.router, "GET", "/_sim/deliveries", r_deliveries, s);
}
