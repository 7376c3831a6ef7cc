/* Internal to the SQLite backend (src/store/sqlite.c, sqlite_ops.c): the
 * backend's struct, its statements and the helpers both files use.
 *
 * sqlite.c is the machinery: the store thread, group commit, the
 * checkpointer, the loop side and opening. sqlite_ops.c is what runs inside
 * a batch: the statements and one runner per operation kind. */
#ifndef LB_STORE_SQLITE_INT_H
#define LB_STORE_SQLITE_INT_H

#include "store/backend.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "store/recent.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define MOD "store"

/* Cached statements, prepared on first use with SQLITE_PREPARE_PERSISTENT and
 * reset (and unbound) after each use. */
enum {
    ST_BEGIN,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_TENANT_CREATED_AT,
    ST_TENANT_INSERT,
    ST_TENANT_UPDATE,
    ST_TENANT_DELETE,
    ST_TENANT_ALL,
    ST_META_GET,
    ST_META_PUT,
    ST_META_DELETE,
    ST_JOB_INSERT,
    ST_JOB_UPDATE,
    ST_FAILURE_TAG_CLAIM,
    ST_JOB_ACTIVE,
    ST_CONN_PUT,
    ST_CONN_DELETE,
    ST_HOOK_DELETE_TENANT,
    ST_CONN_ALL,
    ST_HOOK_ALL,
    ST_HOOK_DELETE_OTHERS,
    ST_HOOK_PUT,
    ST_EVENT_FIND,
    ST_EVENT_INSERT,
    ST_EVENT_INSERT_UNIQUE,
    ST_EVENT_AT_SEQ,
    ST_EVENT_FIND_RECENT,
    ST_EVENT_RECENT_LOAD,
    ST_HOOK_DELIVERED,
    ST_WF_CREATED_AT,
    ST_WF_INSERT,
    ST_WF_UPDATE,
    ST_WF_DELETE,
    ST_WF_ALL,
    ST_EVENT_LIST,
    ST_EVENT_LIST_BEFORE,
    ST_EVENT_ONE,
    ST_EVENT_JOBS,
    ST_JOB_LIST,
    ST_JOB_LIST_BEFORE,
    ST_JOB_LIST_STATUS,
    ST_JOB_LIST_STATUS_BEFORE,
    ST_JOB_ONE,
    ST_INV_GET,
    ST_INV_INSERT,
    ST_INV_UPDATE,
    ST_JOB_FAILED_COUNTS,
    ST_EVENT_KEY_FIND,
    ST_PRUNE_JOBS,
    ST_PRUNE_KEYS,
    ST_PRUNE_EVENTS,
    ST_STATS_PUT,
    ST_STATS_FORGET,
    ST_STATS_LOAD,
    ST_EVENT_STAGE_RECONCILED,
    ST_EVENT_STAGE_DELIVERED,
    ST_RECONCILED_COUNTS,
    ST_JOB_ACTIVE_SOME,
    ST_JOB_UPDATE_FENCED,
    ST_JOB_EXISTS,
    ST_LEASE_HELD,
    ST_NODE_BEAT,
    ST_NODE_FORGET,
    ST_NODE_LEAVE,
    ST_NODES,
    ST_LEASES,
    ST_LEASE_TAKE_NEW,
    ST_LEASE_TAKE,
    ST_LEASE_RENEW,
    ST_LEASE_RELEASE,
    ST_BF_INSERT,
    ST_BF_STATUS,
    ST_BF_PAGE,
    ST_BF_FINISH,
    ST_BF_ONE,
    ST_BF_LIST,
    ST_BF_RUNNING,
    ST_COUNT
};

extern const char *const lb_sq_stmt_sql[ST_COUNT];

/* Owner: the caller of lb_store_open, through lb_store; freed by destroy
 * after both handles are closed and the thread is joined. */
