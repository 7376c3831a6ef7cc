#include "http/server.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "http/response.h"

#include <llhttp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define READ_BUF_SIZE (8 * 1024)
/* Stop parsing pipelined requests while this much response data waits. */
#define WRITE_QUEUE_HIGH (256 * 1024)
/* At most one summary line about refused connections this often. */
#define REFUSED_LOG_MS 10000

typedef enum {
    C_IDLE,     /* between requests: idle timer */
    C_HEADERS,  /* first byte seen, headers incomplete: header timer */
    C_BODY,     /* headers done, body incomplete: body deadline (not reset by reads) */
    C_HANDLING, /* parsed, handler owes a response: parser paused, not reading */
    C_LINGER,   /* last response sent: write side shut, draining input, then close */
    C_CLOSED,
} conn_state;

typedef struct {
    uint32_t name_off, name_len, val_off, val_len;
} hdr_span;

/* Which eviction queue a connection is on: at MAX_CONNECTIONS the head of
 * Q_IDLE goes first (the longest idle, or one lingering after its last
 * answer), else the head of Q_BUSY (the request that began longest ago and
 * is still not fully read). Handled requests are on neither. */
typedef enum { Q_NONE, Q_IDLE, Q_BUSY } conn_queue;

typedef struct {
    lb_http_conn *head, *tail;
} queue;

/* Owned by the server's connection list; freed in close_cb once both handles
 * are closed and no handler owes a response. */
struct lb_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    llhttp_t parser;
    lb_http_server *srv;
    lb_http_conn *prev, *next;
    lb_http_conn *qprev, *qnext; /* on srv->queues[q] unless q is Q_NONE */
    conn_queue q;
    conn_state state;
    int handles;    /* open libuv handles (tcp, timer) */
    int in_process; /* inside process(): respond must not recurse */
    unsigned reading : 1;
    unsigned keep_alive : 1;
    unsigned owes : 1;     /* a handler owes lb_http_respond() for req */
    unsigned in_field : 1; /* the last header span was a field name */
    unsigned expect_continue : 1;
    unsigned expect_pending : 1; /* paused at headers: ask cfg.check first */
    unsigned req_ready : 1;      /* req's path, query and method are set */
    unsigned saw_version : 1;    /* the request line had an HTTP version */
    uint64_t base_off;           /* stream offset of rbuf[0], to see where spans start */
    uint64_t method_end;         /* stream offset just past the method */
    uint64_t url_end;            /* stream offset just past the URL so far */
    int read_err;                /* EOF or error read while C_HANDLING, acted on after */
    int err_status;              /* a limit was hit: answer this and close */
    const char *err_code;
    const char *err_msg;

    lb_http_req req;
    lb_strbuf head; /* url, header names and values */
    size_t url_len;
    hdr_span hdrs[LB_HTTP_MAX_HEADERS];
    int nhdrs;
    lb_strbuf body;

    size_t rlen; /* unparsed bytes at the start of rbuf */
    char rbuf[READ_BUF_SIZE];
};

struct lb_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    lb_http_server_config cfg;
    lb_http_handler handler;
    void *handler_data;
    lb_http_conn *conns;
    size_t nconns;             /* linked, closing ones included (until their close_cb) */
    size_t nclosing;           /* of those, already closing: they hold no slot */
    queue queues[3];           /* by conn_queue; Q_NONE unused */
    uint64_t refused_unlogged; /* refusals since the last summary line */
    int64_t refused_logged_ms;
    int port;
    unsigned listening : 1;
    unsigned paused : 1;  /* accepting nothing yet (lb_http_server_serve) */
    unsigned waiting : 1; /* a connection came while paused: libuv holds it */
    unsigned draining : 1;
    unsigned closing : 1;
    void (*drain_cb)(void *);
    void *drain_data;
    void (*close_cb)(void *);
    void *close_data;
    llhttp_settings_t settings;
    char date[64];
    uint64_t date_sec;
};

typedef struct {
    uv_write_t req;
    lb_http_conn *conn;
    void (*free_body)(void *);
    void *free_arg;
    size_t head_len;
    char head[];
} write_req;

static void process(lb_http_conn *c);
static int may_continue(lb_http_conn *c);
static void conn_free(lb_http_conn *c);
static void conn_close(lb_http_conn *c);
static void read_stop(lb_http_conn *c);
static void send_error_and_close(lb_http_conn *c, int status, const char *code, const char *msg);

/* ---- metrics ---------------------------------------------------------- */

