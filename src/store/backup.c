/* leverbridge backup PATH: an online, consistent copy of the SQLite store.
 *
 * SQLite's backup API, from a connection of its own, while a server may be
 * writing. The database is in WAL mode, so one sqlite3_backup_step(-1) copies
 * every page under a single read transaction: a snapshot of one moment that
 * never blocks the server's writer (and that a write cannot restart, as it
 * would a copy made in several steps). The copy is written to a private
 * temporary file next to PATH, checked, synced, then linked to PATH: link()
 * refuses an existing PATH, so a backup never overwrites anything and PATH
 * is either absent or a whole, checked database. */

#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

#define BUSY_TIMEOUT_MS 10000

/* Opens the copy's file under its temporary name, owner-only. */
static int create_tmp(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen)
{
    if ((size_t)snprintf(tmp, tmplen, "%s.tmp-%ld", path, (long)getpid()) >= tmplen) {
        snprintf(err, errlen, "backup path too long: %s", path);
        return LB_EINVAL;
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(e));
        return -e;
    }
    close(fd);
    return 0;
}

static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* The directory entry of the link, so that a crash after we report success
 * cannot lose it. */
static int sync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* PRAGMA quick_check on the copy: "ok", or the first problem. */
static int check_copy(sqlite3 *db, const char *tmp, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (v != NULL && strcmp(v, "ok") == 0) {
            sqlite3_finalize(st);
            return 0;
        }
        snprintf(err, errlen, "the copy %s fails its check: %s", tmp, v ? v : "(null)");
    } else {
        snprintf(err, errlen, "cannot check the copy %s: %s", tmp, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return LB_ECORRUPT;
}

static int copy(const char *from, const char *tmp, uint64_t *pages, char *err, size_t errlen)
{
    sqlite3 *src = NULL, *dst = NULL;
    sqlite3_backup *b = NULL;
    int rc = LB_EIO;

    /* Read-write but never writing and never creating: a missing database is
     * an error, and a WAL database needs its -shm to read. */
    if (sqlite3_open_v2(from, &src, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", from,
                 src ? sqlite3_errmsg(src) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(src, BUSY_TIMEOUT_MS);
    /* An empty file is not a database yet: nothing to copy is an error. */
    sqlite3_stmt *st = NULL;
    int have = 0;
    if (sqlite3_prepare_v2(src, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        have = sqlite3_column_int(st, 0) > 0;
    else
        snprintf(err, errlen, "cannot read database %s: %s", from, sqlite3_errmsg(src));
    sqlite3_finalize(st);
    if (!have) {
        if (err[0] == '\0')
            snprintf(err, errlen, "database %s is empty (no schema): nothing to back up", from);
        goto out;
    }

    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", tmp,
                 dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == NULL) {
        snprintf(err, errlen, "cannot start the backup: %s", sqlite3_errmsg(dst));
        goto out;
    }
    int s;
    while ((s = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || s == SQLITE_LOCKED)
        sqlite3_sleep(50);
    *pages = (uint64_t)sqlite3_backup_pagecount(b);
    if (sqlite3_backup_finish(b) != SQLITE_OK || s != SQLITE_DONE) {
        b = NULL;
        snprintf(err, errlen, "backup failed: %s",
                 s == SQLITE_FULL ? "no space left on device" : sqlite3_errmsg(dst));
        rc = s == SQLITE_FULL ? -ENOSPC : LB_EIO;
        goto out;
    }
    b = NULL;
    /* A stand-alone file: fold the copy's own journal back in. */
    if (sqlite3_exec(dst, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot finish the copy %s: %s", tmp, sqlite3_errmsg(dst));
        goto out;
    }
    rc = check_copy(dst, tmp, err, errlen);
out:
    if (b != NULL) sqlite3_backup_finish(b);
    sqlite3_close(dst);
    sqlite3_close(src);
    return rc;
}

/* The -wal and -shm the copy's connection may have left behind. */
static void remove_tmp(const char *tmp)
{
    char p[4200];
    unlink(tmp);
    snprintf(p, sizeof(p), "%s-wal", tmp);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", tmp);
    unlink(p);
    snprintf(p, sizeof(p), "%s-journal", tmp);
    unlink(p);
}

int lb_store_backup(const char *url, const char *path, uint64_t *pages, char *err, size_t errlen)
{
    uint64_t n = 0;
    err[0] = '\0';
    if (strncmp(url, "sqlite:", 7) != 0 || url[7] == '\0' || strcmp(url + 7, ":memory:") == 0) {
        snprintf(err, errlen,
                 "backup copies a SQLite file (LEVERBRIDGE_DB=sqlite:<path>); for PostgreSQL "
                 "use pg_dump (docs/operations.md)");
        return LB_EINVAL;
    }
    const char *from = url + 7;
    if (access(path, F_OK) == 0) {
        snprintf(err, errlen, "%s already exists: a backup never overwrites", path);
        return LB_ECONFLICT;
    }
    char tmp[4096];
    int rc = create_tmp(path, tmp, sizeof(tmp), err, errlen);
    if (rc != 0) return rc;
    rc = copy(from, tmp, &n, err, errlen);
    if (rc == 0 && (rc = sync_file(tmp)) != 0)
        snprintf(err, errlen, "cannot sync %s: %s", tmp, strerror(-rc));
    if (rc == 0 && link(tmp, path) != 0) {
        rc = -errno;
        if (rc == -EEXIST) {
            snprintf(err, errlen, "%s already exists: a backup never overwrites", path);
            rc = LB_ECONFLICT;
        } else {
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
        }
    }
    remove_tmp(tmp);
    if (rc == 0 && (rc = sync_dir_of(path)) != 0)
        snprintf(err, errlen, "cannot sync the directory of %s: %s", path, strerror(-rc));
    if (rc == 0 && pages != NULL) *pages = n;
    return rc;
}
