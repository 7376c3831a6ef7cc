#!/bin/sh
# Installs the Debian packages leverbridge needs. Idempotent: packages already
# present are left alone. Run as root when something is missing.
#
#   deps/install.sh          what building and running the server need
#   deps/install.sh --test   that, plus the tests, fuzzers and benchmarks
#
# Nothing is left enabled or running that the project did not start: services
# that a package would start at install (nginx) are kept from starting and
# disabled at boot; the benchmarks run their own nginx on loopback.
set -eu

usage() { echo "usage: deps/install.sh [--test]" >&2; exit 2; }
test_tools=0
for a in "$@"; do
    case "$a" in
    --test) test_tools=1 ;;
    *) usage ;;
    esac
done

# ca-certificates: without a CA bundle every HTTPS call to Lever fails.
# curl: the README's and docs' examples. libpq-dev: the PostgreSQL backend.
PKGS="build-essential cmake pkg-config
libuv1-dev libcurl4-openssl-dev libyajl-dev libsodium-dev libsqlite3-dev libpq-dev
node-llhttp ca-certificates curl"

# Unit tests (cmocka), the format check (clang-format), integration tests (pytest; openssl makes the TLS test's
# throwaway certificate; python3-yaml reads docs/monitoring's rules), fuzzers
# (clang's libFuzzer), benchmarks (wrk, nginx), browser tests (Debian's
# Chromium, Node.js and npm for playwright-core), the API description check
# (python3-jsonschema for the answers; the npm validator of the document comes
# with test/browser's npm ci), the PostgreSQL backend's tests (postgresql: the
# server binaries that test/pg/pg.sh runs in a temp dir; the cluster the
# package makes is dropped below).
TEST_PKGS="libcmocka-dev sqlite3 python3 python3-pytest python3-yaml python3-jsonschema openssl
clang clang-format libclang-rt-14-dev wrk nginx-light chromium postgresql"

[ $test_tools = 1 ] && PKGS="$PKGS $TEST_PKGS"
# Node.js and npm from Debian unless the machine already has both.
if [ $test_tools = 1 ] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
    PKGS="$PKGS nodejs npm"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps/install.sh: missing packages:$missing (run as root)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # invoke-rc.d asks policy-rc.d before starting a service; 101 = "not
    # allowed", so nginx-light does not come up on port 80 while installing.
    policy=/usr/sbin/policy-rc.d
    ours=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && ours=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    [ $ours = 1 ] && rm -f $policy && trap - EXIT
    case "$missing" in
    *nginx*)
        # Not at boot either (systemd's and sysvinit's links, offline).
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper disable nginx.service >/dev/null 2>&1 || true
        fi
        update-rc.d nginx disable >/dev/null 2>&1 || true
        ;;
    esac
    case "$missing" in
    *postgresql*)
        # The package makes a cluster ("main") and would start it: the
        # tests run their own (test/pg/pg.sh), so none is left behind,
        # running or at boot.
        if command -v pg_lsclusters >/dev/null 2>&1; then
            pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
                pg_dropcluster --stop "$ver" "$name" || true
            done
        fi
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper disable postgresql.service >/dev/null 2>&1 || true
        fi
        update-rc.d postgresql disable >/dev/null 2>&1 || true
        ;;
    esac
fi

[ $test_tools = 1 ] || exit 0

# The browser tests' playwright-core and the OpenAPI validator (test/browser,
# versions pinned by its package-lock.json), with the machine's Node.js and
# npm; `npm ci` only when node_modules does not already hold every locked
# version of the direct dependencies.
browser="$(cd "$(dirname "$0")/.." && pwd)/test/browser"
have=$(cd "$browser" && node -e '
    const lock = require("./package-lock.json");
    const ok = Object.keys(lock.packages[""].devDependencies).every((name) => {
        const want = lock.packages["node_modules/" + name].version;
        try { return require("./node_modules/" + name + "/package.json").version === want; }
        catch (e) { return false; }
    });
    process.stdout.write(ok ? "yes" : "no");')
if [ "$have" != yes ]; then
    (cd "$browser" && npm ci --no-audit --no-fund)
fi
