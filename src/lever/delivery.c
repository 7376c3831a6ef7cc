/* Lever's webhook deliveries: parse, extract, verify. */
#include "lever/lever.h"

#include "crypto/crypto.h"
#include "json/json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* triggeredAt as Lever sent it: an integer (or a string of digits), kept as
 * its decimal text. */
static int triggered_text(yajl_val v, char *out, size_t size, int64_t *ms)
{
    const char *s = NULL;
    if (v != NULL && YAJL_IS_INTEGER(v))
        s = v->u.number.r;
    else if (v != NULL && YAJL_IS_STRING(v))
        s = v->u.string;
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= size || n > 18) return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    memcpy(out, s, n + 1);
    *ms = strtoll(s, NULL, 10);
    return 0;
}

lb_lever_delivery_result lb_lever_delivery_parse(const char *body, size_t len,
                                                 const char *signature_token, lb_lever_delivery *d,
                                                 const char **field)
{
    memset(d, 0, sizeof(*d));
    *field = NULL;
    char err[128];
    yajl_val v = lb_json_parse(body, len, err, sizeof(err));
    if (v == NULL || !YAJL_IS_OBJECT(v)) {
        if (v != NULL) yajl_tree_free(v);
        return LB_DELIVERY_NOT_JSON;
    }
    d->tree = v;
    d->token = lb_json_get_str(v, "token");
    d->signature = lb_json_get_str(v, "signature");
    d->event = lb_json_get_str(v, "event");
    if (d->token == NULL || *d->token == '\0' || strlen(d->token) > LB_LEVER_TOKEN_MAX)
        *field = "token";
    else if (triggered_text(lb_json_get(v, "triggeredAt"), d->triggered_at, sizeof(d->triggered_at),
                            &d->triggered_ms) != 0)
        *field = "triggeredAt";
    else if (d->signature == NULL)
        *field = "signature";
    else if (d->event == NULL || *d->event == '\0')
        *field = "event";
    if (*field != NULL) {
        yajl_tree_free(v);
        memset(d, 0, sizeof(*d));
        return LB_DELIVERY_MISSING;
    }
    if (signature_token == NULL ||
        !lb_lever_signature_ok(signature_token, strlen(signature_token), d->token, strlen(d->token),
                               d->triggered_at, strlen(d->triggered_at), d->signature,
                               strlen(d->signature))) {
        yajl_tree_free(v);
        memset(d, 0, sizeof(*d));
        return LB_DELIVERY_BAD_SIGNATURE;
    }
    d->data = lb_json_get(v, "data");
    d->opportunity_id = lb_json_get_str(d->data, "opportunityId");
    return LB_DELIVERY_OK;
}
