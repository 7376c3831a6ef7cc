/* The SQLite backend: one store thread owns the connection and runs every
 * pending operation in one transaction (group commit).
 *
 * Threads and queues (docs/internals/store.md has the picture):
 *  - loop thread: lb_store_submit appends the op to `local` (no lock) and
 *    starts a uv_idle handle. Its callback, run once per loop turn before the
 *    loop polls, moves `local` to `in` under the mutex, signals the condvar
 *    and stops itself: one lock and one wake-up per turn, and every op of a
 *    turn lands in the same batch. (An active idle handle makes the loop poll
 *    without blocking, so an op submitted from any phase is handed over
 *    before the loop can sleep; a prepare handle would miss ops submitted by
 *    prepare callbacks that run after it.)
 *  - store thread: takes all of `in`, runs it in one transaction (each op in
 *    a SAVEPOINT), commits once, appends the batch to `done` and calls
 *    uv_async_send, the only libuv call it makes on the loop's handles.
 *  - loop thread, async callback: takes all of `done` (sends coalesce) and
 *    completes the batches in order.
 * The bound on all three queues together is LB_STORE_QUEUE_MAX, enforced
 * by store.c on the loop thread. The hand-off (queues, handles, the thread's
 * wait) is store.c's, shared with the PostgreSQL backend; this file runs a
 * batch (sq_run), probes while idle and owns the connection. */
#include "store/sqlite_int.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "store/fault.h"
#include "store/migrate.h"
#include "store/recent.h"

#include <malloc.h>
#include <sqlite3.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/file.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a statement waits for a lock held by another connection. */
#define BUSY_TIMEOUT_MS 5000
/* The store thread's idle wait (and the checkpointer's); the probe's period
 * while writes fail. */
#define IDLE_WAIT_MS 1000
#define IDLE_WAIT_NS (IDLE_WAIT_MS * 1000ull * 1000)

/* WAL frames (pages) after which the checkpointer is woken, and after which
 * the writer checkpoints itself (a stalled checkpointer must not let the WAL
 * grow without bound). */
#define CKPT_WAKE_FRAMES 1000
#define CKPT_INLINE_FRAMES 100000

/* ---- process-wide SQLite set-up ---------------------------------------- */

static void *sq_malloc(int n)
{
    return lb_malloc((size_t)n);
}

static void sq_free(void *p)
{
    lb_free(p);
}

static void *sq_realloc(void *p, int n)
{
    return lb_realloc(p, (size_t)n);
}

static int sq_size(void *p)
{
    return (int)malloc_usable_size(p);
}

static int sq_roundup(int n)
{
    return (n + 7) & ~7;
}

static int sq_mem_init(void *app)
{
    return SQLITE_OK;
}

static void sq_mem_shutdown(void *app)
{
}

static void sq_log_cb(void *arg, int code, const char *msg)
{
    switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        lb_warn(MOD, "sqlite: %s (%d)", msg, code);
        break;
    default:
        /* SQLITE_FULL too: the store logs it itself, once per change of
         * state, and its probe would repeat it every second. */
        lb_debug(MOD, "sqlite: %s (%d)", msg, code);
        break;
    }
}

static uv_once_t global_once = UV_ONCE_INIT;

/* SQLite's memory through lb_malloc (counted, aborts on exhaustion) and its
 * log into ours. Only possible before SQLite initialises: if something used
 * SQLite first (a test), it keeps its own allocator. */
static void global_init(void)
{
    static const sqlite3_mem_methods mem = {sq_malloc,  sq_free,     sq_realloc,      sq_size,
                                            sq_roundup, sq_mem_init, sq_mem_shutdown, NULL};
    int rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &mem);
    if (rc == SQLITE_OK) {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        sqlite3_config(SQLITE_CONFIG_LOG, sq_log_cb, NULL);
    } else {
        lb_debug(MOD, "SQLite already initialised: keeping its allocator");
    }
    sqlite3_initialize();
    lb_store__fault_install();
}
/* ---- helpers (store thread) --------------------------------------------- */

/* ---- the batch (store thread) ------------------------------------------- */

/* Runs one op in its own savepoint: a failing op is rolled back alone. Sets
 * *lost when SQLite rolled back the whole transaction (it does so on some
 * I/O, full-disk and RAISE(ROLLBACK) errors): the batch is then void.
 * fault (tests only, fault.h): the op fails with LB_EIO once it has run. */
