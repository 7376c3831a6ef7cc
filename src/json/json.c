#include "json/json.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ----------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n) (no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */

    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
    }
    return len;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16) return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* buf[*i] is the 'u' of a "\uXXXX" escape. "\u0000" would be cut short in
 * yajl's NUL-terminated strings, and yajl turns lone or misordered
 * surrogates into ill-formed UTF-8 (or '?'), so a value could read
 * differently than sent: refuse them. Leaves *i on the last byte read. */
static const char *check_escape(const char *buf, size_t len, size_t *i)
{
    unsigned v, w;
    if (len - *i < 5 || hex4(buf + *i + 1, &v) != 0) return NULL; /* malformed: yajl reports it */
    *i += 4;
    if (v == 0) return "\\u0000 in a string is not allowed";
    if (v >= 0xDC00 && v <= 0xDFFF) return "a lone low surrogate escape is not allowed";
    if (v >= 0xD800 && v <= 0xDBFF) {
        if (len - *i < 7 || buf[*i + 1] != '\\' || buf[*i + 2] != 'u' ||
            hex4(buf + *i + 3, &w) != 0 || w < 0xDC00 || w > 0xDFFF)
            return "a high surrogate escape must be followed by a low one";
        *i += 6;
    }
    return NULL;
}

/* snprintf(err, errlen, "%s", msg) without the formatter: parses run per
 * request. */
static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err == NULL || errlen == 0) return;
    size_t n = strnlen(msg, errlen - 1);
    memcpy(err, msg, n);
    err[n] = '\0';
}

/* Walks the raw bytes once, tracking whether we are inside a string (and
 * after a backslash there), so that brackets and slashes inside strings do
 * not count. Returns NULL when the text may go to yajl, else the reason. */
static const char *prescan(const char *buf, size_t len)
{
    size_t depth = 0;
    int in_str = 0;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c == '\0') return "NUL byte in input"; /* yajl_tree_parse would stop there */
        if ((unsigned char)c >= 0x80) {
            /* yajl lets overlong forms and encoded surrogates through. */
            size_t l = utf8_seq((const unsigned char *)buf + i, len - i);
            if (l == 0) return "invalid UTF-8";
            i += l - 1;
            continue;
        }
        if (in_str) {
            if (c == '\\') {
                if (i + 1 >= len) return NULL; /* unterminated: yajl reports it */
                i++;
                if (buf[i] == 'u') {
                    const char *why = check_escape(buf, len, &i);
                    if (why != NULL) return why;
                }
            } else if (c == '"') {
                in_str = 0;
            }
            continue;
        }
        switch (c) {
        case '"':
            in_str = 1;
            break;
        case '[':
        case '{':
            if (++depth > LB_JSON_MAX_DEPTH) return "nesting too deep";
            break;
        case ']':
        case '}':
            if (depth > 0) depth--;
            break;
        case '/':
            return "comments are not allowed";
        default:
            break;
        }
    }
    return NULL;
}

yajl_val lb_json_parse(const char *buf, size_t len, char *err, size_t errlen)
{
    char ebuf[256];

    set_err(err, errlen, "");
    if (buf == NULL || len == (size_t)-1) {
        set_err(err, errlen, "no input");
        return NULL;
    }
    const char *why = prescan(buf, len);
    if (why != NULL) {
        set_err(err, errlen, why);
        return NULL;
    }

    char *copy = lb_strndup(buf, len);
    ebuf[0] = '\0';
    yajl_val v = yajl_tree_parse(copy, ebuf, sizeof(ebuf));
    lb_free(copy);
    if (v != NULL) return v;

    /* yajl's verbose message quotes the input on later lines: keep the
     * first line only, so that logs never carry request bytes. */
    ebuf[strcspn(ebuf, "\r\n")] = '\0';
    size_t n = strlen(ebuf);
    while (n > 0 && (ebuf[n - 1] == ' ' || ebuf[n - 1] == '.'))
        ebuf[--n] = '\0';
    set_err(err, errlen, n > 0 ? ebuf : "empty document");
    return NULL;
}

/* ---- getters ----------------------------------------------------------- */

yajl_val lb_json_get(yajl_val obj, const char *key)
{
    if (!YAJL_IS_OBJECT(obj) || key == NULL) return NULL;
    for (size_t i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) return obj->u.object.values[i];
    }
    return NULL;
}

const char *lb_json_get_str(yajl_val obj, const char *key)
{
    yajl_val v = lb_json_get(obj, key);
    return YAJL_IS_STRING(v) ? v->u.string : NULL;
}

yajl_val lb_json_get_obj(yajl_val obj, const char *key)
{
    yajl_val v = lb_json_get(obj, key);
    return YAJL_IS_OBJECT(v) ? v : NULL;
}

yajl_val lb_json_get_array(yajl_val obj, const char *key)
{
    yajl_val v = lb_json_get(obj, key);
    return YAJL_IS_ARRAY(v) ? v : NULL;
}

int lb_json_get_int(yajl_val obj, const char *key, int64_t *out)
{
    yajl_val v = lb_json_get(obj, key);
    if (v == NULL) return LB_ENOTFOUND;
    if (!YAJL_IS_INTEGER(v)) return LB_EINVAL;
    *out = (int64_t)v->u.number.i;
    return 0;
}