typedef struct {
    const char *route;
    int status;
    lb_metric *count;
    lb_metric *latency;
} metric_slot;

static metric_slot metric_cache[256];

static void record_metrics(const lb_http_req *req, int status)
{
    const char *route = req->route ? req->route : "unmatched";
    uintptr_t h = ((uintptr_t)route >> 3) * 31u + (unsigned)status;
    metric_slot *slot = &metric_cache[h % LB_COUNTOF(metric_cache)];
    if (slot->route != route || slot->status != status) {
        char labels[256];
        lb_strbuf b;
        lb_strbuf_init_fixed(&b, labels, sizeof(labels));
        lb_strbuf_cat(&b, "route=");
        lb_strbuf_json_str(&b, route, strlen(route)); /* JSON escaping suits Prometheus */
        lb_strbuf_printf(&b, ",code=\"%d\"", status);
        slot->route = route;
        slot->status = status;
        slot->count = lb_metrics_counter("leverbridge_http_requests_total",
                                         "HTTP requests answered, by route and status.", labels);
        lb_strbuf_reset(&b);
        lb_strbuf_cat(&b, "route=");
        lb_strbuf_json_str(&b, route, strlen(route));
        slot->latency = lb_metrics_histogram("leverbridge_http_request_seconds",
                                             "Time from complete headers to response.", labels,
                                             lb_metrics_latency_bounds, lb_metrics_latency_nbounds);
    }
    lb_metric_add(slot->count, 1);
    if (req->start_ns != 0)
        lb_metric_observe(slot->latency, (double)(uv_hrtime() - req->start_ns) / 1e9);
}

/* ---- timers ----------------------------------------------------------- */

static void timer_cb(uv_timer_t *t)
{
    lb_http_conn *c = t->data;
    switch (c->state) {
    case C_HEADERS:
        send_error_and_close(c, 408, "request_timeout", "The request headers took too long.");
        break;
    case C_BODY:
        send_error_and_close(c, 408, "request_timeout", "The request body took too long.");
        break;
    default: /* idle keep-alive or lingering close: just go */
        conn_close(c);
        break;
    }
}

static void queue_unlink(lb_http_conn *c)
{
    if (c->q == Q_NONE) return;
    queue *q = &c->srv->queues[c->q];
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        q->head = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        q->tail = c->qprev;
    c->qprev = c->qnext = NULL;
    c->q = Q_NONE;
}

/* Appends c to queue qi, unless it is on it already (its place, the time it
 * got there, is kept: a request stays as old as its first byte). */
static void queue_move(lb_http_conn *c, conn_queue qi)
{
    if (c->q == qi) return;
    queue_unlink(c);
    if (qi == Q_NONE) return;
    queue *q = &c->srv->queues[qi];
    c->qprev = q->tail;
    c->qnext = NULL;
    if (q->tail)
        q->tail->qnext = c;
    else
        q->head = c;
    q->tail = c;
    c->q = qi;
}

/* Each state's timer starts when the state is entered and is not restarted
 * by reads: HEADER_TIMEOUT and BODY_TIMEOUT are deadlines, however slowly
 * the bytes trickle. */
static void set_state(lb_http_conn *c, conn_state st)
{
    const lb_http_server_config *cfg = &c->srv->cfg;
    c->state = st;
    int64_t ms = 0;
    switch (st) {
    case C_IDLE:
        ms = cfg->idle_timeout_ms;
        queue_move(c, Q_IDLE);
        break;
    case C_HEADERS:
        ms = cfg->header_timeout_ms;
        queue_move(c, Q_BUSY);
        break;
    case C_BODY:
        ms = cfg->body_timeout_ms;
        queue_move(c, Q_BUSY);
        break;
    case C_LINGER: /* until the answer is out */
        ms = cfg->idle_timeout_ms;
        queue_move(c, Q_IDLE);
        break;
    default:
        queue_move(c, Q_NONE);
        break;
    }
    if (ms > 0)
        uv_timer_start(&c->timer, timer_cb, (uint64_t)ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* ---- reading ---------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    lb_http_conn *c = h->data;
    (void)suggested;
    if (c->state == C_LINGER) { /* discard: reuse the whole buffer */
        buf->base = c->rbuf;
        buf->len = sizeof(c->rbuf);
        return;
    }
    buf->base = c->rbuf + c->rlen;
    buf->len = sizeof(c->rbuf) - c->rlen;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    lb_http_conn *c = stream->data;
    (void)buf;
    if (nread == 0) return;
    if (nread < 0) {
        /* Reading goes on while a handler works (so that no request costs
         * an epoll_ctl to stop and restart it), but the end of the input
         * is acted on where reading would have resumed: after the answer. */
        if (c->state == C_HANDLING) {
            c->read_err = (int)nread;
            read_stop(c);
            return;
        }
        /* EOF or reset. A half-sent request gets no answer: nobody reads it. */
        conn_close(c);
        return;
    }
    if (c->state == C_LINGER) return;
    c->rlen += (size_t)nread;
    if (c->state == C_IDLE) set_state(c, C_HEADERS);
    process(c);
}

static void read_start(lb_http_conn *c)
{
    if (c->read_err != 0) { /* the input ended while a handler worked */
        if (c->state != C_HANDLING) conn_close(c);
        return;
    }
    if (!c->reading && c->state != C_CLOSED) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0) c->reading = 1;
    }
}

