/* Events to the platform: the job record and the body made from it (the
 * signature and the secret are platform/'s: test_platform.c). */
#include "core/alloc.h"
#include "core/error.h"
#include "engine/notify.h"
#include "json/json.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>
#include <string.h>

static void test_rec_and_body(void **state)
{
    (void)state;
    lb_job_rec r;
    lb_notify_rec(&r, "acme", "invitation.sent",
                  "{\"opportunity_id\":\"opp1\",\"invitation_id\":\"inv1\"}", 1764765380123, NULL);
    assert_string_equal(r.tenant_id, "acme");
    assert_int_equal(strncmp(r.id, "job_", 4), 0);
    assert_int_equal(r.status, LB_JOB_QUEUED);
    assert_int_equal(r.created_at, 1764765380123);
    char err[64];
    yajl_val a = lb_json_parse(r.action, strlen(r.action), err, sizeof(err));
    assert_non_null(a);
    assert_string_equal(lb_json_get_str(a, "type"), "notify_platform");
    assert_string_equal(lb_json_get_str(a, "event"), "invitation.sent");
    assert_int_equal(strncmp(lb_json_get_str(a, "id"), "pe_", 3), 0);
    size_t len = 0;
    char *body = lb_notify_body(a, "acme", &len);
    assert_non_null(body);
    assert_int_equal(strlen(body), len);
    yajl_val b = lb_json_parse(body, len, err, sizeof(err));
    assert_non_null(b);
    assert_string_equal(lb_json_get_str(b, "type"), "invitation.sent");
    assert_string_equal(lb_json_get_str(b, "tenant_id"), "acme");
    assert_string_equal(lb_json_get_str(b, "created_at"), "2025-12-03T12:36:20.123Z");
    assert_string_equal(lb_json_get_str(lb_json_get_obj(b, "data"), "invitation_id"), "inv1");
    yajl_tree_free(b);
    lb_free(body);
    yajl_tree_free(a);
    lb_job_rec_free(&r);

    lb_notify_rec(&r, "acme", "connection.connected", NULL, 1000, "pe_fixed");
    a = lb_json_parse(r.action, strlen(r.action), err, sizeof(err));
    assert_string_equal(lb_json_get_str(a, "id"), "pe_fixed");
    yajl_val d = lb_json_get_obj(a, "data");
    assert_non_null(d);
    assert_int_equal(d->u.object.len, 0);
    yajl_tree_free(a);
    lb_job_rec_free(&r);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rec_and_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
