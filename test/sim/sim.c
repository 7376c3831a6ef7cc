/* Shared skeleton of the simulators: see sim.h. */
#include "sim.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "http/response.h"
#include "json/json.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define LOG_BODY_MAX 4096
#define MAX_FAULTS 256

/* ---- containers ------------------------------------------------------------ */

void sim_strv_free(sim_strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        lb_free(s->v[i]);
    SIM_VEC_FREE(*s);
}

int sim_strv_index(const sim_strv *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) return (int)i;
    return -1;
}

void sim_strv_add_unique(sim_strv *s, const char *x)
{
    if (sim_strv_index(s, x) < 0) SIM_PUSH(*s, lb_strdup(x));
}

void sim_window_add(sim_window *w, uint64_t now_ms)
{
    while (w->n > 0 && w->t[w->head] + 1000 <= now_ms) {
        w->head = (w->head + 1) % w->cap;
        w->n--;
    }
    if (w->n == w->cap) {
        if (w->cap < SIM_WINDOW_MAX) {
            size_t ncap = w->cap ? w->cap * 2 : 64;
            uint64_t *nt = lb_malloc(ncap * sizeof(*nt));
            for (size_t i = 0; i < w->n; i++)
                nt[i] = w->t[(w->head + i) % w->cap];
            lb_free(w->t);
            w->t = nt;
            w->cap = ncap;
            w->head = 0;
        } else { /* saturated: forget the oldest */
            w->head = (w->head + 1) % w->cap;
            w->n--;
        }
    }
    w->t[(w->head + w->n) % w->cap] = now_ms;
    w->n++;
    if (w->n > w->max) w->max = w->n;
}

void sim_window_free(sim_window *w)
{
    lb_free(w->t);
    memset(w, 0, sizeof(*w));
}

/* ---- small helpers ----------------------------------------------------------- */

uint64_t sim_mono_ms(void)
{
    return uv_hrtime() / 1000000u;
}

void sim_uuid(char out[37])
{
    uint8_t b[16];
    lb_random_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char hex[33];
    lb_hex_encode(b, sizeof(b), hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

void sim_random_chars(char *out, size_t n)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[randombytes_uniform((uint32_t)(sizeof(alphabet) - 1))];
    out[n] = '\0';
}

int sim_parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0') return LB_EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535) return LB_EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    *host = lb_strndup(h, hl);
    *port = (int)p;
    return 0;
}

