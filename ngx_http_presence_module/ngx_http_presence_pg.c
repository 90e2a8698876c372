
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * One PostgreSQL connection driven by nginx's event loop with libpq's
 * non-blocking calls only: closed -> connecting -> idle -> busy -> idle,
 * and backoff after any failure (exponential, with jitter, capped).
 *
 * The socket is registered level-triggered: libpq reads what fits in its
 * buffer, and with edge-triggered events data left in the socket would
 * never be signalled again.  The write event is registered only while
 * libpq has output to flush.  libpq owns the descriptor: the nginx
 * connection is freed without closing it, then PQfinish() closes it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <netdb.h>

#include "ngx_http_presence_pg.h"


#define NGX_HTTP_PRESENCE_PG_MSG  512


static void ngx_http_presence_pg_poll(ngx_http_presence_pg_t *pg);
static ngx_int_t ngx_http_presence_pg_socket(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_pg_release(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_pg_flush(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_pg_receive(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_pg_fail(ngx_http_presence_pg_t *pg,
    const char *what);
static void ngx_http_presence_pg_read_handler(ngx_event_t *rev);
static void ngx_http_presence_pg_write_handler(ngx_event_t *wev);
static void ngx_http_presence_pg_timer_handler(ngx_event_t *ev);
static void ngx_http_presence_pg_notice(void *arg, const char *message);
static void ngx_http_presence_pg_refused(ngx_http_presence_pg_t *pg,
    PGresult *res);
static ngx_msec_t ngx_http_presence_pg_delay(ngx_http_presence_pg_t *pg);
static u_char *ngx_http_presence_pg_line(u_char *p, u_char *last,
    const char *text);
static u_char *ngx_http_presence_pg_where(ngx_http_presence_pg_t *pg,
    u_char *p, u_char *last, ngx_uint_t statement);
static ngx_int_t ngx_http_presence_pg_resolve(ngx_conf_t *cf, char *host,
    const char **value);
static char *ngx_http_presence_pg_strdup(ngx_pool_t *pool, const char *s);


void
ngx_http_presence_pg_init(ngx_http_presence_pg_t *pg, ngx_log_t *log)
{
    pg->log = log;
    pg->state = NGX_HTTP_PRESENCE_PG_CLOSED;

    pg->timer.handler = ngx_http_presence_pg_timer_handler;
    pg->timer.data = pg;
    pg->timer.log = log;

    if (pg->connect_timeout == 0) {
        pg->connect_timeout = 10000;
    }

    if (pg->statement_timeout == 0) {
        pg->statement_timeout = 30000;
    }

    if (pg->backoff_min == 0) {
        pg->backoff_min = 500;
    }

    if (pg->backoff_max == 0) {
        pg->backoff_max = 30000;
    }

    pg->backoff = pg->backoff_min;
}


void
ngx_http_presence_pg_connect(ngx_http_presence_pg_t *pg)
{
    if (pg->state != NGX_HTTP_PRESENCE_PG_CLOSED) {
        return;
    }

    pg->conn = PQconnectStartParams(pg->keywords, pg->values, 0);

    if (pg->conn == NULL) {
        ngx_http_presence_pg_fail(pg, "cannot allocate a connection");
        return;
    }

    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        ngx_http_presence_pg_fail(pg, "connection failed");
        return;
    }

    if (PQsetnonblocking(pg->conn, 1) != 0) {
        ngx_http_presence_pg_fail(pg, "PQsetnonblocking() failed");
        return;
    }

    PQsetNoticeProcessor(pg->conn, ngx_http_presence_pg_notice, pg);

    pg->state = NGX_HTTP_PRESENCE_PG_CONNECTING;

    pg->timer.cancelable = 0;
    ngx_add_timer(&pg->timer, pg->connect_timeout);

    /* as if PQconnectPoll() had said PGRES_POLLING_WRITING */

    if (ngx_http_presence_pg_socket(pg) != NGX_OK) {
        ngx_http_presence_pg_fail(pg, "connection failed");
        return;
    }

    if (ngx_add_event(pg->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        ngx_http_presence_pg_fail(pg, "cannot add the write event");
    }
}


/*
 * The nginx connection follows libpq's socket, which may change at each
 * PQconnectPoll() (another address, another host).
 */

static ngx_int_t
ngx_http_presence_pg_socket(ngx_http_presence_pg_t *pg)
{
    int                fd;
    ngx_connection_t  *c;

    fd = PQsocket(pg->conn);

    if (fd < 0) {
        return NGX_ERROR;
    }

    if (pg->c != NULL && pg->c->fd == fd) {
        return NGX_OK;
    }

    /* libpq has closed the old descriptor itself */

    ngx_http_presence_pg_release(pg);

    c = ngx_get_connection(fd, pg->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pg;
    c->log = pg->log;
    c->read->log = pg->log;
    c->write->log = pg->log;
    c->read->handler = ngx_http_presence_pg_read_handler;
    c->write->handler = ngx_http_presence_pg_write_handler;

    pg->c = c;

    if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* forgets the nginx connection, never closing the descriptor */

static void
ngx_http_presence_pg_release(ngx_http_presence_pg_t *pg)
{
    ngx_connection_t  *c;

    c = pg->c;

    if (c == NULL) {
        return;
    }

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    pg->c = NULL;
}


static void
ngx_http_presence_pg_poll(ngx_http_presence_pg_t *pg)
{
    PostgresPollingStatusType  rc;

    rc = PQconnectPoll(pg->conn);

    if (rc == PGRES_POLLING_FAILED) {
        ngx_http_presence_pg_fail(pg, "connection failed");
        return;
    }

    if (ngx_http_presence_pg_socket(pg) != NGX_OK) {
        ngx_http_presence_pg_fail(pg, "connection failed");
        return;
    }

    switch (rc) {

    case PGRES_POLLING_WRITING:
        if (!pg->c->write->active
            && ngx_add_event(pg->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
               != NGX_OK)
        {
            ngx_http_presence_pg_fail(pg, "cannot add the write event");
        }

        return;

    case PGRES_POLLING_READING:
        if (pg->c->write->active) {
            ngx_del_event(pg->c->write, NGX_WRITE_EVENT, 0);
        }

        return;

    default: /* PGRES_POLLING_OK */
        break;
    }

    if (pg->c->write->active) {
        ngx_del_event(pg->c->write, NGX_WRITE_EVENT, 0);
    }

    if (pg->timer.timer_set) {
        ngx_del_timer(&pg->timer);
    }

    pg->state = NGX_HTTP_PRESENCE_PG_IDLE;
    pg->backoff = pg->backoff_min;
    pg->c->idle = 1;

    ngx_log_error(NGX_LOG_NOTICE, pg->log, 0,
                  "presence zone \"%V\": connected to PostgreSQL %s",
                  pg->zone, PQhost(pg->conn) ? PQhost(pg->conn) : "");

    if (pg->ready) {
        pg->ready(pg);
    }
}


ngx_int_t
ngx_http_presence_pg_send(ngx_http_presence_pg_t *pg, const char *sql,
    int nparams, const char *const *params,
    ngx_http_presence_pg_result_pt handler)
{
    if (pg->state != NGX_HTTP_PRESENCE_PG_IDLE) {
        return NGX_DECLINED;
    }

    /* after a refused statement, nothing until its backoff has passed */

    if (pg->holding) {
        if ((ngx_msec_int_t) (pg->held - ngx_current_msec) > 0) {
            return NGX_DECLINED;
        }

        pg->holding = 0;
    }

    if (!PQsendQueryParams(pg->conn, sql, nparams, NULL, params, NULL, NULL,
                           0))
    {
        pg->handler = handler;
        pg->state = NGX_HTTP_PRESENCE_PG_BUSY;
        ngx_http_presence_pg_fail(pg, "cannot send a statement");
        return NGX_ERROR;
    }

    pg->handler = handler;
    pg->state = NGX_HTTP_PRESENCE_PG_BUSY;
    pg->c->idle = 0;

    pg->timer.cancelable = 0;
    ngx_add_timer(&pg->timer, pg->statement_timeout);

    ngx_http_presence_pg_flush(pg);

    return NGX_OK;
}


/* what libpq could not write at once goes when the socket is writable */

static void
ngx_http_presence_pg_flush(ngx_http_presence_pg_t *pg)
{
    int  rc;

    rc = PQflush(pg->conn);

    if (rc == -1) {
        ngx_http_presence_pg_fail(pg, "cannot send a statement");
        return;
    }

    if (rc == 1) {
        if (!pg->c->write->active
            && ngx_add_event(pg->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
               != NGX_OK)
        {
            ngx_http_presence_pg_fail(pg, "cannot add the write event");
        }

        return;
    }

    if (pg->c->write->active) {
        ngx_del_event(pg->c->write, NGX_WRITE_EVENT, 0);
    }
}


/* all input, then every result until NULL */

static void
ngx_http_presence_pg_receive(ngx_http_presence_pg_t *pg)
{
    PGresult                        *res;
    ngx_http_presence_pg_result_pt   handler;

    if (!PQconsumeInput(pg->conn)) {
        ngx_http_presence_pg_fail(pg, "connection lost");
        return;
    }

    while (!PQisBusy(pg->conn)) {

        res = PQgetResult(pg->conn);

        if (res != NULL) {
            PQclear(pg->result);
            pg->result = res;
            continue;
        }

        /* the statement is over */

        if (pg->timer.timer_set) {
            ngx_del_timer(&pg->timer);
        }

        pg->state = NGX_HTTP_PRESENCE_PG_IDLE;
        pg->c->idle = 1;

        res = pg->result;
        pg->result = NULL;
        handler = pg->handler;
        pg->handler = NULL;

        if (res != NULL
            && PQresultStatus(res) != PGRES_COMMAND_OK
            && PQresultStatus(res) != PGRES_TUPLES_OK)
        {
            ngx_http_presence_pg_refused(pg, res);
            PQclear(res);
            res = NULL;

        } else {
            pg->backoff = pg->backoff_min;
        }

        if (handler) {
            handler(pg, res);
        }

        PQclear(res);

        return;
    }
}


/*
 * Closes the connection and waits: 0.5 s, doubling up to 30 s, with a
 * quarter of jitter.  One log line per failure, so at most one per
 * backoff step.
 */

static void
ngx_http_presence_pg_fail(ngx_http_presence_pg_t *pg, const char *what)
{
    u_char                          *p, *last, msg[NGX_HTTP_PRESENCE_PG_MSG];
    ngx_msec_t                       delay;
    ngx_http_presence_pg_result_pt   handler;

    p = msg;
    last = msg + sizeof(msg) - 1;

    if (pg->conn) {
        p = ngx_slprintf(msg, last, ": ");
        p = ngx_http_presence_pg_line(p, last, PQerrorMessage(pg->conn));

        if (p == msg + 2) {
            p = msg;            /* libpq has nothing to say */
        }
    }

    p = ngx_http_presence_pg_where(pg, p, last,
                                   pg->state == NGX_HTTP_PRESENCE_PG_BUSY);
    *p = '\0';

    delay = ngx_http_presence_pg_delay(pg);

    ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                  "presence zone \"%V\": PostgreSQL %s%s, retrying in %M ms",
                  pg->zone, what, msg, delay);

    handler = (pg->state == NGX_HTTP_PRESENCE_PG_BUSY) ? pg->handler : NULL;

    ngx_http_presence_pg_close(pg);

    pg->state = NGX_HTTP_PRESENCE_PG_BACKOFF;

    if (!ngx_exiting && !ngx_terminate) {
        pg->timer.cancelable = 1;
        ngx_add_timer(&pg->timer, delay);
    }

    if (handler) {
        handler(pg, NULL);
    }
}


void
ngx_http_presence_pg_close(ngx_http_presence_pg_t *pg)
{
    if (pg->timer.timer_set) {
        ngx_del_timer(&pg->timer);
    }

    ngx_http_presence_pg_release(pg);

    PQclear(pg->result);
    pg->result = NULL;
    pg->handler = NULL;

    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    pg->state = NGX_HTTP_PRESENCE_PG_CLOSED;
}


static void
ngx_http_presence_pg_read_handler(ngx_event_t *rev)
{
    PGresult                *res;
    ngx_connection_t        *c;
    ngx_http_presence_pg_t  *pg;

    c = rev->data;
    pg = c->data;

    if (c->close) {

        /* the worker is shutting down and the connection is idle */

        c->close = 0;
        c->idle = 0;

        if (pg->shutdown) {
            pg->shutdown(pg);

        } else {
            ngx_http_presence_pg_close(pg);
        }

        return;
    }

    switch (pg->state) {

    case NGX_HTTP_PRESENCE_PG_CONNECTING:
        ngx_http_presence_pg_poll(pg);
        return;

    case NGX_HTTP_PRESENCE_PG_BUSY:
        ngx_http_presence_pg_receive(pg);
        return;

    default:

        /* idle: a notice, or the server went away */

        if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) == CONNECTION_BAD)
        {
            ngx_http_presence_pg_fail(pg, "connection lost");
            return;
        }

        while (!PQisBusy(pg->conn)) {
            res = PQgetResult(pg->conn);

            if (res == NULL) {
                break;
            }

            PQclear(res);
        }
    }
}


static void
ngx_http_presence_pg_write_handler(ngx_event_t *wev)
{
    ngx_connection_t        *c;
    ngx_http_presence_pg_t  *pg;

    c = wev->data;
    pg = c->data;

    switch (pg->state) {

    case NGX_HTTP_PRESENCE_PG_CONNECTING:
        ngx_http_presence_pg_poll(pg);
        return;

    case NGX_HTTP_PRESENCE_PG_BUSY:
        ngx_http_presence_pg_flush(pg);
        return;

    default:
        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
        }
    }
}


static void
ngx_http_presence_pg_timer_handler(ngx_event_t *ev)
{
    ngx_http_presence_pg_t  *pg;

    pg = ev->data;

    switch (pg->state) {

    case NGX_HTTP_PRESENCE_PG_CONNECTING:
        ngx_http_presence_pg_fail(pg, "connect timed out");
        return;

    case NGX_HTTP_PRESENCE_PG_BUSY:
        ngx_http_presence_pg_fail(pg, "statement timed out");
        return;

    case NGX_HTTP_PRESENCE_PG_BACKOFF:
        pg->state = NGX_HTTP_PRESENCE_PG_CLOSED;
        ngx_http_presence_pg_connect(pg);
        return;

    default:
        return;
    }
}


static void
ngx_http_presence_pg_notice(void *arg, const char *message)
{
    ngx_http_presence_pg_t  *pg = arg;

    ngx_log_error(NGX_LOG_NOTICE, pg->log, 0,
                  "presence zone \"%V\": PostgreSQL: %s", pg->zone, message);
}


/*
 * A statement PostgreSQL refused: its message, whose it was, and the same
 * backoff as a failed connection before the next statement (the
 * connection stays)
 */

static void
ngx_http_presence_pg_refused(ngx_http_presence_pg_t *pg, PGresult *res)
{
    u_char      *p, *last, msg[NGX_HTTP_PRESENCE_PG_MSG];
    ngx_msec_t   delay;

    last = msg + sizeof(msg) - 1;

    p = ngx_http_presence_pg_line(msg, last, PQresultErrorMessage(res));
    p = ngx_http_presence_pg_where(pg, p, last, 1);
    *p = '\0';

    delay = ngx_http_presence_pg_delay(pg);

    pg->holding = 1;
    pg->held = ngx_current_msec + delay;

    ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                  "presence zone \"%V\": PostgreSQL: %s, retrying in %M ms",
                  pg->zone, msg, delay);
}


/* the next wait: 0.5 s doubling to 30 s, with a quarter of jitter */

static ngx_msec_t
ngx_http_presence_pg_delay(ngx_http_presence_pg_t *pg)
{
    ngx_msec_t  delay;

    delay = pg->backoff;
    delay += (ngx_msec_t) ngx_random() % (delay / 4 + 1);

    pg->backoff = ngx_min(pg->backoff * 2, pg->backoff_max);

    return delay;
}


/* libpq's message on one line, without its trailing newline */

static u_char *
ngx_http_presence_pg_line(u_char *p, u_char *last, const char *text)
{
    u_char  *start;

    start = p;
    p = ngx_slprintf(p, last, "%s", text);

    while (p > start && (p[-1] == '\n' || p[-1] == ' ')) {
        p--;
    }

    for (last = start; last < p; last++) {
        if (*last == '\n' || *last == '\t' || *last == '\r') {
            *last = ' ';
        }
    }

    return p;
}


/* ", flusher phase "upsert", statement "upsert"": where it happened */

static u_char *
ngx_http_presence_pg_where(ngx_http_presence_pg_t *pg, u_char *p,
    u_char *last, ngx_uint_t statement)
{
    if (pg->phase) {
        p = ngx_slprintf(p, last, ", flusher phase \"%s\"", pg->phase);
    }

    if (statement && pg->statement) {
        p = ngx_slprintf(p, last, ", statement \"%s\"", pg->statement);
    }

    return p;
}


/*
 * presence_postgres "CONNINFO": parsed at configuration time into libpq's
 * keywords and values; libpq's connect_timeout is dropped (nginx's timers
 * time the connection out), application_name, gssencmode and
 * client_encoding (UTF8) get defaults,
 * and host names are resolved now, in the master, so that no worker ever
 * waits on DNS.
 */

char *
ngx_http_presence_pg_parse(ngx_conf_t *cf, ngx_str_t *conninfo,
    const char ***keywords, const char ***values)
{
    char              *err, *host;
    ngx_uint_t         n, i, has_app, has_gss, has_addr, has_enc;
    const char       **k, **v;
    PQconninfoOption  *opts, *o;

    opts = PQconninfoParse((char *) conninfo->data, &err);
    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_postgres: invalid connection string: "
                           "%s", err ? err : "out of memory");
        PQfreemem(err);
        return NGX_CONF_ERROR;
    }

    host = NULL;
    has_app = 0;
    has_gss = 0;
    has_addr = 0;
    has_enc = 0;
    n = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            has_addr = 1;

        } else if (ngx_strcmp(o->keyword, "application_name") == 0) {
            has_app = 1;

        } else if (ngx_strcmp(o->keyword, "gssencmode") == 0) {
            has_gss = 1;

        } else if (ngx_strcmp(o->keyword, "client_encoding") == 0) {
            has_enc = 1;
        }
    }

    /* room for the defaults, "hostaddr" and the terminating NULL */

    k = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    v = ngx_pcalloc(cf->pool, (n + 5) * sizeof(char *));
    if (k == NULL || v == NULL) {
        goto failed;
    }

    i = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || ngx_strcmp(o->keyword, "connect_timeout") == 0)
        {
            continue;
        }

        k[i] = ngx_http_presence_pg_strdup(cf->pool, o->keyword);
        v[i] = ngx_http_presence_pg_strdup(cf->pool, o->val);

        if (k[i] == NULL || v[i] == NULL) {
            goto failed;
        }

        i++;
    }

    if (!has_app) {
        k[i] = "application_name";
        v[i++] = "ngx_http_presence_module";
    }

    if (!has_gss) {
        k[i] = "gssencmode";
        v[i++] = "disable";
    }

    /* what is sent is UTF-8, whatever the database's encoding */

    if (!has_enc) {
        k[i] = "client_encoding";
        v[i++] = "UTF8";
    }

    if (host != NULL && !has_addr) {
        k[i] = "hostaddr";

        if (ngx_http_presence_pg_resolve(cf, host, &v[i++]) != NGX_OK) {
            goto failed;
        }
    }

    PQconninfoFree(opts);

    *keywords = k;
    *values = v;

    return NGX_CONF_OK;

