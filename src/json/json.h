/* JSON helpers over yajl, with limits.
 *
 * Parsing: lb_json_parse() bounds the nesting depth and refuses comments
 * (yajl_tree_parse would accept them), NUL bytes and "\u0000" escapes (yajl's
 * strings are NUL-terminated, so either would make a value read differently
 * than it was sent) and ill-formed UTF-8 (yajl lets overlong forms and encoded
 * surrogates through), then builds a yajl tree from a NUL-terminated copy. The
 * input size is the caller's bound (max_body), checked before parsing.
 * Getters never fail loudly: a missing key or a wrong type gives NULL. With
 * duplicate keys, the first one wins (as in yajl_tree_get).
 *
 * Generation: yajl_gen used directly, plus the lb_json_kv_* shorthands for
 * "key": value pairs inside an open map. */
#ifndef LB_JSON_JSON_H
#define LB_JSON_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define LB_JSON_MAX_DEPTH 32

/* Parses buf[0..len) (no NUL needed). Returns the tree (free with
 * yajl_tree_free) or NULL with a short one-line reason in err ("nesting too
 * deep", "comments are not allowed", the first line of yajl's message, which
 * never quotes the input). More than LB_JSON_MAX_DEPTH open arrays/objects
 * at once is too deep. */
yajl_val lb_json_parse(const char *buf, size_t len, char *err, size_t errlen);

/* Object member lookup by key; NULL when obj is not an object or has no key. */
yajl_val lb_json_get(yajl_val obj, const char *key);
/* Typed getters: NULL / 0 when absent or of another type. */
const char *lb_json_get_str(yajl_val obj, const char *key);
yajl_val lb_json_get_obj(yajl_val obj, const char *key);
yajl_val lb_json_get_array(yajl_val obj, const char *key);
/* 0 and *out set when key holds an integer (no fraction, no exponent, fits
 * in int64_t); LB_ENOTFOUND when absent; LB_EINVAL when another type
 * (null included) or out of range. */
int lb_json_get_int(yajl_val obj, const char *key, int64_t *out);
/* Same contract for booleans. */
int lb_json_get_bool(yajl_val obj, const char *key, int *out);

/* A generator with the project's settings (UTF-8 validated, not beautified,
 * memory from lb_malloc). Free with yajl_gen_free. In the helpers below,
 * strings that are not valid UTF-8 get U+FFFD for each bad byte (never
 * dropped, which would desynchronise keys and values); non-finite doubles
 * become null. */
yajl_gen lb_json_gen_new(void);
void lb_json_kv_str(yajl_gen g, const char *key, const char *val); /* NULL -> null */
void lb_json_kv_strn(yajl_gen g, const char *key, const char *val, size_t len);
void lb_json_kv_int(yajl_gen g, const char *key, int64_t val);
void lb_json_kv_double(yajl_gen g, const char *key, double val);
void lb_json_kv_bool(yajl_gen g, const char *key, int val);
void lb_json_kv_null(yajl_gen g, const char *key);
void lb_json_key(yajl_gen g, const char *key);
void lb_json_str(yajl_gen g, const char *val);
/* Writes a parsed tree (depth bounded by lb_json_parse) into g. */
void lb_json_value(yajl_gen g, yajl_val v);
/* Time in ms since the epoch as RFC 3339 string; ms <= 0 -> null. */
void lb_json_kv_time(yajl_gen g, const char *key, int64_t ms);

#endif
