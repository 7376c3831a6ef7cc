/* Events and their dedupe (the table of recent Lever keys on its own is in
 * test_store_recent.c), event_insert through the SQLite backend:
 * Lever duplicates in one batch, across a restart, outside the window, after
 * a rolled-back op; results deduplicated by their unique index. */
#include "store_helpers.h"

#include "store/fault.h"
#include "store/recent.h"

/* ---- event_insert ------------------------------------------------------------ */

typedef struct {
    treq r;
    lb_event_rec ev;
    lb_job_rec job[2];
} ereq;

static int seqno;

static void ereq_init(ereq *e, const char *tenant, const char *source, const char *key,
                      int64_t received_at)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->ev.id, sizeof(e->ev.id), "ev_%06d", ++seqno);
    snprintf(e->ev.tenant_id, sizeof(e->ev.tenant_id), "%s", tenant);
    e->ev.source = source;
    e->ev.type = "candidateStageChange";
    e->ev.dedupe_key = key;
    e->ev.status = "accepted";
    e->ev.payload = "{}";
    e->ev.received_at = received_at;
    e->r.op.kind = LB_STORE_EVENT_INSERT;
    e->r.op.cb = treq_cb;
    e->r.op.data = &e->r;
    e->r.op.event_insert.event = &e->ev;
}

/* One job (or two with the same id, which fails the op) for the event. */
static void ereq_jobs(ereq *e, int n)
{
    for (int i = 0; i < n; i++) {
        snprintf(e->job[i].id, sizeof(e->job[i].id), "job_%s", e->ev.id + 3);
        snprintf(e->job[i].tenant_id, sizeof(e->job[i].tenant_id), "%s", e->ev.tenant_id);
        e->job[i].event_id = e->ev.id;
        e->job[i].action = "{\"type\":\"add_tags\",\"tags\":[\"x\"]}";
    }
    e->r.op.event_insert.jobs = e->job;
    e->r.op.event_insert.njobs = (size_t)n;
}

static int insert_one(fixture *f, ereq *e)
{
    return run_op(f, &e->r);
}

static void fx_open_window(fixture *f, int64_t window_ms)
{
    char err[256];
    lb_store_options o = {.lever_dedupe_ms = window_ms};
    int rc = lb_store_open(&f->loop, f->url, &o, &f->store, err, sizeof(err));
    if (rc != 0) fail_msg("lb_store_open: %d %s", rc, err);
}

static void tenants(fixture *f)
{
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    assert_int_equal(upsert(f, "t2", "T2", 1), 0);
}

static void test_lever_duplicates_in_one_batch(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, c;
    ereq_init(&a, "t1", "lever", "h1:tokA", now);
    ereq_init(&b, "t1", "lever", "h1:tokA", now);
    ereq_init(&c, "t2", "lever", "h1:tokA", now); /* another tenant: not a duplicate */
    assert_int_equal(lb_store_submit(f->store, &a.r.op), 0);
    assert_int_equal(lb_store_submit(f->store, &b.r.op), 0);
    assert_int_equal(lb_store_submit(f->store, &c.r.op), 0);
    run_loop(f);
    assert_int_equal(a.r.op.status, 0);
    assert_int_equal(b.r.op.status, 0);
    assert_int_equal(c.r.op.status, 0);
    assert_int_equal(a.r.op.event_insert.duplicate, 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    assert_int_equal(c.r.op.event_insert.duplicate, 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 2);
}

static void test_lever_duplicate_after_restart(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, p;
    ereq_init(&a, "t1", "lever", "h1:tokB", now - 60 * 1000);
    assert_int_equal(insert_one(f, &a), 0);
    ereq_init(&p, "t1", "platform", "res-1", now); /* a result, to be skipped by the load */
    assert_int_equal(insert_one(f, &p), 0);
    fx_close(f);

    fx_open(f); /* the keys of the window come back from the rows */
    ereq_init(&b, "t1", "lever", "h1:tokB", now);
    assert_int_equal(insert_one(f, &b), 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events WHERE source = 'lever'"), 1);
}

static void test_lever_window_bounds_the_keys_kept(void **state)
{
    fixture *f = *state;
    fx_open_window(f, 60 * 60 * 1000);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq old, dup;
    /* Received two hours ago: outside a one-hour window. The hook refuses
     * such a delivery as stale before it reaches the store; the store
     * itself keeps only the window, so after a restart it is forgotten. */
    ereq_init(&old, "t1", "lever", "h1:tokOld", now - 2 * 60 * 60 * 1000);
    assert_int_equal(insert_one(f, &old), 0);
    fx_close(f);
    fx_open_window(f, 60 * 60 * 1000);
    ereq_init(&dup, "t1", "lever", "h1:tokOld", now);
    assert_int_equal(insert_one(f, &dup), 0);
    /* PostgreSQL keeps every key in its unique index until the event is
     * pruned (the interface allows forgetting, not requires it). */
    assert_int_equal(dup.r.op.event_insert.duplicate, fx_is_pg(f) ? 1 : 0);
    fx_close(f);
    /* With a window that covers it, the same row is a duplicate. */
    fx_open_window(f, 3 * 60 * 60 * 1000);
    ereq_init(&dup, "t1", "lever", "h1:tokOld", now);
    assert_int_equal(insert_one(f, &dup), 0);
    assert_int_equal(dup.r.op.event_insert.duplicate, 1);
    fx_close(f);
}

/* Hash collisions through the whole backend: the test knob keeps only a
 * few bits of each tag, so distinct deliveries share tags all the time.
 * With 4 bits, a key has a few candidates, each read and compared; with 1
 * bit, more than the backend reads, so it searches the rows instead.
 * Either way every new delivery is accepted, every copy is a duplicate of
 * the right event, also after a restart. */
static void collide(fixture *f, const char *bits)
{
    enum { N = 48 };
    static char keys[N][32];
    static ereq e[N], d[N];
    setenv("LB_FAULT_RECENT_TAG_BITS", bits, 1);
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "h1:tok-%s-%d", bits, i);
        ereq_init(&e[i], i % 2 ? "t1" : "t2", "lever", keys[i], now);
        if (i < N / 2) /* half in one batch, half one by one */
            assert_int_equal(lb_store_submit(f->store, &e[i].r.op), 0);
    }
    run_loop(f);
    for (int i = N / 2; i < N; i++)
        assert_int_equal(insert_one(f, &e[i]), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(e[i].r.op.status, 0);
        assert_int_equal(e[i].r.op.event_insert.duplicate, 0);
    }
    char t1_id[LB_EVENT_ID_MAX + 1] = "";
    for (int round = 0; round < 2; round++) { /* then again after a restart */
        for (int i = 0; i < N; i++) {
            ereq_init(&d[i], i % 2 ? "t1" : "t2", "lever", keys[i], now);
            assert_int_equal(insert_one(f, &d[i]), 0);
            assert_int_equal(d[i].r.op.event_insert.duplicate, 1);
            assert_string_equal(d[i].r.op.event_insert.existing_id, e[i].ev.id);
        }
        /* t2's key for t1: new the first time, a duplicate of that after */
        ereq x;
        ereq_init(&x, "t1", "lever", keys[0], now);
        assert_int_equal(insert_one(f, &x), 0);
        assert_int_equal(x.r.op.event_insert.duplicate, round);
        if (round == 0) {
            snprintf(t1_id, sizeof(t1_id), "%s", x.ev.id);
            fx_close(f);
            fx_open(f);
        } else {
            assert_string_equal(x.r.op.event_insert.existing_id, t1_id);
        }
    }
    fx_close(f);
    unsetenv("LB_FAULT_RECENT_TAG_BITS");
}

