/* JSON extraction: lb_json_parse on arbitrary bytes, then every getter on
 * every object of the result, checked against a walk of the tree, and a
 * round trip (generate with yajl, parse again, compare) that must give the
 * same tree. The error text must be one bounded line. */
#include "fuzz_common.h"

#include "core/alloc.h"
#include "core/error.h"
#include "json/json.h"

#include <string.h>

/* Keys tried on every object besides its own: absent ones must give NULL. */
static const char *const probe_keys[] = {"", "id", "data", "token", "signature", "triggeredAt"};

static int utf8_ok(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        unsigned char c = *u;
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            u++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (u[1] < lo || u[1] > hi) return 0;
        for (size_t i = 2; i < len; i++)
            if ((u[i] & 0xC0) != 0x80) return 0;
        u += len;
    }
    return 1;
}

/* The first member named key, by a plain walk. */
static yajl_val first(yajl_val obj, const char *key)
{
    for (size_t i = 0; i < obj->u.object.len; i++)
        if (strcmp(obj->u.object.keys[i], key) == 0) return obj->u.object.values[i];
    return NULL;
}

static void check_getters(yajl_val obj, const char *key)
{
    yajl_val want = first(obj, key);
    yajl_val v = lb_json_get(obj, key);
    LB_FUZZ_CHECK(v == want);
    const char *s = lb_json_get_str(obj, key);
    LB_FUZZ_CHECK(YAJL_IS_STRING(v) ? s == v->u.string : s == NULL);
    LB_FUZZ_CHECK(lb_json_get_obj(obj, key) == (YAJL_IS_OBJECT(v) ? v : NULL));
    LB_FUZZ_CHECK(lb_json_get_array(obj, key) == (YAJL_IS_ARRAY(v) ? v : NULL));

    int64_t i = 7;
    int rc = lb_json_get_int(obj, key, &i);
    if (v == NULL)
        LB_FUZZ_CHECK(rc == LB_ENOTFOUND && i == 7);
    else if (YAJL_IS_INTEGER(v))
        LB_FUZZ_CHECK(rc == 0 && i == (int64_t)v->u.number.i);
    else
        LB_FUZZ_CHECK(rc == LB_EINVAL && i == 7);

    int b = 7;
    rc = lb_json_get_bool(obj, key, &b);
    if (v == NULL)
        LB_FUZZ_CHECK(rc == LB_ENOTFOUND && b == 7);
    else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v))
        LB_FUZZ_CHECK(rc == 0 && b == (YAJL_IS_TRUE(v) ? 1 : 0));
    else
        LB_FUZZ_CHECK(rc == LB_EINVAL && b == 7);
}

/* Checks v and below; returns its depth in open arrays/objects. */
static size_t walk(yajl_val v)
{
    LB_FUZZ_CHECK(v != NULL);
    /* Getters on anything but an object give nothing. */
    if (!YAJL_IS_OBJECT(v)) {
        LB_FUZZ_CHECK(lb_json_get(v, "id") == NULL);
        LB_FUZZ_CHECK(lb_json_get_str(v, "id") == NULL);
    }
    if (YAJL_IS_STRING(v)) {
        LB_FUZZ_CHECK(utf8_ok(v->u.string));
        return 0;
    }
    size_t depth = 0;
    if (YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++) {
            LB_FUZZ_CHECK(utf8_ok(v->u.object.keys[i]));
            check_getters(v, v->u.object.keys[i]);
            size_t d = walk(v->u.object.values[i]);
            if (d > depth) depth = d;
        }
        for (size_t k = 0; k < sizeof(probe_keys) / sizeof(probe_keys[0]); k++)
            check_getters(v, probe_keys[k]);
        LB_FUZZ_CHECK(lb_json_get(v, NULL) == NULL);
        return depth + 1;
    }
    if (YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++) {
            size_t d = walk(v->u.array.values[i]);
            if (d > depth) depth = d;
        }
        return depth + 1;
    }
    if (YAJL_IS_NUMBER(v)) LB_FUZZ_CHECK(v->u.number.r != NULL && *v->u.number.r != '\0');
    return 0;
}

static void gen(yajl_gen g, yajl_val v)
{
    yajl_gen_status st = yajl_gen_status_ok;
    if (YAJL_IS_STRING(v)) {
        st = yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
    } else if (YAJL_IS_NUMBER(v)) {
        st = yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
    } else if (YAJL_IS_OBJECT(v)) {
        yajl_gen_map_open(g);
        for (size_t i = 0; i < v->u.object.len; i++) {
            const char *k = v->u.object.keys[i];
            st = yajl_gen_string(g, (const unsigned char *)k, strlen(k));
            LB_FUZZ_CHECK(st == yajl_gen_status_ok);
            gen(g, v->u.object.values[i]);
        }
        st = yajl_gen_map_close(g);
    } else if (YAJL_IS_ARRAY(v)) {
        yajl_gen_array_open(g);
        for (size_t i = 0; i < v->u.array.len; i++)
            gen(g, v->u.array.values[i]);
        st = yajl_gen_array_close(g);
    } else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)) {
        st = yajl_gen_bool(g, YAJL_IS_TRUE(v));
    } else {
        st = yajl_gen_null(g);
    }
    LB_FUZZ_CHECK(st == yajl_gen_status_ok);
}

static int same(yajl_val a, yajl_val b)
{
    if (a->type != b->type) return 0;
    if (YAJL_IS_STRING(a)) return strcmp(a->u.string, b->u.string) == 0;
    if (YAJL_IS_NUMBER(a))
        return strcmp(a->u.number.r, b->u.number.r) == 0 && a->u.number.flags == b->u.number.flags;
    if (YAJL_IS_OBJECT(a)) {
        if (a->u.object.len != b->u.object.len) return 0;
        for (size_t i = 0; i < a->u.object.len; i++)
            if (strcmp(a->u.object.keys[i], b->u.object.keys[i]) != 0 ||
                !same(a->u.object.values[i], b->u.object.values[i]))
                return 0;
        return 1;
    }
    if (YAJL_IS_ARRAY(a)) {
        if (a->u.array.len != b->u.array.len) return 0;
        for (size_t i = 0; i < a->u.array.len; i++)
            if (!same(a->u.array.values[i], b->u.array.values[i])) return 0;
        return 1;
    }
    return 1;
}

static void round_trip(yajl_val v)
{
    yajl_gen g = lb_json_gen_new();
    gen(g, v);
    const unsigned char *buf;
    size_t len;
    LB_FUZZ_CHECK(yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok);
    char err[128];
    yajl_val again = lb_json_parse((const char *)buf, len, err, sizeof(err));
    if (again == NULL) {
        fprintf(stderr, "regenerated text refused (%s): %.*s\n", err, (int)len, buf);
        abort();
    }
    LB_FUZZ_CHECK(same(v, again));
    yajl_tree_free(again);
    yajl_gen_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[64];
    memset(err, 'x', sizeof(err));
    yajl_val v = lb_json_parse((const char *)data, size, err, sizeof(err));
    size_t elen = strnlen(err, sizeof(err));
    LB_FUZZ_CHECK(elen < sizeof(err));
    LB_FUZZ_CHECK(strchr(err, '\n') == NULL && strchr(err, '\r') == NULL);
    if (v == NULL) {
        LB_FUZZ_CHECK(elen > 0);
        return 0;
    }
    LB_FUZZ_CHECK(elen == 0);
    LB_FUZZ_CHECK(walk(v) <= LB_JSON_MAX_DEPTH);
    round_trip(v);
    yajl_tree_free(v);
    return 0;
}