int lb_json_get_bool(yajl_val obj, const char *key, int *out)
{
    yajl_val v = lb_json_get(obj, key);
    if (v == NULL) return LB_ENOTFOUND;
    if (YAJL_IS_TRUE(v))
        *out = 1;
    else if (YAJL_IS_FALSE(v))
        *out = 0;
    else
        return LB_EINVAL;
    return 0;
}

/* ---- generation -------------------------------------------------------- */

static void *gen_malloc(void *ctx, size_t sz)
{
    return lb_malloc(sz);
}

static void *gen_realloc(void *ctx, void *p, size_t sz)
{
    return lb_realloc(p, sz);
}

static void gen_free(void *ctx, void *p)
{
    lb_free(p);
}

yajl_gen lb_json_gen_new(void)
{
    yajl_alloc_funcs af = {gen_malloc, gen_realloc, gen_free, NULL};
    yajl_gen g = yajl_gen_alloc(&af);
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    yajl_gen_config(g, yajl_gen_beautify, 0);
    return g;
}

/* Generates s[0..n) as a string; ill-formed UTF-8 is replaced by U+FFFD rather
 * than dropped, because a dropped key or value would shift every following
 * token into the wrong place of the enclosing map. */
static void gen_string(yajl_gen g, const char *s, size_t n)
{
    /* Our own check first: yajl's lets overlong forms, encoded surrogates and
     * code points above U+10FFFF through. */
    const unsigned char *p = (const unsigned char *)s;
    size_t k = 0;
    while (k < n) {
        size_t l = utf8_seq(p + k, n - k);
        if (l == 0) break;
        k += l;
    }
    if (k == n) {
        yajl_gen_string(g, p, n);
        return;
    }

    static const char rep[] = "\xEF\xBF\xBD";
    size_t cap = n * 3 + 1; /* each bad byte can become three */
    unsigned char *tmp = lb_malloc(cap);
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(u + i, n - i);
        if (l == 0) {
            memcpy(tmp + o, rep, 3);
            o += 3;
            i++;
        } else {
            memcpy(tmp + o, u + i, l);
            o += l;
            i += l;
        }
    }
    yajl_gen_string(g, tmp, o);
    lb_free(tmp);
}

void lb_json_key(yajl_gen g, const char *key)
{
    gen_string(g, key, strlen(key));
}

void lb_json_str(yajl_gen g, const char *val)
{
    if (val == NULL)
        yajl_gen_null(g);
    else
        gen_string(g, val, strlen(val));
}

void lb_json_kv_str(yajl_gen g, const char *key, const char *val)
{
    lb_json_key(g, key);
    lb_json_str(g, val);
}

void lb_json_kv_strn(yajl_gen g, const char *key, const char *val, size_t len)
{
    lb_json_key(g, key);
    if (val == NULL)
        yajl_gen_null(g);
    else
        gen_string(g, val, len);
}

void lb_json_kv_int(yajl_gen g, const char *key, int64_t val)
{
    lb_json_key(g, key);
    yajl_gen_integer(g, (long long)val);
}

void lb_json_kv_double(yajl_gen g, const char *key, double val)
{
    char num[40];

    lb_json_key(g, key);
    if (!isfinite(val)) {
        yajl_gen_null(g);
        return;
    }
    /* Shortest of %.15g..%.17g that reads back exactly (yajl's own %.20g
     * prints 0.1 as 0.10000000000000000555). */
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(num, sizeof(num), "%.*g", prec, val);
        if (strtod(num, NULL) == val) break;
    }
    yajl_gen_number(g, num, (size_t)n);
}

void lb_json_kv_bool(yajl_gen g, const char *key, int val)
{
    lb_json_key(g, key);
    yajl_gen_bool(g, val != 0);
}

void lb_json_kv_null(yajl_gen g, const char *key)
{
    lb_json_key(g, key);
    yajl_gen_null(g);
}

void lb_json_kv_time(yajl_gen g, const char *key, int64_t ms)
{
    lb_json_key(g, key);
    if (ms <= 0) {
        yajl_gen_null(g);
        return;
    }
    char ts[LB_TIME_STR_SIZE];
    lb_time_format(ms, ts);
    gen_string(g, ts, strlen(ts));
}

void lb_json_value(yajl_gen g, yajl_val v)
{
    if (v == NULL) {
        yajl_gen_null(g);
        return;
    }
    switch (v->type) {
    case yajl_t_string:
        lb_json_str(g, v->u.string);
        break;
    case yajl_t_number: {
        /* The number as it was written (yajl keeps the text). */
        const char *r = v->u.number.r;
        yajl_gen_number(g, r, strlen(r));
        break;
    }
    case yajl_t_object:
        yajl_gen_map_open(g);
        for (size_t i = 0; i < v->u.object.len; i++) {
            lb_json_key(g, v->u.object.keys[i]);
            lb_json_value(g, v->u.object.values[i]);
        }
        yajl_gen_map_close(g);
        break;
    case yajl_t_array:
        yajl_gen_array_open(g);
        for (size_t i = 0; i < v->u.array.len; i++)
            lb_json_value(g, v->u.array.values[i]);
        yajl_gen_array_close(g);
        break;
    case yajl_t_true:
        yajl_gen_bool(g, 1);
        break;
    case yajl_t_false:
        yajl_gen_bool(g, 0);
        break;
    default:
        yajl_gen_null(g);
        break;
    }
}
