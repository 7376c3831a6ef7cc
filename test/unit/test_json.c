#include "core/alloc.h"
#include "core/error.h"
#include "json/json.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static yajl_val parse(const char *s, char *err, size_t errlen)
{
    return lb_json_parse(s, strlen(s), err, errlen);
}

/* Expects s to be refused with a one-line reason containing want (if any). */
static void refused(const char *s, size_t len, const char *want)
{
    char err[128];
    memset(err, 'x', sizeof(err));
    yajl_val v = lb_json_parse(s, len, err, sizeof(err));
    if (v != NULL) fail_msg("accepted: %.*s", (int)len, s);
    assert_true(strlen(err) > 0);
    assert_true(strlen(err) < sizeof(err));
    assert_null(strchr(err, '\n'));
    if (want != NULL && strstr(err, want) == NULL) fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void accepted(const char *s)
{
    char err[128];
    yajl_val v = parse(s, err, sizeof(err));
    if (v == NULL) fail_msg("refused (%s): %s", err, s);
    yajl_tree_free(v);
}

static char *nested(size_t depth, char open, char close)
{
    char *s = lb_malloc(2 * depth + 1);
    memset(s, open, depth);
    memset(s + depth, close, depth);
    s[2 * depth] = '\0';
    return s;
}

/* ---- parsing limits ---------------------------------------------------- */

static void test_depth_limit(void **state)
{
    char *s = nested(LB_JSON_MAX_DEPTH, '[', ']');
    accepted(s);
    lb_free(s);
    s = nested(LB_JSON_MAX_DEPTH + 1, '[', ']');
    refused(s, strlen(s), "nesting too deep");
    lb_free(s);
    /* Deep enough to overflow a recursive free, refused before yajl. */
    s = nested(100000, '[', ']');
    refused(s, strlen(s), "nesting too deep");
    lb_free(s);
    /* Unclosed: refused on the opening brackets alone. */
    s = nested(LB_JSON_MAX_DEPTH + 1, '[', ']');
    refused(s, LB_JSON_MAX_DEPTH + 1, "nesting too deep");
    lb_free(s);

    /* Objects count too, mixed with arrays. */
    char buf[1024] = "";
    size_t n = 0;
    for (int i = 0; i < LB_JSON_MAX_DEPTH; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, i % 2 ? "[" : "{\"k\":");
    /* buf now opens 32 containers; the innermost is an array (i = 31). */
    strcat(buf, "1");
    for (int i = LB_JSON_MAX_DEPTH - 1; i >= 0; i--)
        strcat(buf, i % 2 ? "]" : "}");
    accepted(buf);
    char deeper[1100];
    snprintf(deeper, sizeof(deeper), "{\"x\":%s}", buf);
    refused(deeper, strlen(deeper), "nesting too deep");

    /* Sequential containers do not add up. */
    char wide[4096] = "[";
    for (int i = 0; i < 200; i++)
        strcat(wide, i ? ",[[[]]]" : "[[[]]]");
    strcat(wide, "]");
    accepted(wide);

    /* Brackets inside strings do not count, escaped quotes included. */
    char str[1024] = "{\"a\":\"";
    for (int i = 0; i < 100; i++)
        strcat(str, "[{");
    strcat(str, "\\\"[[[[\\\\\"}");
    accepted(str);
}

static void test_comments_refused(void **state)
{
    static const char *bad[] = {
        "{\"a\":1 /* c */}",
        "// x\n{}",
        "{\"a\":1}// trailing",
        "[1,/**/2]",
        "{\"a\":\"\\\\\"/}", /* the string ends at the second quote */
        "/",
    };
    for (size_t i = 0; i < LB_COUNTOF(bad); i++)
        refused(bad[i], strlen(bad[i]), "comments are not allowed");

    /* Slashes inside strings are data. */
    accepted("{\"url\":\"http://example.com/a/b\"}");
    accepted("{\"a\":\"\\\"/*\\\"\"}");
    accepted("[\"\\/\"]");
    char err[64];
    yajl_val v = parse("{\"u\":\"a//b/*c*/\"}", err, sizeof(err));
    assert_non_null(v);
    assert_string_equal(lb_json_get_str(v, "u"), "a//b/*c*/");
    yajl_tree_free(v);
}

static void test_nul_refused(void **state)
{
    /* A raw NUL would end yajl's copy early and hide what follows. */
    refused("{\"a\":1}\0garbage", 15, "NUL");
    refused("{\"a\":\"x\0y\"}", 11, "NUL");
    refused("{\"a\":\"ab\\u0000cd\"}", 18, "u0000");
    /* An escaped backslash followed by u0000 is plain text. */
    char err[64];
    yajl_val v = parse("{\"a\":\"\\\\u0000\"}", err, sizeof(err));
    assert_non_null(v);
    assert_string_equal(lb_json_get_str(v, "a"), "\\u0000");
    yajl_tree_free(v);
    /* Other control escapes are fine. */
    v = parse("{\"a\":\"\\u0001\\n\"}", err, sizeof(err));
    assert_non_null(v);
    assert_string_equal(lb_json_get_str(v, "a"), "\x01\n");
    yajl_tree_free(v);
}

static void test_garbage_refused(void **state)
{
    static const char *bad[] = {
        "",
        "   ",
        "{",
        "}",
        "[1,]",
        "{\"a\":}",
        "{'a':1}",
        "{\"a\":1}x",
        "{\"a\":1}{}",
        "nul",
        "tru",
        "01",
        "1.",
        "-",
        "\"unterminated",
        "{\"a\" 1}",
        "[1 2]",
        "{\"a\":1,}",
        "\"\\x\"",
        "\"tab\there\"",
        "NaN",
        "[Infinity]",
        "\"\xff\"",             /* invalid UTF-8 */
        "\"\xc0\xaf\"",         /* overlong '/' */
        "{\"\xe2\x82\":1}",     /* truncated sequence in a key */
        "\"\xed\xa0\x80\"",     /* UTF-16 surrogate encoded */
        "\"\xf4\x90\x80\x80\"", /* above U+10FFFF */
        "[\"a\",\xc3\xa9]",     /* non-ASCII outside a string */
    };
    for (size_t i = 0; i < LB_COUNTOF(bad); i++) {
        char err[128] = "";
        yajl_val v = parse(bad[i], err, sizeof(err));
        if (v != NULL) {
            yajl_tree_free(v);
            fail_msg("accepted #%zu: %s", i, bad[i]);
        }
        assert_true(strlen(err) > 0);
        assert_null(strchr(err, '\n'));
    }
    char uerr[64];
    assert_null(parse("{\"a\":\"\xc0\xaf\"}", uerr, sizeof(uerr)));
    assert_string_equal(uerr, "invalid UTF-8");

    /* The error never quotes the input. */
    char err[256];
    assert_null(parse("{\"secret\":\"hunter2\" garbage}", err, sizeof(err)));
    assert_null(strstr(err, "hunter2"));
    assert_null(strstr(err, "garbage"));

    /* Tiny and absent error buffers are safe. */
    char tiny[4];
    assert_null(parse("{", tiny, sizeof(tiny)));
    assert_true(strlen(tiny) < sizeof(tiny));
    assert_null(parse("{", NULL, 0));
    assert_null(lb_json_parse(NULL, 0, err, sizeof(err)));

    /* Input need not be NUL-terminated: only len bytes are read. */
    const char buf[] = {'[', '1', ']', ']', ']'};
    yajl_val v = lb_json_parse(buf, 3, err, sizeof(err));
    assert_non_null(v);
    assert_true(YAJL_IS_ARRAY(v));
    yajl_tree_free(v);
}

/* ---- getters and types ------------------------------------------------- */

static const char doc[] =
    "{\"s\":\"hello\",\"e\":\"\",\"u\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00\","
    "\"i\":42,\"neg\":-7,\"zero\":0,\"f\":1.5,\"exp\":1e3,\"t\":true,\"fa\":false,\"n\":null,"
    "\"o\":{\"inner\":\"x\"},\"a\":[1,\"two\",null],\"dup\":1,\"dup\":2,"
    "\"max\":9223372036854775807,\"min1\":-9223372036854775807,"
    "\"big\":9223372036854775808,\"huge\":123456789012345678901234567890,"
    "\"inf\":1e400,\"tiny\":1e-400}";

static int doc_setup(void **state)
{
    char err[128];
    *state = lb_json_parse(doc, strlen(doc), err, sizeof(err));
    return *state == NULL ? -1 : 0;
}

static int doc_teardown(void **state)
{
    yajl_tree_free(*state);
    return 0;
}

static void test_getters(void **state)
{
    yajl_val v = *state;
    int64_t i = -1;
    int b = -1;

    assert_true(YAJL_IS_OBJECT(v));
    assert_string_equal(lb_json_get_str(v, "s"), "hello");
    assert_string_equal(lb_json_get_str(v, "e"), "");
    assert_string_equal(lb_json_get_str(v, "u"), "caf\xc3\xa9 \xc3\xa9 \xf0\x9f\x98\x80");
    assert_null(lb_json_get_str(v, "i"));
    assert_null(lb_json_get_str(v, "n"));
    assert_null(lb_json_get_str(v, "missing"));
    assert_null(lb_json_get_str(v, "S")); /* keys are case-sensitive */

    assert_int_equal(lb_json_get_int(v, "i", &i), 0);
    assert_int_equal(i, 42);
    assert_int_equal(lb_json_get_int(v, "neg", &i), 0);
    assert_int_equal(i, -7);
    assert_int_equal(lb_json_get_int(v, "zero", &i), 0);
    assert_int_equal(i, 0);
    i = 99;
    assert_int_equal(lb_json_get_int(v, "missing", &i), LB_ENOTFOUND);
    assert_int_equal(lb_json_get_int(v, "f", &i), LB_EINVAL);
    assert_int_equal(lb_json_get_int(v, "exp", &i), LB_EINVAL);
    assert_int_equal(lb_json_get_int(v, "s", &i), LB_EINVAL);
    assert_int_equal(lb_json_get_int(v, "n", &i), LB_EINVAL);
    assert_int_equal(lb_json_get_int(v, "t", &i), LB_EINVAL);
    assert_int_equal(i, 99); /* untouched on failure */

    assert_int_equal(lb_json_get_bool(v, "t", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(lb_json_get_bool(v, "fa", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(lb_json_get_bool(v, "missing", &b), LB_ENOTFOUND);
    assert_int_equal(lb_json_get_bool(v, "i", &b), LB_EINVAL);
    assert_int_equal(lb_json_get_bool(v, "n", &b), LB_EINVAL);
    assert_int_equal(lb_json_get_bool(v, "s", &b), LB_EINVAL);

    yajl_val o = lb_json_get_obj(v, "o");
    assert_non_null(o);
    assert_string_equal(lb_json_get_str(o, "inner"), "x");
    assert_null(lb_json_get_obj(v, "a"));
    assert_null(lb_json_get_obj(v, "missing"));
    yajl_val a = lb_json_get_array(v, "a");
    assert_non_null(a);
    assert_int_equal(a->u.array.len, 3);
    assert_true(YAJL_IS_INTEGER(a->u.array.values[0]));
    assert_true(YAJL_IS_STRING(a->u.array.values[1]));
    assert_true(YAJL_IS_NULL(a->u.array.values[2]));
    assert_null(lb_json_get_array(v, "o"));

    /* lb_json_get on non-objects and with NULLs. */
    assert_null(lb_json_get(a, "0"));
    assert_null(lb_json_get(NULL, "s"));
    assert_null(lb_json_get(v, NULL));
    assert_null(lb_json_get_str(NULL, "s"));
    assert_int_equal(lb_json_get_int(NULL, "i", &i), LB_ENOTFOUND);
    assert_non_null(lb_json_get(v, "n"));
    assert_true(YAJL_IS_NULL(lb_json_get(v, "n")));

    /* Duplicate keys: the first wins. */
    assert_int_equal(lb_json_get_int(v, "dup", &i), 0);
    assert_int_equal(i, 1);
}

static void test_big_numbers(void **state)
{
    yajl_val v = *state;
    int64_t i = 0;

    assert_int_equal(lb_json_get_int(v, "max", &i), 0);
    assert_true(i == INT64_MAX);
    assert_int_equal(lb_json_get_int(v, "min1", &i), 0);
    assert_true(i == -INT64_MAX);

    /* Out of int64 range: still a number, not an integer; the text stays. */
    yajl_val big = lb_json_get(v, "big");
    assert_true(YAJL_IS_NUMBER(big));
    assert_false(YAJL_IS_INTEGER(big));
    assert_string_equal(YAJL_GET_NUMBER(big), "9223372036854775808");
    assert_int_equal(lb_json_get_int(v, "big", &i), LB_EINVAL);
    assert_int_equal(lb_json_get_int(v, "huge", &i), LB_EINVAL);
    assert_true(YAJL_IS_DOUBLE(lb_json_get(v, "huge")));

    /* Beyond double range: a number with neither representation. */
    yajl_val inf = lb_json_get(v, "inf");
    assert_true(YAJL_IS_NUMBER(inf));
    assert_false(YAJL_IS_INTEGER(inf));
    assert_false(YAJL_IS_DOUBLE(inf));
    assert_int_equal(lb_json_get_int(v, "inf", &i), LB_EINVAL);
    assert_true(YAJL_IS_NUMBER(lb_json_get(v, "tiny")));

    yajl_val f = lb_json_get(v, "f");
    assert_true(YAJL_IS_DOUBLE(f));
    assert_true(YAJL_GET_DOUBLE(f) == 1.5);
}

static void test_top_level_values(void **state)
{
    char err[64];
    yajl_val v;

    v = parse("  \"str\"\n", err, sizeof(err));
    assert_true(YAJL_IS_STRING(v));
    assert_null(lb_json_get_str(v, "str")); /* not an object */
    yajl_tree_free(v);
    v = parse("17", err, sizeof(err));
    assert_true(YAJL_IS_INTEGER(v));
    yajl_tree_free(v);
    v = parse("null", err, sizeof(err));
    assert_true(YAJL_IS_NULL(v));
    yajl_tree_free(v);
    v = parse("[]", err, sizeof(err));
    assert_true(YAJL_IS_ARRAY(v));
    assert_int_equal(v->u.array.len, 0);
    yajl_tree_free(v);
    v = parse("{}", err, sizeof(err));
    assert_true(YAJL_IS_OBJECT(v));
    assert_int_equal(v->u.object.len, 0);
    yajl_tree_free(v);
}

/* ---- generation -------------------------------------------------------- */

static void test_gen_roundtrip(void **state)
{
    yajl_gen g = lb_json_gen_new();
    const unsigned char *out;
    size_t len;

    yajl_gen_map_open(g);
    lb_json_kv_str(g, "s", "quote \" backslash \\ newline \n tab \t ctl \x01 caf\xc3\xa9");
    lb_json_kv_str(g, "nullstr", NULL);
    lb_json_kv_strn(g, "strn", "abcdef", 3);
    lb_json_kv_strn(g, "strn_null", NULL, 5);
    lb_json_kv_int(g, "i", -123456789012345);
    lb_json_kv_int(g, "max", INT64_MAX);
    lb_json_kv_double(g, "d", 0.1);
    lb_json_kv_double(g, "third", 1.0 / 3.0);
    lb_json_kv_double(g, "whole", 2.0);
    lb_json_kv_double(g, "nan", NAN);
    lb_json_kv_double(g, "inf", INFINITY);
    lb_json_kv_bool(g, "t", 7);
    lb_json_kv_bool(g, "f", 0);
    lb_json_kv_null(g, "n");
    lb_json_kv_time(g, "at", 1700000000123);
    lb_json_kv_time(g, "never", 0);
    lb_json_key(g, "list");
    yajl_gen_array_open(g);
    lb_json_str(g, "x");
    lb_json_str(g, NULL);
    yajl_gen_array_close(g);
    lb_json_kv_str(g, "bad\xff", "bad \xff\xfe value \xc3");
    lb_json_kv_str(g, "after", "ok");
    yajl_gen_map_close(g);
    assert_int_equal(yajl_gen_get_buf(g, &out, &len), yajl_gen_status_ok);

    /* Not beautified. */
    assert_null(memchr(out, '\n', len));
    assert_non_null(strstr((const char *)out, "\"d\":0.1,"));

    char err[128];
    yajl_val v = lb_json_parse((const char *)out, len, err, sizeof(err));
    if (v == NULL) fail_msg("%s: %.*s", err, (int)len, out);
    int64_t i;
    int b;
    assert_string_equal(lb_json_get_str(v, "s"),
                        "quote \" backslash \\ newline \n tab \t ctl \x01 caf\xc3\xa9");
    assert_true(YAJL_IS_NULL(lb_json_get(v, "nullstr")));
    assert_string_equal(lb_json_get_str(v, "strn"), "abc");
    assert_true(YAJL_IS_NULL(lb_json_get(v, "strn_null")));
    assert_int_equal(lb_json_get_int(v, "i", &i), 0);
    assert_true(i == -123456789012345);
    assert_int_equal(lb_json_get_int(v, "max", &i), 0);
    assert_true(i == INT64_MAX);
    assert_true(YAJL_GET_DOUBLE(lb_json_get(v, "d")) == 0.1);
    assert_true(YAJL_GET_DOUBLE(lb_json_get(v, "third")) == 1.0 / 3.0);
    assert_true(YAJL_GET_DOUBLE(lb_json_get(v, "whole")) == 2.0);
    assert_true(YAJL_IS_NULL(lb_json_get(v, "nan")));
    assert_true(YAJL_IS_NULL(lb_json_get(v, "inf")));
    assert_int_equal(lb_json_get_bool(v, "t", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(lb_json_get_bool(v, "f", &b), 0);
    assert_int_equal(b, 0);
    assert_true(YAJL_IS_NULL(lb_json_get(v, "n")));
    assert_string_equal(lb_json_get_str(v, "at"), "2023-11-14T22:13:20.123Z");
    assert_true(YAJL_IS_NULL(lb_json_get(v, "never")));
    yajl_val list = lb_json_get_array(v, "list");
    assert_non_null(list);
    assert_int_equal(list->u.array.len, 2);
    /* Invalid UTF-8 became U+FFFD per bad byte; the map stayed in step. */
    assert_string_equal(lb_json_get_str(v, "bad\xef\xbf\xbd"),
                        "bad \xef\xbf\xbd\xef\xbf\xbd value \xef\xbf\xbd");
    assert_string_equal(lb_json_get_str(v, "after"), "ok");
    yajl_tree_free(v);
    yajl_gen_free(g);
}

/* Found by fuzz_json: yajl turns lone and misordered surrogate escapes into
 * ill-formed UTF-8 or '?'; such input is refused instead. */
static void test_surrogate_escapes(void **state)
{
    (void)state;
    const char *lone_low = "[\"\\udc00\"]";
    refused(lone_low, strlen(lone_low), "surrogate");
    const char *lone_high = "[\"\\ud800\"]";
    refused(lone_high, strlen(lone_high), "surrogate");
    const char *high_then_letter = "[\"\\ud800\\u0041\"]";
    refused(high_then_letter, strlen(high_then_letter), "surrogate");
    const char *pair = "[\"\\ud83d\\ude00\"]";
    char err[64];
    yajl_val v = lb_json_parse(pair, strlen(pair), err, sizeof(err));
    assert_non_null(v);
    assert_string_equal(v->u.array.values[0]->u.string, "\xF0\x9F\x98\x80");
    yajl_tree_free(v);
    accepted("[\"\\u00e9 \\u20ac\"]");
}

/* Found by fuzz_delivery: yajl's generator lets overlong forms, encoded
 * surrogates and code points above U+10FFFF through; they become U+FFFD. */
static void test_gen_replaces_ill_formed_utf8(void **state)
{
    (void)state;
    const char *bad[] = {"a\xC0\xAF"
                         "b",
                         "a\xED\xA0\x80"
                         "b",
                         "a\xF4\x90\x80\x80"
                         "b"};
    for (size_t i = 0; i < 3; i++) {
        yajl_gen g = lb_json_gen_new();
        lb_json_str(g, bad[i]);
        const unsigned char *buf;
        size_t len;
        yajl_gen_get_buf(g, &buf, &len);
        assert_non_null(strstr((const char *)buf, "\xEF\xBF\xBD"));
        assert_null(memchr(buf, 0xC0, len));
        assert_null(memchr(buf, 0xED, len));
        assert_null(memchr(buf, 0xF4, len));
        char err[64];
        yajl_val v = lb_json_parse((const char *)buf, len, err, sizeof(err));
        assert_non_null(v); /* our own output always parses again */
        yajl_tree_free(v);
        yajl_gen_free(g);
    }
}

static void test_gen_allocates_through_wrappers(void **state)
{
    uint64_t before = lb_alloc_live_bytes();
    yajl_gen g = lb_json_gen_new();
    assert_true(lb_alloc_live_bytes() > before);
    yajl_gen_array_open(g);
    for (int i = 0; i < 1000; i++)
        lb_json_str(g, "some text to grow the buffer");
    yajl_gen_array_close(g);
    yajl_gen_free(g);
    assert_true(lb_alloc_live_bytes() == before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_comments_refused),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test_setup_teardown(test_getters, doc_setup, doc_teardown),
        cmocka_unit_test_setup_teardown(test_big_numbers, doc_setup, doc_teardown),
        cmocka_unit_test(test_top_level_values),
        cmocka_unit_test(test_gen_roundtrip),
        cmocka_unit_test(test_gen_allocates_through_wrappers),
        cmocka_unit_test(test_surrogate_escapes),
        cmocka_unit_test(test_gen_replaces_ill_formed_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