static void test_lever_hash_collisions(void **state)
{
    fixture *f = *state;
    collide(f, "4");
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 49);
}

static void test_lever_hash_collisions_past_candidates(void **state)
{
    fixture *f = *state;
    collide(f, "1");
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 49);
}

static void test_lever_rolled_back_op_is_no_duplicate(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq bad, again, third;
    ereq_init(&bad, "t1", "lever", "h1:tokC", now);
    ereq_jobs(&bad, 2); /* two jobs with one id: the op fails and rolls back */
    assert_int_not_equal(insert_one(f, &bad), 0);
    /* Its key went into the table before the failure; the row did not stay.
     * The next delivery of that key is new, and takes the same row number. */
    ereq_init(&again, "t1", "lever", "h1:tokC", now);
    ereq_jobs(&again, 1);
    assert_int_equal(insert_one(f, &again), 0);
    assert_int_equal(again.r.op.event_insert.duplicate, 0);
    ereq_init(&third, "t1", "lever", "h1:tokC", now);
    assert_int_equal(insert_one(f, &third), 0);
    assert_int_equal(third.r.op.event_insert.duplicate, 1);
    assert_string_equal(third.r.op.event_insert.existing_id, again.ev.id);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    assert_db_intact(f);
}

static void test_results_unique_by_index(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, c;
    ereq_init(&a, "t1", "platform", "res-9", now - 30LL * 24 * 3600 * 1000); /* a month ago */
    assert_int_equal(insert_one(f, &a), 0);
    fx_close(f);
    fx_open_window(f, 1000); /* the Lever window does not apply to results */
    ereq_init(&b, "t1", "platform", "res-9", now);
    ereq_init(&c, "t1", "lever", "res-9", now); /* same key, other source: new */
    assert_int_equal(insert_one(f, &b), 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    assert_int_equal(insert_one(f, &c), 0);
    assert_int_equal(c.r.op.event_insert.duplicate, 0);
    fx_close(f);
}

/* ---- retention (LB_STORE_PRUNE) ----------------------------------------------- */

/* A stage change seen by a delivery and by a reconciliation pass is one
 * event, whichever comes first, within the window; outside it, or for
 * another stage or opportunity, two. */
static void stage_event(ereq *e, const char *source, const char *key, const char *opp,
                        const char *payload, int64_t received, const char *stage,
                        int64_t changed_at)
{
    ereq_init(e, "t1", source, key, received);
    e->ev.opportunity_id = opp;
    e->ev.payload = payload;
    e->r.op.event_insert.stage_id = stage;
    e->r.op.event_insert.changed_at = changed_at;
    e->r.op.event_insert.stage_window_ms = 5 * 60 * 1000;
}

/* ---- several deliveries in one batch ------------------------------------------ */

/* Submits e[0..n) and completes them in one batch. */
static void submit_batch(fixture *f, ereq **e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(lb_store_submit(f->store, &e[i]->r.op), 0);
    run_loop(f);
}

static void assert_new(const ereq *e)
{
    assert_int_equal(e->r.op.status, 0);
    assert_int_equal(e->r.op.event_insert.duplicate, 0);
}

static void assert_dup_of(const ereq *e, const ereq *first)
{
    assert_int_equal(e->r.op.status, 0);
    assert_int_equal(e->r.op.event_insert.duplicate, 1);
    assert_string_equal(e->r.op.event_insert.existing_id, first->ev.id);
}

/* What the PostgreSQL backend sends as one statement (pg.c,
 * Q_EVENT_INSERT_MANY) answers each op as if it ran alone, in order: new
 * deliveries inserted with their jobs; the same key twice in the batch, the
 * second a duplicate of the first (and its jobs not inserted); copies of
 * stored events duplicates of those; another tenant's or source's key new;
 * a Lever stage change already seen by a pass a duplicate of the pass's
 * event; the hook's time that of its newest inserted delivery. */
static void test_batch_of_deliveries(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    raw_exec(f, "INSERT INTO hooks(id, tenant_id, status, last_delivery_at)"
                " VALUES ('h1', 't1', 'active', 5)");
    int64_t now = lb_time_now_ms();
    char rec_s2[160], lever_s2[128];
    snprintf(rec_s2, sizeof(rec_s2), "{\"data\":{\"toStageId\":\"s2\"},\"triggeredAt\":%lld}",
             (long long)(now - 60000));
    snprintf(lever_s2, sizeof(lever_s2), "{\"data\":{\"toStageId\":\"s2\"}}");
    ereq stored, pass;
    ereq_init(&stored, "t1", "lever", "h1:stored", now - 1000);
    assert_int_equal(insert_one(f, &stored), 0);
    stage_event(&pass, "reconcile", "o2:s2:1", "o2", rec_s2, now - 500, "s2", now - 60000);
    assert_int_equal(insert_one(f, &pass), 0);
    assert_new(&pass);

    ereq a, b, c, d, e, g, h, x;
    ereq_init(&a, "t1", "lever", "h1:a", now + 1);
    ereq_jobs(&a, 1);
    a.r.op.event_insert.hook_id = "h1";
    ereq_init(&b, "t1", "lever", "h1:a", now + 2); /* a's key: its job stays out */
    ereq_jobs(&b, 1);
    b.r.op.event_insert.hook_id = "h1";
    ereq_init(&c, "t1", "lever", "h1:stored", now);
    ereq_init(&d, "t2", "lever", "h1:a", now);                      /* another tenant */
    ereq_init(&e, "t1", "platform", "h1:a", now);                   /* another source */
    stage_event(&g, "lever", "h1:g", "o1", lever_s2, now, "s2", 0); /* another opportunity */
    stage_event(&h, "lever", "h1:h", "o2", lever_s2, now, "s2", 0); /* the pass saw it */
    ereq_init(&x, "t1", "lever", "h1:stored", now);
    ereq *all[] = {&a, &b, &c, &d, &e, &g, &h, &x};
    submit_batch(f, all, sizeof(all) / sizeof(all[0]));
    assert_new(&a);
    assert_dup_of(&b, &a);
    assert_dup_of(&c, &stored);
    assert_new(&d);
    assert_new(&e);
    assert_new(&g);
    assert_dup_of(&h, &pass);
    assert_dup_of(&x, &stored);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 6);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE event_id = '%s'", a.ev.id);
    assert_int_equal(raw_int(f, sql), 1);
    assert_int_equal(raw_int(f, "SELECT last_delivery_at FROM hooks WHERE id = 'h1'"), now + 1);
}