int sim_url_is_loopback(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int ok = 0;
    if (u == NULL) return 0;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) goto out;
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0) {
        ok = 1;
    } else {
        struct in_addr a;
        if (inet_pton(AF_INET, host, &a) == 1) ok = (ntohl(a.s_addr) >> 24) == 127;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/* ---- forms and queries ------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void decode(const char *p, const char *end, char *out, size_t size)
{
    size_t o = 0;
    while (p < end) {
        char c = *p++;
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && end - p >= 2 && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
            c = (char)(hexval(p[0]) * 16 + hexval(p[1]));
            p += 2;
        }
        if (o + 1 < size) out[o++] = c;
    }
    if (size > 0) out[o] = '\0';
}

int sim_form_next(const char **cur, const char *end, char *name, size_t nsz, char *val, size_t vsz)
{
    const char *p = *cur;
    while (p < end && *p == '&')
        p++;
    if (p >= end) {
        *cur = p;
        return 0;
    }
    const char *amp = memchr(p, '&', (size_t)(end - p));
    if (amp == NULL) amp = end;
    const char *eq = memchr(p, '=', (size_t)(amp - p));
    decode(p, eq ? eq : amp, name, nsz);
    decode(eq ? eq + 1 : amp, amp, val, vsz);
    *cur = amp;
    return 1;
}

int sim_form_get(const char *s, size_t len, const char *name, char *val, size_t vsz)
{
    const char *cur = s, *end = s + len;
    char n[128];
    while (sim_form_next(&cur, end, n, sizeof(n), val, vsz))
        if (strcmp(n, name) == 0) return 1;
    if (vsz > 0) val[0] = '\0';
    return 0;
}

int sim_query_get(const lb_http_req *req, const char *name, char *val, size_t vsz)
{
    return sim_form_get(req->query, strlen(req->query), name, val, vsz);
}

int sim_query_flag(const lb_http_req *req, const char *name)
{
    char v[16];
    if (!sim_query_get(req, name, v, sizeof(v))) return 0;
    return strcmp(v, "0") != 0 && strcasecmp(v, "false") != 0 && strcasecmp(v, "no") != 0;
}

void sim_url_encode(lb_strbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            lb_strbuf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            lb_strbuf_add(b, e, 3);
        }
    }
}

/* ---- JSON --------------------------------------------------------------------- */

void sim_json_emit(yajl_gen g, yajl_val v)
{
    lb_json_value(g, v);
}

yajl_val sim_json_clone(yajl_val v)
{
    if (v == NULL) return NULL;
    yajl_gen g = lb_json_gen_new();
    sim_json_emit(g, v);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    char err[128];
    yajl_val out = lb_json_parse((const char *)buf, len, err, sizeof(err));
    yajl_gen_free(g);
    return out;
}

const char *sim_json_str(yajl_val obj, const char *key)
{
    return lb_json_get_str(obj, key);
}

int sim_json_num(yajl_val obj, const char *key, double *out)
{
    yajl_val v = lb_json_get(obj, key);
    if (v == NULL || v->type != yajl_t_number) return 0;
    *out = strtod(v->u.number.r, NULL);
    return 1;
}

int sim_json_bool(yajl_val obj, const char *key, int def)
{
    int b;
    return lb_json_get_bool(obj, key, &b) == 0 ? b : def;
}

yajl_val sim_body_json(lb_http_req *req, void (*bad)(lb_http_req *req, const char *msg))
{
    char err[160], msg[200];
    if (req->body_len == 0) {
        bad(req, "The request body must be a JSON document.");
        return NULL;
    }
    yajl_val v = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    if (v == NULL) {
        snprintf(msg, sizeof(msg), "Invalid JSON: %s", err);
        bad(req, msg);
    }
    return v;
}

/* ---- the request log ----------------------------------------------------------- */

static void logent_free(sim_logent *e)
{
    lb_free(e->path);
    lb_free(e->query);
    lb_free(e->auth);
    lb_free(e->cred);
    lb_free(e->principal);
    lb_free(e->note);
    lb_free(e->body);
    lb_free(e->user_agent);
    lb_free(e->extra);
    lb_free(e->webhook_id);
    memset(e, 0, sizeof(*e));
}

static char *dup_or_null(const char *s)
{
    return s != NULL && *s != '\0' ? lb_strdup(s) : NULL;
}

static void log_add(sim_app *app, lb_http_req *req, sim_rctx *rc, int status)
{
    if (app->log_cap == 0) return;
    sim_logent *e;
    if (app->log_n < app->log_cap) {
        e = &app->log[(app->log_head + app->log_n) % app->log_cap];
        app->log_n++;
    } else {
        e = &app->log[app->log_head];
        logent_free(e);
        app->log_head = (app->log_head + 1) % app->log_cap;
    }
    e->seq = ++app->log_seq;
    e->ts_ms = rc->ts_ms;
    e->ms = req->start_ns ? (double)(uv_hrtime() - req->start_ns) / 1e6 : 0;
    e->status = status;
    e->method = req->method_name;
    e->path = lb_strdup(req->path);
    e->query = dup_or_null(req->query);
    e->auth = dup_or_null(rc->auth);
    e->cred = dup_or_null(rc->cred);
    e->principal = dup_or_null(rc->principal);
    e->note = dup_or_null(rc->note);
    if (req->body_len > 0)
        e->body =
            lb_strndup(req->body, req->body_len > LOG_BODY_MAX ? LOG_BODY_MAX : req->body_len);
    size_t n;
    const char *ua = lb_http_req_header(req, "user-agent", &n);
    e->user_agent = ua ? lb_strndup(ua, n) : NULL;
    const char *idem = lb_http_req_header(req, "idempotency-key", &n);
    e->extra = idem ? lb_strndup(idem, n) : NULL;
    const char *wid = lb_http_req_header(req, "webhook-id", &n);
    e->webhook_id = wid ? lb_strndup(wid, n) : NULL;
}

static void rctx_free(sim_rctx *rc)
{
    lb_free(rc->cred);
    lb_free(rc->principal);
    lb_free(rc->note);
    lb_free(rc);
}

void sim_log_clear(sim_app *app)
{
    for (size_t i = 0; i < app->log_n; i++)
        logent_free(&app->log[(app->log_head + i) % app->log_cap]);
    app->log_head = 0;
    app->log_n = 0;
}

/* ---- answering ------------------------------------------------------------------ */

const char *sim_fault_headers(const sim_fault *f, char *buf, size_t size)
{
    lb_strbuf b;
    lb_strbuf_init_fixed(&b, buf, size);
    if (f->retry_after != NULL) lb_strbuf_printf(&b, "Retry-After: %s\r\n", f->retry_after);
    if (f->location != NULL) lb_strbuf_printf(&b, "Location: %s\r\n", f->location);
    return b.len > 0 && !b.failed ? buf : NULL;
}

void sim_respond(lb_http_req *req, int status, const char *content_type, const char *extra_headers,
                 const void *body, size_t len, void (*free_body)(void *), void *free_arg)
{
    sim_rctx *rc = req->ctx;
    req->ctx = NULL;
    if (rc != NULL) {
        sim_app *app = rc->app;
        lb_debug(app->hooks.name, "%s %s%s%s -> %d (%s)", req->method_name, req->path,
                 req->query[0] ? "?" : "", req->query, status, rc->principal ? rc->principal : "-");
        if (app->hooks.on_response != NULL) app->hooks.on_response(app, req, rc, status);
        if (!rc->control) log_add(app, req, rc, status);
        rctx_free(rc);
    }
    lb_http_respond(req, status, content_type, extra_headers, body, len, free_body, free_arg);
}

static void gen_free(void *g)
{
    yajl_gen_free(g);
}

void sim_respond_json_extra(lb_http_req *req, int status, yajl_gen g, const char *extra_headers)
{
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    sim_respond(req, status, "application/json", extra_headers, buf, len, gen_free, g);
}

void sim_respond_json(lb_http_req *req, int status, yajl_gen g)
{
    sim_respond_json_extra(req, status, g, NULL);
}

void sim_respond_copy(lb_http_req *req, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len)
{
    char *copy = len ? lb_memdup(body, len) : NULL;
    sim_respond(req, status, content_type, extra_headers, copy, len, copy ? lb_free : NULL, copy);
}

void sim_control_error(lb_http_req *req, int status, const char *code, const char *message)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "error", code);
    lb_json_kv_str(g, "message", message);
    yajl_gen_map_close(g);
    sim_respond_json(req, status, g);
}

