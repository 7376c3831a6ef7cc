/* Connect links (api.md "Connect links and pages").
 *
 * POST /v1/tenants/{tenant}/connect-links (admin) mints a grant for one
 * tenant: "<tenant>.<expiry ms>.<mac>", where mac is the URL-safe base64
 * (no padding) of HMAC-SHA256 over "connect-link v1\n<tenant>\n<expiry>\n
 * <tenant created_at>" under a key derived from the master key (label
 * "leverbridge connect link v1"). Tenant ids are [A-Za-z0-9._-], so the whole
 * token is URL-safe; it is parsed from the right because ids may hold '.'.
 *
 * Nothing is stored: a link is valid until it expires (at most 24 hours),
 * or until the tenant is deleted (a tenant created again under the same id
 * has a new created_at, so the old links no longer verify), or until the
 * master key changes. The MAC is compared in constant time. */
#include "api/api.h"

#include "core/error.h"
#include "core/time.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAC_B64_LEN 43 /* base64url of 32 bytes, no padding */
#define EXPIRY_DIGITS_MAX 16

/* The key of the links' MACs, derived once at registration. Loop thread. */
static uint8_t link_key[32];

static void link_mac(const char *tenant, size_t tlen, int64_t expiry, int64_t created_at,
                     char out[MAC_B64_LEN + 1])
{
    char msg[LB_TENANT_ID_MAX + 96];
    int n = snprintf(msg, sizeof(msg), "connect-link v1\n%.*s\n%lld\n%lld", (int)tlen, tenant,
                     (long long)expiry, (long long)created_at);
    uint8_t mac[32];
    lb_hmac_sha256(link_key, sizeof(link_key), msg, (size_t)n, mac);
    sodium_bin2base64(out, MAC_B64_LEN + 1, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(mac, sizeof(mac));
}

int lb_api_connect_check(lb_api *api, const char *token, size_t len, char *tenant, size_t size)
{
    /* <tenant>.<expiry>.<mac>: find the two last dots. */
    if (len < MAC_B64_LEN + 4 || len > LB_TENANT_ID_MAX + EXPIRY_DIGITS_MAX + MAC_B64_LEN + 2)
        return LB_EINVAL;
    const char *mac = token + len - MAC_B64_LEN;
    if (mac[-1] != '.') return LB_EINVAL;
    const char *dot = mac - 1; /* before the mac */
    const char *e = dot;
    while (e > token && e[-1] != '.')
        e--;
    if (e == token || e == dot || dot - e > EXPIRY_DIGITS_MAX) return LB_EINVAL;
    int64_t expiry = 0;
    for (const char *p = e; p < dot; p++) {
        if (*p < '0' || *p > '9') return LB_EINVAL;
        expiry = expiry * 10 + (*p - '0');
    }
    size_t tlen = (size_t)(e - 1 - token);
    if (tlen == 0 || tlen > LB_TENANT_ID_MAX || tlen >= size) return LB_EINVAL;
    memcpy(tenant, token, tlen);
    tenant[tlen] = '\0';
    const lb_tenant *t = lb_tenant_id_valid(tenant) ? lb_tenants_get(api->tenants, tenant) : NULL;
    /* An unknown tenant still costs one MAC, so timing does not tell. */
    char want[MAC_B64_LEN + 1];
    link_mac(tenant, tlen, expiry, t ? t->created_at : -1, want);
    int ok = lb_secure_equal(want, MAC_B64_LEN, mac, MAC_B64_LEN) && t != NULL;
    if (!ok) {
        tenant[0] = '\0';
        return LB_EINVAL;
    }
    if (expiry <= lb_time_now_ms()) return UV_ETIMEDOUT;
    return 0;
}

int lb_api_connect_grant_expiry(lb_api *api, lb_http_req *req, int64_t *expiry)
{
    size_t len;
    const char *h = lb_http_req_header(req, "authorization", &len);
    if (h == NULL || len <= 7 || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    const char *tok = h + 7;
    len -= 7;
    while (len > 0 && *tok == ' ') {
        tok++;
        len--;
    }
    char tenant[LB_TENANT_ID_MAX + 1];
    if (lb_api_connect_check(api, tok, len, tenant, sizeof(tenant)) != 0) return 0;
    /* valid, so well formed: <tenant>.<expiry>.<mac> */
    const char *dot = tok + len - MAC_B64_LEN - 1;
    const char *e = dot;
    while (e > tok && e[-1] != '.')
        e--;
    int64_t v = 0;
    for (const char *p = e; p < dot; p++)
        v = v * 10 + (*p - '0');
    *expiry = v;
    return 1;
}

void lb_api_connect_url(lb_api *api, const char *tenant, int64_t expiry, char *out, size_t size)
{
    const lb_tenant *t = lb_tenants_get(api->tenants, tenant);
    char mac[MAC_B64_LEN + 1];
    link_mac(tenant, strlen(tenant), expiry, t ? t->created_at : -1, mac);
    snprintf(out, size, "%s/connect/%s.%lld.%s", api->cfg->public_url, tenant, (long long)expiry,
             mac);
}

/* ---- POST /v1/tenants/{tenant}/connect-links ------------------------------------ */

static void link_create(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, LB_API_ADMIN_ONLY);
    if (t == NULL) return;
    int64_t ttl = LB_CONNECT_LINK_TTL_DEFAULT_MS;
    if (req->body_len > 0) {
        yajl_val body = lb_api_json_body(req);
        if (body == NULL) return;
        for (size_t i = 0; i < body->u.object.len; i++) {
            if (strcmp(body->u.object.keys[i], "expires_in") != 0) {
                lb_http_respond_error(req, 400, "invalid_request", "Unknown field.",
                                      body->u.object.keys[i]);
                yajl_tree_free(body);
                return;
            }
        }
        yajl_val v = lb_json_get(body, "expires_in");
        if (v != NULL && !YAJL_IS_NULL(v)) {
            int64_t ms = 0;
            if (!YAJL_IS_STRING(v) || lb_duration_parse(v->u.string, &ms) != 0 ||
                ms < LB_CONNECT_LINK_TTL_MIN_MS || ms > LB_CONNECT_LINK_TTL_MAX_MS) {
                lb_http_respond_error(req, 400, "invalid_request",
                                      "expires_in must be a duration from 1s to 24h, such as "
                                      "\"30m\" or \"1h\".",
                                      "expires_in");
                yajl_tree_free(body);
                return;
            }
            ttl = ms;
        }
        yajl_tree_free(body);
    }
    int64_t expiry = lb_time_now_ms() + ttl;
    char mac[MAC_B64_LEN + 1];
    size_t tlen = strlen(t->id);
    link_mac(t->id, tlen, expiry, t->created_at, mac);
    char url[1536];
    snprintf(url, sizeof(url), "%s/connect/%s.%lld.%s", api->cfg->public_url, t->id,
             (long long)expiry, mac);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "url", url);
    lb_json_kv_time(g, "expires_at", expiry);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 201, g);
}

void lb_api_connect_register(lb_api *api, lb_router *r)
{
    static const char label[] = "leverbridge connect link v1";
    lb_hmac_sha256(api->key->key, sizeof(api->key->key), label, sizeof(label) - 1, link_key);
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/connect-links", link_create, api);
}