/* One op of such a batch failing (two jobs with one id) fails alone, with
 * the status it has alone; the others are answered as if it had not been
 * submitted: its key is new to a later op of the batch. */
static void test_batch_of_deliveries_one_fails(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq alone;
    ereq_init(&alone, "t1", "lever", "h1:alone", now);
    ereq_jobs(&alone, 2);
    int alone_status = insert_one(f, &alone);
    assert_int_not_equal(alone_status, 0);

    ereq a, bad, c, d, e;
    ereq_init(&a, "t1", "lever", "h1:fa", now);
    ereq_init(&bad, "t1", "lever", "h1:fb", now);
    ereq_jobs(&bad, 2);
    ereq_init(&c, "t1", "lever", "h1:fa", now);
    ereq_init(&d, "t1", "lever", "h1:fb", now);
    ereq_jobs(&d, 1);
    ereq_init(&e, "t2", "lever", "h1:fe", now);
    ereq *all[] = {&a, &bad, &c, &d, &e};
    submit_batch(f, all, sizeof(all) / sizeof(all[0]));
    assert_new(&a);
    assert_int_equal(bad.r.op.status, alone_status);
    assert_dup_of(&c, &a);
    assert_new(&d);
    assert_new(&e);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 3);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    assert_db_intact(f);
}

/* Distinct keys in a batch (pg.c sends them without ON CONFLICT first): a
 * copy of a stored event among them is still its duplicate, the others
 * new, in that batch and in the next; an op failing among them fails
 * alone. */
