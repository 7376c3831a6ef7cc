/* Note templates: the placeholder check (what a workflow save refuses, and
 * which placeholder it names), the variables a text uses, and rendering
 * with bounded output cut at a UTF-8 boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "engine/template.h"

#include <stdlib.h>
#include <string.h>

static void check_accepts_known_placeholders(void **state)
{
    (void)state;
    char bad[LB_TEMPLATE_BAD_MAX] = "x";
    static const char *const ok[] = {
        "",
        "plain text, no placeholder",
        "{{candidate.name}} scored {{score}}/{{max_score}}: {{report_url}}",
        "{{candidate.email}} {{assessment}} {{invitation_url}}",
        "{{ score }} and {{  max_score}}",
        "a { single brace } and }} closing ones",
        "{{score}}{{score}}",
        "{score}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(lb_template_check(ok[i], bad, sizeof(bad)), 0);
        assert_string_equal(bad, "");
    }
}

static void check_names_the_first_bad_placeholder(void **state)
{
    (void)state;
    char bad[LB_TEMPLATE_BAD_MAX];
    static const struct {
        const char *text, *bad;
    } cases[] = {
        {"Hi {{candidate.phone}}", "{{candidate.phone}}"},
        {"{{score}} {{nope}} {{also_bad}}", "{{nope}}"},
        {"{{}}", "{{}}"},
        {"{{ }}", "{{ }}"},
        {"{{Score}}", "{{Score}}"}, /* names are case-sensitive */
        {"{{candidate .name}}", "{{candidate .name}}"},
        {"score {{score", "{{score"}, /* unclosed */
        {"{{score}} then {{ unclosed and a long tail after it", "{{ unclosed and a "},
        {"{{{score}}}", "{{{score}}"},
        {"{{a {{score}}", "{{a {{score}}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(lb_template_check(cases[i].text, bad, sizeof(bad)), LB_EINVAL);
        assert_string_equal(bad, cases[i].bad);
    }
}

static void check_bounds_the_report(void **state)
{
    (void)state;
    char bad[8];
    assert_int_equal(lb_template_check("{{a_very_long_unknown_name}}", bad, sizeof(bad)),
                     LB_EINVAL);
    assert_string_equal(bad, "{{a_ver");
    /* No buffer: only the verdict. */
    assert_int_equal(lb_template_check("{{x}}", NULL, 0), LB_EINVAL);
    assert_int_equal(lb_template_check("{{score}}", NULL, 0), 0);
}

static void uses_lists_variables(void **state)
{
    (void)state;
    assert_int_equal(lb_template_uses("no placeholders"), 0);
    assert_int_equal(lb_template_uses("{{candidate.name}} {{ score }} {{bogus}}"),
                     (1u << LB_TPL_CANDIDATE_NAME) | (1u << LB_TPL_SCORE));
    assert_int_equal(lb_template_uses("{{invitation_url}}{{invitation_url}}"),
                     1u << LB_TPL_INVITATION_URL);
    assert_string_equal(lb_template_var_name(LB_TPL_MAX_SCORE), "max_score");
    assert_null(lb_template_var_name(LB_TPL_NVARS));
    assert_null(lb_template_var_name(-1));
}

static lb_template_values values(void)
{
    lb_template_values v = {{
        [LB_TPL_CANDIDATE_NAME] = "Ada Lovelace",
        [LB_TPL_CANDIDATE_EMAIL] = "ada@example.com",
        [LB_TPL_ASSESSMENT] = "js-senior",
        [LB_TPL_SCORE] = "87",
        [LB_TPL_MAX_SCORE] = "100",
        [LB_TPL_REPORT_URL] = "https://r.example/1",
        [LB_TPL_INVITATION_URL] = NULL,
    }};
    return v;
}

