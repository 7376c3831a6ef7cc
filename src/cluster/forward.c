/* Forwarding to the lease holder: see forward.h and docs/internals/cluster.md. */
#include "cluster/forward.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "http/response.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MOD "cluster"
/* The most bytes of the holder's headers relayed (the server's response
 * head is 2 KiB in all). */
#define RELAY_HEADERS_MAX 1024

/* One request handed to the holder, or waiting for the lease. Owned by the
 * forwarder's list from start to answer. */
typedef struct fwd_req {
    lb_cluster_fwd *f;
    lb_http_req *req;
    lb_http_handler again;
    void *data;
    lb_cluster_fwd_fail fail;
    int took; /* the lease was asked for once already */
    char tenant[LB_TENANT_ID_MAX + 1];
    char holder[LB_NODE_ID_MAX + 1];
    lb_http_call *call; /* NULL while waiting for the lease */
    struct fwd_req *prev, *next;
} fwd_req;

struct lb_cluster_fwd {
    lb_cluster_fwd_config cfg;
    char *admin_token;
    fwd_req *reqs;
    size_t nreqs;
    int closed;
    lb_metric *m_ok, *m_error, *m_timeout;
};

/* req->ctx after a wait for the lease: ask no second time. */
static const char took_once = 0;

static void unlink_req(fwd_req *fr)
{
    lb_cluster_fwd *f = fr->f;
    if (fr->prev)
        fr->prev->next = fr->next;
    else
        f->reqs = fr->next;
    if (fr->next) fr->next->prev = fr->prev;
    f->nreqs--;
}

static fwd_req *req_new(lb_cluster_fwd *f, lb_http_req *req, const char *tenant,
                        lb_http_handler again, void *data, lb_cluster_fwd_fail fail)
{
    fwd_req *fr = LB_NEW(fwd_req);
    fr->f = f;
    fr->req = req;
    fr->again = again;
    fr->data = data;
    fr->fail = fail;
    snprintf(fr->tenant, sizeof(fr->tenant), "%s", tenant);
    fr->next = f->reqs;
    if (f->reqs) f->reqs->prev = fr;
    f->reqs = fr;
    f->nreqs++;
    return fr;
}

/* 503: the route's own answer (fail), or the JSON error. */
static void unavailable(lb_http_req *req, lb_cluster_fwd_fail fail, const char *msg)
{
    if (fail != NULL)
        fail(req, msg);
    else
        lb_http_respond_error(req, 503, "unavailable", msg, NULL);
}

/* The holder's headers worth relaying: those the routes' answers carry
 * (caching, retry hints, auth challenges, the pages' security headers),
 * not the framing ones, which this server writes itself. */
static int relayed(const char *line, size_t len)
{
    static const char *const names[] = {"cache-control",
                                        "retry-after",
                                        "www-authenticate",
                                        "location",
                                        "etag",
                                        "allow", /* the pages': */
                                        "content-security-policy",
                                        "x-content-type-options",
                                        "referrer-policy",
                                        "x-frame-options"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = strlen(names[i]);
        if (len > n && line[n] == ':' && strncasecmp(line, names[i], n) == 0) return 1;
    }
    return 0;
}

static void take_lease(fwd_req *fr);

static void forwarded_cb(const lb_http_response *res, void *data)
{
    fwd_req *fr = data;
    lb_cluster_fwd *f = fr->f;
    lb_http_req *req = fr->req;
    fr->call = NULL;
    if (res->status == 0) {
        int timeout = res->error == CURLE_OPERATION_TIMEDOUT;
        lb_metric_add(timeout ? f->m_timeout : f->m_error, 1);
        lb_warn(MOD, "tenant=%s: forward to %s failed: %s", fr->tenant, fr->holder,
                res->error_text ? res->error_text : "no answer");
        if (res->error == CURLE_COULDNT_CONNECT && !f->closed && !fr->took) {
            /* Nobody listens there: the holder is gone (stopped, or its
             * address is stale). Take the lease if it is free now; once
             * only (the next read may still show the dead holder). */
            take_lease(fr);
            return;
        }
        lb_cluster_fwd_fail fail = fr->fail;
        unlink_req(fr);
        lb_free(fr);
        unavailable(req, fail,
                    timeout ? "The replica holding this tenant's lease did not answer in "
                              "time; try again."
                            : "The replica holding this tenant's lease could not be "
                              "reached; try again.");
        return;
    }
    lb_metric_add(f->m_ok, 1);
    unlink_req(fr);
    lb_free(fr);
    char headers[RELAY_HEADERS_MAX + 1];
    size_t hl = 0;
    const char *p = res->headers, *end = res->headers + res->headers_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        if (relayed(p, len) && hl + len <= RELAY_HEADERS_MAX) {
            memcpy(headers + hl, p, len);
            hl += len;
        }
        p += len;
    }
    headers[hl] = '\0';
    char *body = lb_memdup(res->body, res->body_len);
    lb_http_respond(req, res->status, res->content_type, hl ? headers : NULL, body, res->body_len,
                    lb_free, body);
}