static void read_stop(lb_http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ---- llhttp callbacks --------------------------------------------------- */

static int limit(lb_http_conn *c, int status, const char *code, const char *msg)
{
    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    lb_strbuf_reset(&c->head);
    lb_strbuf_reset(&c->body);
    c->url_len = 0;
    c->nhdrs = 0;
    c->in_field = 0;
    c->expect_continue = 0;
    c->expect_pending = 0;
    c->req_ready = 0;
    c->saw_version = 0;
    return 0;
}

/* Stream offset of a span that starts at `at` inside rbuf. */
static uint64_t span_off(const lb_http_conn *c, const char *at)
{
    return c->base_off + (uint64_t)(at - c->rbuf);
}

static int bad_request_line(lb_http_conn *c)
{
    return limit(c, 400, "invalid_request",
                 "The request line must be METHOD SP target SP HTTP/1.x, single spaces.");
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    c->method_end = span_off(c, at) + len;
    return 0;
}

/* llhttp skips runs of spaces in the request line: RFC 9112 (3) allows one. */
static int on_url_span(lb_http_conn *c, const char *at, size_t len)
{
    if (len == 0) return 0;
    if (c->url_len == 0 && span_off(c, at) != c->method_end + 1) return bad_request_line(c);
    c->url_end = span_off(c, at) + len;
    return 0;
}

static int on_version(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    /* the span starts after "HTTP/": exactly one space after the URL */
    if (len == 0) return 0;
    if (!c->saw_version && span_off(c, at) != c->url_end + 6) return bad_request_line(c);
    c->saw_version = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    if (on_url_span(c, at, len) != 0) return -1;
    if (c->url_len + len > LB_HTTP_MAX_URL)
        return limit(c, 414, "uri_too_long", "The request URL is too long.");
    if (lb_strbuf_add(&c->head, at, len) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    c->url_len += len;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    /* NUL-terminate the URL in place: header spans start after it. */
    if (lb_strbuf_add(&c->head, "", 1) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    if (!c->in_field) {
        if (c->nhdrs == LB_HTTP_MAX_HEADERS)
            return limit(c, 431, "headers_too_large", "The request has too many headers.");
        hdr_span *h = &c->hdrs[c->nhdrs];
        h->name_off = (uint32_t)c->head.len;
        h->name_len = 0;
        h->val_len = 0;
        c->in_field = 1;
    }
    if (lb_strbuf_add(&c->head, at, len) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    c->hdrs[c->nhdrs].name_len += (uint32_t)len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    if (lb_strbuf_add(&c->head, "", 1) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    c->hdrs[c->nhdrs].val_off = (uint32_t)c->head.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    if (lb_strbuf_add(&c->head, at, len) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    c->hdrs[c->nhdrs].val_len += (uint32_t)len;
    return 0;
}

/* Commit the pair here: value spans may be split across reads, and an empty
 * value never calls on_header_value at all. */
static int on_header_value_complete(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    hdr_span *h = &c->hdrs[c->nhdrs];
    while (h->val_len > 0 && (c->head.data[h->val_off + h->val_len - 1] == ' ' ||
                              c->head.data[h->val_off + h->val_len - 1] == '\t'))
        h->val_len--;
    c->head.len = h->val_off + h->val_len; /* drop the trimmed bytes */
    if (lb_strbuf_add(&c->head, "", 1) != 0)
        return limit(c, 431, "headers_too_large", "The request headers are too large.");
    c->nhdrs++;
    c->in_field = 0;
    return 0;
}

/* Transfer-Encoding, over every field line of it: llhttp has checked that
 * chunked comes last; any other coding is one we do not decode (501), and
 * chunked twice is malformed (RFC 9112 6.1). */
static int check_transfer_coding(lb_http_conn *c)
{
    int chunked = 0;
    for (int i = 0; i < c->nhdrs; i++) {
        const hdr_span *h = &c->hdrs[i];
        if (strcasecmp(c->head.data + h->name_off, "transfer-encoding") != 0) continue;
        const char *v = c->head.data + h->val_off, *end = v + h->val_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *t = v;
            while (v < end && *v != ',')
                v++;
            const char *te = v;
            while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
                te--;
            if (te == t) continue; /* empty list element */
            if ((size_t)(te - t) != 7 || strncasecmp(t, "chunked", 7) != 0)
                return limit(c, 501, "not_implemented",
                             "Only the chunked transfer coding is supported.");
            if (++chunked > 1)
                return limit(c, 400, "invalid_request", "The body is chunked more than once.");
        }
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    lb_http_server *s = c->srv;
    if (!c->saw_version) return bad_request_line(c); /* "GET /" alone: HTTP/0.9 is not served */
    if (p->http_major != 1)
        return limit(c, 505, "http_version_not_supported", "Only HTTP/1.0 and 1.1 are served.");
    if ((p->flags & F_CHUNKED) && check_transfer_coding(c) != 0) return -1;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->cfg.max_body)
        return limit(c, 413, "payload_too_large", "The request body is too large.");
    size_t n;
    const char *expect = lb_http_req_header(&c->req, "expect", &n);
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1)
        c->expect_continue = 1;
    c->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    c->req.start_ns = uv_hrtime();
    set_state(c, C_BODY);
    if (c->expect_continue && ((p->flags & F_CHUNKED) || p->content_length > 0)) {
        c->expect_pending = 1;
        return HPE_PAUSED; /* process() asks cfg.check, then resumes */
    }
    return 0;
}

/* A chunk announcing more than MAX_BODY leaves is refused before its data. */
static int on_chunk_header(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    uint64_t max = c->srv->cfg.max_body;
    if (p->content_length > max || c->body.len > max - p->content_length)
        return limit(c, 413, "payload_too_large", "The request body is too large.");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    lb_http_conn *c = p->data;
    if (lb_strbuf_add(&c->body, at, len) != 0)
        return limit(c, 413, "payload_too_large", "The request body is too large.");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    lb_http_conn *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    set_state(c, C_HANDLING);
    return HPE_PAUSED;
}

/* ---- request dispatch --------------------------------------------------- */

const char *lb_http_req_header(const lb_http_req *req, const char *name, size_t *len)
{
    const lb_http_conn *c = req->conn;
    for (int i = 0; i < c->nhdrs; i++) {
        const hdr_span *h = &c->hdrs[i];
        if (strcasecmp(c->head.data + h->name_off, name) == 0) {
            if (len != NULL) *len = h->val_len;
            return c->head.data + h->val_off;
        }
    }
    return NULL;
}

const char *lb_http_req_param(const lb_http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0) return req->params[i].value;
    return NULL;
}

/* Sets the request's URL parts and method (once: the '?' is cut in place). */
static void req_prepare(lb_http_conn *c)
{
    lb_http_req *r = &c->req;
    if (c->req_ready) return;
    c->req_ready = 1;
    char *url = c->head.data;
    char *q = memchr(url, '?', c->url_len);
    if (q != NULL) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    r->path = url;
    r->method = llhttp_get_method(&c->parser);
    r->method_name = llhttp_method_name((llhttp_method_t)r->method);
    r->body = "";
    r->body_len = 0;
    r->route = NULL;
    r->nparams = 0;
    r->ctx = NULL;
}

/* A request that asked for 100 Continue, its headers read and its body not:
 * cfg.check decides whether the client should send the body. 1: it should,
 * and 100 Continue is sent. 0: the check answered with the final status (an
 * unknown route, a missing token...), and the connection closes after it,
 * as the body was never read. */
static int may_continue(lb_http_conn *c)
{
    lb_http_server *s = c->srv;
    req_prepare(c);
    if (s->cfg.check != NULL) {
        int keep = c->keep_alive;
        c->keep_alive = 0; /* if it answers now: then close */
        c->owes = 1;
        int go = s->cfg.check(&c->req, s->cfg.check_data);
        if (!go) {
            if (c->owes) {
                lb_error("http", "a check refused a request without answering it");
                c->owes = 0;
                send_error_and_close(c, 500, "internal", "The request could not be handled.");
            }
            return 0;
        }
        if (!c->owes) { /* answered, yet said go on: the answer stands */
            lb_error("http", "a check answered a request and let it go on");
            return 0;
        }
        c->owes = 0;
        c->keep_alive = keep ? 1 : 0;
        c->req.route = NULL;
        c->req.nparams = 0;
    }
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort: RFC 9110 15.2.1 */
    return 1;
}

static void dispatch(lb_http_conn *c)
{
    lb_http_req *r = &c->req;
    req_prepare(c);
    r->body = c->body.len ? c->body.data : "";
    r->body_len = c->body.len;
    r->route = NULL;
    r->nparams = 0;
    c->owes = 1;
    if (c->srv->draining) c->keep_alive = 0;
    c->srv->handler(r, c->srv->handler_data);
}

/* Parses what is buffered, dispatching complete requests one at a time. */
static void process(lb_http_conn *c)
{
    c->in_process++;
    while (c->rlen > 0 && (c->state == C_HEADERS || c->state == C_BODY || c->state == C_IDLE)) {
        if (c->state == C_IDLE) set_state(c, C_HEADERS);
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_HIGH)
            break; /* the client is not reading its answers: wait */
        llhttp_errno_t err = llhttp_execute(&c->parser, c->rbuf, c->rlen);
        if (err == HPE_OK) {
            c->base_off += c->rlen;
            c->rlen = 0;
            break;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            size_t used = (size_t)(pos - c->rbuf);
            memmove(c->rbuf, pos, c->rlen - used);
            c->rlen -= used;
            c->base_off += used;
            if (c->expect_pending) { /* paused at the headers, not at the end */
                c->expect_pending = 0;
                if (!may_continue(c)) break; /* answered: the connection lingers closed */
                llhttp_resume(&c->parser);
                continue;
            }
            dispatch(c); /* may respond at once, which returns us to C_IDLE */
            continue;
        }
        if (c->err_status != 0) {
            send_error_and_close(c, c->err_status, c->err_code, c->err_msg);
        } else if ((err == HPE_INVALID_CHUNK_SIZE || err == HPE_INVALID_CONTENT_LENGTH) &&
                   strstr(llhttp_get_error_reason(&c->parser), "overflow") != NULL) {
            /* a size past 2^64 is past MAX_BODY too */
            send_error_and_close(c, 413, "payload_too_large", "The request body is too large.");
        } else {
            lb_debug("http", "bad request: %s", llhttp_errno_name(err));
            send_error_and_close(c, 400, "invalid_request", "The HTTP request is malformed.");
        }
        break;
    }
    c->in_process--;
    /* A handler at work does not stop reading: what arrives meanwhile waits
     * in rbuf (bounded: a full buffer stops reading) and is parsed after the
     * answer. */
    if (c->state == C_CLOSED || c->rlen == sizeof(c->rbuf))
        read_stop(c); /* a full buffer waits for the write queue to drain */
    else
        read_start(c);
}

/* ---- writing ---------------------------------------------------------- */

static const char *date_header(lb_http_server *s)
{
    uint64_t now = (uint64_t)time(NULL);
    if (now != s->date_sec) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->date, sizeof(s->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        s->date_sec = now;
    }
    return s->date;
}

static void after_response(lb_http_conn *c);

static void write_cb(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    lb_http_conn *c = wr->conn;
    if (wr->free_body != NULL) wr->free_body(wr->free_arg);
    lb_free(wr);
    if (c->state == C_CLOSED) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->state == C_LINGER && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)
        after_response(c);
    else if (c->rlen > 0 && c->in_process == 0)
        process(c); /* pipelined requests held back by the write queue */
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    lb_free(req);
    (void)status;
}

/* The last response is out: shut our side, read and discard what the client
 * still sends (so the kernel does not reset the connection under the
 * response), and close on EOF or after LB_HTTP_LINGER_MS. */
static void after_response(lb_http_conn *c)
{
    uv_shutdown_t *sr = LB_NEW(uv_shutdown_t);
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        lb_free(sr);
        conn_close(c);
        return;
    }
    c->rlen = 0;
    uv_timer_start(&c->timer, timer_cb, LB_HTTP_LINGER_MS, 0);
    read_start(c);
}

