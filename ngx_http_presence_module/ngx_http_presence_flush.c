
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The flusher's lease, its state machine and the upsert.  Sessions are
 * marked written only after their statement succeeded; until then their
 * ring entries stay, so a failed batch is simply retried.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_presence_flush.h"
#include "ngx_http_presence_args.h"


#define NGX_HTTP_PRESENCE_BATCH_MAX      5000
#define NGX_HTTP_PRESENCE_CHAIN_MAX      20
#define NGX_HTTP_PRESENCE_FINAL_TIMEOUT  3000
#define NGX_HTTP_PRESENCE_EXP_MAX        253402300799LL  /* 9999-12-31 */


static void ngx_http_presence_flush_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_presence_flush_lease(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_flush_ready(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_flush_shutdown(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_flush_goto(ngx_http_presence_flusher_t *f,
    ngx_http_presence_flush_phase_e phase);
static ngx_http_presence_flush_phase_e ngx_http_presence_flush_next(
    ngx_http_presence_flusher_t *f, ngx_http_presence_flush_phase_e phase);
static ngx_http_presence_flush_phase_e ngx_http_presence_flush_failed(
    ngx_http_presence_flusher_t *f);
static void ngx_http_presence_flush_result(ngx_http_presence_pg_t *pg,
    PGresult *res);
static ngx_int_t ngx_http_presence_flush_peaks(
    ngx_http_presence_flusher_t *f);
static ngx_int_t ngx_http_presence_flush_peaks_loaded(
    ngx_http_presence_flusher_t *f, PGresult *res);
static ngx_int_t ngx_http_presence_flush_upsert(
    ngx_http_presence_flusher_t *f);
static ngx_uint_t ngx_http_presence_flush_collect(
    ngx_http_presence_flusher_t *f);
static ngx_int_t ngx_http_presence_flush_written(
    ngx_http_presence_flusher_t *f, PGresult *res);
static char *ngx_http_presence_batch_json(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_ascii(u_char *p, uint16_t *len);
static void ngx_http_presence_flush_done(ngx_http_presence_flusher_t *f);


static const char  *ngx_http_presence_flush_phases[] = {
    "idle", "connect", "schema", "peaks", "warm", "upsert", "pull",
    "pull peaks", "profiles", "daily", "done"
};


/*
 * One statement per batch: the upsert over a JSON recordset, the
 * deactivation of expired rows (when $2 is 1) and the hour's peak.  Rows
 * are written in session-token order, so that two nodes writing the same
 * sessions lock them in the same order and never deadlock each other.
 */

enum {
    NGX_HTTP_PRESENCE_UPSERT_BATCH = 0,     /* $1: the rows, JSON */
    NGX_HTTP_PRESENCE_UPSERT_CLEANUP,       /* $2: 1 to deactivate */
    NGX_HTTP_PRESENCE_UPSERT_CUTOFF,        /* $3: idle before, seconds */
    NGX_HTTP_PRESENCE_UPSERT_NOW,           /* $4: seconds */
    NGX_HTTP_PRESENCE_UPSERT_HOUR,          /* $5: the peak's hour */
    NGX_HTTP_PRESENCE_UPSERT_PEAK,          /* $6: the peak, 0: none */
    NGX_HTTP_PRESENCE_UPSERT_NODE,          /* $7: presence_node */
    NGX_HTTP_PRESENCE_UPSERT_NPARAMS
};

enum {
    NGX_HTTP_PRESENCE_UPSERT_SENT = 0,      /* rows in the batch */
    NGX_HTTP_PRESENCE_UPSERT_KNOWN,         /* of users in "users" */
    NGX_HTTP_PRESENCE_UPSERT_WRITTEN,       /* inserted or advanced */
    NGX_HTTP_PRESENCE_UPSERT_GONE           /* deactivated */
};

static const char  ngx_http_presence_upsert[] =
    "WITH r AS ("
    " SELECT * FROM json_to_recordset($1::json) AS x(u bigint, t text,"
    " ip text, ua text, d text, c bigint, l bigint, e bigint)"
    "), ok AS ("
    " SELECT r.* FROM r WHERE EXISTS (SELECT 1 FROM users WHERE users.id = r.u)"
    "), ins AS ("
    " INSERT INTO user_sessions AS s (user_id, session_token, ip_address,"
    " user_agent, device_info, created_at, last_activity, expires_at,"
    " is_active, node, updated_at)"
    " SELECT u, t, ip, ua, d,"
    " to_timestamp(c / 1000.0) AT TIME ZONE 'UTC',"
    " to_timestamp(l / 1000.0) AT TIME ZONE 'UTC',"
    " to_timestamp(e) AT TIME ZONE 'UTC', true, $7,"
    " now() AT TIME ZONE 'UTC' FROM ok ORDER BY t"
    " ON CONFLICT (session_token) DO UPDATE SET"
    " last_activity = GREATEST(s.last_activity, EXCLUDED.last_activity),"
    " ip_address = EXCLUDED.ip_address, user_agent = EXCLUDED.user_agent,"
    " device_info = EXCLUDED.device_info, expires_at = EXCLUDED.expires_at,"
    " is_active = true, node = EXCLUDED.node,"
    " updated_at = EXCLUDED.updated_at"
    " WHERE s.last_activity < EXCLUDED.last_activity OR NOT s.is_active"
    " RETURNING 1"
    "), gone AS ("
    " UPDATE user_sessions SET is_active = false, node = $7,"
    " updated_at = now() AT TIME ZONE 'UTC'"
    " WHERE $2::int = 1 AND is_active"
    " AND (last_activity < to_timestamp($3::bigint) AT TIME ZONE 'UTC'"
    " OR expires_at < to_timestamp($3::bigint) AT TIME ZONE 'UTC')"
    " AND session_token NOT IN (SELECT t FROM r)"
    " RETURNING 1"
    "), peak AS ("
    " INSERT INTO presence_peaks (day, hour, online_users, sampled_at)"
    " SELECT (to_timestamp($4::bigint) AT TIME ZONE 'UTC')::date,"
    " $5::smallint, $6::int, now() AT TIME ZONE 'UTC' WHERE $6::int > 0"
    " ON CONFLICT (day, hour) DO UPDATE SET online_users ="
    " GREATEST(presence_peaks.online_users, EXCLUDED.online_users),"
    " sampled_at = EXCLUDED.sampled_at"
    " RETURNING 1"
    ") SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM ok),"
    " (SELECT count(*) FROM ins), (SELECT count(*) FROM gone)";



/* today's peaks: at connect, and the cluster's after each pull */

enum {
    NGX_HTTP_PRESENCE_PEAKS_NOW = 0,        /* $1: seconds */
    NGX_HTTP_PRESENCE_PEAKS_NPARAMS
};

enum {
    NGX_HTTP_PRESENCE_PEAKS_HOUR = 0,
    NGX_HTTP_PRESENCE_PEAKS_USERS
};

static const char  ngx_http_presence_peaks_sql[] =
    "SELECT hour, online_users FROM presence_peaks"
    " WHERE day = (to_timestamp($1::bigint) AT TIME ZONE 'UTC')::date";



/* presence_postgres "CONNINFO"; */

char *
ngx_http_presence_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    ngx_str_t  *value;

    if (pmcf->pg_conninfo.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    pmcf->pg_conninfo = value[1];

    return ngx_http_presence_pg_parse(cf, &value[1], &pmcf->pg_keywords,
                                      &pmcf->pg_values);
}


ngx_int_t
ngx_http_presence_flusher_init(ngx_cycle_t *cycle,
    ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_flusher_t  *f;

    if (pmcf->pg_conninfo.data == NULL) {
        return NGX_OK;
    }

    f = ngx_pcalloc(cycle->pool, sizeof(ngx_http_presence_flusher_t));
    if (f == NULL) {
        return NGX_ERROR;
    }

    f->pmcf = pmcf;
    f->zone = pmcf->shm_zone->data;

    if (ngx_http_presence_profiles_init(f, cycle->pool) != NGX_OK
        || ngx_http_presence_cluster_init(f, cycle->pool) != NGX_OK)
    {
        return NGX_ERROR;
    }

    f->pg.keywords = pmcf->pg_keywords;
    f->pg.values = pmcf->pg_values;
    f->pg.zone = ngx_http_presence_store_name(f->zone);
    f->pg.ready = ngx_http_presence_flush_ready;
    f->pg.shutdown = ngx_http_presence_flush_shutdown;
    f->pg.data = f;
    f->pg.statement_timeout = ngx_max(30000, 10 * pmcf->flush_interval);

    ngx_http_presence_pg_init(&f->pg, cycle->log);

    f->event.handler = ngx_http_presence_flush_handler;
    f->event.data = f;
    f->event.log = cycle->log;
    f->event.cancelable = 1;

    f->lease.stale = 3 * pmcf->flush_interval + 1000;
    f->batch.max = NGX_HTTP_PRESENCE_BATCH_MAX;

    pmcf->flusher = f;

    return NGX_OK;
}


/* called every second by each worker: take the lease when it is free */

void
ngx_http_presence_flusher_tick(ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_flusher_t  *f;

    f = pmcf->flusher;

    if (f == NULL || f->lease.owner || ngx_exiting) {
        return;
    }

    if (ngx_http_presence_flush_lease(f) == NGX_OK) {
        ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_CONNECT);
        ngx_http_presence_pg_connect(&f->pg);
        ngx_add_timer(&f->event, pmcf->flush_interval);
    }
}


void
ngx_http_presence_flusher_exit(ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_flusher_t  *f;

    f = pmcf->flusher;

    if (f == NULL) {
        return;
    }

    if (f->lease.owner) {
        ngx_http_presence_flush_done(f);

    } else {
        ngx_http_presence_pg_close(&f->pg);
    }

    ngx_free(f->batch.rows);
    ngx_free(f->batch.seen);
    f->batch.rows = NULL;
    f->batch.seen = NULL;
}


/*
 * The lease: taken when free, when its heartbeat is older than three
 * intervals, or when its holder is gone; renewed by each flush.
 */

static ngx_int_t
ngx_http_presence_flush_lease(ngx_http_presence_flusher_t *f)
{
    ngx_int_t   rc;
    ngx_str_t  *name;

    name = ngx_http_presence_store_name(f->zone);

    f->lease.connected = (f->pg.state == NGX_HTTP_PRESENCE_PG_IDLE
                          || f->pg.state == NGX_HTTP_PRESENCE_PG_BUSY);

    rc = ngx_http_presence_store_lease(f->zone, &f->lease, f->event.log);

    if (rc == NGX_DONE) {
        ngx_log_error(NGX_LOG_NOTICE, f->event.log, 0,
                      "presence zone \"%V\": this worker writes to "
                      "PostgreSQL%s", name,
                      f->lease.previous ? " (taken over)" : "");
        return NGX_OK;
    }

    if (rc != NGX_OK && f->lease.owner) {

        /* another worker has it: never two flushers */

        ngx_log_error(NGX_LOG_WARN, f->event.log, 0,
                      "presence zone \"%V\": lost the flusher lease", name);
        f->lease.owner = 0;
        ngx_http_presence_pg_close(&f->pg);
    }

    return rc;
}


static void
ngx_http_presence_flush_handler(ngx_event_t *ev)
{
    ngx_http_presence_flusher_t  *f;

    f = ev->data;

    if (ngx_exiting || ngx_terminate || !f->lease.owner) {
        return;
    }

    if (ngx_http_presence_flush_lease(f) != NGX_OK) {
        return;
    }

    ngx_add_timer(ev, f->pmcf->flush_interval);

    if (f->pg.state == NGX_HTTP_PRESENCE_PG_CLOSED) {
        ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_CONNECT);
        ngx_http_presence_pg_connect(&f->pg);
        return;
    }

    if (f->pg.state == NGX_HTTP_PRESENCE_PG_IDLE) {
        f->chained = 0;
        ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_WARM);
    }
}


static void
ngx_http_presence_flush_ready(ngx_http_presence_pg_t *pg)
{
    const char                   *enc;
    ngx_http_presence_flusher_t  *f;

    f = pg->data;

    /*
     * a database that is not UTF-8 cannot hold every character: those
     * of User-Agents become '?', or one could fail every batch
     */

    enc = PQparameterStatus(pg->conn, "server_encoding");
    f->ascii = (enc != NULL && ngx_strcmp(enc, "UTF8") != 0
                && ngx_strcmp(enc, "SQL_ASCII") != 0);

    ngx_http_presence_store_connected(f->zone, 1, pg->log);
    ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_SCHEMA);
}


