/* Test-only fault injection: see fault.h. */
#include "store/fault.h"

#ifdef LB_FAULT_INJECTION

#include "core/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set once by lb_store__fault_install, then read-only. */
static char full_path[1024];
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;

/* A file of the shim: its head, then the real VFS's file. Owner: SQLite. */
typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int faulty; /* a database, WAL or journal: writes may fail */
} ff_file;

static int disk_full(void)
{
    return access(full_path, F_OK) == 0;
}

static int ff_close(sqlite3_file *f)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xClose(p->real);
}

static int ff_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xRead(p->real, buf, n, off);
}

static int ff_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    ff_file *p = (ff_file *)f;
    if (p->faulty && disk_full()) return SQLITE_FULL;
    return p->real->pMethods->xWrite(p->real, buf, n, off);
}

static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xTruncate(p->real, size);
}

static int ff_sync(sqlite3_file *f, int flags)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xSync(p->real, flags);
}

static int ff_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xFileSize(p->real, size);
}

static int ff_lock(sqlite3_file *f, int level)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xLock(p->real, level);
}

static int ff_unlock(sqlite3_file *f, int level)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xUnlock(p->real, level);
}

static int ff_check_reserved(sqlite3_file *f, int *out)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int ff_file_control(sqlite3_file *f, int op, void *arg)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int ff_sector_size(sqlite3_file *f)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xSectorSize(p->real);
}

static int ff_device_characteristics(sqlite3_file *f)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xDeviceCharacteristics(p->real);
}

static int ff_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xShmMap(p->real, pg, pgsz, extend, pp);
}

static int ff_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}

static void ff_shm_barrier(sqlite3_file *f)
{
    ff_file *p = (ff_file *)f;
    p->real->pMethods->xShmBarrier(p->real);
}

static int ff_shm_unmap(sqlite3_file *f, int del)
{
    ff_file *p = (ff_file *)f;
    return p->real->pMethods->xShmUnmap(p->real, del);
}

/* No memory-mapped I/O through the shim: SQLite then reads with xRead. */
static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    *pp = NULL;
    return SQLITE_OK;
}

static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *page)
{
    return SQLITE_OK;
}

static const sqlite3_io_methods ff_methods = {
    3,
    ff_close,
    ff_read,
    ff_write,
    ff_truncate,
    ff_sync,
    ff_file_size,
    ff_lock,
    ff_unlock,
    ff_check_reserved,
    ff_file_control,
    ff_sector_size,
    ff_device_characteristics,
    ff_shm_map,
    ff_shm_lock,
    ff_shm_barrier,
    ff_shm_unmap,
    ff_fetch,
    ff_unfetch,
};

static int ff_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    ff_file *p = (ff_file *)f;
    p->real = (sqlite3_file *)(p + 1);
    p->faulty = (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out);
    /* The real file's methods are what the shim forwards to; without them
     * (a failed open) SQLite must not call the shim's xClose either. */
    p->base.pMethods = p->real->pMethods != NULL ? &ff_methods : NULL;
    return rc;
}

int lb_store__fault_install(void)
{
    const char *path = getenv("LB_FAULT_DISK_FULL");
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(full_path)) return 0;
    real_vfs = sqlite3_vfs_find(NULL);
    if (real_vfs == NULL) return 0;
    snprintf(full_path, sizeof(full_path), "%s", path);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "lb-fault";
    shim_vfs.pNext = NULL;
    shim_vfs.szOsFile = (int)sizeof(ff_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = ff_open;
    if (sqlite3_vfs_register(&shim_vfs, 1) != SQLITE_OK) return 0;
    lb_warn("store", "fault injection: writes fail as on a full disk while %s exists", full_path);
    return 1;
}

void lb_store__fault_batch_delay(void)
{
    static int ms = -1; /* read once; the store thread is the only caller */
    if (ms < 0) {
        const char *v = getenv("LB_FAULT_BATCH_DELAY_MS");
        ms = v ? atoi(v) : 0;
        if (ms < 0 || ms > 10000) ms = 0;
    }
    if (ms > 0) usleep((useconds_t)ms * 1000);
}

/* ---- every backend: fail the next commit, fail op N ---------------------- */

#include "store/backend.h"

#include <uv.h>

/* Shared by the loop (arming, submit) and the store thread (batch): under
 * mu. Process-wide: one store per process in the server; a unit test arms
 * the store it has open. */
static uv_once_t st_once = UV_ONCE_INIT;
static uv_mutex_t st_mu;
static int st_commits;                 /* failing commits still to place */
static long st_op_left;                /* submits until the op to fail; 0: none */
static const lb_store_op *st_fail_op;  /* submitted, to fail alone */
static const lb_store_op *st_fail_cmt; /* submitted: its batch's commit fails */
static char st_path[1024];             /* LB_FAULT_STORE; "" off */

static void st_init(void)
{
    uv_mutex_init(&st_mu);
    const char *p = getenv("LB_FAULT_STORE");
    if (p != NULL && p[0] != '\0' && strlen(p) < sizeof(st_path)) {
        snprintf(st_path, sizeof(st_path), "%s", p);
        lb_warn("store", "fault injection: commits and ops fail as %s says", st_path);
    }
}

