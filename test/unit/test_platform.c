/* platform/: the invitation request and its answer, and the Standard
 * Webhooks signature (checked against the spec's published example). */
#include "core/alloc.h"
#include "core/error.h"
#include "platform/platform.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

static void test_invite_call_and_body(void **state)
{
    (void)state;
    lb_platform_call c;
    lb_platform_invite_call(&c, "http://127.0.0.1:9/api//", "tok", "job_1");
    assert_string_equal(c.url, "http://127.0.0.1:9/api/invitations");
    assert_string_equal(c.headers[0], "Authorization: Bearer tok");
    assert_string_equal(c.headers[1], "Idempotency-Key: job_1");
    assert_string_equal(c.headers[2], "Content-Type: application/json");
    assert_null(c.headers[4]);
    lb_platform_call_clear(&c);
    assert_null(c.auth);
    size_t len;
    char *b = lb_platform_invite_body("acme", "js", NULL, "a@x.test", "O1", NULL, "P1", &len);
    assert_string_equal(b, "{\"tenant_id\":\"acme\",\"assessment\":\"js\",\"candidate\":"
                           "{\"name\":\"\",\"email\":\"a@x.test\"},\"lever\":"
                           "{\"opportunity_id\":\"O1\",\"posting_id\":\"P1\"}}");
    assert_int_equal(len, strlen(b));
    lb_free(b);
}

static void test_answers(void **state)
{
    (void)state;
    char *id, *url;
    const char *ok = "{\"invitation_id\":\"inv_1\",\"url\":\"https://a.test/i/1\"}";
    assert_int_equal(lb_platform_invitation_parse(ok, strlen(ok), &id, &url), 0);
    assert_string_equal(id, "inv_1");
    assert_string_equal(url, "https://a.test/i/1");
    lb_free(id);
    lb_free(url);
    const char *bad[] = {"{\"invitation_id\":\"inv_1\"}", "{\"invitation_id\":\"\",\"url\":\"u\"}",
                         "not json", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(lb_platform_invitation_parse(bad[i], strlen(bad[i]), &id, &url),
                         LB_EPARSE);
        assert_null(id);
        assert_null(url);
    }
    char buf[128];
    const char *e = "{\"error\":{\"code\":\"x\",\"message\":\"no such assessment\"}}";
    lb_platform_describe(422, NULL, e, strlen(e), buf, sizeof(buf));
    assert_string_equal(buf, "platform answered 422: no such assessment");
    lb_platform_describe(503, NULL, "", 0, buf, sizeof(buf));
    assert_string_equal(buf, "platform answered 503");
    lb_platform_describe(0, "Connection refused", "", 0, buf, sizeof(buf));
    assert_string_equal(buf, "platform unreachable: Connection refused");
    assert_true(lb_platform_transient(0) && lb_platform_transient(503) &&
                lb_platform_transient(408) && lb_platform_transient(429));
    assert_false(lb_platform_transient(400) || lb_platform_transient(401) ||
                 lb_platform_transient(422) || lb_platform_transient(201));
}

static void test_sign_matches_the_spec_example(void **state)
{
    (void)state;
    uint8_t key[LB_PLATFORM_KEY_MAX];
    size_t len = 0;
    assert_int_equal(lb_platform_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &len),
                     0);
    assert_int_equal(len, 24);
    const char *body = "{\"test\": 2432232314}";
    char sig[LB_PLATFORM_SIG_SIZE];
    lb_platform_sign(key, len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void test_secret_decode_refuses_bad_secrets(void **state)
{
    (void)state;
    uint8_t key[LB_PLATFORM_KEY_MAX];
    size_t len = 0;
    assert_int_equal(lb_platform_secret_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &len),
                     LB_EINVAL); /* no prefix */
    assert_int_equal(lb_platform_secret_decode("whsec_not base64!", key, &len), LB_EINVAL);
    assert_int_equal(lb_platform_secret_decode("whsec_c2hvcnQ=", key, &len), LB_EINVAL); /* 5 */
    assert_int_equal(lb_platform_secret_decode(NULL, key, &len), LB_EINVAL);
    char big[200] = "whsec_";
    memset(big + 6, 'A', 120); /* 90 bytes */
    assert_int_equal(lb_platform_secret_decode(big, key, &len), LB_EINVAL);
    /* without padding is accepted too */
    assert_int_equal(lb_platform_secret_decode("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAA", key, &len), 0);
    assert_int_equal(len, 19);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invite_call_and_body),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_sign_matches_the_spec_example),
        cmocka_unit_test(test_secret_decode_refuses_bad_secrets),
    };
    return cmocka_run_group_tests_name("platform", tests, NULL, NULL);
}
