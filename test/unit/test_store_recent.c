/* The in-memory table of recent Lever delivery keys (src/store/recent.h) on
 * its own: insert and lookup, growth and its memory bound (at most 16 bytes
 * a key), expiry by time, the key bound, the collision path, row numbers
 * past 32 bits. The backend's side of collisions (every candidate is read
 * and compared) is in test_store_events.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store/recent.h"

#include <string.h>

/* Hashes with distinct tags (the high 32 bits): i * an odd constant is a
 * bijection mod 2^32, so the tests know there is no collision unless they
 * make one. */
static uint64_t h(uint32_t i)
{
    return ((uint64_t)(i * 0x9E3779B1u) << 32) | 0x5555u;
}

#define HOUR_MS (3600ll * 1000)

static void test_insert_lookup(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 72 * HOUR_MS, 0);
    int64_t now = 1764000000000ll, seqs[4];
    assert_int_equal(lb_recent_find(&r, h(1), seqs, 4, now), 0); /* empty, no slots yet */
    for (uint32_t i = 1; i <= 100000; i++)
        lb_recent_add(&r, h(i), 1000 + i, now, now);
    assert_int_equal(r.count, 100000);
    for (uint32_t i = 1; i <= 100000; i++) {
        assert_int_equal(lb_recent_find(&r, h(i), seqs, 4, now), 1);
        assert_int_equal(seqs[0], 1000 + (int64_t)i);
    }
    for (uint32_t i = 100001; i <= 200000; i++) /* never added */
        assert_int_equal(lb_recent_find(&r, h(i), seqs, 4, now), 0);

    /* The real hash: keyed, so per table; tenant and key both count. */
    uint64_t a = lb_recent_hash(&r, "t1", "hook:tok");
    assert_true(a == lb_recent_hash(&r, "t1", "hook:tok"));
    assert_true(a != lb_recent_hash(&r, "t2", "hook:tok"));
    assert_true(a != lb_recent_hash(&r, "t1h", "ook:tok")); /* the separator counts */
    char longkey[1000];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_true(lb_recent_hash(&r, "t1", longkey) != a);
    lb_recent other;
    lb_recent_init(&other, 72 * HOUR_MS, 0);
    assert_true(lb_recent_hash(&other, "t1", "hook:tok") != a); /* another key */
    lb_recent_free(&other);
    lb_recent_free(&r);
}

/* The table grows by itself and, past its minimum size, never holds more
 * than 16 bytes a key, nor fills past 9/10. */
static void test_grow_within_16_bytes_a_key(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 72 * HOUR_MS, 0);
    assert_int_equal(sizeof(lb_recent_slot), 12);
    int64_t now = 1764000000000ll, seqs[2];
    size_t caps = 0, last_cap = 0;
    for (uint32_t i = 1; i <= 300000; i++) {
        lb_recent_add(&r, h(i), i, now, now);
        if (r.cap != last_cap) {
            caps++;
            last_cap = r.cap;
        }
        assert_true(10 * r.count <= 9 * r.cap);
        if (r.count >= LB_RECENT_MIN_SLOTS) assert_true(lb_recent_bytes(&r) <= 16 * r.count);
    }
    assert_true(caps > 5); /* it grew, step by step */
    for (uint32_t i = 1; i <= 300000; i += 7)
        assert_int_equal(lb_recent_find(&r, h(i), seqs, 2, now), 1);
    lb_recent_free(&r);
}

/* Entries older than the horizon go at the next rebuild (and the table
 * shrinks back); those inside it stay, to the second. */
static void test_expire_by_time(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 10000, 0); /* 10 s */
    int64_t t0 = 1764000000000ll, seqs[2];
    /* 9/10 of the minimum 1024 slots is 921 entries: the 922nd rebuilds. */
    for (uint32_t i = 1; i <= 900; i++)
        lb_recent_add(&r, h(i), i, t0, t0);
    for (uint32_t i = 901; i <= 921; i++) /* 9 s later: inside the window at rebuild */
        lb_recent_add(&r, h(i), i, t0 + 9000, t0 + 9000);
    assert_int_equal(r.cap, LB_RECENT_MIN_SLOTS);
    assert_int_equal(lb_recent_find(&r, h(1), seqs, 2, t0 + 9000), 1);
    int64_t later = t0 + 15000; /* the first 900 are 15 s old */
    lb_recent_add(&r, h(5000), 5000, later, later);
    assert_int_equal(r.count, 22);
    assert_int_equal(r.cap, LB_RECENT_MIN_SLOTS);
    assert_int_equal(lb_recent_find(&r, h(1), seqs, 2, later), 0);
    assert_int_equal(lb_recent_find(&r, h(900), seqs, 2, later), 0);
    assert_int_equal(lb_recent_find(&r, h(901), seqs, 2, later), 1);
    assert_int_equal(seqs[0], 901);
    assert_int_equal(lb_recent_find(&r, h(5000), seqs, 2, later), 1);

    /* A big table shrinks once its keys have expired. */
    for (uint32_t i = 10000; i < 110000; i++)
        lb_recent_add(&r, h(i), i, later, later);
    size_t big = r.cap;
    int64_t much_later = later + 60000;
    for (uint32_t i = 200000; r.cap == big; i++)
        lb_recent_add(&r, h(i), i, much_later, much_later);
    assert_true(r.cap < big / 4);
    assert_int_equal(lb_recent_find(&r, h(10000), seqs, 2, much_later), 0);
    lb_recent_free(&r);
}

/* Keys with the same tag are all candidates, whatever the rest of their
 * hash: the caller reads each row and compares the key itself, so a
 * collision costs a read and never hides or invents a delivery. */
