#include "http/client.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One watched socket; owned by curl's socket assignment, freed in close_cb. */
typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    lb_http_client *client;
    struct sock_ctx *prev, *next;
} sock_ctx;

/* One call; owned by the client from start to completion or cancel. */
struct lb_http_call {
    lb_http_call *prev, *next;
    lb_http_client *client;
    CURL *easy;
    struct curl_slist *headers;
    lb_http_call_cb cb;
    void *data;
    lb_strbuf body;
    char *retry_after;
    char *location;
    int keep_headers;
    lb_strbuf kept; /* keep_headers: the answer's header lines */
    char errbuf[CURL_ERROR_SIZE];
};

struct lb_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    lb_http_client_config cfg;
    char *user_agent;
    lb_http_call *calls;
    size_t inflight;
    sock_ctx *socks; /* polls not yet closing */
    int open_polls;  /* polls not yet freed */
    unsigned closing : 1;
    unsigned timer_closed : 1;
    void (*close_cb)(void *);
    void *close_data;
};

static void check_multi_info(lb_http_client *c);
static void maybe_freed(lb_http_client *c);

int lb_http_client_global_init(void)
{
    CURLcode rc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, lb_malloc, lb_free, lb_realloc,
                                       lb_strdup, lb_calloc);
    return rc == CURLE_OK ? 0 : LB_EIO;
}

void lb_http_client_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- curl <-> libuv ---------------------------------------------------- */

static void poll_close_cb(uv_handle_t *h)
{
    sock_ctx *s = h->data;
    lb_http_client *c = s->client;
    lb_free(s);
    c->open_polls--;
    maybe_freed(c);
}

static void sock_close(lb_http_client *c, sock_ctx *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, poll_close_cb);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    sock_ctx *s = p->data;
    lb_http_client *c = s->client;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_multi_info(c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
    lb_http_client *c = userp;
    sock_ctx *s = socketp;
    (void)easy;
    if (action == CURL_POLL_REMOVE) {
        if (s != NULL) {
            if (!c->closing) curl_multi_assign(c->multi, fd, NULL);
            sock_close(c, s);
        }
        return 0;
    }
    if (s == NULL) {
        s = LB_NEW(sock_ctx);
        s->fd = fd;
        s->client = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            lb_free(s);
            return -1;
        }
        s->poll.data = s;
        s->next = c->socks;
        if (c->socks) c->socks->prev = s;
        c->socks = s;
        c->open_polls++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT) events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT) events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

static void timer_cb(uv_timer_t *t)
{
    lb_http_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

/* curl asks for its timeout here; we only set the uv timer (never call curl
 * back from inside this callback). -1 stops it; 0 means the next iteration. */
static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    lb_http_client *c = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- calls ------------------------------------------------------------- */

static size_t write_fn(char *ptr, size_t size, size_t n, void *userdata)
{
    lb_http_call *call = userdata;
    size_t len = size * n;
    if (lb_strbuf_add(&call->body, ptr, len) != 0)
        return 0; /* too large: curl fails the transfer with CURLE_WRITE_ERROR */
    return len;
}

static char *header_value(const char *line, size_t len, const char *name)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
    const char *v = line + nl + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    return lb_strndup(v, (size_t)(end - v));
}

static size_t header_fn(char *ptr, size_t size, size_t n, void *userdata)
{
    lb_http_call *call = userdata;
    size_t len = size * n;
    char *v;
    if (len > 5 && strncmp(ptr, "HTTP/", 5) == 0) { /* a new response (after 100, redirects) */
        lb_free(call->retry_after);
        lb_free(call->location);
        call->retry_after = call->location = NULL;
        lb_strbuf_reset(&call->kept);
        return len;
    }
    if (call->keep_headers && len > 2 && memchr(ptr, ':', len) != NULL &&
        call->kept.len + len <= LB_HTTP_KEPT_HEADERS_MAX) {
        /* one line, its line end made CRLF */
        size_t keep = len;
        while (keep > 0 && (ptr[keep - 1] == '\r' || ptr[keep - 1] == '\n'))
            keep--;
        lb_strbuf_add(&call->kept, ptr, keep);
        lb_strbuf_cat(&call->kept, "\r\n");
    }
    if ((v = header_value(ptr, len, "retry-after")) != NULL) {
        lb_free(call->retry_after);
        call->retry_after = v;
    } else if ((v = header_value(ptr, len, "location")) != NULL) {
        lb_free(call->location);
        call->location = v;
    }
    return len;
}

static void call_unlink(lb_http_call *call)
{
    lb_http_client *c = call->client;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    c->inflight--;
}

static void call_destroy(lb_http_call *call)
{
    if (call->client->multi != NULL) curl_multi_remove_handle(call->client->multi, call->easy);
    curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->headers);
    lb_strbuf_free(&call->body);
    lb_free(call->retry_after);
    lb_free(call->location);
    lb_strbuf_free(&call->kept);
    lb_free(call);
}

/* Failures of TLS setup on this side or of the peer's certificate: the same
 * call fails the same way until someone installs a CA bundle or fixes the
 * certificate. A handshake cut short (CURLE_SSL_CONNECT_ERROR) is not here:
 * that is often a reset, and retrying helps. */
static int tls_setup_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return 1;
    default:
        return 0;
    }
}

