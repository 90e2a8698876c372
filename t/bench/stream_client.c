/*
 * make bench: a client of our own for GET stream.  Holds N concurrent
 * streams, each watching K random ids out of U users, for S seconds, and
 * measures for every presence event the delay from what it says happened
 * to its arrival:
 *
 *   online           arrival - last_seen (the tracked request)
 *   recently_active  arrival - the start of the second in which the
 *                    online threshold was crossed (last_seen's second + T)
 *
 *   stream_client HOST PORT N K U S T TOKEN READY_FILE
 *
 * Prints one line: connected, events and p50/p99 of each delay, in ms.
 * Writes READY_FILE when all N streams have their snapshot; only events
 * of what happened after that are measured (the streams open one by one
 * and are read only once all are open: what happened meanwhile waits in
 * the sockets).
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define BUF  65536


typedef struct {
    int      fd;
    int      snapshot;
    size_t   len;
    char    *buf;
} conn_t;


typedef struct {
    double  *v;
    size_t   n, cap;
} series_t;


static double
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}


static void
add(series_t *s, double v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4096;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (s->v == NULL) {
            exit(2);
        }
    }

    s->v[s->n++] = v;
}


static int
cmp(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static double
pct(series_t *s, double p)
{
    if (s->n == 0) {
        return -1;
    }

    return s->v[(size_t) (p * (s->n - 1))];
}


/* "2026-12-02T00:39:23.462000" as ms since the epoch, UTC */

static double
iso_ms(const char *p)
{
    struct tm  tm;
    int        us;

    memset(&tm, 0, sizeof(tm));

    if (sscanf(p, "%4d-%2d-%2dT%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us) != 7)
    {
        return -1;
    }

    tm.tm_year -= 1900;
    tm.tm_mon -= 1;

    return timegm(&tm) * 1000.0 + us / 1000.0;
}


static series_t  online_delay, ageing_delay;
static long      threshold_s;
static double    ready_at;          /* all streams have their snapshot */


static void
event(const char *block, double at)
{
    const char  *p;
    double       last, crossed;

    p = strstr(block, "\"status\":\"");
    if (p == NULL || strstr(block, "event: presence") == NULL) {
        return;
    }

    p += sizeof("\"status\":\"") - 1;

    last = iso_ms(strstr(block, "\"last_seen\":\"")
                  + sizeof("\"last_seen\":\"") - 1);
    if (last < 0) {
        return;
    }

    if (ready_at == 0) {
        return;
    }

    if (strncmp(p, "online", 6) == 0) {
        if (last >= ready_at) {
            add(&online_delay, at - last);
        }

    } else if (strncmp(p, "recently_active", 15) == 0) {
        crossed = ((long) (last / 1000) + threshold_s) * 1000.0;

        if (crossed >= ready_at) {
            add(&ageing_delay, at - crossed);
        }
    }
}


int
main(int argc, char **argv)
{
    int                  ep, i, k, n, port, nconn, nids, nusers, secs, ready;
    char                 req[65536], *p, *e;
    double               end, at;
    ssize_t              r;
    conn_t              *conns, *c;
    struct rlimit        rl;
    struct sockaddr_in   sin;
    struct epoll_event   ev, evs[1024];

    if (argc != 10) {
        fprintf(stderr, "usage: stream_client HOST PORT N K U S T TOKEN "
                        "READY_FILE\n");
        return 2;
    }

    port = atoi(argv[2]);
    nconn = atoi(argv[3]);
    nids = atoi(argv[4]);
    nusers = atoi(argv[5]);
    secs = atoi(argv[6]);
    threshold_s = atol(argv[7]);

    rl.rlim_cur = rl.rlim_max = nconn + 64;
    setrlimit(RLIMIT_NOFILE, &rl);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    inet_pton(AF_INET, argv[1], &sin.sin_addr);

    ep = epoll_create1(0);
    conns = calloc(nconn, sizeof(conn_t));
    srand(42);

    for (i = 0; i < nconn; i++) {
        c = &conns[i];
        c->buf = malloc(BUF);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);

        if (c->fd < 0 || connect(c->fd, (struct sockaddr *) &sin,
                                 sizeof(sin)) < 0)
        {
            perror("connect");
            return 1;
        }

        p = req + sprintf(req, "GET /api/v1/online/stream?user_ids=");

        for (k = 0; k < nids; k++) {
            p += sprintf(p, k ? ",%d" : "%d", 1 + rand() % nusers);
        }

        p += sprintf(p, " HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
                        "%s\r\n\r\n", argv[8]);

        if (write(c->fd, req, p - req) != p - req) {
            perror("write");
            return 1;
        }

        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    ready = 0;
    end = now_ms() + secs * 1000.0;

    while (now_ms() < end) {
        n = epoll_wait(ep, evs, 1024, 100);
        at = now_ms();

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            r = read(c->fd, c->buf + c->len, BUF - 1 - c->len);

            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) {
                    continue;
                }

                fprintf(stderr, "stream closed\n");
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }

            c->len += r;
            c->buf[c->len] = '\0';

            for (p = c->buf; (e = strstr(p, "\n\n")) != NULL; p = e + 2) {
                *e = '\0';

                if (!c->snapshot && strstr(p, "event: snapshot")) {
                    c->snapshot = 1;

                    if (++ready == nconn) {
                        FILE  *f;

                        ready_at = now_ms();
                        f = fopen(argv[9], "w");
                        if (f) {
                            fclose(f);
                        }
                    }
                }

                event(p, at);
            }

            c->len -= p - c->buf;
            memmove(c->buf, p, c->len);
        }
    }

    qsort(online_delay.v, online_delay.n, sizeof(double), cmp);
    qsort(ageing_delay.v, ageing_delay.n, sizeof(double), cmp);

    printf("connected %d online %zu %.1f %.1f ageing %zu %.1f %.1f\n",
           ready, online_delay.n, pct(&online_delay, 0.5),
           pct(&online_delay, 0.99), ageing_delay.n,
           pct(&ageing_delay, 0.5), pct(&ageing_delay, 0.99));

    return 0;
}