static void test_batch_of_distinct_deliveries(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq stored;
    ereq_init(&stored, "t1", "lever", "h1:ds", now);
    assert_int_equal(insert_one(f, &stored), 0);
    ereq a, b, c;
    ereq_init(&a, "t1", "lever", "h1:d1", now);
    ereq_jobs(&a, 1);
    ereq_init(&b, "t1", "lever", "h1:ds", now);
    ereq_jobs(&b, 1);
    ereq_init(&c, "t2", "lever", "h1:d3", now);
    ereq *first[] = {&a, &b, &c};
    submit_batch(f, first, 3);
    assert_new(&a);
    assert_dup_of(&b, &stored);
    assert_new(&c);
    ereq d, e, g, bad;
    ereq_init(&d, "t1", "lever", "h1:d4", now);
    ereq_init(&bad, "t1", "lever", "h1:d5", now);
    ereq_jobs(&bad, 2);
    ereq_init(&e, "t1", "lever", "h1:d1", now);
    ereq_init(&g, "t2", "lever", "h1:d6", now);
    ereq *second[] = {&d, &bad, &e, &g};
    submit_batch(f, second, 4);
    assert_new(&d);
    assert_int_not_equal(bad.r.op.status, 0);
    assert_dup_of(&e, &a);
    assert_new(&g);
    ereq x, y;
    ereq_init(&x, "t1", "lever", "h1:d7", now);
    ereq_init(&y, "t1", "lever", "h1:d8", now);
    ereq *third[] = {&x, &y};
    submit_batch(f, third, 2);
    assert_new(&x);
    assert_new(&y);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 7);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
}

/* The fault hook's op N among such a batch fails, exactly that one. */
static void test_batch_of_deliveries_fault_op(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    lb_store__fault_clear();
    int64_t now = lb_time_now_ms();
    ereq a, b, c, d;
    ereq_init(&a, "t1", "lever", "h1:qa", now);
    ereq_init(&b, "t1", "lever", "h1:qb", now);
    ereq_jobs(&b, 1);
    ereq_init(&c, "t1", "lever", "h1:qa", now);
    ereq_init(&d, "t1", "lever", "h1:qb", now);
    lb_store__fault_arm(0, 2);
    ereq *all[] = {&a, &b, &c, &d};
    submit_batch(f, all, sizeof(all) / sizeof(all[0]));
    lb_store__fault_clear();
    assert_new(&a);
    assert_int_equal(b.r.op.status, LB_EIO);
    assert_dup_of(&c, &a);
    assert_new(&d);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 2);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 0);
}

static void test_stage_change_one_event(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    char lever_s1[128], rec_s1[160], rec_old[160];
    snprintf(lever_s1, sizeof(lever_s1), "{\"data\":{\"toStageId\":\"s1\"},\"triggeredAt\":%lld}",
             (long long)now);
    snprintf(rec_s1, sizeof(rec_s1), "{\"data\":{\"toStageId\":\"s1\"},\"triggeredAt\":%lld}",
             (long long)(now - 60000));
    snprintf(rec_old, sizeof(rec_old), "{\"data\":{\"toStageId\":\"s1\"},\"triggeredAt\":%lld}",
             (long long)(now - 3600000));
    /* A delivery first, then a pass finding the same change: a duplicate. */
    ereq d, r;
    stage_event(&d, "lever", "h:tok1", "o1", lever_s1, now, "s1", 0);
    assert_int_equal(insert_one(f, &d), 0);
    assert_false(d.r.op.event_insert.duplicate);
    stage_event(&r, "reconcile", "o1:s1:1", "o1", rec_s1, now + 1000, "s1", now - 60000);
    assert_int_equal(insert_one(f, &r), 0);
    assert_true(r.r.op.event_insert.duplicate);
    assert_string_equal(r.r.op.event_insert.existing_id, d.ev.id);
    /* Another stage, another opportunity: events of their own. */
    ereq r2, r3;
    stage_event(&r2, "reconcile", "o1:s2:1", "o1", rec_s1, now + 1000, "s2", now - 60000);
    assert_int_equal(insert_one(f, &r2), 0);
    assert_false(r2.r.op.event_insert.duplicate);
    stage_event(&r3, "reconcile", "o2:s1:1", "o2", rec_s1, now + 1000, "s1", now - 60000);
    assert_int_equal(insert_one(f, &r3), 0);
    assert_false(r3.r.op.event_insert.duplicate);
    /* A pass first, then a late delivery of that change: a duplicate. */
    ereq late;
    stage_event(&late, "lever", "h:tok2", "o2", lever_s1, now + 2000, "s1", 0);
    assert_int_equal(insert_one(f, &late), 0);
    assert_true(late.r.op.event_insert.duplicate);
    assert_string_equal(late.r.op.event_insert.existing_id, r3.ev.id);
    /* A change an hour old is not the one a delivery now reports. */
    ereq old, fresh;
    stage_event(&old, "reconcile", "o3:s1:1", "o3", rec_old, now, "s1", now - 3600000);
    assert_int_equal(insert_one(f, &old), 0);
    assert_false(old.r.op.event_insert.duplicate);
    stage_event(&fresh, "lever", "h:tok3", "o3", lever_s1, now + 3000, "s1", 0);
    assert_int_equal(insert_one(f, &fresh), 0);
    assert_false(fresh.r.op.event_insert.duplicate);
    /* The same reconcile key twice (two passes): the unique index. */
    ereq again;
    stage_event(&again, "reconcile", "o3:s1:1", "o3", rec_old, now + 5000, "s1", now - 3600000);
    assert_int_equal(insert_one(f, &again), 0);
    assert_true(again.r.op.event_insert.duplicate);
    assert_string_equal(again.r.op.event_insert.existing_id, old.ev.id);

    /* Reconcile events per tenant and hour. */
    treq c = {0};
    c.op.kind = LB_STORE_RECONCILED_COUNTS;
    c.op.cb = treq_cb;
    c.op.data = &c;
    c.op.reconciled_counts.since = now - 7 * 24 * 3600000LL;
    assert_int_equal(run_op(f, &c), 0);
    uint32_t total = 0;
    for (size_t i = 0; i < c.op.reconciled_counts.count; i++) {
        assert_string_equal(c.op.reconciled_counts.recs[i].tenant_id, "t1");
        total += c.op.reconciled_counts.recs[i].count;
    }
    assert_int_equal(total, 3);
    lb_free(c.op.reconciled_counts.recs);
    fx_close(f);
}

