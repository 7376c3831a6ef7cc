/* lb_store_backup: an online copy of an open SQLite store that holds what was
 * committed, never overwrites, and leaves nothing behind when it fails. */
#include "store_helpers.h"

#include <sqlite3.h>
#include <sys/stat.h>

static int copy_count(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void copy_path(const fixture *f, char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", f->dir, name);
}

static void test_copy_of_an_open_store(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq r;
    treq_upsert(&r, "acme", "Acme", 1);
    assert_int_equal(run_op(f, &r), 0);
    treq_upsert(&r, "beta", "Beta", 2);
    assert_int_equal(run_op(f, &r), 0);

    char path[160], err[256];
    uint64_t pages = 0;
    copy_path(f, path, sizeof(path), "copy.db");
    assert_int_equal(lb_store_backup(f->url, path, &pages, err, sizeof(err)), 0);
    assert_true(pages > 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(copy_count(path, "SELECT count(*) FROM tenants"), 2);

    /* Never over an existing file, which stays as it was. */
    assert_int_equal(lb_store_backup(f->url, path, NULL, err, sizeof(err)), LB_ECONFLICT);
    assert_non_null(strstr(err, "already exists"));
    assert_int_equal(copy_count(path, "SELECT count(*) FROM tenants"), 2);
    unlink(path);
    fx_close(f);
}

static void test_refusals_leave_nothing(void **state)
{
    fixture *f = *state;
    char path[160], err[256];
    copy_path(f, path, sizeof(path), "copy.db");
    assert_int_equal(lb_store_backup("sqlite::memory:", path, NULL, err, sizeof(err)), LB_EINVAL);
    assert_int_equal(lb_store_backup("postgres://h/db", path, NULL, err, sizeof(err)), LB_EINVAL);
    assert_non_null(strstr(err, "pg_dump"));
    /* No database at the source: an error, and no file at path or source. */
    int rc = lb_store_backup(f->url, path, NULL, err, sizeof(err));
    assert_true(rc < 0);
    assert_non_null(strstr(err, f->path));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(f->path, F_OK), -1);
    /* The temporary file went too: the directory is empty. */
    assert_int_equal(rmdir(f->dir), 0);
    assert_int_equal(mkdir(f->dir, 0700), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_of_an_open_store, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusals_leave_nothing, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