static void send_raw(lb_http_conn *c, const char *head, size_t hlen, const void *body, size_t blen,
                     void (*free_body)(void *), void *free_arg)
{
    uv_buf_t bufs[2] = {uv_buf_init((char *)head, (unsigned)hlen),
                        uv_buf_init((char *)body, (unsigned)blen)};
    unsigned nbufs = blen ? 2 : 1;
    int n = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
        if (n < 0) {
            if (free_body != NULL) free_body(free_arg);
            conn_close(c);
            return;
        }
    }
    size_t sent = (size_t)n;
    if (sent == hlen + blen) {
        if (free_body != NULL) free_body(free_arg);
        if (c->state == C_LINGER) after_response(c);
        return;
    }
    /* Queue the rest: the unsent part of the head is copied, the body is not. */
    size_t hrest = sent < hlen ? hlen - sent : 0;
    write_req *wr = lb_malloc(sizeof(*wr) + hrest);
    wr->conn = c;
    wr->free_body = free_body;
    wr->free_arg = free_arg;
    wr->head_len = hrest;
    memcpy(wr->head, head + (hlen - hrest), hrest);
    size_t bskip = sent > hlen ? sent - hlen : 0;
    uv_buf_t rest[2];
    unsigned nrest = 0;
    if (hrest > 0) rest[nrest++] = uv_buf_init(wr->head, (unsigned)hrest);
    if (blen > bskip) rest[nrest++] = uv_buf_init((char *)body + bskip, (unsigned)(blen - bskip));
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, rest, nrest, write_cb) != 0) {
        if (free_body != NULL) free_body(free_arg);
        lb_free(wr);
        conn_close(c);
    }
}

