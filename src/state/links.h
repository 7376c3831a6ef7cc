/* Connect links (api.md "Connect links and pages"): a grant for one tenant,
 * "<tenant>.<expiry ms>.<mac>", where mac is the URL-safe base64 (no
 * padding) of HMAC-SHA256 over "connect-link v1\n<tenant>\n<expiry>\n
 * <tenant created_at>" under a key derived from the master key (label
 * "leverbridge connect link v1"). Tenant ids are [A-Za-z0-9._-], so the whole
 * token is URL-safe; it is parsed from the right because ids may hold '.'.
 *
 * Nothing is stored: a link is valid until it expires, until the tenant is
 * deleted (a tenant created again under the same id has a new created_at,
 * so old links no longer verify), or until the master key changes. The MAC
 * is compared in constant time.
 *
 * Owner: whoever embeds lb_links (lb_api); no I/O, no allocation. */
#ifndef LB_STATE_LINKS_H
#define LB_STATE_LINKS_H

#include "crypto/crypto.h"
#include "state/tenants.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t key[32]; /* the links' MAC key, derived from the master key */
} lb_links;

/* The longest token lb_links_check accepts. */
#define LB_LINK_TOKEN_MAX (LB_TENANT_ID_MAX + 16 + 43 + 2)

void lb_links_init(lb_links *l, const lb_master_key *mk);

/* The token of the tenant's link that expires at `expiry` (ms): the same
 * token every time for the same tenant and expiry. out must hold
 * LB_LINK_TOKEN_MAX + 1 bytes. */
void lb_links_token(const lb_links *l, const lb_tenant *t, int64_t expiry,
                    char out[LB_LINK_TOKEN_MAX + 1]);

/* Checks a token (len bytes, not NUL-terminated) at time now_ms: 0 when it
 * is valid, with its tenant copied into tenant (size bytes) and its expiry
 * in *expiry (may be NULL); LB_EINVAL when it is not one issued for an
 * existing tenant of ts; UV_ETIMEDOUT when it expired (tenant is set).
 * Constant time in the MAC; an unknown tenant costs a MAC too. */
int lb_links_check(const lb_links *l, const lb_tenants *ts, const char *token, size_t len,
                   int64_t now_ms, char *tenant, size_t size, int64_t *expiry);

#endif