static int run_one(sq_store *s, lb_store_op *op, int *lost, int fault)
{
    int rc = exec_stmt(s, ST_SAVEPOINT);
    if (rc != SQLITE_DONE) {
        lb_error(MOD, "savepoint failed: %s", sqlite3_errmsg(s->db));
        *lost = 1;
        return LB_EIO;
    }
    int status = lb_sq_run(s, op);
    if (status == 0 && op->nnotify > 0 && !sqlite3_get_autocommit(s->db)) {
        /* The platform events of this change, in its savepoint. */
        lb_store_op jobs = {.kind = LB_STORE_JOB_INSERT};
        jobs.job_insert.recs = op->notify;
        jobs.job_insert.count = op->nnotify;
        status = lb_sq_run(s, &jobs);
    }
    if (status == 0 && fault) status = LB_EIO;
    if (sqlite3_get_autocommit(s->db)) {
        *lost = 1;
        return LB_EIO;
    }
    if (status != 0 && exec_stmt(s, ST_ROLLBACK_TO) != SQLITE_DONE) *lost = 1;
    if (exec_stmt(s, ST_RELEASE) != SQLITE_DONE || sqlite3_get_autocommit(s->db)) *lost = 1;
    return *lost ? LB_EIO : status;
}

/* The batch's transaction failed (on a full disk, its COMMIT): its writes
 * are void, but a read must not share their fate. Each read-only op runs
 * again on its own, in a read transaction (which writes nothing, so it
 * commits whatever the disk), and sees the state from before the batch: as
 * if it had been submitted just before the failed writes. */
static void rerun_reads(sq_store *s, lb_store_batch *b)
{
    for (lb_store_op *op = b->head; op != NULL; op = op->next) {
        if (!lb_store__op_readonly(op->kind)) continue;
        lb_store__op_discard(op);
        if (exec_stmt(s, ST_BEGIN_READ) != SQLITE_DONE) {
            lb_error(MOD, "cannot begin a read: %s", sqlite3_errmsg(s->db));
            op->status = LB_EIO;
            continue;
        }
        op->status = lb_sq_run(s, op);
        if (!sqlite3_get_autocommit(s->db) && exec_stmt(s, ST_ROLLBACK) != SQLITE_DONE)
            lb_error(MOD, "ending a read failed: %s", sqlite3_errmsg(s->db));
    }
}

/* What the writes of a failed transaction get, from SQLite's last error:
 * a full disk is named as such (UV_ENOSPC, "no space left on device"),
 * everything else is LB_EIO. Call before the ROLLBACK. */
static int failure_code(sq_store *s)
{
    return (sqlite3_errcode(s->db) & 0xff) == SQLITE_FULL ? UV_ENOSPC : LB_EIO;
}

static void sq_run(lb_store *base, lb_store_batch *b)
{
    sq_store *s = (sq_store *)base;
    lb_store__fault_batch_delay();
    const lb_store_op *fail_op;
    int fail_commit;
    lb_store__fault_batch(b->head, &fail_op, &fail_commit);
    double t0 = lb_store__mono_seconds();
    int rc = exec_stmt(s, ST_BEGIN);
    if (rc != SQLITE_DONE) {
        b->error = failure_code(s);
        lb_error(MOD, "cannot begin a transaction: %s", sqlite3_errmsg(s->db));
    } else {
        int lost = 0;
        for (lb_store_op *op = b->head; op != NULL && !lost; op = op->next)
            op->status = run_one(s, op, &lost, op == fail_op);
        if (lost) {
            b->error = failure_code(s);
            lb_error(MOD, "transaction of %zu operations rolled back: %s", b->count,
                     sqlite3_errmsg(s->db));
        } else if (fail_commit) {
            b->error = LB_EIO;
            lb_error(MOD, "commit of %zu operations failed: fault injection", b->count);
        } else if ((rc = exec_stmt(s, ST_COMMIT)) == SQLITE_DONE) {
            b->committed = 1;
        } else {
            b->error = failure_code(s);
            lb_error(MOD, "commit of %zu operations failed: %s", b->count, sqlite3_errmsg(s->db));
        }
        if (!b->committed && !sqlite3_get_autocommit(s->db) &&
            exec_stmt(s, ST_ROLLBACK) != SQLITE_DONE)
            lb_error(MOD, "rollback failed: %s", sqlite3_errmsg(s->db));
    }
    if (!b->committed) rerun_reads(s, b);
    /* A committed batch whose write found the disk full (a statement that
     * spilled pages, rolled back alone) says as much as a failed COMMIT. */
    b->health = b->committed ? 0 : b->error;
    for (lb_store_op *op = b->head; op != NULL && b->health == 0; op = op->next)
        if (op->status == UV_ENOSPC) b->health = UV_ENOSPC;
    if (b->wrote) s->degraded = b->health != 0;
    b->seconds = lb_store__mono_seconds() - t0;
}

