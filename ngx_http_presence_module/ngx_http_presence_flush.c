
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The flusher: one worker at a time holds a lease in the zone and, every
 * presence_flush_interval, writes the sessions whose activity advanced in
 * one statement (an upsert over a JSON recordset, deactivation of expired
 * rows and today's peak folded in as CTEs), then loads missing or stale
 * profiles.  Sessions are marked written only after their statement
 * succeeded; until then their ring entries stay, so a failed flush is
 * simply retried.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <netdb.h>
#include <jansson.h>

#include "ngx_http_presence.h"


#define NGX_HTTP_PRESENCE_BATCH_MAX     5000
#define NGX_HTTP_PRESENCE_CHAIN_MAX     20
#define NGX_HTTP_PRESENCE_SWEEP_STEP    50000
#define NGX_HTTP_PRESENCE_PROFILE_SCAN  1000
#define NGX_HTTP_PRESENCE_PROFILE_MAX   500
#define NGX_HTTP_PRESENCE_PROFILE_LEN   1024
#define NGX_HTTP_PRESENCE_FINAL_TIMEOUT 3000
#define NGX_HTTP_PRESENCE_EXP_MAX       253402300799LL  /* 9999-12-31 */


typedef struct {
    uint32_t                        index;
    u_char                          id[32];
    int64_t                         user_id;
    int64_t                         created_ms;
    int64_t                         last_ms;
    int64_t                         exp;
    u_char                          addr[16];
    uint8_t                         family;
    uint16_t                        ua_len;
    u_char                          ua[NGX_HTTP_PRESENCE_UA_MAX];
} ngx_http_presence_row_t;


typedef struct {
    ngx_http_presence_pg_t          pg;
    ngx_event_t                     event;
    ngx_http_presence_main_conf_t  *pmcf;
    ngx_http_presence_zone_t       *zone;

    uint64_t                        lease_gen;
    uint64_t                        resets;
    ngx_uint_t                      owner;
    ngx_uint_t                      exiting;
    ngx_uint_t                      chained;
    ngx_uint_t                      catchup;
    ngx_uint_t                      connecting;  /* peaks, then a flush */

    ngx_http_presence_row_t        *rows;
    ngx_uint_t                      nrows;
    uint32_t                       *seen;        /* dedup, open addressing */
    uint64_t                        ring_head;   /* after this batch */

    ngx_uint_t                      cleanup;     /* in this batch */
    ngx_uint_t                      cleanup_req;
    time_t                          last_cleanup;
    uint32_t                        peak;        /* in this batch */
    uint32_t                        peak_written;
    int64_t                         peak_day;
    ngx_uint_t                      peaks_loaded;
    ngx_uint_t                      peak_hour;

    int64_t                         ids[NGX_HTTP_PRESENCE_PROFILE_MAX];
    ngx_uint_t                      nids;

    char                           *json;
} ngx_http_presence_flusher_t;


static char *ngx_http_presence_pstrdup(ngx_pool_t *pool, const char *s);
static void ngx_http_presence_flush_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_presence_lease(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_release(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_ready(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_shutdown(ngx_http_presence_pg_t *pg);
static void ngx_http_presence_peaks_loaded(ngx_http_presence_pg_t *pg,
    PGresult *res);
static void ngx_http_presence_flush(ngx_http_presence_flusher_t *f);
static ngx_uint_t ngx_http_presence_collect(ngx_http_presence_flusher_t *f);
static ngx_uint_t ngx_http_presence_take(ngx_http_presence_flusher_t *f,
    uint32_t i);
static char *ngx_http_presence_batch_json(ngx_http_presence_flusher_t *f);
static const char *ngx_http_presence_device(u_char *ua, size_t len);
static void ngx_http_presence_flushed(ngx_http_presence_pg_t *pg,
    PGresult *res);
static void ngx_http_presence_profiles(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_profiles_loaded(ngx_http_presence_pg_t *pg,
    PGresult *res);
static void ngx_http_presence_done(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_pull(ngx_http_presence_flusher_t *f);
static void ngx_http_presence_pulled(ngx_http_presence_pg_t *pg,
    PGresult *res);
static void ngx_http_presence_merge(ngx_http_presence_flusher_t *f,
    PGresult *res, int i);


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
    " now() AT TIME ZONE 'UTC' FROM ok"
    " ON CONFLICT (session_token) DO UPDATE SET"
    " last_activity = GREATEST(s.last_activity, EXCLUDED.last_activity),"
    " ip_address = EXCLUDED.ip_address, user_agent = EXCLUDED.user_agent,"
    " device_info = EXCLUDED.device_info, expires_at = EXCLUDED.expires_at,"
    " is_active = true, node = EXCLUDED.node,"
    " updated_at = EXCLUDED.updated_at"
    " WHERE s.last_activity < EXCLUDED.last_activity OR NOT s.is_active"
    " RETURNING 1"
    "), gone AS ("
    " UPDATE user_sessions SET is_active = false,"
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


static const char  ngx_http_presence_peaks_sql[] =
    "SELECT hour, online_users FROM presence_peaks"
    " WHERE day = (to_timestamp($1::bigint) AT TIME ZONE 'UTC')::date";


/*
 * The other nodes' rows that changed since the watermark, on the
 * database's clock; 10 s of overlap catch transactions that committed
 * after later ones (merging a row twice changes nothing).
 */

static const char  ngx_http_presence_pull_sql[] =
    "SELECT user_id, session_token, ip_address, user_agent,"
    " (extract(epoch FROM created_at) * 1000)::bigint,"
    " (extract(epoch FROM last_activity) * 1000)::bigint,"
    " extract(epoch FROM expires_at)::bigint, is_active,"
    " (extract(epoch FROM updated_at) * 1000000)::bigint"
    " FROM user_sessions"
    " WHERE updated_at > CASE WHEN $1::bigint = 0"
    " THEN (now() AT TIME ZONE 'UTC') - make_interval(secs => $3::bigint)"
    " ELSE to_timestamp($1::bigint / 1000000.0) AT TIME ZONE 'UTC'"
    " - make_interval(secs => $4::int) END"
    " AND node IS DISTINCT FROM $2"
    " ORDER BY updated_at LIMIT 20000";


static const char  ngx_http_presence_profiles_sql[] =
    "SELECT id, username::text, display_name::text, avatar_url::text"
    " FROM users WHERE id = ANY($1::bigint[])";


/*
 * presence_postgres "CONNINFO": parsed now; host names are resolved now,
 * in the master, so that no worker ever waits on DNS
 */

char *
ngx_http_presence_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    int                   rc;
    char                 *err, *host, *hostaddr, *p, *last;
    u_char               *a;
    size_t                len, total;
    ngx_str_t            *value;
    ngx_uint_t            n, i, has_app, has_gss;
    struct addrinfo       hints, *ai;
    PQconninfoOption     *opts, *o;
    char                  addr[NGX_SOCKADDR_STRLEN];

    if (pmcf->pg_conninfo.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    pmcf->pg_conninfo = value[1];

    opts = PQconninfoParse((char *) value[1].data, &err);
    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_postgres: invalid connection string: "
                           "%s", err ? err : "out of memory");
        PQfreemem(err);
        return NGX_CONF_ERROR;
    }

    host = NULL;
    hostaddr = NULL;
    has_app = 0;
    has_gss = 0;
    n = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL) {
            continue;
        }

        n++;

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;

        } else if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            hostaddr = o->val;

        } else if (ngx_strcmp(o->keyword, "application_name") == 0) {
            has_app = 1;

        } else if (ngx_strcmp(o->keyword, "gssencmode") == 0) {
            has_gss = 1;
        }
    }

    pmcf->pg_keywords = ngx_pcalloc(cf->pool, (n + 4) * sizeof(char *));
    pmcf->pg_values = ngx_pcalloc(cf->pool, (n + 4) * sizeof(char *));
    if (pmcf->pg_keywords == NULL || pmcf->pg_values == NULL) {
        PQconninfoFree(opts);
        return NGX_CONF_ERROR;
    }

    i = 0;

    for (o = opts; o->keyword; o++) {

        /* nginx's timers time out the connection, not libpq */

        if (o->val == NULL || ngx_strcmp(o->keyword, "connect_timeout") == 0)
        {
            continue;
        }

        pmcf->pg_keywords[i] = ngx_http_presence_pstrdup(cf->pool,
                                                         o->keyword);
        pmcf->pg_values[i] = ngx_http_presence_pstrdup(cf->pool, o->val);

        if (pmcf->pg_keywords[i] == NULL || pmcf->pg_values[i] == NULL) {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }

        i++;
    }

    if (!has_app) {
        pmcf->pg_keywords[i] = "application_name";
        pmcf->pg_values[i++] = "ngx_http_presence_module";
    }

    if (!has_gss) {
        pmcf->pg_keywords[i] = "gssencmode";
        pmcf->pg_values[i++] = "disable";
    }

    /* host names become addresses: "hostaddr" in host order */

    if (host != NULL && hostaddr == NULL) {
        total = 0;
        a = ngx_pnalloc(cf->pool, 64 * (ngx_strlen(host) + 1));
        if (a == NULL) {
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }

        for (p = host; ; p = last + 1) {
            last = strchr(p, ',');
            if (last) {
                *last = '\0';
            }

            if (*p == '/' || *p == '@' || *p == '\0') {

                /* a unix socket directory: no address */

                addr[0] = '\0';

            } else {
                ngx_memzero(&hints, sizeof(struct addrinfo));
                hints.ai_family = AF_UNSPEC;
                hints.ai_socktype = SOCK_STREAM;

                rc = getaddrinfo(p, NULL, &hints, &ai);
                if (rc != 0) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "presence_postgres: cannot resolve "
                                       "host \"%s\": %s", p,
                                       gai_strerror(rc));
                    PQconninfoFree(opts);
                    return NGX_CONF_ERROR;
                }

                len = ngx_sock_ntop(ai->ai_addr, ai->ai_addrlen,
                                    (u_char *) addr, sizeof(addr) - 1, 0);
                addr[len] = '\0';
                freeaddrinfo(ai);
            }

            a = ngx_cpymem(a, addr, ngx_strlen(addr));
            total += ngx_strlen(addr);

            if (last == NULL) {
                break;
            }

            *last = ',';
            *a++ = ',';
            total++;
        }

        *a = '\0';
        a -= total;

        pmcf->pg_keywords[i] = "hostaddr";
        pmcf->pg_values[i++] = (char *) a;
    }

    PQconninfoFree(opts);

    return NGX_CONF_OK;
}