static void control_bad(lb_http_req *req, const char *msg)
{
    sim_control_error(req, 400, "bad_request", msg);
}

/* ---- connection reset ----------------------------------------------------------- */

typedef struct {
    void *conn;
    uv_handle_t *found;
} walk_ctx;

static void walk_cb(uv_handle_t *h, void *arg)
{
    walk_ctx *w = arg;
    if (h->type == UV_TCP && h->data == w->conn && !uv_is_closing(h)) w->found = h;
}

void sim_reset_conn(sim_app *app, lb_http_req *req)
{
    walk_ctx w = {.conn = req->conn, .found = NULL};
    uv_walk(&app->loop, walk_cb, &w);
    uv_os_fd_t fd;
    if (w.found != NULL && uv_fileno(w.found, &fd) == 0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        shutdown(fd, SHUT_RDWR);
    } else {
        lb_warn("sim", "reset fault: connection handle not found, answering 502 instead");
    }
    sim_rctx *rc = req->ctx;
    if (rc != NULL && rc->note == NULL) rc->note = lb_strdup("reset");
    /* The write fails on the shut socket and the server closes it. */
    sim_respond_copy(req, 502, "text/plain", NULL, "reset", 5);
}

/* ---- faults -------------------------------------------------------------------- */

struct sim_delay {
    uv_timer_t timer;
    sim_app *app;
    lb_http_req *req;
    sim_fault snap; /* what to do when the delay is over */
    sim_delay *prev, *next;
};