/* Appends the decimal digits of v. */
static void cat_uint(lb_strbuf *b, uint64_t v)
{
    char digits[24];
    size_t i = sizeof(digits);
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    lb_strbuf_add(b, digits + i, sizeof(digits) - i);
}

/* The head without printf: it is formatted for every response. */
static size_t format_head(lb_http_conn *c, char *head, size_t size, int status, const char *ctype,
                          const char *extra, size_t blen)
{
    lb_strbuf b;
    lb_strbuf_init_fixed(&b, head, size);
    lb_strbuf_cat(&b, "HTTP/1.1 ");
    if (status < 0) {
        lb_strbuf_cat(&b, "-");
        cat_uint(&b, (uint64_t)0 - (uint64_t)(int64_t)status);
    } else {
        cat_uint(&b, (uint64_t)status);
    }
    lb_strbuf_cat(&b, " ");
    lb_strbuf_cat(&b, lb_http_status_text(status));
    lb_strbuf_cat(&b, "\r\n");
    lb_strbuf_cat(&b, date_header(c->srv));
    if (ctype != NULL) {
        lb_strbuf_cat(&b, "Content-Type: ");
        lb_strbuf_cat(&b, ctype);
        lb_strbuf_cat(&b, "\r\n");
    }
    if (status != 204 && status != 304) {
        lb_strbuf_cat(&b, "Content-Length: ");
        cat_uint(&b, (uint64_t)blen);
        lb_strbuf_cat(&b, "\r\n");
    }
    if (extra != NULL) lb_strbuf_cat(&b, extra);
    if (!c->keep_alive)
        lb_strbuf_cat(&b, "Connection: close\r\n");
    else if (llhttp_get_http_minor(&c->parser) == 0)
        lb_strbuf_cat(&b, "Connection: keep-alive\r\n");
    lb_strbuf_cat(&b, "\r\n");
    return b.failed ? 0 : b.len;
}