/* ---- backfills ---------------------------------------------------------------- */

static int bf_page(fixture *f, const char *id, ereq *evs, size_t n, const char *offset, int done,
                   treq *out)
{
    static const char *const assessments[] = {"js"};
    lb_store_op *ops = lb_calloc(n ? n : 1, sizeof(*ops));
    for (size_t i = 0; i < n; i++)
        ops[i] = evs[i].r.op;
    memset(out, 0, sizeof(*out));
    out->op.kind = LB_STORE_BACKFILL_PAGE;
    out->op.cb = treq_cb;
    out->op.data = out;
    snprintf(out->op.backfill_page.tenant_id, sizeof(out->op.backfill_page.tenant_id), "t1");
    snprintf(out->op.backfill_page.id, sizeof(out->op.backfill_page.id), "%s", id);
    out->op.backfill_page.offset = offset;
    out->op.backfill_page.done = done;
    out->op.backfill_page.events = ops;
    out->op.backfill_page.nevents = n;
    out->op.backfill_page.assessments = assessments;
    out->op.backfill_page.nassessments = 1;
    int rc = run_op(f, out);
    for (size_t i = 0; i < n; i++)
        evs[i].r.op = ops[i];
    lb_free(ops);
    return rc;
}

static void bf_put(fixture *f, const char *id, int64_t at)
{
    lb_backfill_rec rec = {.created_at = at};
    snprintf(rec.id, sizeof(rec.id), "%s", id);
    snprintf(rec.tenant_id, sizeof(rec.tenant_id), "t1");
    snprintf(rec.workflow_id, sizeof(rec.workflow_id), "wf_1");
    snprintf(rec.status, sizeof(rec.status), "running");
    treq r = {0};
    r.op.kind = LB_STORE_BACKFILL_PUT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.backfill_put.rec = &rec;
    assert_int_equal(run_op(f, &r), 0);
}

static void bf_event(ereq *e, const char *key, const char *opp)
{
    ereq_init(e, "t1", "backfill", key, lb_time_now_ms());
    e->ev.opportunity_id = opp;
    ereq_jobs(e, 1);
}

static lb_backfill_rec bf_get(fixture *f, const char *id)
{
    treq r = {0};
    r.op.kind = LB_STORE_BACKFILL_GET;
    r.op.cb = treq_cb;
    r.op.data = &r;
    snprintf(r.op.backfill_get.tenant_id, sizeof(r.op.backfill_get.tenant_id), "t1");
    snprintf(r.op.backfill_get.id, sizeof(r.op.backfill_get.id), "%s", id);
    assert_int_equal(run_op(f, &r), 0);
    return r.op.backfill_get.rec;
}

/* Pages with their counts in one transaction each; a page seen again adds
 * no event; an opportunity already invited is skipped; a page of a
 * backfill that is not running writes nothing. */