static void fault_strings_free(sim_fault *f)
{
    lb_free(f->id);
    lb_free(f->path_prefix);
    lb_free(f->method);
    lb_free(f->retry_after);
    lb_free(f->location);
    lb_free(f->body);
    lb_free(f->content_type);
}

static void fault_finish(sim_app *app, lb_http_req *req, const sim_fault *f)
{
    sim_rctx *rc = req->ctx;
    if (rc != NULL && rc->note == NULL && (f->reset || f->status)) rc->note = lb_strdup("fault");
    if (f->reset)
        sim_reset_conn(app, req);
    else if (f->status != 0)
        app->hooks.fault_respond(req, f);
    else
        sim_dispatch(app, req);
}

static void delay_close_cb(uv_handle_t *h)
{
    sim_delay *d = h->data;
    fault_strings_free(&d->snap);
    lb_free(d);
}

static void delay_fire(sim_delay *d)
{
    sim_app *app = d->app;
    if (d->prev)
        d->prev->next = d->next;
    else
        app->delays = d->next;
    if (d->next) d->next->prev = d->prev;
    uv_timer_stop(&d->timer);
    fault_finish(app, d->req, &d->snap);
    uv_close((uv_handle_t *)&d->timer, delay_close_cb);
}

static void delay_cb(uv_timer_t *t)
{
    delay_fire(t->data);
}

static char *sdup(const char *s)
{
    return s ? lb_strdup(s) : NULL;
}

static void fault_apply(sim_app *app, lb_http_req *req, sim_fault *f)
{
    if (f->delay_ms <= 0) {
        fault_finish(app, req, f);
        return;
    }
    sim_delay *d = LB_NEW(sim_delay);
    d->app = app;
    d->req = req;
    d->snap = *f;
    d->snap.id = sdup(f->id);
    d->snap.path_prefix = NULL;
    d->snap.method = NULL;
    d->snap.retry_after = sdup(f->retry_after);
    d->snap.location = sdup(f->location);
    d->snap.body = sdup(f->body);
    d->snap.content_type = sdup(f->content_type);
    uv_timer_init(&app->loop, &d->timer);
    d->timer.data = d;
    d->next = app->delays;
    if (app->delays) app->delays->prev = d;
    app->delays = d;
    uv_timer_start(&d->timer, delay_cb, (uint64_t)f->delay_ms, 0);
}

static sim_fault *fault_match(sim_app *app, const lb_http_req *req)
{
    for (size_t i = 0; i < app->faults.n; i++) {
        sim_fault *f = app->faults.v[i];
        if (f->remaining == 0) continue;
        if (f->path_prefix && strncmp(req->path, f->path_prefix, strlen(f->path_prefix)) != 0)
            continue;
        if (f->method && strcasecmp(req->method_name, f->method) != 0) continue;
        if (f->probability > 0 && f->probability < 1 &&
            (double)randombytes_uniform(1000000) >= f->probability * 1e6)
            continue;
        f->hits++;
        if (f->remaining > 0) f->remaining--;
        return f;
    }
    return NULL;
}

static void fault_gen(yajl_gen g, const sim_fault *f)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", f->id);
    lb_json_kv_str(g, "path_prefix", f->path_prefix);
    lb_json_kv_str(g, "method", f->method);
    if (f->status)
        lb_json_kv_int(g, "status", f->status);
    else
        lb_json_kv_null(g, "status");
    lb_json_kv_bool(g, "reset", f->reset);
    if (f->remaining >= 0)
        lb_json_kv_int(g, "remaining", f->remaining);
    else
        lb_json_kv_null(g, "remaining");
    lb_json_kv_double(g, "probability", f->probability);
    lb_json_kv_str(g, "retry_after", f->retry_after);
    lb_json_kv_str(g, "location", f->location);
    lb_json_kv_int(g, "delay_ms", f->delay_ms);
    lb_json_kv_str(g, "body", f->body);
    lb_json_kv_int(g, "hits", (int64_t)f->hits);
    yajl_gen_map_close(g);
}

