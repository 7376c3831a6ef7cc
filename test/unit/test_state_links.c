/* state/links: connect-link tokens minted and checked (api.md "Connect links
 * and pages"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "state/links.h"

#include <uv.h>

static void add_tenant(lb_tenants *ts, const char *id, int64_t created_at)
{
    lb_tenant_rec rec = {0};
    strcpy(rec.id, id);
    rec.name = (char *)id;
    rec.created_at = rec.updated_at = created_at;
    assert_non_null(lb_tenants_apply(ts, &rec));
}

static void make(lb_links *l, uint8_t fill)
{
    lb_master_key mk;
    memset(mk.key, fill, sizeof(mk.key));
    lb_links_init(l, &mk);
}

static int check(const lb_links *l, const lb_tenants *ts, const char *tok, int64_t now,
                 char tenant[LB_TENANT_ID_MAX + 1], int64_t *expiry)
{
    return lb_links_check(l, ts, tok, strlen(tok), now, tenant, LB_TENANT_ID_MAX + 1, expiry);
}

static void test_round_trip_and_expiry(void **state)
{
    (void)state;
    lb_tenants ts;
    lb_tenants_init(&ts);
    add_tenant(&ts, "acme.eu", 1000); /* ids may hold '.': parsed from the right */
    lb_links l;
    make(&l, 7);
    char tok[LB_LINK_TOKEN_MAX + 1], again[LB_LINK_TOKEN_MAX + 1];
    lb_links_token(&l, lb_tenants_get(&ts, "acme.eu"), 5000, tok);
    lb_links_token(&l, lb_tenants_get(&ts, "acme.eu"), 5000, again);
    assert_string_equal(tok, again); /* nothing stored: the same link again */
    assert_int_equal(strncmp(tok, "acme.eu.5000.", 13), 0);

    char tenant[LB_TENANT_ID_MAX + 1];
    int64_t expiry = 0;
    assert_int_equal(check(&l, &ts, tok, 4999, tenant, &expiry), 0);
    assert_string_equal(tenant, "acme.eu");
    assert_int_equal(expiry, 5000);
    /* expired: the tenant is named, so the page can say whose link it was */
    assert_int_equal(check(&l, &ts, tok, 5000, tenant, NULL), UV_ETIMEDOUT);
    assert_string_equal(tenant, "acme.eu");
    lb_tenants_free(&ts);
}

static void test_refused(void **state)
{
    (void)state;
    lb_tenants ts;
    lb_tenants_init(&ts);
    add_tenant(&ts, "acme", 1000);
    add_tenant(&ts, "other", 1000);
    lb_links l, l2;
    make(&l, 7);
    make(&l2, 8);
    char tok[LB_LINK_TOKEN_MAX + 1], tenant[LB_TENANT_ID_MAX + 1];
    lb_links_token(&l, lb_tenants_get(&ts, "acme"), 5000, tok);

    /* another master key */
    assert_int_equal(check(&l2, &ts, tok, 0, tenant, NULL), LB_EINVAL);
    assert_string_equal(tenant, "");
    /* a later expiry, another tenant, a flipped MAC character */
    char bad[LB_LINK_TOKEN_MAX + 1];
    strcpy(bad, tok);
    bad[6] = '9';
    assert_int_equal(check(&l, &ts, bad, 0, tenant, NULL), LB_EINVAL);
    memcpy(bad, "other", 5);
    strcpy(bad + 5, tok + 4);
    assert_int_equal(check(&l, &ts, bad, 0, tenant, NULL), LB_EINVAL);
    strcpy(bad, tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(check(&l, &ts, bad, 0, tenant, NULL), LB_EINVAL);
    /* malformed */
    const char *junk[] = {"",
                          "acme",
                          "acme.5000.",
                          ".5000.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                          "acme..xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                          "acme.50a0.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        assert_int_equal(check(&l, &ts, junk[i], 0, tenant, NULL), LB_EINVAL);
    /* too long for the tenant buffer the caller gave */
    assert_int_equal(lb_links_check(&l, &ts, tok, strlen(tok), 0, tenant, 4, NULL), LB_EINVAL);

    /* deleted, then created again under the same id: old links are dead */
    lb_tenants_remove(&ts, "acme");
    assert_int_equal(check(&l, &ts, tok, 0, tenant, NULL), LB_EINVAL);
    add_tenant(&ts, "acme", 2000);
    assert_int_equal(check(&l, &ts, tok, 0, tenant, NULL), LB_EINVAL);
    lb_links_token(&l, lb_tenants_get(&ts, "acme"), 5000, tok);
    assert_int_equal(check(&l, &ts, tok, 0, tenant, NULL), 0);
    lb_tenants_free(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_expiry),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