static void test_backfill_pages(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    bf_put(f, "bf_1", now);
    /* o2 is already invited to "js" */
    lb_invitation_rec inv = {.opportunity_id = "o2", .assessment = "js", .job_id = "job_old"};
    snprintf(inv.tenant_id, sizeof(inv.tenant_id), "t1");
    treq c = {0};
    c.op.kind = LB_STORE_INVITATION_CLAIM;
    c.op.cb = treq_cb;
    c.op.data = &c;
    c.op.invitation_claim.rec = &inv;
    assert_int_equal(run_op(f, &c), 0);
    lb_invitation_rec_free(&c.op.invitation_claim.existing);

    ereq p1[2];
    bf_event(&p1[0], "bf_1:o1", "o1");
    bf_event(&p1[1], "bf_1:o2", "o2");
    treq r;
    assert_int_equal(bf_page(f, "bf_1", p1, 2, "next1", 0, &r), 0);
    assert_false(p1[0].r.op.event_insert.duplicate);
    assert_false(p1[1].r.op.event_insert.duplicate);
    assert_int_equal(r.op.backfill_page.listed, 2);
    assert_int_equal(r.op.backfill_page.queued, 1);
    assert_int_equal(r.op.backfill_page.skipped, 1);
    lb_backfill_rec b = bf_get(f, "bf_1");
    assert_string_equal(b.status, "running");
    assert_string_equal(b.offset, "next1");
    assert_string_equal(b.workflow_id, "wf_1");
    lb_backfill_rec_free(&b);

    /* o1 again (a page redone): its event is there already */
    ereq p2[2];
    bf_event(&p2[0], "bf_1:o1", "o1");
    bf_event(&p2[1], "bf_1:o3", "o3");
    assert_int_equal(bf_page(f, "bf_1", p2, 2, "next2", 0, &r), 0);
    assert_true(p2[0].r.op.event_insert.duplicate);
    assert_string_equal(p2[0].r.op.event_insert.existing_id, p1[0].ev.id);
    assert_false(p2[1].r.op.event_insert.duplicate);
    assert_int_equal(r.op.backfill_page.listed, 4);
    assert_int_equal(r.op.backfill_page.queued, 2);
    assert_int_equal(r.op.backfill_page.skipped, 2);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE event_id = '%s'", p2[0].ev.id);
    assert_int_equal(raw_int(f, sql), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE event_id = '%s'", p2[1].ev.id);
    assert_int_equal(raw_int(f, sql), 1);

    /* the last page: done, no offset */
    assert_int_equal(bf_page(f, "bf_1", NULL, 0, NULL, 1, &r), 0);
    b = bf_get(f, "bf_1");
    assert_string_equal(b.status, "done");
    assert_null(b.offset);
    assert_int_equal(b.listed, 4);
    assert_int_equal(b.queued, 2);
    assert_int_equal(b.skipped, 2);
    lb_backfill_rec_free(&b);

    /* not running any more: nothing written */
    ereq late;
    bf_event(&late, "bf_1:o9", "o9");
    assert_int_equal(bf_page(f, "bf_1", &late, 1, NULL, 0, &r), LB_EINVAL);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events WHERE dedupe_key = 'bf_1:o9'"), 0);
    assert_int_equal(bf_page(f, "bf_nope", NULL, 0, NULL, 1, &r), LB_EINVAL);

    /* finish: only a running one */
    treq fin = {0};
    fin.op.kind = LB_STORE_BACKFILL_FINISH;
    fin.op.cb = treq_cb;
    fin.op.data = &fin;
    snprintf(fin.op.backfill_finish.tenant_id, sizeof(fin.op.backfill_finish.tenant_id), "t1");
    snprintf(fin.op.backfill_finish.id, sizeof(fin.op.backfill_finish.id), "bf_1");
    fin.op.backfill_finish.status = "cancelled";
    assert_int_equal(run_op(f, &fin), 0);
    assert_false(fin.op.backfill_finish.changed);
    bf_put(f, "bf_2", now + 1);
    treq fin2 = fin;
    fin2.calls = 0;
    fin2.op.data = &fin2;
    snprintf(fin2.op.backfill_finish.id, sizeof(fin2.op.backfill_finish.id), "bf_2");
    fin2.op.backfill_finish.last_error = "cancelled by a test";
    bf_put(f, "bf_3", now + 2);
    assert_int_equal(run_op(f, &fin2), 0);
    assert_true(fin2.op.backfill_finish.changed);
    b = bf_get(f, "bf_2");
    assert_string_equal(b.status, "cancelled");
    assert_string_equal(b.last_error, "cancelled by a test");
    lb_backfill_rec_free(&b);

    /* the tenant's, newest first; every running one */
    treq l = {0};
    l.op.kind = LB_STORE_BACKFILL_LIST;
    l.op.cb = treq_cb;
    l.op.data = &l;
    snprintf(l.op.backfill_list.tenant_id, sizeof(l.op.backfill_list.tenant_id), "t1");
    l.op.backfill_list.limit = 10;
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.backfill_list.count, 3);
    assert_string_equal(l.op.backfill_list.recs[0].id, "bf_3");
    assert_string_equal(l.op.backfill_list.recs[2].id, "bf_1");
    lb_backfill_recs_free(l.op.backfill_list.recs, l.op.backfill_list.count);
    treq all = {0};
    all.op.kind = LB_STORE_BACKFILL_LIST;
    all.op.cb = treq_cb;
    all.op.data = &all;
    all.op.backfill_list.running = 1;
    assert_int_equal(run_op(f, &all), 0);
    assert_int_equal(all.op.backfill_list.count, 1);
    assert_string_equal(all.op.backfill_list.recs[0].id, "bf_3");
    lb_backfill_recs_free(all.op.backfill_list.recs, all.op.backfill_list.count);
    fx_close(f);
}

static size_t prune(fixture *f, int64_t before, unsigned limit, size_t *events)
{
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_PRUNE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.prune.before = before;
    r.op.prune.limit = limit;
    assert_int_equal(run_op(f, &r), 0);
    *events = r.op.prune.events;
    return r.op.prune.jobs;
}

