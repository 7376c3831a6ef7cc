#!/bin/sh
# Runs pytest against a throwaway PostgreSQL (test/pg/pg.sh), for one file
# or a few while working; ctest runs the whole suite its own way.
# usage: pgtest.sh BUILD_DIR pytest-args...  (run from the source root)
B=$1; shift
D=/tmp/lb-pg-$(echo -n "$B" | md5sum | cut -c1-12)
U=$(sh test/pg/pg.sh start $D | tail -1)
LB_TEST_DB=$U LB_BIN=$B/leverbridge LB_BUILD_DIR=$B /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
sh test/pg/pg.sh stop $D >/dev/null 2>&1
exit $rc
