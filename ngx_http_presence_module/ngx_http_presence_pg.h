
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_PG_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <libpq-fe.h>


typedef enum {
    NGX_HTTP_PRESENCE_PG_CLOSED = 0,
    NGX_HTTP_PRESENCE_PG_CONNECTING,
    NGX_HTTP_PRESENCE_PG_IDLE,
    NGX_HTTP_PRESENCE_PG_BUSY,
    NGX_HTTP_PRESENCE_PG_BACKOFF
} ngx_http_presence_pg_state_e;


typedef struct ngx_http_presence_pg_s  ngx_http_presence_pg_t;

/* a statement's end: its last result, or NULL when it failed */
typedef void (*ngx_http_presence_pg_result_pt)(ngx_http_presence_pg_t *pg,
    PGresult *res);
typedef void (*ngx_http_presence_pg_event_pt)(ngx_http_presence_pg_t *pg);


struct ngx_http_presence_pg_s {
    PGconn                          *conn;
    ngx_connection_t                *c;
    ngx_log_t                       *log;
    ngx_str_t                       *zone;       /* for the log: */
    const char                      *phase;      /* the owner's step */
    const char                      *statement;  /* the last one sent */

    ngx_http_presence_pg_state_e     state;

    const char *const               *keywords;
    const char *const               *values;

    ngx_event_t                      timer;      /* timeouts, backoff */
    ngx_msec_t                       connect_timeout;
    ngx_msec_t                       statement_timeout;
    ngx_msec_t                       backoff;
    ngx_msec_t                       backoff_min;
    ngx_msec_t                       backoff_max;
    ngx_msec_t                       held;       /* no statement before */
    ngx_uint_t                       holding;

    PGresult                        *result;
    ngx_http_presence_pg_result_pt   handler;
    ngx_http_presence_pg_event_pt    ready;      /* connected, idle */
    ngx_http_presence_pg_event_pt    shutdown;   /* idle at worker exit */
    void                            *data;
};


void ngx_http_presence_pg_init(ngx_http_presence_pg_t *pg, ngx_log_t *log);
void ngx_http_presence_pg_connect(ngx_http_presence_pg_t *pg);
ngx_int_t ngx_http_presence_pg_send(ngx_http_presence_pg_t *pg,
    const char *sql, int nparams, const char *const *params,
    ngx_http_presence_pg_result_pt handler);
void ngx_http_presence_pg_close(ngx_http_presence_pg_t *pg);
char *ngx_http_presence_pg_parse(ngx_conf_t *cf, ngx_str_t *conninfo,
    const char ***keywords, const char ***values);


#endif /* _NGX_HTTP_PRESENCE_PG_H_INCLUDED_ */
