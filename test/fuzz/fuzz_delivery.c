/* Lever webhook bodies: lb_lever_delivery_parse on arbitrary bytes with a
 * fixed signature token, checking its contract for every outcome. When the
 * only thing wrong is the signature, the body is re-signed (HMAC computed
 * here with lb_hmac_sha256, body rebuilt with yajl) and must then verify,
 * so the success path is fuzzed as well as the refusals. */
#include "fuzz_common.h"

#include "core/alloc.h"
#include "crypto/crypto.h"
#include "json/json.h"
#include "lever/lever.h"

#include <string.h>

#define FUZZ_KEY "fuzz-signature-token"

/* Writes v with the project's generator; members named `skip` are left out
 * of the top-level object. */
static void gen_val(yajl_gen g, yajl_val v, const char *skip)
{
    if (YAJL_IS_STRING(v)) {
        lb_json_str(g, v->u.string);
    } else if (YAJL_IS_NUMBER(v)) {
        yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
    } else if (YAJL_IS_OBJECT(v)) {
        yajl_gen_map_open(g);
        for (size_t i = 0; i < v->u.object.len; i++) {
            if (skip != NULL && strcmp(v->u.object.keys[i], skip) == 0) continue;
            lb_json_key(g, v->u.object.keys[i]);
            gen_val(g, v->u.object.values[i], NULL);
        }
        yajl_gen_map_close(g);
    } else if (YAJL_IS_ARRAY(v)) {
        yajl_gen_array_open(g);
        for (size_t i = 0; i < v->u.array.len; i++)
            gen_val(g, v->u.array.values[i], NULL);
        yajl_gen_array_close(g);
    } else if (YAJL_IS_TRUE(v)) {
        yajl_gen_bool(g, 1);
    } else if (YAJL_IS_FALSE(v)) {
        yajl_gen_bool(g, 0);
    } else {
        yajl_gen_null(g);
    }
}

/* The tree without any "signature", plus `sig` (if not NULL) as the
 * signature. lb_malloc'd, NUL-terminated. */
static char *rebuild(yajl_val tree, const char *sig, size_t *len)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    for (size_t i = 0; i < tree->u.object.len; i++) {
        if (strcmp(tree->u.object.keys[i], "signature") == 0) continue;
        lb_json_key(g, tree->u.object.keys[i]);
        gen_val(g, tree->u.object.values[i], NULL);
    }
    if (sig != NULL) lb_json_kv_str(g, "signature", sig);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t n;
    LB_FUZZ_CHECK(yajl_gen_get_buf(g, &buf, &n) == yajl_gen_status_ok);
    char *out = lb_strndup((const char *)buf, n);
    yajl_gen_free(g);
    *len = n;
    return out;
}

static void check_zeroed(const lb_lever_delivery *d)
{
    LB_FUZZ_CHECK(d->tree == NULL && d->token == NULL && d->signature == NULL && d->event == NULL &&
                  d->data == NULL && d->opportunity_id == NULL);
}

static void check_ok(const lb_lever_delivery *d, const char *key)
{
    LB_FUZZ_CHECK(d->tree != NULL && YAJL_IS_OBJECT(d->tree));
    LB_FUZZ_CHECK(d->token != NULL && *d->token != '\0');
    LB_FUZZ_CHECK(strlen(d->token) <= LB_LEVER_TOKEN_MAX);
    LB_FUZZ_CHECK(d->event != NULL && *d->event != '\0');
    LB_FUZZ_CHECK(d->signature != NULL);
    size_t talen = strnlen(d->triggered_at, sizeof(d->triggered_at));
    LB_FUZZ_CHECK(talen > 0 && talen < sizeof(d->triggered_at));
    LB_FUZZ_CHECK(strspn(d->triggered_at, "0123456789") == talen);
    LB_FUZZ_CHECK(d->triggered_ms >= 0 && d->triggered_ms == strtoll(d->triggered_at, NULL, 10));
    LB_FUZZ_CHECK(d->data == lb_json_get(d->tree, "data"));
    LB_FUZZ_CHECK(d->opportunity_id == lb_json_get_str(d->data, "opportunityId"));
    LB_FUZZ_CHECK(lb_lever_signature_ok(key, strlen(key), d->token, strlen(d->token),
                                        d->triggered_at, talen, d->signature,
                                        strlen(d->signature)) == 1);
}