static char *
ngx_http_presence_pstrdup(ngx_pool_t *pool, const char *s)
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


char *
ngx_http_presence_init_flusher_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf)
{
    ngx_conf_init_msec_value(pmcf->flush_interval, 1000);
    ngx_conf_init_value(pmcf->profile_ttl, 300);
    ngx_conf_init_value(pmcf->cluster, 0);

    if (pmcf->node.data == NULL) {

        /* the host name, NUL-terminated: it is a libpq parameter */

        pmcf->node.len = cf->cycle->hostname.len;
        pmcf->node.data = ngx_pnalloc(cf->pool, pmcf->node.len + 1);
        if (pmcf->node.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(pmcf->node.data, cf->cycle->hostname.data,
                   pmcf->node.len);
        pmcf->node.data[pmcf->node.len] = '\0';
    }

    if (pmcf->cluster && pmcf->pg_conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"presence_cluster\" needs \"presence_postgres\"");
        return NGX_CONF_ERROR;
    }

    if (pmcf->flush_interval < 10) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_flush_interval must be at least 10ms");
        return NGX_CONF_ERROR;
    }

    if (pmcf->pg_conninfo.data && pmcf->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"presence_postgres\" needs a \"presence_zone\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
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

    f->pg.keywords = pmcf->pg_keywords;
    f->pg.values = pmcf->pg_values;
    f->pg.zone = &f->zone->name;
    f->pg.ready = ngx_http_presence_ready;
    f->pg.shutdown = ngx_http_presence_shutdown;
    f->pg.data = f;
    f->pg.statement_timeout = ngx_max(30000, 10 * pmcf->flush_interval);

    ngx_http_presence_pg_init(&f->pg, cycle->log);

    f->event.handler = ngx_http_presence_flush_handler;
    f->event.data = f;
    f->event.log = cycle->log;
    f->event.cancelable = 1;

    pmcf->flusher = f;

    return NGX_OK;
}