static void test_prune_keeps_what_exactly_once_needs(void **state)
{
    fixture *f = *state;
    fx_open_window(f, 3 * 60 * 60 * 1000); /* Lever keys: three hours */
    tenants(f);
    const int64_t now = lb_time_now_ms(), day = 24LL * 3600 * 1000;
    ereq done, result, busy, recent, res2;
    ereq_init(&done, "t1", "lever", "h1:old", now - 10 * day);
    ereq_jobs(&done, 1);
    ereq_init(&result, "t1", "platform", "res-old", now - 10 * day);
    ereq_jobs(&result, 1);
    ereq_init(&busy, "t1", "lever", "h1:busy", now - 10 * day);
    ereq_jobs(&busy, 1);
    ereq_init(&recent, "t2", "lever", "h1:recent", now - 60 * 60 * 1000); /* in the window */
    ereq_jobs(&recent, 1);
    ereq_init(&res2, "t2", "platform", "res-new", now - 60 * 60 * 1000);
    ereq *all[] = {&done, &result, &busy, &recent, &res2};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(insert_one(f, all[i]), 0);
    /* Finished long ago, but busy's job still waits to run. */
    raw_exec(f, "UPDATE jobs SET status = 'succeeded', updated_at ="
                " (SELECT received_at FROM events WHERE events.id = jobs.event_id)");
    raw_exec(f, "UPDATE jobs SET status = 'retrying' WHERE event_id IN"
                " (SELECT id FROM events WHERE dedupe_key = 'h1:busy')");
    size_t events = 0;
    /* Nothing is older than a year. */
    assert_int_equal(prune(f, now - 365 * day, 100, &events), 0);
    assert_int_equal(events, 0);
    /* Retention of zero: every finished job; of the events, the finished
     * delivery and both results, not the busy one nor the one whose key is
     * still inside the Lever window. */
    assert_int_equal(prune(f, now, 100, &events), 3);
    assert_int_equal(events, 3);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events WHERE dedupe_key IN"
                                " ('h1:busy', 'h1:recent')"),
                     2);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 2);
    /* The results are still duplicates, of the events they had. */
    ereq again;
    ereq_init(&again, "t1", "platform", "res-old", now);
    assert_int_equal(insert_one(f, &again), 0);
    assert_int_equal(again.r.op.event_insert.duplicate, 1);
    assert_string_equal(again.r.op.event_insert.existing_id, result.ev.id);
    ereq_init(&again, "t2", "platform", "res-new", now);
    assert_int_equal(insert_one(f, &again), 0);
    assert_int_equal(again.r.op.event_insert.duplicate, 1);
    assert_string_equal(again.r.op.event_insert.existing_id, res2.ev.id);
    /* And the Lever delivery inside the window still is. */
    ereq_init(&again, "t2", "lever", "h1:recent", now);
    assert_int_equal(insert_one(f, &again), 0);
    assert_int_equal(again.r.op.event_insert.duplicate, 1);
    fx_close(f);
    /* A deleted tenant takes its pruned keys along. */
    fx_open(f);
    treq d;
    treq_delete(&d, "t1");
    assert_int_equal(run_op(f, &d), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM event_keys WHERE tenant_id = 't1'"), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM event_keys"), 1);
}

static void test_prune_in_bounded_batches(void **state)
{
    fixture *f = *state;
    fx_open_window(f, 1000);
    tenants(f);
    const int64_t now = lb_time_now_ms(), day = 24LL * 3600 * 1000;
    enum { N = 25 };
    static ereq e[N];
    static char keys[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "h1:b%d", i);
        ereq_init(&e[i], "t1", "lever", keys[i], now - 2 * day + i);
        ereq_jobs(&e[i], 1);
        assert_int_equal(lb_store_submit(f->store, &e[i].r.op), 0);
    }
    run_loop(f);
    raw_exec(f, "UPDATE jobs SET status = 'failed', updated_at ="
                " (SELECT received_at FROM events WHERE events.id = jobs.event_id)");
    size_t events = 0, jobs = 0, n;
    int rounds = 0;
    do { /* ten at a time, oldest first: the jobs go a round before their events */
        n = prune(f, now - day, 10, &events);
        jobs += n;
        rounds++;
        assert_true(n <= 10 && events <= 10);
        assert_int_equal(raw_int(f, "SELECT count(*) FROM events e WHERE NOT EXISTS"
                                    " (SELECT 1 FROM jobs j WHERE j.event_id = e.id)"),
                         0);
    } while (n > 0 || events > 0);
    assert_int_equal(jobs, N);
    assert_int_equal(rounds, 4);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 0);
    /* Bounds are checked. */
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_PRUNE;
    r.op.cb = treq_cb;
    r.op.prune.before = now;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL); /* limit 0 */
    r.op.prune.limit = LB_STORE_PRUNE_MAX + 1;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    fx_close(f);
}

/* ---- failure tags (api.md "Failures visible in Lever") --------------------------- */

static lb_job_rec plain_job(const char *id, const char *tenant, const char *opp, const char *action)
{
    lb_job_rec j;
    memset(&j, 0, sizeof(j));
    snprintf(j.id, sizeof(j.id), "%s", id);
    snprintf(j.tenant_id, sizeof(j.tenant_id), "%s", tenant);
    j.opportunity_id = (char *)opp;
    j.action = (char *)action;
    j.status = LB_JOB_QUEUED;
    j.created_at = 1000;
    return j;
}

static int insert_jobs(fixture *f, lb_job_rec *recs, size_t n)
{
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_INSERT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.job_insert.recs = recs;
    r.op.job_insert.count = n;
    return run_op(f, &r);
}

/* A failed job's end carrying its tag job. */
typedef struct {
    treq r;
    lb_job_rec rec, tag;
} fail_req;

static void fail_req_init(fail_req *q, const char *tenant, const char *job, const char *opp,
                          const char *tag_job, const char *tag)
{
    memset(q, 0, sizeof(*q));
    q->rec = plain_job(job, tenant, opp, "{\"type\":\"add_note\"}");
    q->rec.status = LB_JOB_FAILED;
    q->rec.last_error = (char *)"refused";
    q->tag = plain_job(tag_job, tenant, opp, "{\"type\":\"failure_tag\",\"tag\":\"lb:failed\"}");
    q->r.op.kind = LB_STORE_JOB_UPDATE;
    q->r.op.cb = treq_cb;
    q->r.op.data = &q->r;
    q->r.op.job_update.rec = &q->rec;
    q->r.op.job_update.tag_job = &q->tag;
    q->r.op.job_update.tag = tag;
}