void lb_http_respond(lb_http_req *req, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len,
                     void (*free_body)(void *arg), void *free_arg)
{
    lb_http_conn *c = req->conn;
    if (!c->owes) {
        lb_error("http", "response without a pending request (status %d) ignored", status);
        if (free_body != NULL) free_body(free_arg);
        return;
    }
    c->owes = 0;
    record_metrics(req, status);
    if (c->state == C_CLOSED) { /* the client went away while we worked */
        if (free_body != NULL) free_body(free_arg);
        if (c->handles == 0) conn_free(c);
        return;
    }
    char head[2048];
    size_t hlen = format_head(c, head, sizeof(head), status, content_type, extra_headers, len);
    if (hlen == 0) {
        lb_error("http", "response head too large (status %d)", status);
        c->keep_alive = 0;
        static const char fallback[] = "HTTP/1.1 500 Internal Server Error\r\n"
                                       "Content-Length: 0\r\nConnection: close\r\n\r\n";
        memcpy(head, fallback, sizeof(fallback) - 1);
        hlen = sizeof(fallback) - 1;
        if (free_body != NULL) free_body(free_arg);
        body = NULL;
        len = 0;
        free_body = NULL;
    }
    if (req->method == HTTP_HEAD) {
        if (free_body != NULL) free_body(free_arg);
        body = NULL;
        len = 0;
        free_body = NULL;
    }
    int keep = c->keep_alive && !c->srv->draining;
    if (keep) {
        llhttp_resume(&c->parser);
        set_state(c, C_IDLE);
    } else {
        set_state(c, C_LINGER);
    }
    send_raw(c, head, hlen, body, len, free_body, free_arg);
    if (keep && c->state == C_IDLE && c->in_process == 0)
        process(c); /* an asynchronous answer: go on with what is buffered */
}