/* called every second by each worker: take the lease when it is free */

void
ngx_http_presence_flusher_tick(ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_flusher_t  *f;

    f = pmcf->flusher;

    if (f == NULL || f->owner || ngx_exiting) {
        return;
    }

    if (ngx_http_presence_lease(f) == NGX_OK) {
        ngx_http_presence_pg_connect(&f->pg);
        ngx_add_timer(&f->event, pmcf->flush_interval);
    }
}


/*
 * The lease: taken when free, when its heartbeat is older than three
 * intervals, or when its holder is gone; renewed by each flush.
 */

static ngx_int_t
ngx_http_presence_lease(ngx_http_presence_flusher_t *f)
{
    ngx_int_t                 rc;
    ngx_pid_t                 pid;
    ngx_msec_t                now;
    ngx_http_presence_shm_t  *sh;

    ngx_http_presence_lock(f->zone, f->event.log);

    sh = f->zone->sh;
    now = ngx_current_msec;
    pid = sh->lease_pid;
    rc = NGX_DECLINED;

    if (pid == ngx_pid && sh->lease_gen == f->lease_gen && f->owner) {
        sh->lease_beat = now;
        sh->db_connected = (f->pg.state == NGX_HTTP_PRESENCE_PG_IDLE
                            || f->pg.state == NGX_HTTP_PRESENCE_PG_BUSY);
        rc = NGX_OK;

    } else if (pid == 0
               || (ngx_msec_int_t) (now - sh->lease_beat)
                  > (ngx_msec_int_t) (3 * f->pmcf->flush_interval + 1000)
               || (pid != ngx_pid && kill(pid, 0) == -1 && errno == ESRCH))
    {
        sh->lease_pid = ngx_pid;
        sh->lease_gen++;
        sh->lease_beat = now;
        sh->db_connected = 0;

        f->lease_gen = sh->lease_gen;
        f->owner = 1;
        rc = NGX_OK;

        ngx_log_error(NGX_LOG_NOTICE, f->event.log, 0,
                      "presence zone \"%V\": this worker writes to "
                      "PostgreSQL%s", &f->zone->name,
                      pid ? " (taken over)" : "");
    }

    ngx_http_presence_unlock(f->zone);

    if (rc != NGX_OK && f->owner) {

        /* another worker has it: never two flushers */

        ngx_log_error(NGX_LOG_WARN, f->event.log, 0,
                      "presence zone \"%V\": lost the flusher lease",
                      &f->zone->name);
        f->owner = 0;
        ngx_http_presence_pg_close(&f->pg);
    }

    return rc;
}


