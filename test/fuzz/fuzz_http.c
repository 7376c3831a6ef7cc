/* The HTTP/1.1 server as it runs: arbitrary bytes sent to a real
 * lb_http_server over a loopback TCP connection, in two writes split at a
 * point the input chooses (llhttp's spans then cross reads). One server and
 * one loop live for the whole process; each input gets a new connection,
 * half-closes it after sending, reads every answer, and must see the server
 * close its side and forget the connection within IO_DEADLINE_MS: a
 * connection left open is reported as a crash, like any sanitizer finding.
 *
 * The loop only runs in UV_RUN_NOWAIT steps, so nothing here blocks. The
 * handler answers at once, or on the next loop turn when the path contains
 * "async" (the asynchronous path, where pipelined requests wait buffered).
 * A request asking for 100 Continue is refused before its body (403) when
 * its path contains "deny" (the check path).
 *
 * Input: byte 0 and 1 = split point (little endian, modulo the rest's
 * length + 1), then the bytes to send. */
#include "fuzz_common.h"

#include "core/alloc.h"
#include "core/log.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_DEADLINE_MS 5000
#define MAX_BODY 4096

static uv_loop_t loop;
static lb_http_server *server;
static int port;

/* One answer owed on the next loop turn. Owner: itself; freed in its
 * timer's close callback. */
typedef struct {
    uv_timer_t timer;
    lb_http_req *req;
} deferred;

static void answer(lb_http_req *req)
{
    /* The request's strings are NUL-terminated and consistent. */
    LB_FUZZ_CHECK(req->path != NULL && req->query != NULL && req->body != NULL);
    LB_FUZZ_CHECK(req->method_name != NULL);
    LB_FUZZ_CHECK(req->body_len <= MAX_BODY);
    LB_FUZZ_CHECK(req->body[req->body_len] == '\0');
    size_t hlen = 0;
    const char *host = lb_http_req_header(req, "host", &hlen);
    LB_FUZZ_CHECK(host == NULL || strlen(host) >= hlen);
    const char *ct = lb_http_req_header(req, "Content-Type", NULL);

    char *body = lb_malloc(128);
    int n = snprintf(body, 128, "%s %zu %zu %zu %d\n", req->method_name, strlen(req->path),
                     strlen(req->query), req->body_len, ct != NULL);
    LB_FUZZ_CHECK(n > 0 && n < 128);
    int status = req->body_len > 0 ? 201 : 200;
    lb_http_respond(req, status, "text/plain", "X-Fuzz: 1\r\n", body, (size_t)n, lb_free, body);
}

static void deferred_close_cb(uv_handle_t *h)
{
    lb_free(h->data);
}

static void deferred_cb(uv_timer_t *t)
{
    deferred *d = t->data;
    answer(d->req);
    uv_close((uv_handle_t *)&d->timer, deferred_close_cb);
}

static void handler(lb_http_req *req, void *data)
{
    (void)data;
    if (strstr(req->path, "async") != NULL) {
        deferred *d = LB_NEW(deferred);
        d->req = req;
        uv_timer_init(&loop, &d->timer);
        d->timer.data = d;
        uv_timer_start(&d->timer, deferred_cb, 0, 0);
        return;
    }
    answer(req);
}

static int check(lb_http_req *req, void *data)
{
    (void)data;
    LB_FUZZ_CHECK(req->path != NULL && req->query != NULL && req->method_name != NULL);
    if (strstr(req->path, "deny") == NULL) return 1;
    lb_http_respond(req, 403, "text/plain", NULL, "no\n", 3, NULL, NULL);
    return 0;
}

static void setup(void)
{
    lb_log_set_level(LB_LOG_ERROR);
    LB_FUZZ_CHECK(uv_loop_init(&loop) == 0);
    lb_http_server_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body = MAX_BODY,
        /* Longer than IO_DEADLINE_MS: a timeout must not hide a connection
         * that the server forgot to close. */
        .header_timeout_ms = 3 * IO_DEADLINE_MS,
        .body_timeout_ms = 3 * IO_DEADLINE_MS,
        .idle_timeout_ms = 3 * IO_DEADLINE_MS,
        .max_connections = 16,
        .check = check,
    };
    LB_FUZZ_CHECK(lb_http_server_start(&loop, &cfg, handler, NULL, &server) == 0);
    port = lb_http_server_port(server);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The client's side of one input. */
typedef struct {
    int fd;
    int eof;       /* the server closed (or reset) its side */
    size_t got;    /* response bytes read */
    char head[16]; /* their first bytes */
    uint64_t deadline;
} client;

/* One loop turn for the server, then whatever the client can read. */
static void pump(client *c)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    char buf[16384];
    while (!c->eof) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            if (c->got < sizeof(c->head))
                memcpy(c->head + c->got, buf,
                       (size_t)n < sizeof(c->head) - c->got ? (size_t)n : sizeof(c->head) - c->got);
            c->got += (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            c->eof = 1;
        } else {
            break;
        }
    }
    LB_FUZZ_CHECK(now_ms() < c->deadline);
}

static void send_all(client *c, const uint8_t *p, size_t n)
{
    while (n > 0 && !c->eof) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                             errno == ENOTCONN)) {
            pump(c);
        } else {
            return; /* the server closed after an error answer: fine */
        }
    }
    pump(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 2) return 0;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
    data += 2;
    size -= 2;

    client c = {.deadline = now_ms() + IO_DEADLINE_MS};
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    LB_FUZZ_CHECK(c.fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(c.fd, (struct sockaddr *)&sa, sizeof(sa));
    LB_FUZZ_CHECK(rc == 0 || errno == EINPROGRESS);

    /* Let the server accept first, so that each write is its own read. */
    while (lb_http_server_connections(server) == 0 && !c.eof)
        pump(&c);
    send_all(&c, data, split);
    send_all(&c, data + split, size - split);
    shutdown(c.fd, SHUT_WR);
    while (!c.eof || lb_http_server_connections(server) > 0)
        pump(&c);
    close(c.fd);

    /* Whatever came back is HTTP/1.1 responses. */
    if (c.got > 0) LB_FUZZ_CHECK(memcmp(c.head, "HTTP/1.1 ", c.got < 9 ? c.got : 9) == 0);
    /* Deferred answers are all given (the timer ran) before the connection
     * could close: nothing of this input is left on the loop but the
     * listener. */
    return 0;
}