/* A small write of the store's own, to learn whether writes succeed (at
 * open) or succeed again (while degraded): a meta row written and deleted
 * in one transaction, which leaves no trace but dirties a page, so the
 * COMMIT must write to the WAL (and fails on a full disk). 0, or the
 * failure's code. The store thread (the opening thread at open). */
#define PROBE_KEY "write_probe"

static int probe_write(sq_store *s)
{
    char now[24];
    int n = snprintf(now, sizeof(now), "%lld", (long long)lb_time_now_ms());
    lb_store_op op = {.kind = LB_STORE_META_PUT};
    op.meta_put.key = PROBE_KEY;
    op.meta_put.value = (const uint8_t *)now;
    op.meta_put.len = (size_t)n;
    int rc = exec_stmt(s, ST_BEGIN);
    if (rc == SQLITE_DONE) rc = lb_sq_run(s, &op) == 0 ? SQLITE_DONE : SQLITE_ERROR;
    if (rc == SQLITE_DONE) {
        sqlite3_stmt *q = stmt(s, ST_META_DELETE);
        if (q == NULL) {
            rc = SQLITE_ERROR;
        } else {
            bind_text(q, 1, PROBE_KEY);
            rc = sqlite3_step(q);
            done_with(q);
        }
    }
    if (rc == SQLITE_DONE) rc = exec_stmt(s, ST_COMMIT);
    if (rc == SQLITE_DONE) return 0;
    int code = failure_code(s);
    if (!sqlite3_get_autocommit(s->db) && exec_stmt(s, ST_ROLLBACK) != SQLITE_DONE)
        lb_error(MOD, "rollback failed: %s", sqlite3_errmsg(s->db));
    return code;
}

static void close_db(sq_store *s)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(s->stmts[i]);
        s->stmts[i] = NULL;
    }
    int rc = sqlite3_close(s->db);
    if (rc != SQLITE_OK) lb_error(MOD, "closing %s: %s", s->path, sqlite3_errstr(rc));
    s->db = NULL;
}

/* ---- the checkpointer -------------------------------------------------- */

/* The writer's WAL hook, on the store thread after each commit. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq_store *s = arg;
    if (frames >= CKPT_INLINE_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= CKPT_WAKE_FRAMES) {
        uv_mutex_lock(&s->base.h.mu);
        s->ckpt_wake = 1;
        uv_cond_signal(&s->ckpt_cond);
        uv_mutex_unlock(&s->base.h.mu);
    }
    return SQLITE_OK;
}

static void ckpt_main(void *arg)
{
    sq_store *s = arg;
#ifdef __linux__
    prctl(PR_SET_NAME, "lb-checkpoint", 0, 0, 0);
#endif
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
        rc = sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK)
        lb_error(MOD, "checkpointer cannot open %s: %s", s->path, sqlite3_errstr(rc));
    uv_mutex_lock(&s->base.h.mu);
    for (;;) {
        while (!s->ckpt_wake && !s->ckpt_stop)
            (void)uv_cond_timedwait(&s->ckpt_cond, &s->base.h.mu, IDLE_WAIT_NS);
        if (s->ckpt_stop) break;
        s->ckpt_wake = 0;
        uv_mutex_unlock(&s->base.h.mu);
        if (rc == SQLITE_OK) {
            int c = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            if (c != SQLITE_OK && c != SQLITE_BUSY)
                lb_warn(MOD, "checkpoint: %s", sqlite3_errmsg(db));
        }
        uv_mutex_lock(&s->base.h.mu);
    }
    uv_mutex_unlock(&s->base.h.mu);
    sqlite3_close(db);
}

static int ckpt_start(sq_store *s)
{
    int rc = uv_cond_init(&s->ckpt_cond);
    if (rc != 0) return rc;
    if ((rc = uv_thread_create(&s->ckpt_thread, ckpt_main, s)) != 0) {
        uv_cond_destroy(&s->ckpt_cond);
        return rc;
    }
    s->ckpt_running = 1;
    /* Replaces SQLite's own autocheckpoint, which would run on the writer. */
    sqlite3_wal_hook(s->db, wal_hook, s);
    return 0;
}