static void
ngx_http_presence_release(ngx_http_presence_flusher_t *f)
{
    if (!f->owner) {
        return;
    }

    ngx_http_presence_lock(f->zone, f->event.log);

    if (f->zone->sh->lease_pid == ngx_pid
        && f->zone->sh->lease_gen == f->lease_gen)
    {
        f->zone->sh->lease_pid = 0;
        f->zone->sh->db_connected = 0;
    }

    ngx_http_presence_unlock(f->zone);

    f->owner = 0;
}


static void
ngx_http_presence_flush_handler(ngx_event_t *ev)
{
    ngx_http_presence_flusher_t  *f;

    f = ev->data;

    if (ngx_exiting || ngx_terminate || !f->owner) {
        return;
    }

    if (ngx_http_presence_lease(f) != NGX_OK) {
        return;
    }

    ngx_add_timer(ev, f->pmcf->flush_interval);

    if (f->pg.state == NGX_HTTP_PRESENCE_PG_CLOSED) {
        ngx_http_presence_pg_connect(&f->pg);
        return;
    }

    if (f->pg.state == NGX_HTTP_PRESENCE_PG_IDLE) {
        f->chained = 0;
        ngx_http_presence_flush(f);
    }
}


/* connected: today's peaks first, then a flush */

static void
ngx_http_presence_ready(ngx_http_presence_pg_t *pg)
{
    char                          day[NGX_TIME_T_LEN + 1];
    const char                   *params[1];
    ngx_http_presence_flusher_t  *f;

    f = pg->data;

    ngx_http_presence_lock(f->zone, pg->log);
    f->zone->sh->db_connected = 1;
    ngx_http_presence_unlock(f->zone);

    ngx_sprintf((u_char *) day, "%T%Z", ngx_time());
    params[0] = day;

    f->connecting = 1;

    if (ngx_http_presence_pg_send(pg, ngx_http_presence_peaks_sql, 1, params,
                                  ngx_http_presence_peaks_loaded)
        != NGX_OK)
    {
        return;
    }
}


static void
ngx_http_presence_peaks_loaded(ngx_http_presence_pg_t *pg, PGresult *res)
{
    int                           i, hour, n;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_flusher_t  *f;

    f = pg->data;

    if (res == NULL) {
        return;
    }

    ngx_http_presence_lock(f->zone, pg->log);

    sh = f->zone->sh;
    ngx_http_presence_advance(f->zone, ngx_time());
    ngx_http_presence_sample_peak(f->zone, f->pmcf->online);

    for (i = 0; i < PQntuples(res); i++) {
        hour = ngx_atoi((u_char *) PQgetvalue(res, i, 0),
                        PQgetlength(res, i, 0));
        n = ngx_atoi((u_char *) PQgetvalue(res, i, 1),
                     PQgetlength(res, i, 1));

        if (hour >= 0 && hour < 24 && n > 0 && (uint32_t) n > sh->peak[hour])
        {
            sh->peak[hour] = n;
        }
    }

    ngx_http_presence_unlock(f->zone);

    if (f->connecting) {
        f->connecting = 0;
        f->chained = 0;
        ngx_http_presence_flush(f);
        return;
    }

    ngx_http_presence_profiles(f);
}


/* the worker shuts down while the connection is idle: a last flush */

static void
ngx_http_presence_shutdown(ngx_http_presence_pg_t *pg)
{
    ngx_http_presence_flusher_t  *f;

    f = pg->data;
    f->exiting = 1;

    if (f->event.timer_set) {
        ngx_del_timer(&f->event);
    }

    if (!f->owner) {
        ngx_http_presence_pg_close(pg);
        return;
    }

    pg->statement_timeout = NGX_HTTP_PRESENCE_FINAL_TIMEOUT;
    f->chained = 0;

    ngx_http_presence_flush(f);
}


static void
ngx_http_presence_flush(ngx_http_presence_flusher_t *f)
{
    char         cleanup[2], cutoff[NGX_TIME_T_LEN + 1];
    char         now[NGX_TIME_T_LEN + 1], hour[4], peak[NGX_INT32_LEN + 1];
    const char  *params[7];

    if (f->pg.state != NGX_HTTP_PRESENCE_PG_IDLE) {
        return;
    }

    if (ngx_http_presence_collect(f) == 0) {
        ngx_http_presence_pull(f);
        return;
    }

    f->json = ngx_http_presence_batch_json(f);
    if (f->json == NULL) {
        ngx_log_error(NGX_LOG_ALERT, f->pg.log, 0,
                      "presence zone \"%V\": cannot build a batch",
                      &f->zone->name);
        return;
    }

    ngx_sprintf((u_char *) cleanup, "%ui%Z", f->cleanup);
    ngx_sprintf((u_char *) cutoff, "%T%Z",
                ngx_time() - f->pmcf->session_timeout);
    ngx_sprintf((u_char *) now, "%T%Z", ngx_time());
    ngx_sprintf((u_char *) hour, "%ui%Z", f->peak_hour);
    ngx_sprintf((u_char *) peak, "%uD%Z", f->peak);

    params[0] = f->json;
    params[1] = cleanup;
    params[2] = cutoff;
    params[3] = now;
    params[4] = hour;
    params[5] = peak;
    params[6] = (char *) f->pmcf->node.data;

    (void) ngx_http_presence_pg_send(&f->pg, ngx_http_presence_upsert, 7,
                                     params, ngx_http_presence_flushed);

    /* libpq has copied the parameters */

    free(f->json);
    f->json = NULL;
}