static void test_failure_tag_once_per_opportunity(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);

    /* The tenant's tag is stored, loaded, and cleared by NULL. */
    treq u;
    treq_upsert(&u, "t1", "T1", 2);
    u.op.tenant_upsert.rec.failure_tag = (char *)"lb:failed";
    assert_int_equal(run_op(f, &u), 0);
    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 2);
    assert_string_equal(l.op.tenant_load_all.recs[0].failure_tag, "lb:failed");
    assert_null(l.op.tenant_load_all.recs[1].failure_tag);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);

    const char *a = "{\"type\":\"add_note\"}";
    lb_job_rec jobs[4] = {plain_job("job_a", "t1", "O1", a), plain_job("job_b", "t1", "O1", a),
                          plain_job("job_c", "t1", "O2", a), plain_job("job_d", "t2", "O1", a)};
    assert_int_equal(insert_jobs(f, jobs, 4), 0);

    /* One batch: two failures on O1 (one tag job), one on O2, one of
     * another tenant's O1, and the end of a job that is not there. */
    fail_req q[5];
    fail_req_init(&q[0], "t1", "job_a", "O1", "job_ta", "lb:failed");
    fail_req_init(&q[1], "t1", "job_b", "O1", "job_tb", "lb:failed");
    fail_req_init(&q[2], "t1", "job_c", "O2", "job_tc", "lb:failed");
    fail_req_init(&q[3], "t2", "job_d", "O1", "job_td", "lb:failed");
    fail_req_init(&q[4], "t1", "job_gone", "O3", "job_tg", "lb:failed");
    for (int i = 0; i < 5; i++)
        assert_int_equal(lb_store_submit(f->store, &q[i].r.op), 0);
    run_loop(f);
    int want_added[5] = {1, 0, 1, 1, 0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(q[i].r.calls, 1);
        assert_int_equal(q[i].r.op.status, i == 4 ? LB_ENOTFOUND : 0);
        assert_int_equal(q[i].r.op.job_update.tag_added, want_added[i]);
    }
    /* Later, again on O1 (a retried job that failed again): nothing new. */
    fail_req again;
    fail_req_init(&again, "t1", "job_a", "O1", "job_ta2", "lb:failed");
    assert_int_equal(run_op(f, &again.r), 0);
    assert_int_equal(again.r.op.job_update.tag_added, 0);
    /* Another tag on the same opportunity is its own. */
    fail_req other;
    fail_req_init(&other, "t1", "job_b", "O1", "job_tb2", "other-tag");
    assert_int_equal(run_op(f, &other.r), 0);
    assert_int_equal(other.r.op.job_update.tag_added, 1);

    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs WHERE status = 'failed'"), 4);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs WHERE id IN ('job_ta', 'job_tc',"
                                " 'job_td', 'job_tb2') AND status = 'queued'"),
                     4);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs WHERE id IN ('job_tb', 'job_tg',"
                                " 'job_ta2')"),
                     0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM failure_tags"), 4);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM failure_tags WHERE tenant_id = 't1'"
                                " AND opportunity_id = 'O1' AND tag = 'lb:failed'"
                                " AND job_id = 'job_ta'"),
                     1);

    /* Input rules: a tag job needs its tag, a bounded one, and an
     * opportunity; a tag needs a tag job. */
    fail_req bad;
    fail_req_init(&bad, "t1", "job_a", "O1", "job_x", NULL);
    assert_int_equal(lb_store_submit(f->store, &bad.r.op), LB_EINVAL);
    char longtag[LB_FAILURE_TAG_MAX + 2];
    memset(longtag, 'x', sizeof(longtag) - 1);
    longtag[sizeof(longtag) - 1] = '\0';
    fail_req_init(&bad, "t1", "job_a", "O1", "job_x", longtag);
    assert_int_equal(lb_store_submit(f->store, &bad.r.op), LB_EINVAL);
    fail_req_init(&bad, "t1", "job_a", "O1", "job_x", "");
    assert_int_equal(lb_store_submit(f->store, &bad.r.op), LB_EINVAL);
    fail_req_init(&bad, "t1", "job_a", "O1", "job_x", "lb:failed");
    bad.tag.opportunity_id = NULL;
    assert_int_equal(lb_store_submit(f->store, &bad.r.op), LB_EINVAL);
    fail_req_init(&bad, "t1", "job_a", "O1", "job_x", "lb:failed");
    bad.r.op.job_update.tag_job = NULL;
    assert_int_equal(lb_store_submit(f->store, &bad.r.op), LB_EINVAL);
    treq_upsert(&u, "t1", "T1", 3);
    u.op.tenant_upsert.rec.failure_tag = longtag;
    assert_int_equal(lb_store_submit(f->store, &u.op), LB_EINVAL);

    /* The ledger goes with its tenant. */
    treq d;
    treq_delete(&d, "t1");
    assert_int_equal(run_op(f, &d), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM failure_tags"), 1);
    assert_db_intact(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lever_duplicates_in_one_batch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_duplicate_after_restart, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_window_bounds_the_keys_kept, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_rolled_back_op_is_no_duplicate, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_results_unique_by_index, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stage_change_one_event, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_backfill_pages, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_of_deliveries, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_of_deliveries_one_fails, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_of_distinct_deliveries, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_of_deliveries_fault_op, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_hash_collisions, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_hash_collisions_past_candidates, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_keeps_what_exactly_once_needs, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_in_bounded_batches, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failure_tag_once_per_opportunity, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests_name("store_events", tests, NULL, NULL);
}