/* Builds a fault from its JSON; NULL with msg set when invalid. */
static sim_fault *fault_parse(sim_app *app, yajl_val o, char *msg, size_t msz)
{
    int64_t n;
    double d;
    if (!YAJL_IS_OBJECT(o)) {
        snprintf(msg, msz, "a fault must be an object");
        return NULL;
    }
    sim_fault *f = LB_NEW(sim_fault);
    f->remaining = -1;
    f->path_prefix = sdup(sim_json_str(o, "path_prefix"));
    f->method = sdup(sim_json_str(o, "method"));
    f->body = sdup(sim_json_str(o, "body"));
    f->content_type = sdup(sim_json_str(o, "content_type"));
    f->location = sdup(sim_json_str(o, "location"));
    if ((f->location && strpbrk(f->location, "\r\n")) ||
        (f->content_type && strpbrk(f->content_type, "\r\n"))) {
        snprintf(msg, msz, "header values must not contain line breaks");
        goto bad;
    }
    f->reset = sim_json_bool(o, "reset", 0);
    int rc = lb_json_get_int(o, "status", &n);
    if (rc == 0 && (n < 100 || n > 599)) {
        snprintf(msg, msz, "status must be 100..599");
        goto bad;
    }
    if (rc == LB_EINVAL && lb_json_get(o, "status") != NULL &&
        !YAJL_IS_NULL(lb_json_get(o, "status"))) {
        snprintf(msg, msz, "status must be an integer");
        goto bad;
    }
    f->status = rc == 0 ? (int)n : 0;
    if (lb_json_get_int(o, "count", &n) == 0) {
        if (n < 0) {
            snprintf(msg, msz, "count must be >= 0");
            goto bad;
        }
        f->remaining = n;
    }
    if (sim_json_num(o, "probability", &d)) {
        if (d < 0 || d > 1) {
            snprintf(msg, msz, "probability must be 0..1");
            goto bad;
        }
        f->probability = d;
    }
    if (lb_json_get_int(o, "delay_ms", &n) == 0) {
        if (n < 0 || n > 600000) {
            snprintf(msg, msz, "delay_ms must be 0..600000");
            goto bad;
        }
        f->delay_ms = n;
    }
    yajl_val ra = lb_json_get(o, "retry_after");
    if (YAJL_IS_STRING(ra) && strpbrk(ra->u.string, "\r\n") == NULL)
        f->retry_after = lb_strdup(ra->u.string);
    else if (YAJL_IS_NUMBER(ra))
        f->retry_after = lb_strdup(ra->u.number.r);
    if (f->status == 0 && !f->reset && f->delay_ms == 0) {
        snprintf(msg, msz, "a fault needs status, reset or delay_ms");
        goto bad;
    }
    char id[32];
    snprintf(id, sizeof(id), "f%llu", (unsigned long long)++app->fault_seq);
    f->id = lb_strdup(id);
    return f;
bad:
    fault_strings_free(f);
    lb_free(f);
    return NULL;
}

void sim_faults_clear(sim_app *app)
{
    for (size_t i = 0; i < app->faults.n; i++) {
        fault_strings_free(app->faults.v[i]);
        lb_free(app->faults.v[i]);
    }
    app->faults.n = 0;
}

static void faults_list(lb_http_req *req, sim_app *app, int status, size_t from)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = from; i < app->faults.n; i++)
        fault_gen(g, app->faults.v[i]);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    sim_respond_json(req, status, g);
}

static void r_faults_post(lb_http_req *req, void *data)
{
    sim_app *app = data;
    yajl_val doc = sim_body_json(req, control_bad);
    if (doc == NULL) return;
    yajl_val list = doc;
    if (YAJL_IS_OBJECT(doc) && lb_json_get_array(doc, "faults") != NULL)
        list = lb_json_get_array(doc, "faults");
    size_t count = YAJL_IS_ARRAY(list) ? list->u.array.len : 1;
    if (app->faults.n + count > MAX_FAULTS) {
        yajl_tree_free(doc);
        sim_control_error(req, 400, "too_many_faults", "At most 256 faults at once.");
        return;
    }
    size_t from = app->faults.n;
    for (size_t i = 0; i < count; i++) {
        yajl_val o = YAJL_IS_ARRAY(list) ? list->u.array.values[i] : list;
        char msg[128];
        sim_fault *f = fault_parse(app, o, msg, sizeof(msg));
        if (f == NULL) {
            while (app->faults.n > from) { /* all or nothing */
                sim_fault *g = app->faults.v[--app->faults.n];
                fault_strings_free(g);
                lb_free(g);
            }
            yajl_tree_free(doc);
            control_bad(req, msg);
            return;
        }
        SIM_PUSH(app->faults, f);
    }
    yajl_tree_free(doc);
    faults_list(req, app, 201, from);
}

