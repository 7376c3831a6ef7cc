/* state/stats: the ring of hours per tenant and in total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "state/stats.h"

#define H LB_HOUR_MS

static lb_stats *open_stats(uv_loop_t *loop)
{
    lb_stats *st = NULL;
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(lb_stats_new(loop, NULL, 0, &st), 0);
    return st;
}

static void closed(void *data)
{
    (*(int *)data)++;
}

static void close_stats(uv_loop_t *loop, lb_stats *st)
{
    int n = 0;
    lb_stats_close(st, closed, &n);
    assert_int_equal(n, 0); /* from a loop callback, not from inside */
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(n, 1);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_hours_and_totals(void **state)
{
    (void)state;
    uv_loop_t loop;
    lb_stats *st = open_stats(&loop);
    const int64_t t0 = 1000 * H + 5; /* inside hour 1000 */
    lb_stats_add(st, "a", LB_STAT_ACCEPTED, t0);
    lb_stats_add(st, "a", LB_STAT_ACCEPTED, t0 + 10);
    lb_stats_add(st, "b", LB_STAT_DUPLICATE, t0);
    lb_stats_add(st, NULL, LB_STAT_REFUSED, t0);        /* no tenant: total only */
    lb_stats_add(st, "a", LB_STAT_SUCCEEDED, t0 + H);   /* the next hour */
    lb_stats_add(st, "a", (lb_stat)LB_STATS_KINDS, t0); /* out of range: ignored */
    lb_stats_series se;
    lb_stats_get(st, "a", t0 + H, &se);
    assert_int_equal(se.hour[LB_STATS_HOURS - 1], 1001);
    assert_int_equal(se.hour[0], 1001 - 23);
    assert_int_equal(se.count[LB_STATS_HOURS - 2][LB_STAT_ACCEPTED], 2);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_SUCCEEDED], 1);
    lb_stats_get(st, NULL, t0 + H, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 2][LB_STAT_ACCEPTED], 2);
    assert_int_equal(se.count[LB_STATS_HOURS - 2][LB_STAT_DUPLICATE], 1);
    assert_int_equal(se.count[LB_STATS_HOURS - 2][LB_STAT_REFUSED], 1);
    lb_stats_get(st, "nobody", t0, &se);
    for (int i = 0; i < LB_STATS_HOURS; i++)
        for (int k = 0; k < LB_STATS_KINDS; k++)
            assert_int_equal(se.count[i][k], 0);

    /* Forgetting a tenant keeps the total. */
    lb_stats_forget(st, "b");
    lb_stats_get(st, "b", t0, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_DUPLICATE], 0);
    lb_stats_get(st, NULL, t0, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_DUPLICATE], 1);

    /* A day later the slot of hour 1000 is hour 1024's: old counts are gone. */
    lb_stats_get(st, "a", t0 + 24 * H, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_ACCEPTED], 0);
    assert_int_equal(se.count[LB_STATS_HOURS - 2][LB_STAT_SUCCEEDED], 0);
    assert_int_equal(se.count[LB_STATS_HOURS - 24][LB_STAT_SUCCEEDED], 1); /* hour 1001 */
    lb_stats_add(st, "a", LB_STAT_FAILED, t0 + 24 * H);
    lb_stats_get(st, "a", t0 + 24 * H, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_FAILED], 1);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_ACCEPTED], 0); /* reused, zeroed */

    close_stats(&loop, st);
}

static void test_load_keeps_the_window(void **state)
{
    (void)state;
    uv_loop_t loop;
    lb_stats *st = open_stats(&loop);
    const int64_t now = 2000 * H;
    lb_stats_rec recs[3];
    memset(recs, 0, sizeof(recs));
    strcpy(recs[0].tenant_id, "a");
    recs[0].hour = 2000;
    recs[0].count[LB_STAT_ACCEPTED] = 7;
    strcpy(recs[1].tenant_id, "a");
    recs[1].hour = 2000 - 24; /* older than the window: dropped */
    recs[1].count[LB_STAT_ACCEPTED] = 99;
    strcpy(recs[2].tenant_id, "\x01total");
    recs[2].hour = 1990;
    recs[2].count[LB_STAT_FAILED] = 3;
    lb_stats_load(st, recs, 3, now);
    lb_stats_add(st, "a", LB_STAT_ACCEPTED, now);
    lb_stats_series se;
    lb_stats_get(st, "a", now, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 1][LB_STAT_ACCEPTED], 8);
    for (int i = 0; i < LB_STATS_HOURS - 1; i++)
        assert_int_equal(se.count[i][LB_STAT_ACCEPTED], 0);
    lb_stats_get(st, NULL, now, &se);
    assert_int_equal(se.count[LB_STATS_HOURS - 11][LB_STAT_FAILED], 3);
    close_stats(&loop, st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hours_and_totals),
        cmocka_unit_test(test_load_keeps_the_window),
    };
    return cmocka_run_group_tests_name("state_stats", tests, NULL, NULL);
}