failed:

    PQconninfoFree(opts);

    return NGX_CONF_ERROR;
}


/*
 * "host" (a comma-separated list) as "hostaddr" in the same order; a unix
 * socket directory has no address
 */

static ngx_int_t
ngx_http_presence_pg_resolve(ngx_conf_t *cf, char *host, const char **value)
{
    int               rc;
    char             *p, *last;
    u_char           *a, *start;
    size_t            len;
    struct addrinfo   hints, *ai;
    char              addr[NGX_SOCKADDR_STRLEN];

    /* at most an address and a comma for each byte of the list */

    start = ngx_pnalloc(cf->pool,
                        NGX_SOCKADDR_STRLEN * (ngx_strlen(host) + 1));
    if (start == NULL) {
        return NGX_ERROR;
    }

    a = start;

    for (p = host; ; p = last + 1) {
        last = strchr(p, ',');
        if (last) {
            *last = '\0';
        }

        addr[0] = '\0';

        if (*p != '/' && *p != '@' && *p != '\0') {
            ngx_memzero(&hints, sizeof(struct addrinfo));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;

            rc = getaddrinfo(p, NULL, &hints, &ai);
            if (rc != 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "presence_postgres: cannot resolve host "
                                   "\"%s\": %s", p, gai_strerror(rc));
                return NGX_ERROR;
            }

            len = ngx_sock_ntop(ai->ai_addr, ai->ai_addrlen,
                                (u_char *) addr, sizeof(addr) - 1, 0);
            addr[len] = '\0';
            freeaddrinfo(ai);
        }

        a = ngx_cpymem(a, addr, ngx_strlen(addr));

        if (last == NULL) {
            break;
        }

        *last = ',';
        *a++ = ',';
    }

    *a = '\0';
    *value = (char *) start;

    return NGX_OK;
}


static char *
ngx_http_presence_pg_strdup(ngx_pool_t *pool, const char *s)
{
    size_t   len;
    u_char  *p;

    len = ngx_strlen(s) + 1;

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len);

    return (char *) p;
}