/* Sends req on to the holder at url. */
static void forward(fwd_req *fr, const char *url_base)
{
    lb_cluster_fwd *f = fr->f;
    lb_http_req *req = fr->req;
    lb_strbuf url;
    lb_strbuf_init(&url, LB_HTTP_MAX_URL + 2048);
    lb_strbuf_cat(&url, url_base);
    while (url.len > 0 && url.data[url.len - 1] == '/') /* the path has its own */
        url.data[--url.len] = '\0';
    lb_strbuf_cat(&url, req->path);
    if (req->query[0] != '\0') {
        lb_strbuf_cat(&url, "?");
        lb_strbuf_cat(&url, req->query);
    }
    char auth[512], by[sizeof(LB_CLUSTER_FORWARDED_BY) + LB_NODE_ID_MAX + 4], ctype[256];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", f->admin_token);
    snprintf(by, sizeof(by), "%s: %s", LB_CLUSTER_FORWARDED_BY, lb_cluster_node_id(f->cfg.cluster));
    const char *headers[4] = {auth, by, NULL, NULL};
    size_t clen = 0;
    const char *ct = lb_http_req_header(req, "content-type", &clen);
    if (ct != NULL && clen < sizeof(ctype) - 16) {
        snprintf(ctype, sizeof(ctype), "Content-Type: %.*s", (int)clen, ct);
        headers[2] = ctype;
    }
    /* HEAD is GET to the holder: this server drops the body itself. */
    int get = strcmp(req->method_name, "GET") == 0 || strcmp(req->method_name, "HEAD") == 0;
    lb_http_request r = {.method = get ? "GET" : req->method_name,
                         .url = url.data,
                         .headers = headers,
                         .body = get ? NULL : req->body,
                         .body_len = get ? 0 : req->body_len,
                         .timeout_ms = (long)f->cfg.timeout_ms,
                         .keep_headers = 1};
    int rc = url.failed ? LB_ETOOBIG
                        : lb_http_client_start(f->cfg.http, &r, forwarded_cb, fr, &fr->call);
    lb_strbuf_free(&url);
    if (rc != 0) {
        lb_metric_add(f->m_error, 1);
        lb_warn(MOD, "tenant=%s: cannot forward to %s: %s", fr->tenant, fr->holder,
                lb_strerror(rc));
        lb_cluster_fwd_fail fail = fr->fail;
        unlink_req(fr);
        lb_free(fr);
        unavailable(req, fail,
                    "The request could not be forwarded to the replica holding this "
                    "tenant's lease; try again.");
    }
    sodium_memzero(auth, sizeof(auth)); /* curl copied it */
}

/* The lease was asked for: the handler runs again (and is served here if
 * this node holds it now; else forwarded to whoever took it, or 503). */
static void lease_cb(void *data, int held)
{
    fwd_req *fr = data;
    lb_cluster_fwd *f = fr->f;
    lb_http_req *req = fr->req;
    unlink_req(fr);
    if (f->closed) {
        lb_cluster_fwd_fail fail = fr->fail;
        lb_free(fr);
        unavailable(req, fail, "The server is shutting down; try again.");
        return;
    }
    lb_debug(MOD, "tenant=%s: lease %s for a request", fr->tenant, held ? "taken" : "not taken");
    req->ctx = (void *)&took_once;
    lb_http_handler again = fr->again;
    void *again_data = fr->data;
    lb_free(fr);
    again(req, again_data);
}

static void take_lease(fwd_req *fr)
{
    lb_cluster_fwd *f = fr->f;
    int rc = lb_cluster_acquire(f->cfg.cluster, fr->tenant, lease_cb, fr);
    if (rc == 0) return;
    lb_http_req *req = fr->req;
    lb_cluster_fwd_fail fail = fr->fail;
    unlink_req(fr);
    lb_free(fr);
    unavailable(req, fail,
                rc == LB_ECLOSED ? "The server is shutting down; try again."
                                 : "No replica holds this tenant's lease now; try again.");
}