static void render_fills_values(void **state)
{
    (void)state;
    lb_template_values v = values();
    char out[256];
    const char *tpl = "{{candidate.name}} scored {{score}}/{{ max_score }}: {{report_url}}";
    int n = lb_template_render(tpl, &v, out, sizeof(out));
    assert_string_equal(out, "Ada Lovelace scored 87/100: https://r.example/1");
    assert_int_equal(n, (int)strlen(out));
    /* Absent values render empty; text around placeholders is kept. */
    assert_true(lb_template_render("[{{invitation_url}}] {{assessment}}", &v, out, sizeof(out)) >=
                0);
    assert_string_equal(out, "[] js-senior");
    /* Unknown or unclosed placeholders are copied as written. */
    lb_template_render("{{nope}} {{score} x", &v, out, sizeof(out));
    assert_string_equal(out, "{{nope}} {{score} x");
    lb_template_render("", &v, out, sizeof(out));
    assert_string_equal(out, "");
    /* No values at all. */
    lb_template_render("a{{score}}b", NULL, out, sizeof(out));
    assert_string_equal(out, "ab");
    /* A value holding braces is not expanded again. */
    v.v[LB_TPL_CANDIDATE_NAME] = "{{score}}";
    lb_template_render("{{candidate.name}}", &v, out, sizeof(out));
    assert_string_equal(out, "{{score}}");
}

static void render_is_bounded(void **state)
{
    (void)state;
    lb_template_values v = values();
    char out[12];
    assert_int_equal(lb_template_render("{{candidate.name}} scored", &v, out, sizeof(out)),
                     LB_ETOOBIG);
    assert_string_equal(out, "Ada Lovelac");
    assert_int_equal(lb_template_render("exactly 11!", &v, out, sizeof(out)), 11);
    assert_int_equal(lb_template_render("x", &v, out, 0), LB_ETOOBIG);
    assert_int_equal(lb_template_render("abc", &v, out, 1), LB_ETOOBIG);
    assert_string_equal(out, "");
}

static void render_cuts_at_a_character(void **state)
{
    (void)state;
    lb_template_values v = values();
    v.v[LB_TPL_CANDIDATE_NAME] = "Zoë Ünal"; /* ë and Ü are two bytes each */
    char out[4];
    /* "Zo" + the first byte of ë would fit 3 bytes: the cut keeps "Zo". */
    assert_int_equal(lb_template_render("{{candidate.name}}", &v, out, sizeof(out)), LB_ETOOBIG);
    assert_string_equal(out, "Zo");
    char out5[5];
    assert_int_equal(lb_template_render("{{candidate.name}}", &v, out5, sizeof(out5)), LB_ETOOBIG);
    assert_string_equal(out5, "Zoë");
    /* Three- and four-byte characters in the template text itself. */
    char out6[6];
    assert_int_equal(lb_template_render("ab€😀", &v, out6, sizeof(out6)), LB_ETOOBIG);
    assert_string_equal(out6, "ab€");
}

static void render_caps_at_out_max(void **state)
{
    (void)state;
    size_t big = LB_TEMPLATE_OUT_MAX * 2;
    char *val = malloc(big + 1);
    memset(val, 'x', big);
    val[big] = '\0';
    lb_template_values v = {{[LB_TPL_REPORT_URL] = val}};
    char *out = malloc(big + 1);
    assert_int_equal(lb_template_render("{{report_url}}", &v, out, big + 1), LB_ETOOBIG);
    assert_int_equal(strlen(out), LB_TEMPLATE_OUT_MAX);
    free(out);
    free(val);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_accepts_known_placeholders),
        cmocka_unit_test(check_names_the_first_bad_placeholder),
        cmocka_unit_test(check_bounds_the_report),
        cmocka_unit_test(uses_lists_variables),
        cmocka_unit_test(render_fills_values),
        cmocka_unit_test(render_is_bounded),
        cmocka_unit_test(render_cuts_at_a_character),
        cmocka_unit_test(render_caps_at_out_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