/*
 * Under the lock: the changed sessions from the ring (and, after a ring
 * overflow, from a slice of the session array), copied out; whether
 * cleanup and today's peak go with them.  Returns whether there is
 * anything to send.
 */

static ngx_uint_t
ngx_http_presence_collect(ngx_http_presence_flusher_t *f)
{
    time_t                    now;
    uint32_t                  i, end;
    uint64_t                  head;
    ngx_uint_t                hour, scanned;
    ngx_http_presence_shm_t  *sh;

    if (f->rows == NULL) {
        f->rows = ngx_alloc(NGX_HTTP_PRESENCE_BATCH_MAX
                            * sizeof(ngx_http_presence_row_t), f->pg.log);
        f->seen = ngx_alloc(2 * NGX_HTTP_PRESENCE_BATCH_MAX
                            * sizeof(uint32_t), f->pg.log);
        if (f->rows == NULL || f->seen == NULL) {
            return 0;
        }
    }

    ngx_memset(f->seen, 0xff, 2 * NGX_HTTP_PRESENCE_BATCH_MAX
                              * sizeof(uint32_t));
    f->nrows = 0;
    now = ngx_time();

    ngx_http_presence_lock(f->zone, f->pg.log);

    sh = f->zone->sh;
    f->resets = sh->resets;

    ngx_http_presence_advance(f->zone, now);

    head = sh->ring_head;

    while (head < sh->ring_tail && f->nrows < NGX_HTTP_PRESENCE_BATCH_MAX) {
        i = sh->ring[head++ % sh->nring];

        if (!(sh->sessions[i].flags & NGX_HTTP_PRESENCE_IN_RING)) {
            continue;
        }

        if (!ngx_http_presence_take(f, i)) {
            sh->sessions[i].flags &= ~NGX_HTTP_PRESENCE_IN_RING;
        }
    }

    f->ring_head = head;

    /* after an overflow, the changed sessions not in the ring */

    if (sh->ring_overflow && f->nrows < NGX_HTTP_PRESENCE_BATCH_MAX) {

        if (sh->sweep_cursor == 0) {
            sh->sweep_mark = sh->ring_overflows;
        }

        i = sh->sweep_cursor;
        end = sh->nsessions;

        for (scanned = 0;
             i < end && scanned < NGX_HTTP_PRESENCE_SWEEP_STEP
             && f->nrows < NGX_HTTP_PRESENCE_BATCH_MAX;
             i++, scanned++)
        {
            if (sh->sessions[i].user != NGX_HTTP_PRESENCE_NIL
                && !(sh->sessions[i].flags & NGX_HTTP_PRESENCE_IN_RING))
            {
                (void) ngx_http_presence_take(f, i);
            }
        }

        if (i == end) {
            i = 0;

            if (sh->sweep_mark == sh->ring_overflows) {
                sh->ring_overflow = 0;
            }
        }

        sh->sweep_cursor = i;
    }

    /* deactivation in the table, each cleanup interval or on request */

    f->cleanup_req = sh->cleanup_requested;
    f->cleanup = (f->cleanup_req
                  || now - f->last_cleanup
                     >= (time_t) (f->pmcf->cleanup_interval / 1000))
                 && f->chained == 0;

    /* today's peak of the hour, when it grew */

    ngx_http_presence_sample_peak(f->zone, f->pmcf->online);

    hour = (sh->clock % 86400) / 3600;

    if (f->peak_day != sh->peak_day || f->peak_hour != hour) {
        f->peak_day = sh->peak_day;
        f->peak_hour = hour;
        f->peak_written = 0;
    }

    f->peak = (sh->peak[hour] > f->peak_written) ? sh->peak[hour] : 0;

    ngx_http_presence_unlock(f->zone);

    return f->nrows || f->cleanup || f->peak;
}


/* a changed session into the batch, once */

static ngx_uint_t
ngx_http_presence_take(ngx_http_presence_flusher_t *f, uint32_t i)
{
    size_t                        len;
    u_char                       *ua;
    ngx_uint_t                    h;
    ngx_http_presence_row_t      *row;
    ngx_http_presence_session_t  *s;

    s = &f->zone->sh->sessions[i];

    if (s->user == NGX_HTTP_PRESENCE_NIL || s->last_ms <= s->flushed_ms) {
        return 0;
    }

    for (h = i % (2 * NGX_HTTP_PRESENCE_BATCH_MAX);
         f->seen[h] != NGX_HTTP_PRESENCE_NIL;
         h = (h + 1) % (2 * NGX_HTTP_PRESENCE_BATCH_MAX))
    {
        if (f->seen[h] == i) {
            return 1;
        }
    }

    f->seen[h] = i;

    row = &f->rows[f->nrows++];

    row->index = i;
    ngx_memcpy(row->id, s->id, 32);
    row->user_id = s->user_id;
    row->created_ms = s->created_ms;
    row->last_ms = s->last_ms;
    row->exp = s->exp;
    ngx_memcpy(row->addr, s->addr, 16);
    row->family = s->family;

    ua = ngx_http_presence_ua(f->zone, s->ua, &len);
    row->ua_len = (uint16_t) len;

    if (len) {
        ngx_memcpy(row->ua, ua, len);
    }

    return 1;
}