static void r_faults_get(lb_http_req *req, void *data)
{
    faults_list(req, data, 200, 0);
}

static void r_faults_delete(lb_http_req *req, void *data)
{
    sim_faults_clear(data);
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

static void r_fault_delete(lb_http_req *req, void *data)
{
    sim_app *app = data;
    const char *id = lb_http_req_param(req, "id");
    for (size_t i = 0; i < app->faults.n; i++) {
        sim_fault *f = app->faults.v[i];
        if (strcmp(f->id, id) == 0) {
            memmove(&app->faults.v[i], &app->faults.v[i + 1],
                    (app->faults.n - i - 1) * sizeof(*app->faults.v));
            app->faults.n--;
            fault_strings_free(f);
            lb_free(f);
            sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
            return;
        }
    }
    sim_control_error(req, 404, "not_found", "No such fault.");
}

/* ---- /_sim/requests ------------------------------------------------------------- */

static void r_requests_get(lb_http_req *req, void *data)
{
    sim_app *app = data;
    char v[256];
    uint64_t since = 0;
    size_t limit = (size_t)-1;
    if (sim_query_get(req, "since", v, sizeof(v))) since = strtoull(v, NULL, 10);
    if (sim_query_get(req, "limit", v, sizeof(v))) limit = (size_t)strtoull(v, NULL, 10);
    char prefix[256] = "";
    sim_query_get(req, "path_prefix", prefix, sizeof(prefix));
    size_t plen = strlen(prefix);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    size_t count = 0;
    for (size_t i = 0; i < app->log_n && count < limit; i++) {
        const sim_logent *e = &app->log[(app->log_head + i) % app->log_cap];
        if (e->seq <= since || (plen && strncmp(e->path, prefix, plen) != 0)) continue;
        count++;
        yajl_gen_map_open(g);
        lb_json_kv_int(g, "seq", (int64_t)e->seq);
        lb_json_kv_int(g, "ts", e->ts_ms);
        lb_json_kv_str(g, "method", e->method);
        lb_json_kv_str(g, "path", e->path);
        lb_json_kv_str(g, "query", e->query ? e->query : "");
        lb_json_kv_str(g, "auth", e->auth);
        if (e->auth != NULL && strcmp(e->auth, "bearer") == 0) {
            lb_json_kv_null(g, "key");
            lb_json_kv_str(g, "token", e->cred);
        } else {
            lb_json_kv_str(g, "key", e->cred);
            lb_json_kv_null(g, "token");
        }
        lb_json_kv_str(g, "principal", e->principal);
        lb_json_kv_int(g, "status", e->status);
        lb_json_kv_double(g, "ms", e->ms);
        lb_json_kv_str(g, "note", e->note);
        lb_json_kv_str(g, "user_agent", e->user_agent);
        lb_json_kv_str(g, "idempotency_key", e->extra);
        lb_json_kv_str(g, "webhook_id", e->webhook_id);
        lb_json_kv_str(g, "body", e->body);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_int(g, "last_seq", (int64_t)app->log_seq);
    yajl_gen_map_close(g);
    if (sim_query_flag(req, "clear")) sim_log_clear(app);
    sim_respond_json(req, 200, g);
}

static void r_requests_delete(lb_http_req *req, void *data)
{
    sim_log_clear(data);
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

static void r_health(lb_http_req *req, void *data)
{
    sim_app *app = data;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "ok");
    lb_json_kv_str(g, "sim", app->hooks.name);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

/* ---- dispatch ------------------------------------------------------------------ */

static void peek_auth(lb_http_req *req, sim_rctx *rc)
{
    size_t n;
    const char *h = lb_http_req_header(req, "authorization", &n);
    if (h == NULL) return;
    if (n > 6 && strncasecmp(h, "Basic ", 6) == 0) {
        const char *b64 = h + 6;
        while (*b64 == ' ')
            b64++;
        size_t blen = strlen(b64);
        char *out = lb_malloc(blen + 1);
        size_t olen = 0;
        if (sodium_base642bin((unsigned char *)out, blen, b64, blen, NULL, &olen, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0) {
            out[olen] = '\0';
            char *colon = memchr(out, ':', olen);
            if (colon != NULL) *colon = '\0';
            snprintf(rc->auth, sizeof(rc->auth), "basic");
            rc->cred = lb_strdup(out);
        } else {
            snprintf(rc->auth, sizeof(rc->auth), "basic");
            rc->cred = NULL; /* undecodable */
        }
        lb_free(out);
    } else if (n > 7 && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        while (*t == ' ')
            t++;
        snprintf(rc->auth, sizeof(rc->auth), "bearer");
        rc->cred = lb_strdup(t);
    } else {
        snprintf(rc->auth, sizeof(rc->auth), "other");
    }
}

void sim_dispatch(sim_app *app, lb_http_req *req)
{
    sim_rctx *rc = req->ctx;
    lb_router_dispatch(req, app->router);
    /* No route matched: the router answered by itself (paths deeper than the
     * catch-alls, or undecodable parameters). The request is still ours
     * until we return, so it can be logged. */
    if (req->route == NULL && rc != NULL && req->ctx == rc) {
        req->ctx = NULL;
        if (!rc->control) log_add(app, req, rc, 404);
        rctx_free(rc);
    }
}

void sim_handle(lb_http_req *req, void *data)
{
    sim_app *app = data;
    sim_rctx *rc = LB_NEW(sim_rctx);
    rc->app = app;
    rc->ts_ms = lb_time_now_ms();
    rc->control = strncmp(req->path, "/_sim", 5) == 0 && (req->path[5] == '/' || !req->path[5]);
    req->ctx = rc;
    if (!rc->control) {
        peek_auth(req, rc);
        sim_fault *f = fault_match(app, req);
        if (f != NULL) {
            fault_apply(app, req, f);
            return;
        }
    }
    sim_dispatch(app, req);
}

/* ---- loop lag ------------------------------------------------------------------ */

#define LAG_TICK_MS 10

static void lag_cb(uv_timer_t *t)
{
    sim_lag *lag = t->data;
    uint64_t now = uv_hrtime();
    if (now > lag->due_ns && now - lag->due_ns > lag->max_ns) lag->max_ns = now - lag->due_ns;
    lag->due_ns = now + LAG_TICK_MS * 1000000ull;
}

void sim_lag_start(uv_loop_t *loop, sim_lag *lag)
{
    uv_timer_init(loop, &lag->timer);
    lag->timer.data = lag;
    lag->due_ns = uv_hrtime() + LAG_TICK_MS * 1000000ull;
    lag->max_ns = 0;
    uv_timer_start(&lag->timer, lag_cb, LAG_TICK_MS, LAG_TICK_MS);
    uv_unref((uv_handle_t *)&lag->timer); /* never what keeps a loop alive */
}

void sim_lag_close(sim_lag *lag)
{
    uv_close((uv_handle_t *)&lag->timer, NULL);
}

double sim_lag_max_ms(const sim_lag *lag)
{
    return (double)lag->max_ns / 1e6;
}

void sim_lag_reset(sim_lag *lag)
{
    lag->max_ns = 0;
}

/* ---- lifecycle ----------------------------------------------------------------- */

void sim_app_init(sim_app *app, const sim_hooks *hooks, void *data)
{
    uv_loop_init(&app->loop);
    app->router = lb_router_new();
    app->hooks = *hooks;
    app->data = data;
}

static void client_closed_cb(void *data)
{
    sim_app *app = data;
    app->client = NULL;
}

static void server_closed_cb(void *data)
{
    sim_app *app = data;
    app->server = NULL;
    if (app->client != NULL) lb_http_client_close(app->client, client_closed_cb, app);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
    sim_app *app = sig->data;
    (void)signum;
    if (app->stopping) return;
    app->stopping = 1;
    if (app->hooks.on_shutdown != NULL) app->hooks.on_shutdown(app);
    while (app->delays != NULL)
        delay_fire(app->delays);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    sim_lag_close(&app->lag);
    lb_http_server_close(app->server, server_closed_cb, app);
}

int sim_app_start(sim_app *app, const sim_options *opt)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    static const char *const catchall[] = {"/",
                                           "/{a}",
                                           "/{a}/{b}",
                                           "/{a}/{b}/{c}",
                                           "/{a}/{b}/{c}/{d}",
                                           "/v1/{a}/{b}/{c}/{d}",
                                           "/_sim/{a}/{b}/{c}/{d}"};
    lb_router *r = app->router;
    lb_router_add(r, "GET", "/_sim/health", r_health, app);
    lb_router_add(r, "GET", "/_sim/faults", r_faults_get, app);
    lb_router_add(r, "POST", "/_sim/faults", r_faults_post, app);
    lb_router_add(r, "DELETE", "/_sim/faults", r_faults_delete, app);
    lb_router_add(r, "DELETE", "/_sim/faults/{id}", r_fault_delete, app);
    lb_router_add(r, "GET", "/_sim/requests", r_requests_get, app);
    lb_router_add(r, "DELETE", "/_sim/requests", r_requests_delete, app);
    for (size_t p = 0; p < LB_COUNTOF(catchall); p++)
        for (size_t m = 0; m < LB_COUNTOF(methods); m++)
            lb_router_add(r, methods[m], catchall[p], app->hooks.not_found, app->data);

    app->log_cap = opt->log_max;
    if (app->log_cap > 0) app->log = lb_calloc(app->log_cap, sizeof(sim_logent));

    if (opt->with_client) {
        lb_http_client_config cc = {.max_inflight = 1024,
                                    .connect_timeout_ms = 5000,
                                    .timeout_ms = 30000,
                                    .max_response = 64 * 1024};
        if (lb_http_client_new(&app->loop, &cc, &app->client) != 0) {
            fprintf(stderr, "%s: cannot create the HTTP client\n", app->hooks.name);
            return LB_EIO;
        }
    }

    char *host;
    int port;
    if (sim_parse_listen(opt->listen, &host, &port) != 0) {
        fprintf(stderr, "%s: --listen: expected host:port, got '%s'\n", app->hooks.name,
                opt->listen);
        return LB_EINVAL;
    }
    lb_http_server_config hc = {.host = host,
                                .port = port,
                                .max_body = opt->max_body ? opt->max_body : 16u * 1024 * 1024,
                                .header_timeout_ms = 10000,
                                .body_timeout_ms = 30000,
                                .idle_timeout_ms = 120000,
                                .max_connections = 20000};
    int rc = lb_http_server_start(&app->loop, &hc, sim_handle, app, &app->server);
    lb_free(host);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", app->hooks.name, opt->listen,
                uv_strerror(rc));
        return rc;
    }
    uv_signal_init(&app->loop, &app->sigterm);
    uv_signal_init(&app->loop, &app->sigint);
    app->sigterm.data = app->sigint.data = app;
    uv_signal_start(&app->sigterm, signal_cb, SIGTERM);
    uv_signal_start(&app->sigint, signal_cb, SIGINT);
    sim_lag_start(&app->loop, &app->lag);
    printf("{\"port\":%d}\n", lb_http_server_port(app->server));
    fflush(stdout);
    lb_debug("sim", "%s listening on port %d", app->hooks.name, lb_http_server_port(app->server));
    return 0;
}

int sim_app_run(sim_app *app)
{
    uv_run(&app->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&app->loop);
    if (rc != 0) lb_error("sim", "loop closed with handles still open: %s", uv_strerror(rc));
    lb_router_free(app->router);
    sim_faults_clear(app);
    SIM_VEC_FREE(app->faults);
    sim_log_clear(app);
    lb_free(app->log);
    return rc == 0 ? 0 : 1;
}
