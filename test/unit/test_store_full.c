/* The SQLite backend on a full disk, through the test-only fault injection
 * (src/store/fault.h): while the flag file exists, every write to the
 * database and its WAL fails with SQLITE_FULL. */
#include "store_helpers.h"

#include <fcntl.h>
#include <sys/stat.h>

static char flag_dir[64];
static char flag_path[128];

static void disk_full(int on)
{
    if (on) {
        int fd = open(flag_path, O_WRONLY | O_CREAT, 0600);
        assert_true(fd >= 0);
        close(fd);
    } else {
        unlink(flag_path);
    }
}

static void treq_meta_get(treq *r, const char *key)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = LB_STORE_META_GET;
    r->op.cb = treq_cb;
    r->op.data = r;
    r->op.meta_get.key = key;
}

/* A batch mixing reads and writes while the disk is full: the COMMIT fails
 * and every write with it, but every read answers, from the state before
 * the batch; in submission order as always. */
static void test_reads_do_not_share_failed_commit(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "a", "A", 1), 0);

    disk_full(1);
    treq r[6];
    treq_upsert(&r[0], "b", "B", 2);
    treq_load_all(&r[1]);
    treq_meta_get(&r[2], "absent");
    treq_upsert(&r[3], "c", "C", 2);
    treq_load_all(&r[4]);
    treq_delete(&r[5], "a");
    completion_counter = 0;
    for (int i = 0; i < 6; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].order, i);
    }
    /* The cause by name, not "input/output error". */
    assert_int_equal(r[0].op.status, UV_ENOSPC);
    assert_int_equal(r[3].op.status, UV_ENOSPC);
    assert_int_equal(r[5].op.status, UV_ENOSPC);
    assert_int_equal(lb_store_ready(f->store), 0);
    assert_int_equal(lb_store_write_error(f->store), UV_ENOSPC);
    assert_int_equal(r[2].op.status, LB_ENOTFOUND);
    for (int i = 1; i <= 4; i += 3) {
        assert_int_equal(r[i].op.status, 0);
        assert_int_equal(r[i].op.tenant_load_all.count, 1);
        assert_string_equal(r[i].op.tenant_load_all.recs[0].id, "a");
        lb_tenant_recs_free(r[i].op.tenant_load_all.recs, r[i].op.tenant_load_all.count);
    }

    /* Many batches in a row: not one read fails. */
    for (int round = 0; round < 20; round++) {
        treq w, l;
        treq_upsert(&w, "x", "X", 3);
        treq_load_all(&l);
        assert_int_equal(lb_store_submit(f->store, &w.op), 0);
        assert_int_equal(lb_store_submit(f->store, &l.op), 0);
        run_loop(f);
        assert_int_equal(w.op.status, UV_ENOSPC);
        assert_int_equal(l.op.status, 0);
        assert_int_equal(lb_store_ready(f->store), 0);
        assert_int_equal(l.op.tenant_load_all.count, 1);
        lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    }

    /* Space is back: writes succeed again. */
    disk_full(0);
    assert_int_equal(upsert(f, "d", "D", 4), 0);
    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 2);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 2);
    assert_db_intact(f);
}

/* Runs the loop until the store is ready, for at most timeout_ms. */
typedef struct {
    uv_timer_t timer;
    fixture *f;
    int64_t until;
} ready_wait;

static void ready_poll_cb(uv_timer_t *t)
{
    ready_wait *w = t->data;
    if (lb_store_ready(w->f->store) || lb_time_now_ms() >= w->until) uv_timer_stop(t);
}

static int wait_ready(fixture *f, int64_t timeout_ms)
{
    ready_wait w = {.f = f, .until = lb_time_now_ms() + timeout_ms};
    uv_timer_init(&f->loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, ready_poll_cb, 20, 20);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&w.timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return lb_store_ready(f->store);
}

/* Opening on a full disk: the store opens read-only-degraded (not ready,
 * the cause known before any caller wrote), serves reads, refuses writes
 * with UV_ENOSPC, and becomes ready by itself once space returns (its
 * probe), with no write from a caller. */
static void test_open_on_full_disk(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "a", "A", 1), 0);
    fx_close(f);

    disk_full(1);
    char err[256];
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err)), 0);
    assert_int_equal(lb_store_ready(f->store), 0);
    assert_int_equal(lb_store_write_error(f->store), UV_ENOSPC);
    assert_string_equal(lb_strerror(lb_store_write_error(f->store)), "no space left on device");
    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 1);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    assert_int_equal(upsert(f, "b", "B", 2), UV_ENOSPC);
    /* Still full: the probe keeps failing, the store stays degraded. */
    assert_int_equal(wait_ready(f, 1500), 0);

    disk_full(0);
    assert_int_equal(wait_ready(f, 5000), 1);
    assert_int_equal(lb_store_write_error(f->store), 0);
    assert_int_equal(upsert(f, "b", "B", 2), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 2);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM meta WHERE key = 'write_probe'"), 0);
    assert_db_intact(f);
}

static int full_teardown(void **state)
{
    disk_full(0);
    return fx_teardown(state);
}

int main(void)
{
    snprintf(flag_dir, sizeof(flag_dir), "/tmp/lbfull-XXXXXX");
    if (mkdtemp(flag_dir) == NULL) return 1;
    snprintf(flag_path, sizeof(flag_path), "%s/full", flag_dir);
    setenv("LB_FAULT_DISK_FULL", flag_path, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_do_not_share_failed_commit, fx_setup,
                                        full_teardown),
        cmocka_unit_test_setup_teardown(test_open_on_full_disk, fx_setup, full_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(flag_path);
    rmdir(flag_dir);
    return rc;
}