static char *
ngx_http_presence_batch_json(ngx_http_presence_flusher_t *f)
{
    char                      *text;
    u_char                     id[64], ip[NGX_INET6_ADDRSTRLEN];
    size_t                     len;
    json_t                    *list, *o;
    ngx_uint_t                 k;
    const char                *device;
    ngx_http_presence_row_t   *row;

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    for (k = 0; k < f->nrows; k++) {
        row = &f->rows[k];

        ngx_hex_dump(id, row->id, 32);

        o = json_pack("{sI ss# sI sI}",
                      "u", (json_int_t) row->user_id,
                      "t", id, 64,
                      "c", (json_int_t) row->created_ms,
                      "l", (json_int_t) row->last_ms);
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
            json_object_set_new(o, "ua", json_stringn((char *) row->ua,
                                                      row->ua_len));
            device = ngx_http_presence_device(row->ua, row->ua_len);
            json_object_set_new(o, "d", json_string(device));
        }

        json_array_append_new(list, o);
    }

    text = json_dumps(list, JSON_COMPACT);
    json_decref(list);

    return text;
}


/* device_info: a coarse class from the User-Agent */

static const char *
ngx_http_presence_device(u_char *ua, size_t len)
{
    if (ngx_strlcasestrn(ua, ua + len, (u_char *) "bot", 3 - 1)
        || ngx_strlcasestrn(ua, ua + len, (u_char *) "spider", 6 - 1)
        || ngx_strlcasestrn(ua, ua + len, (u_char *) "crawl", 5 - 1))
    {
        return "bot";
    }

    if (ngx_strlcasestrn(ua, ua + len, (u_char *) "ipad", 4 - 1)
        || ngx_strlcasestrn(ua, ua + len, (u_char *) "tablet", 6 - 1))
    {
        return "tablet";
    }

    if (ngx_strlcasestrn(ua, ua + len, (u_char *) "mobi", 4 - 1)
        || ngx_strlcasestrn(ua, ua + len, (u_char *) "iphone", 6 - 1)
        || ngx_strlcasestrn(ua, ua + len, (u_char *) "android", 7 - 1))
    {
        return "mobile";
    }

    return "desktop";
}


/* the batch's end: marked written only now, or left for the next try */

static void
ngx_http_presence_flushed(ngx_http_presence_pg_t *pg, PGresult *res)
{
    ngx_uint_t                    k, more;
    ngx_http_presence_row_t      *row;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_flusher_t  *f;
    ngx_http_presence_session_t  *s;

    f = pg->data;
    more = 0;

    ngx_http_presence_lock(f->zone, pg->log);

    sh = f->zone->sh;

    if (res == NULL || PQntuples(res) != 1) {
        sh->flush_errors++;
        goto done;
    }

    sh->flush_statements++;

    if (sh->resets != f->resets) {
        goto done;  /* the zone started afresh meanwhile */
    }

    for (k = 0; k < f->nrows; k++) {
        row = &f->rows[k];
        s = &sh->sessions[row->index];

        if (s->user == NGX_HTTP_PRESENCE_NIL
            || ngx_memcmp(s->id, row->id, 32) != 0)
        {
            continue;
        }

        s->flushed_ms = ngx_max(s->flushed_ms, row->last_ms);
        s->flags &= ~NGX_HTTP_PRESENCE_IN_RING;

        if (s->last_ms > s->flushed_ms) {
            ngx_http_presence_ring_add(sh, row->index);
        }
    }

    if (f->ring_head > sh->ring_head) {
        sh->ring_head = f->ring_head;
    }

    if (f->nrows) {
        sh->flush_batches++;
    }

    sh->flush_rows += ngx_atoi((u_char *) PQgetvalue(res, 0, 2),
                               PQgetlength(res, 0, 2));
    sh->flush_missing_users += ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                                        PQgetlength(res, 0, 0))
                               - ngx_atoi((u_char *) PQgetvalue(res, 0, 1),
                                          PQgetlength(res, 0, 1));
    sh->flush_deactivated += ngx_atoi((u_char *) PQgetvalue(res, 0, 3),
                                      PQgetlength(res, 0, 3));
    sh->flush_last_ok = ngx_time();

    if (f->cleanup) {
        f->last_cleanup = ngx_time();

        if (sh->cleanup_requested == f->cleanup_req) {
            sh->cleanup_requested = 0;
        }
    }

    if (f->peak) {
        f->peak_written = f->peak;
    }

    more = (sh->ring_tail > sh->ring_head || sh->ring_overflow)
           && f->nrows == NGX_HTTP_PRESENCE_BATCH_MAX;

