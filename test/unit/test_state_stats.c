/* state/stats: the ring of hours per tenant and in total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/time.h"
#include "state/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define H LB_HOUR_MS

static lb_stats *open_stats(uv_loop_t *loop)
{
    lb_stats *st = NULL;
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(lb_stats_new(loop, NULL, 0, 0, &st), 0);
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

static void stop_cb(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* The counts of the current and previous hour (an hour may end mid-test). */
static uint32_t recent(const lb_stats *st, const char *tenant, lb_stat what)
{
    lb_stats_series se;
    lb_stats_get(st, tenant, lb_time_now_ms(), &se);
    return se.count[LB_STATS_HOURS - 1][what] + se.count[LB_STATS_HOURS - 2][what];
}

/* Two replicas on one database: each adds what it counted to the rows,
 * and each shows the sum once it has written and read back. (Each used to
 * write its own counts over the row: the last writer's won, and each
 * showed only its own.) */
static void test_replicas_add_up(void **state)
{
    (void)state;
    char dir[] = "/tmp/lbstats-XXXXXX", url[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(url, sizeof(url), "sqlite:%s/s.db", dir);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lb_store *store = NULL;
    assert_int_equal(lb_store_open(&loop, url, NULL, &store, err, sizeof(err)), 0);
    lb_stats *a = NULL, *b = NULL;
    assert_int_equal(lb_stats_new(&loop, store, 20, 1, &a), 0);
    assert_int_equal(lb_stats_new(&loop, store, 20, 1, &b), 0);
    int64_t now = lb_time_now_ms();
    for (int i = 0; i < 3; i++)
        lb_stats_add(a, "t1", LB_STAT_ACCEPTED, now);
    lb_stats_add(b, "t1", LB_STAT_ACCEPTED, now);
    lb_stats_add(b, "t1", LB_STAT_ACCEPTED, now);
    lb_stats_add(b, "t2", LB_STAT_FAILED, now);

    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, stop_cb, 300, 0); /* several writes and reads of each */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int k = 0; k < 2; k++) {
        const lb_stats *s = k ? b : a;
        assert_int_equal(recent(s, "t1", LB_STAT_ACCEPTED), 5);
        assert_int_equal(recent(s, "t2", LB_STAT_FAILED), 1);
        assert_int_equal(recent(s, NULL, LB_STAT_ACCEPTED), 5);
        assert_int_equal(recent(s, NULL, LB_STAT_FAILED), 1);
    }
    /* Counted after the last write: shown at once, added at the next. */
    lb_stats_add(a, "t1", LB_STAT_ACCEPTED, lb_time_now_ms());
    assert_int_equal(recent(a, "t1", LB_STAT_ACCEPTED), 6);
    uv_timer_start(&t, stop_cb, 300, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(recent(b, "t1", LB_STAT_ACCEPTED), 6);
    assert_int_equal(recent(a, "t1", LB_STAT_ACCEPTED), 6);

    uv_close((uv_handle_t *)&t, NULL);
    int n = 0;
    lb_stats_close(a, closed, &n);
    lb_stats_close(b, closed, &n);
    lb_store_close(store, closed, &n);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(n, 3);
    assert_int_equal(uv_loop_close(&loop), 0);
    char path[96];
    snprintf(path, sizeof(path), "%s/s.db", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/s.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/s.db-shm", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/s.db.lock", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hours_and_totals),
        cmocka_unit_test(test_load_keeps_the_window),
        cmocka_unit_test(test_replicas_add_up),
    };
    return cmocka_run_group_tests_name("state_stats", tests, NULL, NULL);
}
