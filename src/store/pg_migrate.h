/* Internal to src/store/: PostgreSQL schema migrations. Used by the
 * PostgreSQL backend at open (on the opening thread, before the store thread
 * starts), by copy-store and by the tests. */
#ifndef LB_STORE_PG_MIGRATE_H
#define LB_STORE_PG_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

/* One schema step: sql brings the schema from version - 1 to version, in
 * the step's own transaction, which also records the new version. */
typedef struct {
    int version;
    const char *name;
    const char *sql;
} lb_store_pg_migration;

/* The steps this binary knows, oldest first. A new version is a new entry at
 * the end: never edit an entry that has shipped. */
extern const lb_store_pg_migration lb_store_pg_migrations[];
extern const size_t lb_store_pg_migration_count;

/* Brings the schema of conn's current search_path up to the last step, under
 * pg_advisory_lock (so replicas that start together migrate once: the
 * others wait, then find nothing to do). *from and *to (may be NULL) get the
 * versions before and after. A schema newer than this binary is refused
 * with LB_EINVAL; a failing step rolls back and gives LB_EIO. err gets one
 * line. conn must be idle, outside pipeline mode. */
int lb_store_pg_migrate(PGconn *conn, int *from, int *to, char *err, size_t errlen);

#endif
