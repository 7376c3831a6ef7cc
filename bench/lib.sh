# Shell pieces shared by bench/http.sh and bench/ingest.sh; sourced, not run.
# The caller defines die(), HOST, TMP, SERVER_CPU, NGINX and the PIDS array.

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_up() { # port: until something accepts connections on it
    local port=$1 i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "nothing listening on $HOST:$port"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system, in clock ticks

# nginx_start LOCATION STATUS BODY: one worker on SERVER_CPU answering
# `return STATUS 'BODY'` (JSON) on `location LOCATION`, the request body
# discarded, no access log. Sets NG_PORT and NG_PID (added to PIDS).
nginx_start() {
    local location=$1 status=$2 body=$3 user_line=""
    NG_PORT=$(free_port)
    mkdir -p "$TMP/nginx"
    [ "$(id -u)" = 0 ] && user_line="user root;"
    cat >"$TMP/nginx/nginx.conf" <<CONF
$user_line
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 100000000;
    server {
        listen $HOST:$NG_PORT;
        location $location {
            default_type application/json;
            return $status '$body';
        }
    }
}
CONF
    taskset -c "$SERVER_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/error.log" 2>>"$TMP/nginx/error.log" &
    NG_PID=$!
    PIDS+=("$NG_PID")
    wait_up "$NG_PORT"
}