/* The live node other than this one that holds tenant's unexpired lease,
 * as last seen; NULL when there is none. */
static const lb_cluster_node *live_holder(lb_cluster *c, const char *tenant)
{
    lb_lease_rec l;
    if (!lb_cluster_lease(c, tenant, &l) || l.expired || l.node[0] == '\0') return NULL;
    if (strcmp(l.node, lb_cluster_node_id(c)) == 0) return NULL;
    size_t n = 0;
    const lb_cluster_node *nodes = lb_cluster_nodes(c, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(nodes[i].id, l.node) == 0)
            return nodes[i].advertise_url && nodes[i].advertise_url[0] ? &nodes[i] : NULL;
    return NULL; /* not seen alive within a TTL */
}

int lb_cluster_fwd_route(lb_cluster_fwd *f, lb_http_req *req, const char *tenant,
                         lb_http_handler again, void *data, lb_cluster_fwd_fail fail)
{
    int took = req->ctx == &took_once;
    if (f->closed) {
        unavailable(req, fail, "The server is shutting down; try again.");
        return 1;
    }
    lb_cluster *c = f->cfg.cluster;
    if (!lb_cluster_enabled(c) || lb_cluster_holds(c, tenant)) return 0;
    size_t len;
    if (lb_http_req_header(req, LB_CLUSTER_FORWARDED_BY, &len) != NULL) return 0; /* one hop */
    if (f->nreqs >= LB_CLUSTER_FWD_MAX) {
        unavailable(req, fail, "Too many requests wait for other replicas; try again.");
        return 1;
    }
    const lb_cluster_node *holder = live_holder(c, tenant);
    if (holder == NULL && took) {
        unavailable(req, fail, "No replica holds this tenant's lease now; try again.");
        return 1;
    }
    fwd_req *fr = req_new(f, req, tenant, again, data, fail);
    fr->took = took;
    if (holder == NULL) {
        take_lease(fr);
        return 1;
    }
    snprintf(fr->holder, sizeof(fr->holder), "%s", holder->id);
    lb_debug(MOD, "tenant=%s: %s %s forwarded to %s", tenant, req->method_name, req->path,
             holder->id);
    forward(fr, holder->advertise_url);
    return 1;
}

int lb_cluster_fwd_new(const lb_cluster_fwd_config *cfg, lb_cluster_fwd **out)
{
    if (cfg->cluster == NULL || cfg->http == NULL || cfg->admin_token == NULL ||
        cfg->timeout_ms <= 0)
        return LB_EINVAL;
    lb_cluster_fwd *f = LB_NEW(lb_cluster_fwd);
    f->cfg = *cfg;
    f->admin_token = lb_strdup(cfg->admin_token);
    static const char help[] =
        "Requests for a tenant forwarded to its lease holder, by what came back.";
    f->m_ok = lb_metrics_counter("leverbridge_forwarded_requests_total", help, "result=\"ok\"");
    f->m_error =
        lb_metrics_counter("leverbridge_forwarded_requests_total", help, "result=\"error\"");
    f->m_timeout =
        lb_metrics_counter("leverbridge_forwarded_requests_total", help, "result=\"timeout\"");
    *out = f;
    return 0;
}

void lb_cluster_fwd_close(lb_cluster_fwd *f)
{
    if (f == NULL || f->closed) return;
    f->closed = 1;
    fwd_req *fr = f->reqs;
    while (fr != NULL) {
        fwd_req *next = fr->next;
        if (fr->call != NULL) { /* the waiting ones are woken by the cluster's close */
            lb_http_call_cancel(fr->call);
            lb_http_req *req = fr->req;
            lb_cluster_fwd_fail fail = fr->fail;
            unlink_req(fr);
            lb_free(fr);
            unavailable(req, fail, "The server is shutting down; try again.");
        }
        fr = next;
    }
}

void lb_cluster_fwd_free(lb_cluster_fwd *f)
{
    if (f == NULL) return;
    while (f->reqs != NULL) { /* none once the cluster closed; for safety */
        fwd_req *fr = f->reqs;
        unlink_req(fr);
        lb_free(fr);
    }
    sodium_memzero(f->admin_token, strlen(f->admin_token));
    lb_free(f->admin_token);
    lb_free(f);
}