static void send_error_and_close(lb_http_conn *c, int status, const char *code, const char *msg)
{
    if (c->state == C_HANDLING) return; /* a handler owes the answer; it will close after it */
    c->keep_alive = 0;
    c->owes = 1;
    c->req.route = NULL;
    c->req.start_ns = 0;
    c->req.method = HTTP_GET;
    size_t len;
    char *body = lb_http_error_body(code, msg, NULL, &len);
    set_state(c, C_HANDLING); /* so that respond treats it as a normal answer */
    lb_http_respond(&c->req, status, "application/json", NULL, body, len, lb_free, body);
}

/* ---- connections -------------------------------------------------------- */

static void maybe_drained(lb_http_server *s);
static int maybe_closed(lb_http_server *s);

static void conn_free(lb_http_conn *c)
{
    lb_strbuf_free(&c->head);
    lb_strbuf_free(&c->body);
    lb_free(c);
}

static void conn_close_cb(uv_handle_t *h)
{
    lb_http_conn *c = h->data;
    lb_http_server *s = c->srv;
    if (--c->handles > 0) return;
    s->nclosing--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    /* A handler that still owes a response may still read the request: the
     * connection is freed when it answers. */
    if (!c->owes) conn_free(c);
    /* Either may run user code that frees the server: each is a last act. */
    if (!maybe_closed(s)) maybe_drained(s);
}

static void conn_close(lb_http_conn *c)
{
    if (c->state == C_CLOSED) return;
    c->state = C_CLOSED;
    c->srv->nclosing++;
    queue_unlink(c);
    read_stop(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_link(lb_http_server *s, lb_http_conn *c)
{
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
}

/* A connection at MAX_CONNECTIONS that could not make room. Counted, and
 * logged as one summary line at most every REFUSED_LOG_MS. */
static lb_metric *refused_total(void)
{
    return lb_metrics_counter("leverbridge_http_connections_refused_total",
                              "Connections closed at accept: every slot busy.", "");
}

static void refused(lb_http_server *s)
{
    lb_metric_add(refused_total(), 1);
    s->refused_unlogged++;
    int64_t now = (int64_t)(uv_now(s->loop));
    if (s->refused_logged_ms == 0 || now - s->refused_logged_ms >= REFUSED_LOG_MS) {
        lb_warn("http",
                "%llu connection(s) refused since the last report: all %d connections "
                "have a request being handled",
                (unsigned long long)s->refused_unlogged, s->cfg.max_connections);
        s->refused_unlogged = 0;
        s->refused_logged_ms = now == 0 ? 1 : now;
    }
}

/* At MAX_CONNECTIONS: closes the longest idle (or lingering) connection,
 * else the one whose unfinished request began longest ago (it gets a best
 * effort 503 first). 0 when one was closed, UV_EAGAIN when every slot has a
 * request being handled. */
static int make_room(lb_http_server *s)
{
    lb_http_conn *v = s->queues[Q_IDLE].head;
    const char *reason = "idle";
    if (v == NULL) {
        v = s->queues[Q_BUSY].head;
        reason = "slow";
    }
    if (v == NULL) return UV_EAGAIN;
    char labels[32];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    lb_metric_add(lb_metrics_counter("leverbridge_http_connections_evicted_total",
                                     "Connections closed at MAX_CONNECTIONS to make room.", labels),
                  1);
    if (v->q == Q_BUSY && uv_stream_get_write_queue_size((uv_stream_t *)&v->tcp) == 0) {
        v->keep_alive = 0;
        size_t blen;
        char *body = lb_http_error_body(
            "unavailable",
            "The server is at its connection limit and this request was the slowest.", NULL, &blen);
        char head[512];
        size_t hlen = format_head(v, head, sizeof(head), 503, "application/json", NULL, blen);
        if (hlen > 0) {
            uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)hlen),
                                uv_buf_init(body, (unsigned)blen)};
            uv_try_write((uv_stream_t *)&v->tcp, bufs, 2);
        }
        lb_free(body);
    }
    conn_close(v);
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    lb_http_server *s = server->data;
    if (status < 0) {
        lb_warn("http", "accept failed: %s", uv_strerror(status));
        return;
    }
    if (s->paused) {
        /* Not taken: libuv keeps the socket and stops polling the listener
         * until uv_accept, so later ones stay in the backlog. */
        s->waiting = 1;
        return;
    }
    lb_http_conn *c = lb_malloc(sizeof(*c));
    memset(c, 0, offsetof(lb_http_conn, rbuf));
    c->srv = s;
    lb_strbuf_init(&c->head, LB_HTTP_MAX_HEADER_BYTES);
    lb_strbuf_init(&c->body, s->cfg.max_body);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    conn_link(s, c); /* counted until its close callback */
    int refuse = uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || s->draining;
    /* Closing connections hold no slot: their close callbacks come later in
     * this loop iteration. */
    if (!refuse && s->nconns - s->nclosing > (size_t)s->cfg.max_connections && make_room(s) != 0) {
        refused(s);
        refuse = 1;
    }
    if (refuse) {
        c->state = C_CLOSED;
        s->nclosing++;
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->req.conn = c;
    set_state(c, C_IDLE);
    read_start(c);
}

