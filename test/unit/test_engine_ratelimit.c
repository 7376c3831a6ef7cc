#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/backoff.h"
#include "engine/ratelimit.h"

/* Admits greedily on a fake clock and records when each request passed. */
static void admit_times(lb_rl *rl, int n, double *out)
{
    double now = 1000.0;
    for (int i = 0; i < n; i++) {
        double w;
        while ((w = lb_rl_acquire(rl, now)) > 0)
            now += w;
        out[i] = now;
    }
}

static void burst_then_rate(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 10, 20);
    double t[40];
    admit_times(&rl, 40, t);
    for (int i = 0; i < 20; i++)
        assert_true(t[i] == 1000.0); /* the burst passes at once */
    for (int i = 20; i < 40; i++)
        assert_true(t[i] > 1000.0 + (i - 20) * 100.0 + 99.999 &&
                    t[i] < 1000.0 + (i - 19) * 100.0 + 0.001); /* then one per 100 ms */
}

static void exact_steady_rate(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 50, 1);
    double t[11];
    admit_times(&rl, 11, t);
    for (int i = 1; i < 11; i++)
        assert_true(t[i] - t[i - 1] > 19.999 && t[i] - t[i - 1] < 20.001);
}

static void refill_over_time(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 10, 5);
    for (int i = 0; i < 5; i++)
        assert_true(lb_rl_acquire(&rl, 0) == 0);
    assert_true(lb_rl_acquire(&rl, 0) > 0);
    /* after 300 ms, three tokens are back and a fourth is not */
    for (int i = 0; i < 3; i++)
        assert_true(lb_rl_acquire(&rl, 300) == 0);
    double w = lb_rl_acquire(&rl, 300);
    assert_true(w > 99.999 && w < 100.001);
    /* a long idle period never banks more than the burst */
    int n = 0;
    while (lb_rl_acquire(&rl, 100000) == 0)
        n++;
    assert_int_equal(n, 5);
}

static void wait_consumes_nothing(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 1, 1);
    assert_true(lb_rl_acquire(&rl, 0) == 0);
    double w1 = lb_rl_wait(&rl, 10);
    double w2 = lb_rl_acquire(&rl, 10);
    assert_true(w1 == w2);
    assert_true(w1 > 989.999 && w1 < 990.001);
}

static void hold_pushes_out_without_burst(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 10, 20);
    assert_true(lb_rl_acquire(&rl, 0) == 0);
    lb_rl_hold(&rl, 0, 2000);
    double w = lb_rl_acquire(&rl, 0);
    assert_true(w > 1999.999 && w < 2000.001);
    assert_true(lb_rl_acquire(&rl, 1999) > 0);
    assert_true(lb_rl_acquire(&rl, 2000) == 0);
    /* steady rate after the hold, not a burst */
    w = lb_rl_acquire(&rl, 2000);
    assert_true(w > 99.999 && w < 100.001);
    /* a shorter hold never shortens a longer one */
    lb_rl_hold(&rl, 2000, 10);
    assert_true(lb_rl_wait(&rl, 2000) > 99.999);
}

static void set_changes_rate(void **state)
{
    (void)state;
    lb_rl rl;
    lb_rl_init(&rl, 10, 1);
    assert_true(lb_rl_acquire(&rl, 0) == 0);
    lb_rl_set(&rl, 100, 1);
    /* the spent token was charged at the old interval */
    double w = lb_rl_wait(&rl, 0);
    assert_true(w > 99.999 && w < 100.001);
    assert_true(lb_rl_acquire(&rl, 100) == 0);
    w = lb_rl_wait(&rl, 100);
    assert_true(w > 9.999 && w < 10.001);
}

static void backoff_bounds(void **state)
{
    (void)state;
    assert_int_equal(lb_backoff_ceiling(1000, 600000, 0), 1000);
    assert_int_equal(lb_backoff_ceiling(1000, 600000, 3), 8000);
    assert_int_equal(lb_backoff_ceiling(1000, 600000, 10), 600000);
    assert_int_equal(lb_backoff_ceiling(1000, 600000, 200), 600000); /* no overflow */
    assert_int_equal(lb_backoff_pick(1000, 600000, 3, 0xffffffffu), 8000);
    assert_true(lb_backoff_pick(1000, 600000, 3, 0) <= 1);
    assert_int_equal(lb_backoff_pick(30000, 3600000, 1, 0x7fffffffu), 30000);
    for (unsigned a = 0; a < 64; a++) {
        for (int i = 0; i < 200; i++) {
            int64_t d = lb_backoff_delay(30000, 3600000, a);
            assert_true(d >= 0 && d <= lb_backoff_ceiling(30000, 3600000, a));
        }
    }
}

static void backoff_is_jittered(void **state)
{
    (void)state;
    /* full jitter: values spread over the range, not clustered at the top */
    int low = 0, high = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t d = lb_backoff_delay(1000, 600000, 4); /* ceiling 16 s */
        if (d < 8000)
            low++;
        else
            high++;
    }
    assert_true(low > 800 && high > 800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_rate),
        cmocka_unit_test(exact_steady_rate),
        cmocka_unit_test(refill_over_time),
        cmocka_unit_test(wait_consumes_nothing),
        cmocka_unit_test(hold_pushes_out_without_burst),
        cmocka_unit_test(set_changes_rate),
        cmocka_unit_test(backoff_bounds),
        cmocka_unit_test(backoff_is_jittered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