typedef struct {
    lb_store base; /* first */

    /* Set at open, then read-only. */
    char *path;
    int lock_fd; /* holds flock(LOCK_EX) on <path>.lock while open; -1 for :memory: */

    /* The store thread only (the opening thread until it starts). */
    sqlite3 *db;
    sqlite3_stmt *stmts[ST_COUNT];
    lb_recent recent; /* Lever dedupe keys of the window (recent.h) */
    int degraded;     /* the last write failed: probe while idle */

    /* The checkpointer: its own thread and connection copy the WAL into the
     * database (PASSIVE: never blocking the writer) when the writer's WAL
     * hook says it has grown, so checkpoints stay off the commit path.
     * ckpt_wake and ckpt_stop are guarded by mu. */
    uv_thread_t ckpt_thread;
    uv_cond_t ckpt_cond;
    int ckpt_running;
    int ckpt_wake;
    int ckpt_stop;
} sq_store;

/* ---- helpers (store thread) --------------------------------------------- */

/* SQLite result code -> LB_E*. */
static inline int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        switch (rc) {
        case SQLITE_CONSTRAINT_PRIMARYKEY:
        case SQLITE_CONSTRAINT_UNIQUE:
            return LB_ECONFLICT;
        case SQLITE_CONSTRAINT_FOREIGNKEY:
            return LB_ENOTFOUND;
        default:
            return LB_EINVAL;
        }
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return LB_ECORRUPT;
    case SQLITE_TOOBIG:
        return LB_ETOOBIG;
    case SQLITE_FULL: /* the disk (or the file-size limit): a distinct cause */
        return UV_ENOSPC;
    default:
        return LB_EIO;
    }
}

static inline sqlite3_stmt *stmt(sq_store *s, int id)
{
    if (s->stmts[id] == NULL) {
        int rc = sqlite3_prepare_v3(s->db, lb_sq_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            lb_error(MOD, "cannot prepare statement %d: %s", id, sqlite3_errmsg(s->db));
            s->stmts[id] = NULL;
        }
    }
    return s->stmts[id];
}

static inline void done_with(sqlite3_stmt *q)
{
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
}

/* Runs a statement that returns no rows; the SQLite result code. */
static inline int exec_stmt(sq_store *s, int id)
{
    sqlite3_stmt *q = stmt(s, id);
    if (q == NULL) return SQLITE_ERROR;
    int rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

/* An op's statement failed: log what is not an expected outcome. */
static inline int op_failed(sq_store *s, int rc, const char *what)
{
    int code = map_rc(rc);
    if (code == LB_EIO || code == LB_ECORRUPT || code == UV_ENOSPC)
        lb_error(MOD, "%s: %s", what, sqlite3_errmsg(s->db));
    else
        lb_debug(MOD, "%s: %s", what, sqlite3_errmsg(s->db));
    return code;
}

static inline void bind_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v == NULL)
        sqlite3_bind_null(q, i);
    else
        sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
}

/* v, with room for element `count` of `size` bytes: the capacity doubles,
 * starting at `first`. For the loops that read rows into an array. */
static inline void *grow(void *v, size_t count, size_t *cap, size_t size, size_t first)
{
    if (count < *cap) return v;
    *cap = *cap ? *cap * 2 : first;
    return lb_realloc(v, *cap * size);
}

static inline char *column_strdup(sqlite3_stmt *q, int i)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    if (t == NULL) return lb_strdup("");
    return lb_strndup((const char *)t, (size_t)sqlite3_column_bytes(q, i));
}

/* Runs op's kind inside the current transaction (and the op's savepoint,
 * which the caller holds): the op's status. LB_EINVAL for a kind with no
 * runner. Store thread (or the opening thread, before it starts). */
int lb_sq_run(sq_store *s, lb_store_op *op);

/* Loads the window's Lever keys into s->recent at open. 0, or a negative
 * code with one line in err. */
int lb_sq_recent_load(sq_store *s, char *err, size_t errlen);

#endif
