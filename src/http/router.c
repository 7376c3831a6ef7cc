#include "http/router.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "http/response.h"

#include <stdio.h>
#include <string.h>

#define MAX_SEGMENTS 12

typedef struct {
    const char *text; /* literal, or the parameter name for a {param} */
    size_t len;
    int is_param;
} segment;

typedef struct route {
    struct route *next;
    char *method;
    char *pattern; /* as registered: the metrics label */
    char *storage; /* segment texts point here */
    segment segs[MAX_SEGMENTS];
    int nsegs;
    lb_route_fn fn;
    void *data;
} route;

/* Owned by whoever calls lb_router_new; immutable once serving starts. */
struct lb_router {
    route *routes;
    route **tail;
    lb_route_guard guard; /* for lb_router_check, or NULL */
    void *guard_data;
};

lb_router *lb_router_new(void)
{
    lb_router *r = LB_NEW(lb_router);
    r->tail = &r->routes;
    return r;
}

void lb_router_free(lb_router *r)
{
    route *rt = r->routes;
    while (rt != NULL) {
        route *next = rt->next;
        lb_free(rt->method);
        lb_free(rt->pattern);
        lb_free(rt->storage);
        lb_free(rt);
        rt = next;
    }
    lb_free(r);
}

void lb_router_set_guard(lb_router *r, lb_route_guard fn, void *data)
{
    r->guard = fn;
    r->guard_data = data;
}

int lb_router_add(lb_router *r, const char *method, const char *pattern, lb_route_fn fn, void *data)
{
    if (pattern[0] != '/') return LB_EINVAL;
    route *rt = LB_NEW(route);
    rt->storage = lb_strdup(pattern);
    char *p = rt->storage + 1;
    int nparams = 0;
    while (*p != '\0') {
        if (rt->nsegs == MAX_SEGMENTS) goto bad;
        char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        segment *sg = &rt->segs[rt->nsegs++];
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            if (++nparams > LB_HTTP_MAX_PARAMS) goto bad;
            sg->is_param = 1;
            sg->text = p + 1;
            sg->len = len - 2;
            p[len - 1] = '\0';
        } else {
            sg->text = p;
            sg->len = len;
        }
        if (end == NULL) break;
        *end = '\0';
        p = end + 1;
    }
    rt->method = lb_strdup(method);
    rt->pattern = lb_strdup(pattern);
    rt->fn = fn;
    rt->data = data;
    *r->tail = rt;
    r->tail = &rt->next;
    return 0;
bad:
    lb_free(rt->storage);
    lb_free(rt);
    return LB_EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Splits path into segments in place of pointers; -1 when too many. */
static int split(const char *path, const char **segs, size_t *lens)
{
    int n = 0;
    const char *p = path;
    if (*p != '/') return -1;
    p++;
    for (;;) {
        if (n == MAX_SEGMENTS) return -1;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        segs[n] = p;
        lens[n] = len;
        n++;
        if (end == NULL) return n;
        p = end + 1;
    }
}

static int match(const route *rt, const char **segs, const size_t *lens, int n)
{
    if (rt->nsegs != n && !(rt->nsegs == 0 && n == 1 && lens[0] == 0)) return 0;
    for (int i = 0; i < rt->nsegs; i++) {
        const segment *sg = &rt->segs[i];
        if (sg->is_param) {
            if (lens[i] == 0) return 0;
        } else if (sg->len != lens[i] || memcmp(sg->text, segs[i], lens[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

/* Percent-decodes the route's parameters into the connection's param buffer. */
static int bind_params(const route *rt, lb_http_req *req, const char **segs, const size_t *lens,
                       char *buf, size_t size)
{
    size_t used = 0;
    req->nparams = 0;
    for (int i = 0; i < rt->nsegs; i++) {
        if (!rt->segs[i].is_param) continue;
        char *out = buf + used;
        size_t o = 0;
        for (size_t j = 0; j < lens[i]; j++) {
            char ch = segs[i][j];
            if (ch == '%') {
                int hi = j + 2 < lens[i] ? hexval(segs[i][j + 1]) : -1;
                int lo = hi >= 0 ? hexval(segs[i][j + 2]) : -1;
                if (lo < 0) return LB_EINVAL;
                ch = (char)(hi * 16 + lo);
                j += 2;
            }
            if (ch == '\0' || used + o + 1 >= size) return LB_EINVAL;
            out[o++] = ch;
        }
        out[o] = '\0';
        used += o + 1;
        lb_http_param *prm = &req->params[req->nparams++];
        prm->name = rt->segs[i].text;
        prm->value = out;
        prm->len = o;
    }
    return 0;
}

/* RFC 9110 9.3.2: HEAD is served wherever GET is, with the same status and
 * headers; lb_http_respond drops the body. */
static int method_matches(const route *rt, const lb_http_req *req)
{
    if (strcmp(rt->method, req->method_name) == 0) return 1;
    return strcmp(req->method_name, "HEAD") == 0 && strcmp(rt->method, "GET") == 0;
}

/* The route for req with its parameters bound, or NULL after answering 404
 * or 405. */
static route *find(lb_router *r, lb_http_req *req)
{
    const char *segs[MAX_SEGMENTS];
    size_t lens[MAX_SEGMENTS];
    int n = split(req->path, segs, lens);
    if (n < 0) {
        lb_http_respond_error(req, 404, "not_found", "No such route.", NULL);
        return NULL;
    }
    char allow[128];
    lb_strbuf ab;
    lb_strbuf_init_fixed(&ab, allow, sizeof(allow));
    for (route *rt = r->routes; rt != NULL; rt = rt->next) {
        if (!match(rt, segs, lens, n)) continue;
        if (!method_matches(rt, req)) {
            if (ab.len == 0)
                lb_strbuf_cat(&ab, "Allow: ");
            else
                lb_strbuf_cat(&ab, ", ");
            lb_strbuf_cat(&ab, rt->method);
            if (strcmp(rt->method, "GET") == 0) lb_strbuf_cat(&ab, ", HEAD");
            continue;
        }
        req->route = rt->pattern;
        if (bind_params(rt, req, segs, lens, req->pbuf, sizeof(req->pbuf)) != 0) {
            lb_http_respond_error(req, 404, "not_found", "No such resource.", NULL);
            return NULL;
        }
        return rt;
    }
    if (ab.len > 0) {
        char hdr[160];
        snprintf(hdr, sizeof(hdr), "%s\r\n", allow);
        lb_http_respond_error_ex(req, 405, "method_not_allowed",
                                 "This method is not allowed on this route.", NULL, hdr);
        return NULL;
    }
    lb_http_respond_error(req, 404, "not_found", "No such route.", NULL);
    return NULL;
}

void lb_router_dispatch(lb_http_req *req, void *router)
{
    route *rt = find(router, req);
    if (rt != NULL) rt->fn(req, rt->data);
}

int lb_router_check(lb_http_req *req, void *router)
{
    lb_router *r = router;
    if (find(r, req) == NULL) return 0;
    return r->guard != NULL ? r->guard(req, r->guard_data) : 1;
}
