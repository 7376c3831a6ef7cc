#!/bin/sh
# Installs every Debian package that leverbridge's build, tests and benchmarks
# need (ca-certificates: without a CA bundle every HTTPS call to Lever fails;
# openssl: the TLS test makes a throwaway certificate). Idempotent: packages
# already present are left alone. Run as root.
set -eu

PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev
libuv1-dev libcurl4-openssl-dev libyajl-dev libsodium-dev libsqlite3-dev
node-llhttp libcmocka-dev sqlite3 python3 python3-pytest wrk nginx-light curl
ca-certificates openssl
chromium"

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
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    # nginx-light starts a service on port 80 when installed; the benchmarks run
    # their own instance on loopback, so stop the packaged one if it came up.
    if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
fi

# The browser tests' playwright-core (test/browser, version pinned by its
# package-lock.json), with the machine's Node.js and npm; `npm ci` only when
# node_modules does not already hold the locked version.
browser="$(cd "$(dirname "$0")/.." && pwd)/test/browser"
if command -v npm >/dev/null 2>&1 && [ -f "$browser/package-lock.json" ]; then
    have=$(cd "$browser" && node -e '
        const want = require("./package-lock.json").packages["node_modules/playwright-core"].version;
        let got = null;
        try { got = require("./node_modules/playwright-core/package.json").version; } catch (e) {}
        process.stdout.write(got === want ? "yes" : "no");')
    if [ "$have" != yes ]; then
        (cd "$browser" && npm ci --no-audit --no-fund)
    fi
else
    echo "deps/install.sh: npm not found; the browser tests will be skipped" >&2
fi
