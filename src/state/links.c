/* Connect links: minting and checking their tokens (links.h). */
#include "state/links.h"

#include "core/error.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define MAC_B64_LEN 43 /* base64url of 32 bytes, no padding */
#define EXPIRY_DIGITS_MAX 16

void lb_links_init(lb_links *l, const lb_master_key *mk)
{
    static const char label[] = "leverbridge connect link v1";
    lb_hmac_sha256(mk->key, sizeof(mk->key), label, sizeof(label) - 1, l->key);
}

static void link_mac(const lb_links *l, const char *tenant, size_t tlen, int64_t expiry,
                     int64_t created_at, char out[MAC_B64_LEN + 1])
{
    char msg[LB_TENANT_ID_MAX + 96];
    int n = snprintf(msg, sizeof(msg), "connect-link v1\n%.*s\n%lld\n%lld", (int)tlen, tenant,
                     (long long)expiry, (long long)created_at);
    uint8_t mac[32];
    lb_hmac_sha256(l->key, sizeof(l->key), msg, (size_t)n, mac);
    sodium_bin2base64(out, MAC_B64_LEN + 1, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(mac, sizeof(mac));
}

void lb_links_token(const lb_links *l, const lb_tenant *t, int64_t expiry,
                    char out[LB_LINK_TOKEN_MAX + 1])
{
    char mac[MAC_B64_LEN + 1];
    link_mac(l, t->id, strlen(t->id), expiry, t->created_at, mac);
    snprintf(out, LB_LINK_TOKEN_MAX + 1, "%s.%lld.%s", t->id, (long long)expiry, mac);
}

int lb_links_check(const lb_links *l, const lb_tenants *ts, const char *token, size_t len,
                   int64_t now_ms, char *tenant, size_t size, int64_t *expiry)
{
    /* <tenant>.<expiry>.<mac>: find the two last dots. */
    if (len < MAC_B64_LEN + 4 || len > LB_LINK_TOKEN_MAX) return LB_EINVAL;
    const char *mac = token + len - MAC_B64_LEN;
    if (mac[-1] != '.') return LB_EINVAL;
    const char *dot = mac - 1; /* before the mac */
    const char *e = dot;
    while (e > token && e[-1] != '.')
        e--;
    if (e == token || e == dot || dot - e > EXPIRY_DIGITS_MAX) return LB_EINVAL;
    int64_t exp = 0;
    for (const char *p = e; p < dot; p++) {
        if (*p < '0' || *p > '9') return LB_EINVAL;
        exp = exp * 10 + (*p - '0');
    }
    size_t tlen = (size_t)(e - 1 - token);
    if (tlen == 0 || tlen > LB_TENANT_ID_MAX || tlen >= size) return LB_EINVAL;
    memcpy(tenant, token, tlen);
    tenant[tlen] = '\0';
    const lb_tenant *t = lb_tenant_id_valid(tenant) ? lb_tenants_get(ts, tenant) : NULL;
    /* An unknown tenant still costs one MAC, so timing does not tell. */
    char want[MAC_B64_LEN + 1];
    link_mac(l, tenant, tlen, exp, t ? t->created_at : -1, want);
    int ok = lb_secure_equal(want, MAC_B64_LEN, mac, MAC_B64_LEN) && t != NULL;
    if (!ok) {
        tenant[0] = '\0';
        return LB_EINVAL;
    }
    if (expiry != NULL) *expiry = exp;
    if (exp <= now_ms) return UV_ETIMEDOUT;
    return 0;
}