static void arm_locked(int commits, long op_n)
{
    if (commits > 0) st_commits += commits;
    if (op_n > 0) {
        st_op_left = op_n;
        st_fail_op = NULL;
    }
}

void lb_store__fault_arm(int commits, long op_n)
{
    uv_once(&st_once, st_init);
    uv_mutex_lock(&st_mu);
    arm_locked(commits, op_n);
    uv_mutex_unlock(&st_mu);
}

void lb_store__fault_clear(void)
{
    uv_once(&st_once, st_init);
    uv_mutex_lock(&st_mu);
    st_commits = 0;
    st_op_left = 0;
    st_fail_op = st_fail_cmt = NULL;
    uv_mutex_unlock(&st_mu);
}

/* The control file, when there is one and its last line is complete (ends
 * in a newline): read, removed, obeyed. One still being written is left
 * for a later submit: a submit of the server's own (a lease cycle's jobs
 * reload) once read a file the test had created and not yet filled, and
 * obeyed nothing. Loop thread, under st_mu. */
static void read_control(void)
{
    if (st_path[0] == '\0' || access(st_path, F_OK) != 0) return;
    char buf[128] = "";
    FILE *f = fopen(st_path, "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        if (n == 0 || buf[n - 1] != '\n') return;
    }
    unlink(st_path);
    /* words: "commit" [K], "op" N */
    char *tok[16];
    int ntok = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " \t\r\n", &save); w != NULL && ntok < 16;
         w = strtok_r(NULL, " \t\r\n", &save))
        tok[ntok++] = w;
    int commits = 0;
    long op_n = 0;
    for (int i = 0; i < ntok; i++) {
        char *end = NULL;
        long n = i + 1 < ntok ? strtol(tok[i + 1], &end, 10) : 0;
        int has_n = end != NULL && *end == '\0' && n > 0;
        if (strcmp(tok[i], "commit") == 0) commits += has_n ? (int)n : 1;
        if (strcmp(tok[i], "op") == 0 && has_n) op_n = n;
        if (has_n) i++;
    }
    lb_warn("store", "fault injection: %d commit(s) and op %ld from now will fail", commits, op_n);
    arm_locked(commits, op_n);
}

void lb_store__fault_submit(const lb_store_op *op, int undo)
{
    uv_once(&st_once, st_init);
    uv_mutex_lock(&st_mu);
    if (undo) {
        /* Not queued after all: it cannot be the one. */
        if (st_fail_op == op) {
            st_fail_op = NULL;
            st_op_left = 1;
        }
        if (st_fail_cmt == op) {
            st_fail_cmt = NULL;
            st_commits++;
        }
        uv_mutex_unlock(&st_mu);
        return;
    }
    /* The replicas' upkeep (heartbeats, leases: src/cluster/) runs in the
     * background on its own clock: a test aims its faults at the ops of
     * the requests it makes, so the upkeep neither arms nor takes one. */
    if (op->kind == LB_STORE_NODE_BEAT || op->kind == LB_STORE_CLUSTER_READ ||
        op->kind == LB_STORE_LEASE_WRITE) {
        uv_mutex_unlock(&st_mu);
        return;
    }
    read_control();
    if (st_op_left > 0 && --st_op_left == 0) st_fail_op = op;
    if (st_commits > 0 && st_fail_cmt == NULL && !lb_store__op_readonly(op->kind)) {
        st_fail_cmt = op;
        st_commits--;
    }
    uv_mutex_unlock(&st_mu);
}

void lb_store__fault_batch(const lb_store_op *head, const lb_store_op **fail_op, int *fail_commit)
{
    *fail_op = NULL;
    *fail_commit = 0;
    uv_once(&st_once, st_init);
    uv_mutex_lock(&st_mu);
    if (st_fail_op != NULL || st_fail_cmt != NULL) {
        for (const lb_store_op *op = head; op != NULL; op = op->next) {
            if (op == st_fail_op) {
                *fail_op = op;
                st_fail_op = NULL;
            }
            if (op == st_fail_cmt) {
                *fail_commit = 1;
                st_fail_cmt = NULL;
            }
        }
    }
    uv_mutex_unlock(&st_mu);
    if (*fail_op != NULL)
        lb_warn("store", "fault injection: an op of kind %d fails alone", (*fail_op)->kind);
    if (*fail_commit) lb_warn("store", "fault injection: a batch's commit fails");
}

#else

void lb_store__fault_arm(int commits, long op_n)
{
}

void lb_store__fault_clear(void)
{
}

void lb_store__fault_submit(const lb_store_op *op, int undo)
{
}

void lb_store__fault_batch(const lb_store_op *head, const lb_store_op **fail_op, int *fail_commit)
{
    *fail_op = NULL;
    *fail_commit = 0;
}

int lb_store__fault_install(void)
{
    return 0;
}

void lb_store__fault_batch_delay(void)
{
}

#endif