/* The body was well-formed but not signed with FUZZ_KEY: sign it. */
static void resign(const uint8_t *data, size_t size)
{
    char err[128];
    yajl_val tree = lb_json_parse((const char *)data, size, err, sizeof(err));
    LB_FUZZ_CHECK(tree != NULL && YAJL_IS_OBJECT(tree));

    /* Regenerate once first: the generator may rewrite strings (bad UTF-8
     * becomes U+FFFD), and the signature must cover what will be sent. */
    size_t len1;
    char *body1 = rebuild(tree, NULL, &len1);
    yajl_tree_free(tree);
    yajl_val t1 = lb_json_parse(body1, len1, err, sizeof(err));
    lb_free(body1);
    LB_FUZZ_CHECK(t1 != NULL && YAJL_IS_OBJECT(t1));

    /* Fields as sent (spec: token || triggeredAt as decimal text). */
    const char *token = lb_json_get_str(t1, "token");
    yajl_val ta = lb_json_get(t1, "triggeredAt");
    const char *ta_text = NULL;
    if (YAJL_IS_INTEGER(ta))
        ta_text = ta->u.number.r;
    else if (YAJL_IS_STRING(ta))
        ta_text = ta->u.string;
    if (token == NULL || ta_text == NULL) {
        /* A rewritten string made the body invalid: nothing to sign. */
        yajl_tree_free(t1);
        return;
    }
    uint8_t mac[32];
    char *msg = lb_malloc(strlen(token) + strlen(ta_text) + 1);
    strcpy(msg, token);
    strcat(msg, ta_text);
    lb_hmac_sha256(FUZZ_KEY, strlen(FUZZ_KEY), msg, strlen(msg), mac);
    lb_free(msg);
    char hex[65];
    lb_hex_encode(mac, sizeof(mac), hex);

    size_t len2;
    char *body2 = rebuild(t1, hex, &len2);
    lb_lever_delivery d;
    const char *field = "unset";
    lb_lever_delivery_result r = lb_lever_delivery_parse(body2, len2, FUZZ_KEY, &d, &field);
    if (r == LB_DELIVERY_OK) {
        LB_FUZZ_CHECK(field == NULL);
        check_ok(&d, FUZZ_KEY);
        LB_FUZZ_CHECK(strcmp(d.token, token) == 0);
        LB_FUZZ_CHECK(strcmp(d.triggered_at, ta_text) == 0);
        LB_FUZZ_CHECK(strcmp(d.signature, hex) == 0);
        yajl_tree_free(d.tree);
    } else {
        /* Only a rewritten string may have turned a valid field invalid
         * (e.g. a token grown past the limit by U+FFFD); the signature
         * itself must never be the problem. */
        LB_FUZZ_CHECK(r == LB_DELIVERY_MISSING);
        check_zeroed(&d);
    }
    lb_free(body2);
    yajl_tree_free(t1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        LB_FUZZ_CHECK(lb_crypto_init() == 0);
        ready = 1;
    }
    lb_lever_delivery d;
    const char *field = "unset";
    lb_lever_delivery_result r =
        lb_lever_delivery_parse((const char *)data, size, FUZZ_KEY, &d, &field);
    switch (r) {
    case LB_DELIVERY_OK:
        LB_FUZZ_CHECK(field == NULL);
        check_ok(&d, FUZZ_KEY);
        yajl_tree_free(d.tree);
        break;
    case LB_DELIVERY_NOT_JSON: {
        LB_FUZZ_CHECK(field == NULL);
        check_zeroed(&d);
        char err[128];
        yajl_val v = lb_json_parse((const char *)data, size, err, sizeof(err));
        LB_FUZZ_CHECK(v == NULL || !YAJL_IS_OBJECT(v));
        if (v != NULL) yajl_tree_free(v);
        break;
    }
    case LB_DELIVERY_MISSING:
        LB_FUZZ_CHECK(field != NULL);
        LB_FUZZ_CHECK(strcmp(field, "token") == 0 || strcmp(field, "triggeredAt") == 0 ||
                      strcmp(field, "signature") == 0 || strcmp(field, "event") == 0);
        check_zeroed(&d);
        break;
    case LB_DELIVERY_BAD_SIGNATURE:
        LB_FUZZ_CHECK(field == NULL);
        check_zeroed(&d);
        /* A NULL signature token refuses the same body. */
        r = lb_lever_delivery_parse((const char *)data, size, NULL, &d, &field);
        LB_FUZZ_CHECK(r == LB_DELIVERY_BAD_SIGNATURE);
        resign(data, size);
        break;
    default:
        LB_FUZZ_CHECK(r == LB_DELIVERY_OK); /* an unknown result */
    }
    return 0;
}