/* ---- server ----------------------------------------------------------- */

void lb_http_server_serve(lb_http_server *s)
{
    if (!s->paused) return;
    s->paused = 0;
    if (s->waiting) {
        s->waiting = 0;
        on_connection((uv_stream_t *)&s->listener, 0); /* accepts, polls again */
    }
}

int lb_http_server_start(uv_loop_t *loop, const lb_http_server_config *cfg, lb_http_handler handler,
                         void *data, lb_http_server **out)
{
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
    if (rc != 0) rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
    if (rc != 0) return rc;
    lb_http_server *s = LB_NEW(lb_http_server);
    s->loop = loop;
    s->cfg = *cfg;
    s->handler = handler;
    s->handler_data = data;
    s->paused = cfg->paused != 0;
    lb_metrics_declare_counter("leverbridge_http_connections_evicted_total",
                               "Connections closed at MAX_CONNECTIONS to make room.");
    lb_metric_add(refused_total(), 0); /* exported at 0 from the start */
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_method = on_method;
    s->settings.on_version = on_version;
    s->settings.on_chunk_header = on_chunk_header;
    s->settings.on_url = on_url;
    s->settings.on_url_complete = on_url_complete;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_field_complete = on_header_field_complete;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc != 0) {
        /* Nothing else is open: close the listener and free in its callback. */
        s->closing = 1;
        uv_close((uv_handle_t *)&s->listener, (uv_close_cb)lb_free);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    s->listening = 1;
    *out = s;
    return 0;
}

int lb_http_server_port(const lb_http_server *s)
{
    return s->port;
}

int lb_http_server_draining(const lb_http_server *s)
{
    return s->draining;
}

size_t lb_http_server_connections(const lb_http_server *s)
{
    return s->nconns - s->nclosing;
}

static void listener_closed_cb(uv_handle_t *h)
{
    lb_http_server *s = h->data;
    s->listening = 0;
    if (!maybe_closed(s)) maybe_drained(s);
}

static void stop_listening(lb_http_server *s)
{
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
}

static void maybe_drained(lb_http_server *s)
{
    if (s->draining && s->nconns == 0 && s->drain_cb != NULL) {
        void (*cb)(void *) = s->drain_cb;
        s->drain_cb = NULL;
        cb(s->drain_data);
    }
}

/* Frees the server once nothing is open; 1 when it did. */
static int maybe_closed(lb_http_server *s)
{
    if (!s->closing || s->nconns > 0 || s->listening) return 0;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;
    lb_free(s);
    if (cb != NULL) cb(data);
    return 1;
}

void lb_http_server_drain(lb_http_server *s, void (*cb)(void *data), void *data)
{
    s->draining = 1;
    s->drain_cb = cb;
    s->drain_data = data;
    stop_listening(s);
    for (lb_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->state == C_IDLE) conn_close(c);
    }
    maybe_drained(s);
}

void lb_http_server_close(lb_http_server *s, void (*cb)(void *data), void *data)
{
    s->closing = 1;
    s->close_cb = cb;
    s->close_data = data;
    s->drain_cb = NULL;
    stop_listening(s);
    for (lb_http_conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
    maybe_closed(s);
}