/* Drains every finished transfer; run after every curl_multi_socket_action. */
static void check_multi_info(lb_http_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) continue;
        lb_http_call *call;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        CURLcode rc = msg->data.result;
        lb_http_response res = {0};
        long status = 0;
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(call->easy, CURLINFO_TOTAL_TIME, &res.seconds);
        res.error = (int)rc;
        res.tls_setup = tls_setup_error(rc);
        if (rc != CURLE_OK) {
            res.error_text = call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc);
            if (rc == CURLE_WRITE_ERROR && call->body.failed) res.error_text = "response too large";
            status = 0;
        }
        res.status = (int)status;
        res.body = call->body.len ? call->body.data : "";
        res.body_len = call->body.len;
        res.retry_after = call->retry_after;
        res.location = call->location;
        char *ct = NULL;
        if (rc == CURLE_OK) curl_easy_getinfo(call->easy, CURLINFO_CONTENT_TYPE, &ct);
        res.content_type = ct;
        res.headers = call->kept.len ? call->kept.data : "";
        res.headers_len = call->kept.len;
        /* Detached before the callback, which may start calls or even close
         * the client. */
        call_unlink(call);
        curl_multi_remove_handle(c->multi, call->easy);
        call->cb(&res, call->data);
        call_destroy(call);
        if (c->closing) return;
    }
}

int lb_http_client_start(lb_http_client *c, const lb_http_request *req, lb_http_call_cb cb,
                         void *data, lb_http_call **out)
{
    if (c->closing) return LB_ECLOSED;
    if (req->url == NULL || req->method == NULL || cb == NULL) return LB_EINVAL;
    if (c->inflight >= (size_t)c->cfg.max_inflight) return LB_ETOOBIG;
    lb_http_call *call = LB_NEW(lb_http_call);
    call->client = c;
    call->cb = cb;
    call->data = data;
    lb_strbuf_init(&call->body, c->cfg.max_response);
    lb_strbuf_init(&call->kept, LB_HTTP_KEPT_HEADERS_MAX + 2);
    call->keep_headers = req->keep_headers;
    CURL *e = call->easy = curl_easy_init();
    if (e == NULL) {
        lb_free(call);
        return LB_EIO;
    }
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms ? req->timeout_ms : c->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    if (req->userpwd != NULL) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERPWD, req->userpwd);
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    call->headers = curl_slist_append(NULL, "Expect:");
    for (const char *const *h = req->headers; h != NULL && *h != NULL; h++)
        call->headers = curl_slist_append(call->headers, *h);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);
    if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(req->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
        if (req->body != NULL || strcmp(req->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
        }
    }
    call->next = c->calls;
    if (c->calls) c->calls->prev = call;
    c->calls = call;
    c->inflight++;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        call_unlink(call);
        call_destroy(call);
        return LB_EIO;
    }
    if (out != NULL) *out = call;
    return 0;
}

void lb_http_call_cancel(lb_http_call *call)
{
    call_unlink(call);
    call_destroy(call);
}

size_t lb_http_client_inflight(const lb_http_client *c)
{
    return c->inflight;
}

int lb_http_client_has_room(const lb_http_client *c)
{
    return !c->closing && c->inflight < (size_t)c->cfg.max_inflight;
}

int lb_http_client_new(uv_loop_t *loop, const lb_http_client_config *cfg, lb_http_client **out)
{
    lb_http_client *c = LB_NEW(lb_http_client);
    c->loop = loop;
    c->cfg = *cfg;
    if (c->cfg.max_inflight <= 0) c->cfg.max_inflight = 256;
    if (c->cfg.connect_timeout_ms <= 0) c->cfg.connect_timeout_ms = 5000;
    if (c->cfg.timeout_ms <= 0) c->cfg.timeout_ms = 30000;
    if (c->cfg.max_response == 0) c->cfg.max_response = 1024 * 1024;
    c->user_agent =
        lb_strdup(cfg->user_agent != NULL ? cfg->user_agent : "leverbridge/" LB_VERSION);
    c->cfg.user_agent = c->user_agent;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        lb_free(c->user_agent);
        lb_free(c);
        return LB_EIO;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->cfg.max_inflight);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    *out = c;
    return 0;
}

static void timer_close_cb(uv_handle_t *h)
{
    lb_http_client *c = h->data;
    c->timer_closed = 1;
    maybe_freed(c);
}

static void maybe_freed(lb_http_client *c)
{
    if (!c->closing || !c->timer_closed || c->open_polls > 0) return;
    void (*cb)(void *) = c->close_cb;
    void *data = c->close_data;
    lb_free(c->user_agent);
    lb_free(c);
    if (cb != NULL) cb(data);
}

void lb_http_client_close(lb_http_client *c, void (*cb)(void *data), void *data)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_data = data;
    while (c->calls != NULL) {
        lb_http_call *call = c->calls;
        call_unlink(call);
        call_destroy(call);
    }
    /* Cleaning up the multi handle closes its connections; it may or may not
     * report CURL_POLL_REMOVE for each socket, so close what is left. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks != NULL)
        sock_close(c, c->socks);
    uv_close((uv_handle_t *)&c->timer, timer_close_cb);
}

int lb_http_retry_after_ms(const char *value, int64_t now_ms, int64_t *ms)
{
    if (value == NULL || *value == '\0') return LB_EPARSE;
    if (isdigit((unsigned char)*value)) {
        char *end;
        long long secs = strtoll(value, &end, 10);
        while (isspace((unsigned char)*end))
            end++;
        if (*end != '\0' || secs < 0 || secs > 100000000) return LB_EPARSE;
        *ms = secs * 1000;
        return 0;
    }
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1) return LB_EPARSE;
    int64_t d = (int64_t)t * 1000 - now_ms;
    *ms = d > 0 ? d : 0;
    return 0;
}