done:

    ngx_http_presence_unlock(f->zone);

    if (res == NULL) {

        /* the connection backs off; the ring still holds the batch */

        if (f->exiting) {
            ngx_http_presence_done(f);
        }

        return;
    }

    if (more && f->chained++ < NGX_HTTP_PRESENCE_CHAIN_MAX) {
        ngx_http_presence_flush(f);
        return;
    }

    ngx_http_presence_pull(f);
}


/* presence_cluster: the other nodes' activity, merged into the zone */

static void
ngx_http_presence_pull(ngx_http_presence_flusher_t *f)
{
    char         wm[NGX_INT64_LEN + 1], since[NGX_TIME_T_LEN + 1];
    char         overlap[4];
    const char  *params[4];

    if (!f->pmcf->cluster || f->exiting) {
        ngx_http_presence_profiles(f);
        return;
    }

    ngx_http_presence_lock(f->zone, f->pg.log);
    ngx_sprintf((u_char *) wm, "%L%Z", f->zone->sh->pull_watermark);
    ngx_http_presence_unlock(f->zone);

    ngx_sprintf((u_char *) since, "%T%Z", f->pmcf->session_timeout);
    ngx_sprintf((u_char *) overlap, "%d%Z", f->catchup ? 0 : 10);

    params[0] = wm;
    params[1] = (char *) f->pmcf->node.data;
    params[2] = since;
    params[3] = overlap;

    (void) ngx_http_presence_pg_send(&f->pg, ngx_http_presence_pull_sql, 4,
                                     params, ngx_http_presence_pulled);
}


static void
ngx_http_presence_pulled(ngx_http_presence_pg_t *pg, PGresult *res)
{
    int                           i, n;
    char                          day[NGX_TIME_T_LEN + 1];
    const char                   *params[1];
    int64_t                       wm, t;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_flusher_t  *f;

    f = pg->data;

    if (res == NULL) {
        return;
    }

    n = PQntuples(res);

    ngx_http_presence_lock(f->zone, pg->log);

    sh = f->zone->sh;
    ngx_http_presence_advance(f->zone, ngx_time());

    sh->writer = ngx_pid;

    wm = sh->pull_watermark;

    for (i = 0; i < n; i++) {
        ngx_http_presence_merge(f, res, i);

        t = ngx_atoof((u_char *) PQgetvalue(res, i, 8),
                      PQgetlength(res, i, 8));
        if (t > wm) {
            wm = t;
        }
    }

    sh->writer = 0;
    sh->pull_watermark = wm;
    sh->pulled_rows += n;

    ngx_http_presence_unlock(f->zone);

    /* a full page: the next pull continues exactly where this one ended */

    f->catchup = (n == 20000);

    /* the cluster's peaks: every node's samples, the highest wins */

    ngx_sprintf((u_char *) day, "%T%Z", ngx_time());
    params[0] = day;

    (void) ngx_http_presence_pg_send(pg, ngx_http_presence_peaks_sql, 1,
                                     params, ngx_http_presence_peaks_loaded);
}


static void
ngx_http_presence_merge(ngx_http_presence_flusher_t *f, PGresult *res, int i)
{
    u_char                        *v, id[32];
    size_t                         len;
    ngx_int_t                      n;
    ngx_uint_t                     k;
    ngx_http_presence_activity_t   act;

    if (PQgetlength(res, i, 1) != 64) {
        return;     /* not a session id of ours */
    }

    v = (u_char *) PQgetvalue(res, i, 1);

    for (k = 0; k < 32; k++) {
        n = ngx_hextoi(v + 2 * k, 2);
        if (n == NGX_ERROR) {
            return;
        }

        id[k] = (u_char) n;
    }

    if (*PQgetvalue(res, i, 7) != 't') {
        ngx_http_presence_forget(f->zone, id,
                                 ngx_atoof((u_char *) PQgetvalue(res, i, 5),
                                           PQgetlength(res, i, 5)));
        return;
    }

    ngx_memzero(&act, offsetof(ngx_http_presence_activity_t, ua));

    ngx_memcpy(act.id, id, 32);
    act.user_id = ngx_atoof((u_char *) PQgetvalue(res, i, 0),
                            PQgetlength(res, i, 0));
    act.created_ms = ngx_atoof((u_char *) PQgetvalue(res, i, 4),
                               PQgetlength(res, i, 4));
    act.now_ms = ngx_atoof((u_char *) PQgetvalue(res, i, 5),
                           PQgetlength(res, i, 5));
    act.exp = PQgetisnull(res, i, 6)
              ? INT64_MAX
              : ngx_atoof((u_char *) PQgetvalue(res, i, 6),
                          PQgetlength(res, i, 6));

    if (act.user_id <= 0 || act.now_ms <= 0) {
        return;
    }

    v = (u_char *) PQgetvalue(res, i, 2);

    if (inet_pton(AF_INET, (char *) v, act.addr) == 1) {
        act.family = AF_INET;

    } else if (inet_pton(AF_INET6, (char *) v, act.addr) == 1) {
        act.family = AF_INET6;
    }

    len = PQgetlength(res, i, 3);
    act.ua_len = ngx_http_presence_sanitize(act.ua, NGX_HTTP_PRESENCE_UA_MAX,
                                            (u_char *) PQgetvalue(res, i, 3),
                                            len);
    act.ua_hash = ngx_crc32_short(act.ua, act.ua_len);

    ngx_http_presence_record(f->zone, &act, f->pmcf->session_timeout,
                             f->pg.log, 1);
}


