/* Internal to src/store/: SQLite schema migrations. Used by the SQLite backend
 * at open (on the opening thread, before the store thread starts) and by the
 * tests. */
#ifndef LB_STORE_MIGRATE_H
#define LB_STORE_MIGRATE_H

#include <sqlite3.h>
#include <stddef.h>

/* One schema step. Step i (0-based) of an array brings the schema from version
 * i to version i + 1 and says so in `version`. sql (may be NULL) runs first,
 * then apply (may be NULL) for changes SQL alone cannot express; both inside
 * the step's own transaction, which also records the new version. */
typedef struct {
    int version;
    const char *name;
    const char *sql;
    int (*apply)(sqlite3 *db, char *err, size_t errlen); /* 0 or a negative code */
} lb_store_migration;

/* The steps this binary knows, oldest first; the last one's version is the
 * schema version it writes. A new version is a new entry at the end: never
 * edit an entry that has shipped. */
extern const lb_store_migration lb_store_migrations[];
extern const size_t lb_store_migration_count;

/* Brings db up to steps[n - 1].version, one transaction per step (BEGIN
 * IMMEDIATE, so two processes never run the same step). *from and *to (may
 * be NULL) get the versions before and after. A database newer than the last
 * step is refused with LB_EINVAL; a file that is not a database gives
 * LB_ECORRUPT; a failing step rolls back and gives LB_EIO. err gets one
 * line. */
int lb_store_migrate(sqlite3 *db, const lb_store_migration *steps, size_t n, int *from, int *to,
                     char *err, size_t errlen);

/* The version recorded in db's schema_version table (0 when absent), or a
 * negative code. */
int lb_store_schema_version(sqlite3 *db);

#endif
