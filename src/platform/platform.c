/* The assessment platform's wire format: see platform.h. */
#include "platform/platform.h"

#include "core/alloc.h"
#include "core/error.h"
#include "json/json.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define PREFIX "whsec_"

/* ---- invitations ------------------------------------------------------------ */

void lb_platform_invite_call(lb_platform_call *c, const char *base, const char *token,
                             const char *key)
{
    size_t ulen = strlen(base);
    while (ulen > 0 && base[ulen - 1] == '/')
        ulen--;
    snprintf(c->url, sizeof(c->url), "%.*s/invitations", (int)ulen, base);
    size_t alen = strlen(token) + 32;
    c->auth = lb_malloc(alen);
    snprintf(c->auth, alen, "Authorization: Bearer %s", token);
    snprintf(c->idem, sizeof(c->idem), "Idempotency-Key: %s", key);
    c->headers[0] = c->auth;
    c->headers[1] = c->idem;
    c->headers[2] = "Content-Type: application/json";
    c->headers[3] = "Accept: application/json";
    c->headers[4] = NULL;
}

void lb_platform_call_clear(lb_platform_call *c)
{
    if (c->auth != NULL) {
        sodium_memzero(c->auth, strlen(c->auth));
        lb_free(c->auth);
        c->auth = NULL;
    }
}

char *lb_platform_invite_body(const char *tenant, const char *assessment, const char *name,
                              const char *email, const char *opportunity, const char *candidate,
                              const char *posting, size_t *len)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "tenant_id", tenant);
    lb_json_kv_str(g, "assessment", assessment);
    lb_json_key(g, "candidate");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "name", name ? name : "");
    lb_json_kv_str(g, "email", email);
    yajl_gen_map_close(g);
    lb_json_key(g, "lever");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "opportunity_id", opportunity);
    if (candidate != NULL) lb_json_kv_str(g, "candidate_id", candidate);
    if (posting != NULL) lb_json_kv_str(g, "posting_id", posting);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t n;
    yajl_gen_get_buf(g, &buf, &n);
    char *out = lb_strndup((const char *)buf, n);
    yajl_gen_free(g);
    *len = n;
    return out;
}

int lb_platform_invitation_parse(const char *body, size_t len, char **id, char **url)
{
    *id = *url = NULL;
    char err[64];
    yajl_val v = lb_json_parse(body, len, err, sizeof(err));
    const char *i = lb_json_get_str(v, "invitation_id");
    const char *u = lb_json_get_str(v, "url");
    int ok = i != NULL && *i != '\0' && u != NULL && *u != '\0';
    if (ok) {
        *id = lb_strdup(i);
        *url = lb_strdup(u);
    }
    if (v != NULL) yajl_tree_free(v);
    return ok ? 0 : LB_EPARSE;
}

void lb_platform_describe(int status, const char *error_text, const char *body, size_t len,
                          char *buf, size_t size)
{
    if (status == 0) {
        snprintf(buf, size, "platform unreachable: %s", error_text ? error_text : "no response");
        return;
    }
    char err[64];
    yajl_val v = lb_json_parse(body, len, err, sizeof(err));
    const char *msg = lb_json_get_str(lb_json_get_obj(v, "error"), "message");
    if (msg == NULL) msg = lb_json_get_str(v, "message");
    if (msg != NULL && *msg != '\0')
        snprintf(buf, size, "platform answered %d: %.400s", status, msg);
    else
        snprintf(buf, size, "platform answered %d", status);
    if (v != NULL) yajl_tree_free(v);
}

int lb_platform_transient(int status)
{
    return status == 0 || status >= 500 || status == 408 || status == 429;
}

/* ---- events ------------------------------------------------------------------ */

int lb_platform_secret_decode(const char *secret, uint8_t *key, size_t *len)
{
    size_t plen = strlen(PREFIX);
    if (secret == NULL || strncmp(secret, PREFIX, plen) != 0) return LB_EINVAL;
    const char *b64 = secret + plen;
    size_t n = strlen(b64);
    uint8_t buf[LB_PLATFORM_KEY_MAX + 4];
    size_t got = 0;
    const char *end = NULL;
    /* Standard base64, with or without its padding. */
    if (sodium_base642bin(buf, sizeof(buf), b64, n, NULL, &got, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + n) {
        if (sodium_base642bin(buf, sizeof(buf), b64, n, NULL, &got, &end,
                              sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0 ||
            end != b64 + n) {
            sodium_memzero(buf, sizeof(buf));
            return LB_EINVAL;
        }
    }
    if (got < LB_PLATFORM_KEY_MIN || got > LB_PLATFORM_KEY_MAX) {
        sodium_memzero(buf, sizeof(buf));
        return LB_EINVAL;
    }
    memcpy(key, buf, got);
    sodium_memzero(buf, sizeof(buf));
    *len = got;
    return 0;
}

void lb_platform_sign(const uint8_t *key, size_t keylen, const char *id, int64_t timestamp,
                      const char *body, size_t body_len, char out[LB_PLATFORM_SIG_SIZE])
{
    char ts[24];
    int tn = snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
    crypto_auth_hmacsha256_state st;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)id, strlen(id));
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)ts, (unsigned long long)tn);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)body, body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
    memcpy(out, "v1,", 3);
    sodium_bin2base64(out + 3, LB_PLATFORM_SIG_SIZE - 3, mac, sizeof(mac),
                      sodium_base64_VARIANT_ORIGINAL);
}