static void ckpt_stop(sq_store *s)
{
    if (!s->ckpt_running) return;
    uv_mutex_lock(&s->base.h.mu);
    s->ckpt_stop = 1;
    uv_cond_signal(&s->ckpt_cond);
    uv_mutex_unlock(&s->base.h.mu);
    uv_thread_join(&s->ckpt_thread);
    uv_cond_destroy(&s->ckpt_cond);
    s->ckpt_running = 0;
}

/* ---- the store thread's idle work and end ------------------------------- */

static uint64_t sq_idle_wait_ms(lb_store *base)
{
    (void)base;
    return IDLE_WAIT_MS;
}

/* Idle for a second while writes fail: try one. When it commits, an empty
 * batch (a probe) tells the loop. */
static void sq_idle(lb_store *base, lb_store_batch *p)
{
    sq_store *s = (sq_store *)base;
    if (!s->degraded || probe_write(s) != 0) return;
    s->degraded = 0;
    p->wrote = 1;
}

static void sq_thread_end(lb_store *base)
{
    sq_store *s = (sq_store *)base;
    close_db(s);
    ckpt_stop(s);
}

static void sq_destroy(lb_store *base)
{
    sq_store *s = (sq_store *)base;
    if (s->lock_fd >= 0) close(s->lock_fd);
    lb_recent_free(&s->recent);
    lb_store__release(&s->base);
    lb_free(s->path);
    lb_free(s);
}

static const lb_store_vtable sq_vtable = {
    .name = "sqlite",
    .thread_name = "lb-store",
    .batch_max = 0, /* all pending: memory is bounded by LB_STORE_QUEUE_MAX */
    .run = sq_run,
    .idle_wait_ms = sq_idle_wait_ms,
    .idle = sq_idle,
    .thread_end = sq_thread_end,
    .destroy = sq_destroy,
};

/* ---- open (calling thread) ---------------------------------------------- */

static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    out[0] = '\0';
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(q, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

/* The database holds sealed secrets and every tenant's data: owner only,
 * whatever the umask or the mode of a mounted data dir. SQLite gives the -wal
 * and -shm files the mode of the database file. */
static int on_disk(const char *path)
{
    return path[0] != '\0' && strcmp(path, ":memory:") != 0;
}

static int create_private(const char *path, char *err, size_t errlen)
{
    if (!on_disk(path)) return 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open database %s: %s", path, strerror(e));
        if (fd >= 0) close(fd);
        return -e;
    }
    close(fd);
    return 0;
}

/* One server per database: two would each hold the delivery keys in memory
 * and resume the same jobs. An exclusive flock on <path>.lock, held until
 * close (or the process dies: the kernel drops it), with the holder's pid
 * inside for the error the next one prints. */
static int lock_take(const char *path, int *out, char *err, size_t errlen)
{
    *out = -1;
    if (!on_disk(path)) return 0;
    char lpath[4096];
    if ((size_t)snprintf(lpath, sizeof(lpath), "%s.lock", path) >= sizeof(lpath)) {
        snprintf(err, errlen, "database path too long: %s", path);
        return LB_EINVAL;
    }
    int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open lock file %s: %s", lpath, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            snprintf(err, errlen,
                     "database %s is in use by another leverbridge: %s is held by pid %s", path,
                     lpath, pid[0] ? pid : "(unknown)");
        else
            snprintf(err, errlen, "cannot lock %s: %s", lpath, strerror(e));
        close(fd);
        return -e;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        lb_warn(MOD, "cannot write the pid into %s: %s", lpath, strerror(errno));
    *out = fd;
    return 0;
}