static void test_collisions_are_all_candidates(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 72 * HOUR_MS, 0);
    int64_t now = 1764000000000ll, seqs[8];
    uint64_t a = h(42), b = (h(42) & 0xffffffff00000000ull) | 0x1234u; /* same tag */
    for (uint32_t i = 1; i <= 5000; i++)
        lb_recent_add(&r, h(i + 100), i, now, now);
    lb_recent_add(&r, a, 9001, now, now);
    lb_recent_add(&r, b, 9002, now, now);
    lb_recent_add(&r, a, 9003, now, now); /* a row rolled back and its key again */
    assert_int_equal(lb_recent_find(&r, a, seqs, 8, now), 3);
    int64_t sum = seqs[0] + seqs[1] + seqs[2];
    assert_int_equal(sum, 9001 + 9002 + 9003);
    assert_int_equal(lb_recent_find(&r, b, seqs, 8, now), 3);
    assert_int_equal(lb_recent_find(&r, a, seqs, 1, now), 3); /* counts past max */
    /* A tag 0 is stored as 1 (0 marks an empty slot): both are candidates. */
    lb_recent_add(&r, 0x00000000abcdull, 9100, now, now);
    assert_int_equal(lb_recent_find(&r, 0x0000000100000000ull, seqs, 8, now), 1);
    assert_int_equal(seqs[0], 9100);
    lb_recent_free(&r);

    /* With only 4 tag bits (the test knob's effect), 2000 keys share 16
     * tags: every key is found among its tag's candidates. */
    lb_recent_init(&r, 72 * HOUR_MS, 0);
    r.tag_mask = 0xf0000000u;
    int64_t many[200];
    for (uint32_t i = 1; i <= 2000; i++)
        lb_recent_add(&r, h(i), i, now, now);
    for (uint32_t i = 1; i <= 2000; i += 13) {
        size_t n = lb_recent_find(&r, h(i), many, 200, now);
        assert_true(n > 1 && n <= 200);
        int found = 0;
        for (size_t k = 0; k < n; k++)
            found += many[k] == (int64_t)i;
        assert_int_equal(found, 1);
    }
    lb_recent_free(&r);
}

/* At max_keys a key is not kept: the table says "search the rows" until
 * that key has passed the window, then answers again. */
static void test_bound_falls_back_to_search(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 10000, 2000);
    int64_t t0 = 1764000000000ll, seqs[2];
    for (uint32_t i = 1; i <= 2000; i++)
        lb_recent_add(&r, h(i), i, t0, t0);
    assert_int_equal(lb_recent_find(&r, h(7), seqs, 2, t0), 1);
    lb_recent_add(&r, h(2001), 2001, t0 + 1000, t0 + 1000); /* over the bound */
    assert_int_equal(r.count, 2000);
    assert_int_equal(lb_recent_find(&r, h(7), seqs, 2, t0 + 1000), LB_RECENT_SEARCH);
    assert_int_equal(lb_recent_find(&r, h(2001), seqs, 2, t0 + 10999), LB_RECENT_SEARCH);
    /* Past the window of the key not kept: the old keys have expired too
     * and make room; the table answers again. */
    int64_t later = t0 + 11001;
    assert_int_equal(lb_recent_find(&r, h(2001), seqs, 2, later), 0);
    lb_recent_add(&r, h(3000), 3000, later, later);
    assert_int_equal(r.count, 1);
    assert_int_equal(lb_recent_find(&r, h(3000), seqs, 2, later), 1);
    assert_int_equal(lb_recent_bytes(&r), LB_RECENT_MIN_SLOTS * sizeof(lb_recent_slot));
    lb_recent_free(&r);
}

/* Row numbers are kept as their low 32 bits and rebuilt exactly, also past
 * 2^32; rows spanning 2^32 numbers make the table search the rows. */
static void test_row_numbers_past_32_bits(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 10000, 0);
    int64_t now = 1764000000000ll, seqs[2];
    int64_t base = ((int64_t)1 << 32) - 500; /* crosses 2^32 */
    for (uint32_t i = 0; i < 1000; i++)
        lb_recent_add(&r, h(i + 1), base + i, now, now);
    for (uint32_t i = 0; i < 1000; i++) { /* through a rebuild or two */
        assert_int_equal(lb_recent_find(&r, h(i + 1), seqs, 2, now), 1);
        assert_int_equal(seqs[0], base + i);
    }
    /* Newest first, as the backend loads them at open. */
    lb_recent_free(&r);
    lb_recent_init(&r, 10000, 0);
    for (uint32_t i = 1000; i-- > 0;)
        lb_recent_add(&r, h(i + 1), base + i, now, now);
    assert_int_equal(lb_recent_find(&r, h(1), seqs, 2, now), 1);
    assert_int_equal(seqs[0], base);
    lb_recent_add(&r, h(5000), base + ((int64_t)1 << 32), now, now);
    assert_int_equal(lb_recent_find(&r, h(1), seqs, 2, now), LB_RECENT_SEARCH);
    assert_int_equal(lb_recent_find(&r, h(5000), seqs, 2, now + 10001), 1);
    assert_int_equal(seqs[0], base + ((int64_t)1 << 32));
    lb_recent_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_lookup),
        cmocka_unit_test(test_grow_within_16_bytes_a_key),
        cmocka_unit_test(test_expire_by_time),
        cmocka_unit_test(test_collisions_are_all_candidates),
        cmocka_unit_test(test_bound_falls_back_to_search),
        cmocka_unit_test(test_row_numbers_past_32_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
