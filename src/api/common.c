/* Helpers shared by the route files: admin auth, JSON bodies, queries. The
 * routes themselves are registered in routes.c. */
#include "api/api.h"

#include "http/response.h"
#include "json/json.h"

#include "core/error.h"
#include "core/time.h"
#include "state/links.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The bearer token of req, or NULL. */
static const char *bearer(lb_http_req *req, size_t *tlen)
{
    size_t len;
    const char *h = lb_http_req_header(req, "authorization", &len);
    if (h == NULL || len <= 7 || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    const char *tok = h + 7;
    *tlen = len - 7;
    while (*tlen > 0 && *tok == ' ') {
        tok++;
        (*tlen)--;
    }
    return tok;
}

static void unauthorized(lb_http_req *req, const char *msg)
{
    lb_http_respond_error_ex(req, 401, "unauthorized", msg, NULL, "WWW-Authenticate: Bearer\r\n");
}

int lb_api_require_admin(lb_api *api, lb_http_req *req)
{
    size_t tlen = 0;
    const char *tok = bearer(req, &tlen);
    if (tok != NULL && lb_secure_equal(tok, tlen, api->admin_token, strlen(api->admin_token)))
        return 1;
    unauthorized(req, "A valid admin token is required (Authorization: Bearer <token>).");
    return 0;
}

int lb_api_require_tenant(lb_api *api, lb_http_req *req, int flags)
{
    size_t tlen = 0;
    const char *tok = bearer(req, &tlen);
    if (tok != NULL && lb_secure_equal(tok, tlen, api->admin_token, strlen(api->admin_token)))
        return 1;
    char granted[LB_TENANT_ID_MAX + 1];
    int rc = tok != NULL ? lb_links_check(&api->links, api->tenants, tok, tlen, lb_time_now_ms(),
                                          granted, sizeof(granted), NULL)
                         : LB_EINVAL;
    if (rc == UV_ETIMEDOUT) {
        unauthorized(req, "This connect link has expired; ask for a new one.");
        return 0;
    }
    if (rc != 0) {
        unauthorized(req, "A valid admin token or connect link is required "
                          "(Authorization: Bearer <token>).");
        return 0;
    }
    const char *want = lb_http_req_param(req, "tenant");
    if (flags & LB_API_ADMIN_ONLY) {
        lb_http_respond_error(req, 403, "forbidden",
                              "A connect link cannot do this; it needs the admin token.", NULL);
        return 0;
    }
    if (want == NULL || strcmp(want, granted) != 0) {
        lb_http_respond_error(req, 403, "forbidden", "This connect link is for another tenant.",
                              "tenant");
        return 0;
    }
    return 1;
}

int lb_api_connect_grant_expiry(lb_api *api, lb_http_req *req, int64_t *expiry)
{
    size_t tlen = 0;
    const char *tok = bearer(req, &tlen);
    char tenant[LB_TENANT_ID_MAX + 1];
    return tok != NULL && lb_links_check(&api->links, api->tenants, tok, tlen, lb_time_now_ms(),
                                         tenant, sizeof(tenant), expiry) == 0;
}

void lb_api_connect_url(lb_api *api, const char *tenant, int64_t expiry, char *out, size_t size)
{
    const lb_tenant *t = lb_tenants_get(api->tenants, tenant);
    lb_tenant gone = {.created_at = -1}; /* a link that no longer verifies */
    if (t == NULL) {
        snprintf(gone.id, sizeof(gone.id), "%s", tenant);
        t = &gone;
    }
    char token[LB_LINK_TOKEN_MAX + 1];
    lb_links_token(&api->links, t, expiry, token);
    snprintf(out, size, "%s/connect/%s", api->cfg->public_url, token);
}

yajl_val lb_api_json_body(lb_http_req *req)
{
    size_t len;
    const char *ct = lb_http_req_header(req, "content-type", &len);
    if (ct == NULL || len < 16 || strncasecmp(ct, "application/json", 16) != 0 ||
        (len > 16 && ct[16] != ';' && ct[16] != ' ')) {
        lb_http_respond_error(req, 415, "unsupported_media_type",
                              "The body must be JSON (Content-Type: application/json).", NULL);
        return NULL;
    }
    if (req->body_len == 0) {
        lb_http_respond_error(req, 400, "invalid_json", "The request body is empty.", NULL);
        return NULL;
    }
    char err[256];
    yajl_val v = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    if (v == NULL) {
        char msg[320];
        snprintf(msg, sizeof(msg), "The body is not valid JSON: %s.", err);
        lb_http_respond_error(req, 400, "invalid_json", msg, NULL);
        return NULL;
    }
    if (!YAJL_IS_OBJECT(v)) {
        yajl_tree_free(v);
        lb_http_respond_error(req, 400, "invalid_json", "The body must be a JSON object.", NULL);
        return NULL;
    }
    return v;
}

static int hexv(int c)
{
    return isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10);
}

const char *lb_api_query(const lb_http_req *req, const char *name, char *buf, size_t size)
{
    size_t nlen = strlen(name);
    const char *p = req->query;
    while (*p != '\0') {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen >= nlen && strncmp(p, name, nlen) == 0 && (plen == nlen || p[nlen] == '=')) {
            const char *v = plen == nlen ? p + plen : p + nlen + 1;
            size_t vlen = plen == nlen ? 0 : plen - nlen - 1;
            size_t o = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (o + 1 >= size) return NULL;
                char c = v[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && i + 2 < vlen && isxdigit((unsigned char)v[i + 1]) &&
                           isxdigit((unsigned char)v[i + 2])) {
                    c = (char)(hexv((unsigned char)v[i + 1]) * 16 + hexv((unsigned char)v[i + 2]));
                    i += 2;
                }
                buf[o++] = c;
            }
            buf[o] = '\0';
            return buf;
        }
        if (end == NULL) break;
        p = end + 1;
    }
    return NULL;
}

int lb_api_page_params(lb_http_req *req, size_t *limit, char *buf, size_t size, const char **cursor)
{
    char tmp[32];
    const char *v = lb_api_query(req, "limit", tmp, sizeof(tmp));
    *limit = LB_API_LIMIT_DEFAULT;
    if (v != NULL) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || n < 1 || n > LB_API_LIMIT_MAX) {
            lb_http_respond_error(req, 400, "invalid_request",
                                  "limit must be an integer from 1 to 200.", "limit");
            return LB_EINVAL;
        }
        *limit = (size_t)n;
    }
    *cursor = lb_api_query(req, "cursor", buf, size);
    if (*cursor == NULL && strstr(req->query, "cursor=") != NULL) {
        lb_http_respond_error(req, 400, "invalid_request", "The cursor is not valid.", "cursor");
        return LB_EINVAL;
    }
    if (*cursor != NULL && **cursor == '\0') *cursor = NULL;
    return 0;
}