/* the worker shuts down while the connection is idle: a last batch */

static void
ngx_http_presence_flush_shutdown(ngx_http_presence_pg_t *pg)
{
    ngx_http_presence_flusher_t  *f;

    f = pg->data;
    f->exiting = 1;

    if (f->event.timer_set) {
        ngx_del_timer(&f->event);
    }

    if (!f->lease.owner) {
        ngx_http_presence_pg_close(pg);
        return;
    }

    pg->statement_timeout = NGX_HTTP_PRESENCE_FINAL_TIMEOUT;
    f->chained = 0;

    ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_UPSERT);
}


/*
 * The dispatcher: enters "phase" and runs its step; a step with nothing to
 * do passes on to the next at once, one that sent a statement waits for
 * ngx_http_presence_flush_result().
 */

static void
ngx_http_presence_flush_goto(ngx_http_presence_flusher_t *f,
    ngx_http_presence_flush_phase_e phase)
{
    ngx_int_t  rc;

    for ( ;; ) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, f->event.log, 0,
                       "presence flusher: %s -> %s",
                       ngx_http_presence_flush_phases[f->phase],
                       ngx_http_presence_flush_phases[phase]);

        f->phase = phase;
        f->pg.phase = ngx_http_presence_flush_phases[phase];

        switch (phase) {

        case NGX_HTTP_PRESENCE_FLUSH_SCHEMA:
            rc = ngx_http_presence_profiles_schema(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_PEAKS:
        case NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS:
            rc = ngx_http_presence_flush_peaks(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_WARM:
            rc = ngx_http_presence_cluster_warm(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_UPSERT:
            rc = ngx_http_presence_flush_upsert(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_PULL:
            rc = ngx_http_presence_cluster_pull(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_PROFILES:
            rc = ngx_http_presence_profiles_load(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_DAILY:
            rc = ngx_http_presence_analytics_daily(f);
            break;

        case NGX_HTTP_PRESENCE_FLUSH_DONE:
            ngx_http_presence_flush_done(f);
            return;

        default: /* idle, connect: an event moves on */
            return;
        }

        if (rc == NGX_AGAIN) {
            return;
        }

        if (rc == NGX_DECLINED) {
            phase = ngx_http_presence_flush_next(f, phase);
            continue;
        }

        phase = ngx_http_presence_flush_failed(f);
    }
}


/* a step failed: the connection backs off and reconnects, or waits */

static ngx_http_presence_flush_phase_e
ngx_http_presence_flush_failed(ngx_http_presence_flusher_t *f)
{
    if (f->exiting) {
        return NGX_HTTP_PRESENCE_FLUSH_DONE;
    }

    if (f->pg.state == NGX_HTTP_PRESENCE_PG_BACKOFF
        || f->pg.state == NGX_HTTP_PRESENCE_PG_CONNECTING)
    {
        return NGX_HTTP_PRESENCE_FLUSH_CONNECT;
    }

    return NGX_HTTP_PRESENCE_FLUSH_IDLE;
}


/* the order of the steps */

static ngx_http_presence_flush_phase_e
ngx_http_presence_flush_next(ngx_http_presence_flusher_t *f,
    ngx_http_presence_flush_phase_e phase)
{
    switch (phase) {

    case NGX_HTTP_PRESENCE_FLUSH_CONNECT:
        return NGX_HTTP_PRESENCE_FLUSH_SCHEMA;

    case NGX_HTTP_PRESENCE_FLUSH_SCHEMA:
        return NGX_HTTP_PRESENCE_FLUSH_PEAKS;

    case NGX_HTTP_PRESENCE_FLUSH_PEAKS:
        return NGX_HTTP_PRESENCE_FLUSH_WARM;

    case NGX_HTTP_PRESENCE_FLUSH_WARM:
        return NGX_HTTP_PRESENCE_FLUSH_UPSERT;

    case NGX_HTTP_PRESENCE_FLUSH_UPSERT:
        return f->exiting ? NGX_HTTP_PRESENCE_FLUSH_DONE
                          : NGX_HTTP_PRESENCE_FLUSH_PULL;

    case NGX_HTTP_PRESENCE_FLUSH_PULL:
        return NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS;

    case NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS:
        return NGX_HTTP_PRESENCE_FLUSH_PROFILES;

    case NGX_HTTP_PRESENCE_FLUSH_PROFILES:
        return f->exiting ? NGX_HTTP_PRESENCE_FLUSH_DONE
                          : NGX_HTTP_PRESENCE_FLUSH_DAILY;

    case NGX_HTTP_PRESENCE_FLUSH_DAILY:
        return f->exiting ? NGX_HTTP_PRESENCE_FLUSH_DONE
                          : NGX_HTTP_PRESENCE_FLUSH_IDLE;

    default:
        return NGX_HTTP_PRESENCE_FLUSH_IDLE;
    }
}


/* a statement of the current phase is over (res is NULL if it failed) */

static void
ngx_http_presence_flush_result(ngx_http_presence_pg_t *pg, PGresult *res)
{
    ngx_int_t                     rc;
    ngx_http_presence_flusher_t  *f;

    f = pg->data;

    switch (f->phase) {

    case NGX_HTTP_PRESENCE_FLUSH_SCHEMA:
        rc = ngx_http_presence_profiles_schema_loaded(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_PEAKS:
    case NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS:
        rc = ngx_http_presence_flush_peaks_loaded(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_WARM:
        rc = ngx_http_presence_cluster_warmed(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_UPSERT:
        rc = ngx_http_presence_flush_written(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_PULL:
        rc = ngx_http_presence_cluster_pulled(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_PROFILES:
        rc = ngx_http_presence_profiles_loaded(f, res);
        break;

    case NGX_HTTP_PRESENCE_FLUSH_DAILY:
        rc = ngx_http_presence_analytics_written(f, res);
        break;

    default:
        ngx_log_error(NGX_LOG_ALERT, pg->log, 0,
                      "presence zone \"%V\": a result in flusher phase "
                      "\"%s\"", pg->zone,
                      ngx_http_presence_flush_phases[f->phase]);
        return;
    }

    /*
     * the worker began to exit while this statement was in flight (nginx
     * closes idle connections only): the last batch now
     */

    if (ngx_exiting && !f->exiting && f->lease.owner) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pg->log, 0,
                       "presence flusher: exiting after a statement");

        f->exiting = 1;
        f->chained = 0;
        pg->statement_timeout = NGX_HTTP_PRESENCE_FINAL_TIMEOUT;

        if (f->event.timer_set) {
            ngx_del_timer(&f->event);
        }

        ngx_http_presence_flush_goto(f, NGX_HTTP_PRESENCE_FLUSH_UPSERT);
        return;
    }

    if (rc == NGX_AGAIN) {
        ngx_http_presence_flush_goto(f, f->phase);

    } else if (rc == NGX_OK) {
        ngx_http_presence_flush_goto(f,
                                ngx_http_presence_flush_next(f, f->phase));

    } else {
        ngx_http_presence_flush_goto(f, ngx_http_presence_flush_failed(f));
    }
}


/* a step's statement: NGX_AGAIN when it is on its way */

ngx_int_t
ngx_http_presence_flush_send(ngx_http_presence_flusher_t *f,
    const char *statement, const char *sql, int nparams,
    const char *const *params)
{
    f->pg.statement = statement;

    switch (ngx_http_presence_pg_send(&f->pg, sql, nparams, params,
                                      ngx_http_presence_flush_result))
    {
    case NGX_OK:
    case NGX_ERROR:

        /* a failed send has called ngx_http_presence_flush_result() */

        return NGX_AGAIN;

    default:

        /* the connection is not idle: the next interval tries again */

        return NGX_ERROR;
    }
}


static ngx_int_t
ngx_http_presence_flush_peaks(ngx_http_presence_flusher_t *f)
{
    char         now[NGX_TIME_T_LEN + 1];
    const char  *params[NGX_HTTP_PRESENCE_PEAKS_NPARAMS];

    if (f->phase == NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS
        && (!f->pmcf->cluster || f->exiting))
    {
        return NGX_DECLINED;
    }

    ngx_sprintf((u_char *) now, "%T%Z", ngx_time());
    params[NGX_HTTP_PRESENCE_PEAKS_NOW] = now;

    return ngx_http_presence_flush_send(f, "peaks",
                                        ngx_http_presence_peaks_sql,
                                        NGX_HTTP_PRESENCE_PEAKS_NPARAMS,
                                        params);
}


static ngx_int_t
ngx_http_presence_flush_peaks_loaded(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    int        i;
    uint32_t   peaks[NGX_HTTP_PRESENCE_HOURS];
    ngx_int_t  hour, n;

    if (res == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(peaks, sizeof(peaks));

    for (i = 0; i < PQntuples(res); i++) {
        hour = ngx_atoi((u_char *) PQgetvalue(res, i,
                                              NGX_HTTP_PRESENCE_PEAKS_HOUR),
                        PQgetlength(res, i, NGX_HTTP_PRESENCE_PEAKS_HOUR));
        n = ngx_atoi((u_char *) PQgetvalue(res, i,
                                           NGX_HTTP_PRESENCE_PEAKS_USERS),
                     PQgetlength(res, i, NGX_HTTP_PRESENCE_PEAKS_USERS));

        if (hour >= 0 && hour < NGX_HTTP_PRESENCE_HOURS && n > 0
            && (uint32_t) n > peaks[hour])
        {
            peaks[hour] = (uint32_t) n;
        }
    }

    ngx_http_presence_store_merge_peaks(f->zone,
                                 f->pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 peaks, f->pg.log);

    return NGX_OK;
}


static ngx_int_t
ngx_http_presence_flush_upsert(ngx_http_presence_flusher_t *f)
{
    char         cleanup[2], cutoff[NGX_TIME_T_LEN + 1];
    char         now[NGX_TIME_T_LEN + 1], hour[4], peak[NGX_INT32_LEN + 1];
    char        *json;
    ngx_int_t    rc;
    const char  *params[NGX_HTTP_PRESENCE_UPSERT_NPARAMS];

    if (f->pg.state != NGX_HTTP_PRESENCE_PG_IDLE) {
        return NGX_ERROR;
    }

    if (ngx_http_presence_flush_collect(f) == 0) {
        return NGX_DECLINED;
    }

    json = ngx_http_presence_batch_json(f);
    if (json == NULL) {
        ngx_log_error(NGX_LOG_ALERT, f->pg.log, 0,
                      "presence zone \"%V\": cannot build a batch",
                      f->pg.zone);
        return NGX_ERROR;
    }

    ngx_sprintf((u_char *) cleanup, "%ui%Z", f->cleanup);
    ngx_sprintf((u_char *) cutoff, "%T%Z",
                ngx_time() - f->pmcf->session_timeout);
    ngx_sprintf((u_char *) now, "%T%Z", ngx_time());
    ngx_sprintf((u_char *) hour, "%ui%Z", f->peak_hour);
    ngx_sprintf((u_char *) peak, "%uD%Z", f->peak);

    params[NGX_HTTP_PRESENCE_UPSERT_BATCH] = json;
    params[NGX_HTTP_PRESENCE_UPSERT_CLEANUP] = cleanup;
    params[NGX_HTTP_PRESENCE_UPSERT_CUTOFF] = cutoff;
    params[NGX_HTTP_PRESENCE_UPSERT_NOW] = now;
    params[NGX_HTTP_PRESENCE_UPSERT_HOUR] = hour;
    params[NGX_HTTP_PRESENCE_UPSERT_PEAK] = peak;
    params[NGX_HTTP_PRESENCE_UPSERT_NODE] = (char *) f->pmcf->node.data;

    rc = ngx_http_presence_flush_send(f, "upsert", ngx_http_presence_upsert,
                                      NGX_HTTP_PRESENCE_UPSERT_NPARAMS,
                                      params);

    /* libpq has copied the parameters */

    free(json);

    return rc;
}


/*
 * The batch from the store, and what goes with it: the deactivation each
 * cleanup interval or on request (not in a chained batch), and this
 * hour's peak when it grew.  Returns whether there is anything to send.
 */

static ngx_uint_t
ngx_http_presence_flush_collect(ngx_http_presence_flusher_t *f)
{
    time_t                      now;
    ngx_http_presence_batch_t  *b;

    b = &f->batch;

    if (b->rows == NULL) {
        b->rows = ngx_alloc(b->max * sizeof(ngx_http_presence_session_info_t),
                            f->pg.log);
        b->seen = ngx_alloc(2 * b->max * sizeof(uint32_t), f->pg.log);

        if (b->rows == NULL || b->seen == NULL) {
            return 0;
        }
    }

    now = ngx_time();

    ngx_http_presence_store_drain(f->zone, b,
                                 f->pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 f->pg.log);

    f->cleanup = (b->cleanup_requested
                  || now - f->last_cleanup
                     >= (time_t) (f->pmcf->cleanup_interval / 1000))
                 && f->chained == 0;

    if (f->peak_day != b->peak_day || f->peak_hour != b->peak_hour) {
        f->peak_day = b->peak_day;
        f->peak_hour = b->peak_hour;
        f->peak_written = 0;
    }

    f->peak = (b->peak > f->peak_written) ? b->peak : 0;

    return b->nrows || f->cleanup || f->peak;
}


static ngx_int_t
ngx_http_presence_flush_written(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    ngx_int_t                    rc;
    ngx_http_presence_written_t  w;

    ngx_memzero(&w, sizeof(ngx_http_presence_written_t));

    w.ok = (res != NULL && PQntuples(res) == 1);

    if (w.ok) {
        w.cleanup = f->cleanup;
        w.rows = ngx_atoi((u_char *) PQgetvalue(res, 0,
                                         NGX_HTTP_PRESENCE_UPSERT_WRITTEN),
                          PQgetlength(res, 0,
                                      NGX_HTTP_PRESENCE_UPSERT_WRITTEN));
        w.missing = ngx_atoi((u_char *) PQgetvalue(res, 0,
                                            NGX_HTTP_PRESENCE_UPSERT_SENT),
                             PQgetlength(res, 0,
                                         NGX_HTTP_PRESENCE_UPSERT_SENT))
                    - ngx_atoi((u_char *) PQgetvalue(res, 0,
                                            NGX_HTTP_PRESENCE_UPSERT_KNOWN),
                               PQgetlength(res, 0,
                                           NGX_HTTP_PRESENCE_UPSERT_KNOWN));
        w.deactivated = ngx_atoi((u_char *) PQgetvalue(res, 0,
                                             NGX_HTTP_PRESENCE_UPSERT_GONE),
                                 PQgetlength(res, 0,
                                             NGX_HTTP_PRESENCE_UPSERT_GONE));
    }

    rc = ngx_http_presence_store_written(f->zone, &f->batch, &w, f->pg.log);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return NGX_OK;          /* the zone started afresh meanwhile */
    }

    if (f->cleanup) {
        f->last_cleanup = ngx_time();
    }

    if (f->peak) {
        f->peak_written = f->peak;
    }

    if (rc == NGX_AGAIN && f->chained++ < NGX_HTTP_PRESENCE_CHAIN_MAX) {
        return NGX_AGAIN;
    }

    return NGX_OK;
}


static char *
ngx_http_presence_batch_json(ngx_http_presence_flusher_t *f)
{
    char                              *text;
    int64_t                            now;
    ngx_time_t                        *tp;
    u_char                             id[NGX_HTTP_PRESENCE_ID_HEX_LEN];
    u_char                             ip[NGX_INET6_ADDRSTRLEN];
    size_t                             len;
    json_t                            *list, *o;
    ngx_uint_t                         k;
    ngx_http_presence_session_info_t  *row;

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000 + tp->msec;

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    for (k = 0; k < f->batch.nrows; k++) {
        row = &f->batch.rows[k];

        ngx_hex_dump(id, row->id, NGX_HTTP_PRESENCE_ID_LEN);

        /* never a time ahead of this worker's clock */

        o = json_pack("{sI ss# sI sI}",
                      "u", (json_int_t) row->user_id,
                      "t", id, NGX_HTTP_PRESENCE_ID_HEX_LEN,
                      "c", (json_int_t) ngx_min(row->created_ms, now),
                      "l", (json_int_t) ngx_min(row->last_ms, now));
        if (o == NULL) {
            json_decref(list);
            return NULL;
        }

        if (row->exp != INT64_MAX && row->exp > 0
            && row->exp <= NGX_HTTP_PRESENCE_EXP_MAX)
        {
            json_object_set_new(o, "e", json_integer(row->exp));
        }

        if (row->family) {
            len = ngx_inet_ntop(row->family, row->addr, ip, sizeof(ip));
            json_object_set_new(o, "ip", json_stringn((char *) ip, len));
        }

        if (row->ua_len) {
            if (f->ascii) {
                ngx_http_presence_ascii(row->ua, &row->ua_len);
            }

            json_object_set_new(o, "ua", json_stringn((char *) row->ua,
                                                      row->ua_len));
        }

        /* device_info: the session's class, from its User-Agent */

        json_object_set_new(o, "d",
                   json_string(ngx_http_presence_device_names[row->device]));

        json_array_append_new(list, o);
    }

    text = json_dumps(list, JSON_COMPACT);
    json_decref(list);

    return text;
}



/* after the last batch at exit: the lease is free, the connection closed */

static void
ngx_http_presence_flush_done(ngx_http_presence_flusher_t *f)
{
    uint64_t  left;

    f->phase = NGX_HTTP_PRESENCE_FLUSH_DONE;

    left = ngx_http_presence_store_ring_depth(f->zone, f->pg.log);

    if (left) {
        ngx_log_error(NGX_LOG_WARN, f->pg.log, 0,
                      "presence zone \"%V\": %uL changed sessions not "
                      "written at exit", f->pg.zone, left);
    }

    if (f->lease.owner) {
        ngx_http_presence_store_release(f->zone, &f->lease, f->pg.log);
    }

    ngx_http_presence_pg_close(&f->pg);
}


/* UTF-8 folded to ASCII: each character beyond it becomes one '?' */

static void
ngx_http_presence_ascii(u_char *p, uint16_t *len)
{
    u_char  *s, *d, *end;

    d = p;
    end = p + *len;

    for (s = p; s < end; s++) {
        if (*s < 0x80) {
            *d++ = *s;

        } else if ((*s & 0xc0) != 0x80) {
            *d++ = '?';
        }
    }

    *len = (uint16_t) (d - p);
}