/*
 * Profiles for the most recently active users that have none, or a stale
 * one: one query for up to 500 ids.
 */

static void
ngx_http_presence_profiles(ngx_http_presence_flusher_t *f)
{
    u_char                    *p, *list;
    time_t                     now;
    uint32_t                   i;
    ngx_uint_t                 k;
    const char                *params[1];
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    f->nids = 0;
    now = ngx_time();

    if (f->exiting) {
        ngx_http_presence_done(f);
        return;
    }

    ngx_http_presence_lock(f->zone, f->pg.log);

    sh = f->zone->sh;
    i = sh->q_head;

    for (k = 0;
         k < NGX_HTTP_PRESENCE_PROFILE_SCAN && i != NGX_HTTP_PRESENCE_NIL
         && f->nids < NGX_HTTP_PRESENCE_PROFILE_MAX;
         k++, i = user->q_next)
    {
        user = &sh->users[i];

        if ((user->profile || (user->flags & NGX_HTTP_PRESENCE_PROFILE_MISSING))
            && now - (time_t) user->profile_at < f->pmcf->profile_ttl)
        {
            continue;
        }

        f->ids[f->nids++] = user->user_id;
    }

    ngx_http_presence_unlock(f->zone);

    if (f->nids == 0) {
        return;
    }

    list = ngx_alloc(f->nids * (NGX_INT64_LEN + 1) + 3, f->pg.log);
    if (list == NULL) {
        return;
    }

    p = list;
    *p++ = '{';

    for (k = 0; k < f->nids; k++) {
        p = ngx_sprintf(p, k ? ",%L" : "%L", f->ids[k]);
    }

    *p++ = '}';
    *p = '\0';

    params[0] = (char *) list;

    (void) ngx_http_presence_pg_send(&f->pg, ngx_http_presence_profiles_sql,
                                     1, params,
                                     ngx_http_presence_profiles_loaded);
    ngx_free(list);
}


static void
ngx_http_presence_profiles_loaded(ngx_http_presence_pg_t *pg, PGresult *res)
{
    int                           i, j;
    time_t                        now;
    int64_t                       id;
    ngx_str_t                     fields[3];
    ngx_uint_t                    k;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_flusher_t  *f;

    f = pg->data;
    now = ngx_time();

    if (res == NULL) {
        return;
    }

    ngx_http_presence_lock(f->zone, pg->log);

    /* those not returned have no row */

    for (k = 0; k < f->nids; k++) {
        user = ngx_http_presence_find_user(f->zone, f->ids[k]);

        if (user) {
            ngx_http_presence_set_profile(f->zone, user, NULL, now);
        }
    }

    for (i = 0; i < PQntuples(res); i++) {
        id = ngx_atoof((u_char *) PQgetvalue(res, i, 0),
                       PQgetlength(res, i, 0));

        user = ngx_http_presence_find_user(f->zone, id);
        if (user == NULL) {
            continue;
        }

        for (j = 0; j < 3; j++) {
            if (PQgetisnull(res, i, j + 1)) {
                fields[j].data = NULL;
                fields[j].len = 0;
                continue;
            }

            fields[j].data = (u_char *) PQgetvalue(res, i, j + 1);
            fields[j].len = ngx_min((size_t) PQgetlength(res, i, j + 1),
                                    NGX_HTTP_PRESENCE_PROFILE_LEN);

            /* a cut on a character boundary */

            while (fields[j].len
                   && fields[j].len < (size_t) PQgetlength(res, i, j + 1)
                   && (fields[j].data[fields[j].len] & 0xc0) == 0x80)
            {
                fields[j].len--;
            }
        }

        ngx_http_presence_set_profile(f->zone, user, fields, now);
    }

    ngx_http_presence_unlock(f->zone);
}


/* after the last flush at exit: the lease is free, the connection closed */

static void
ngx_http_presence_done(ngx_http_presence_flusher_t *f)
{
    uint64_t  left;

    ngx_http_presence_lock(f->zone, f->pg.log);
    left = f->zone->sh->ring_tail - f->zone->sh->ring_head;
    ngx_http_presence_unlock(f->zone);

    if (left) {
        ngx_log_error(NGX_LOG_WARN, f->pg.log, 0,
                      "presence zone \"%V\": %uL changed sessions not "
                      "written at exit", &f->zone->name, left);
    }

    ngx_http_presence_release(f);
    ngx_http_presence_pg_close(&f->pg);
}


void
ngx_http_presence_flusher_exit(ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_flusher_t  *f;

    f = pmcf->flusher;

    if (f == NULL) {
        return;
    }

    if (f->owner) {
        ngx_http_presence_done(f);

    } else {
        ngx_http_presence_pg_close(&f->pg);
    }

    ngx_free(f->rows);
    ngx_free(f->seen);
    f->rows = NULL;
    f->seen = NULL;
}