static int open_db(const char *path, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int prc = create_private(path, err, errlen);
    if (prc != 0) return prc;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return map_rc(rc);
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

    char val[32];
    const char *step = "PRAGMA journal_mode=WAL";
    rc = pragma_text(db, step, val, sizeof(val));
    if (rc == SQLITE_OK && strcmp(val, "wal") != 0 && strcmp(path, ":memory:") != 0) {
        snprintf(err, errlen, "database %s: cannot use WAL mode (got \"%s\")", path, val);
        sqlite3_close(db);
        return LB_EIO;
    }
    if (rc == SQLITE_OK) {
        step = "PRAGMA synchronous=FULL";
        rc = sqlite3_exec(db, step, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        step = "PRAGMA foreign_keys=ON";
        rc = sqlite3_exec(db, step, NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        /* 64 MiB of page cache: the indexes a burst of events touches stay
         * in memory instead of being read back for every batch. */
        step = "PRAGMA cache_size=-65536";
        rc = sqlite3_exec(db, step, NULL, NULL, NULL);
    }

    if (rc == SQLITE_OK) {
        /* Nodes and leases: one process, so this connection's own (see
         * ST_NODE_BEAT in sqlite_ops.c); no migration, gone at close. */
        step = "nodes and leases";
        rc = sqlite3_exec(
            db,
            "CREATE TEMP TABLE nodes (id TEXT PRIMARY KEY, advertise_url TEXT NOT NULL,"
            " started_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL);"
            "CREATE TEMP TABLE leases (tenant_id TEXT PRIMARY KEY, node TEXT NOT NULL,"
            " epoch INTEGER NOT NULL, expires_at INTEGER NOT NULL);",
            NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        step = "PRAGMA foreign_keys";
        rc = pragma_text(db, step, val, sizeof(val));
        if (rc == SQLITE_OK && strcmp(val, "1") != 0) {
            snprintf(err, errlen, "this SQLite has no foreign key support");
            sqlite3_close(db);
            return LB_EIO;
        }
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "database %s: %s: %s", path, step, sqlite3_errmsg(db));
        sqlite3_close(db);
        return map_rc(rc);
    }
    *out = db;
    return 0;
}

int lb_store_sqlite_open(uv_loop_t *loop, const char *path, const lb_store_options *opt,
                         lb_store **out, char *err, size_t errlen)
{
    uv_once(&global_once, global_init);

    int lock_fd;
    int rc = lock_take(path, &lock_fd, err, errlen);
    if (rc != 0) return rc;
    sqlite3 *db = NULL;
    int from = 0, to = 0;
    rc = open_db(path, &db, err, errlen);
    if (rc == 0) {
        rc = lb_store_migrate(db, lb_store_migrations, lb_store_migration_count, &from, &to, err,
                              errlen);
        if (rc != 0)
            sqlite3_close(db);
        else if (from != to)
            lb_info(MOD, "database %s migrated from schema version %d to %d", path, from, to);
    }
    if (rc != 0) {
        if (lock_fd >= 0) close(lock_fd);
        return rc;
    }

    sq_store *s = LB_NEW(sq_store);
    if ((rc = lb_store__init(&s->base, &sq_vtable, loop, err, errlen)) != 0) {
        sqlite3_close(db);
        if (lock_fd >= 0) close(lock_fd);
        lb_free(s);
        return rc;
    }
    s->db = db;
    s->path = lb_strdup(path);
    s->lock_fd = lock_fd;
    lb_recent_init(&s->recent, opt->lever_dedupe_ms, 0);
    if ((rc = lb_sq_recent_load(s, err, errlen)) != 0) {
        close_db(s);
        sq_destroy(&s->base);
        return rc;
    }
    /* Learn now whether writes succeed, so that a full disk is named at
     * start and /readyz says 503 from the first request (reads are served,
     * writes refused, until the thread's probe or a write succeeds). */
    int health = probe_write(s);
    if (health != 0) {
        s->degraded = 1;
        lb_store__health(&s->base, health);
    }
    if (strcmp(path, ":memory:") != 0 && (rc = ckpt_start(s)) != 0)
        lb_warn(MOD, "no checkpointer thread (%s): SQLite checkpoints inline", uv_strerror(rc));
    /* From here the thread owns the connection. */
    if ((rc = lb_store__start(&s->base, err, errlen)) != 0) {
        sq_destroy(&s->base);
        return rc;
    }

    lb_info(MOD, "opened sqlite:%s (schema version %d)", path, to);
    *out = &s->base;
    return 0;
}
