# syntax=docker/dockerfile:1
# leverbridge: build on Debian bookworm, run on a slim bookworm with only the
# shared libraries it links, as a non-root user, state in the /data volume.
#
#   docker build -t leverbridge .
#   docker run -d -p 8080:8080 -v leverbridge-data:/data leverbridge
#
# SIGTERM drains for up to LEVERBRIDGE_DRAIN_TIMEOUT (10s); Docker kills after
# 10s by default, so stop with a longer grace: `docker stop -t 15`
# (compose: stop_grace_period: 15s).

# ---- build ----------------------------------------------------------------------
FROM debian:bookworm AS build

# deps/install.sh without --test: what building needs, not the test and
# benchmark tools; node-llhttp ships llhttp's C sources, compiled by
# deps/CMakeLists.txt.
COPY deps/install.sh /tmp/install.sh
RUN /tmp/install.sh && rm -rf /var/lib/apt/lists/* /tmp/install.sh

WORKDIR /src
COPY CMakeLists.txt ./
# cmake/: the scripts that build the pages and src/api/openapi.json in
COPY cmake/ cmake/
COPY deps/ deps/
COPY src/ src/
# CMakeLists.txt adds bench/ (its targets are EXCLUDE_FROM_ALL, nothing built)
COPY bench/ bench/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target leverbridge \
 && strip build/leverbridge \
 && build/leverbridge --version

# ---- run ------------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libcurl4 libyajl2 libsodium23 libsqlite3-0 libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so that a bind-mounted /data can be chowned to match.
RUN groupadd --system --gid 10001 leverbridge \
 && useradd --system --uid 10001 --gid leverbridge --home-dir /data \
      --no-create-home --shell /usr/sbin/nologin leverbridge \
 && mkdir -p /data \
 && chown leverbridge:leverbridge /data \
 && chmod 0700 /data

COPY --from=build /src/build/leverbridge /usr/local/bin/leverbridge

ENV LEVERBRIDGE_DATA_DIR=/data \
    LEVERBRIDGE_LISTEN=0.0.0.0:8080
# master.key, admin-token and the database live here: keep it on a volume.
VOLUME /data
WORKDIR /data
USER leverbridge:leverbridge
EXPOSE 8080

# Probes the port of LEVERBRIDGE_LISTEN on loopback (so the address must be
# 0.0.0.0, 127.0.0.1 or another address that includes loopback).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${LEVERBRIDGE_LISTEN##*:}/healthz" || exit 1

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/leverbridge"]
