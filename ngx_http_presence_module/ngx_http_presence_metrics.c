
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * presence_metrics: the zone's gauges and counters in the Prometheus text
 * exposition format (version 0.0.4), copied under the lock and written
 * after it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence.h"


#define NGX_HTTP_PRESENCE_METRIC_GAUGE    0
#define NGX_HTTP_PRESENCE_METRIC_COUNTER  1

#define NGX_HTTP_PRESENCE_BUILD_INFO                                          \
    "# HELP nginx_presence_build_info The module's version.\n"               \
    "# TYPE nginx_presence_build_info gauge\n"                               \
    "nginx_presence_build_info{version=\"" NGX_HTTP_PRESENCE_VERSION "\"} 1\n"


typedef struct {
    uint64_t                        online[3];
    uint64_t                        active_sessions;
    uint64_t                        requests[4];
    uint64_t                        cache_hits;
    uint64_t                        cache_misses;
    uint64_t                        zone_bytes;
    uint64_t                        zone_free;
    uint64_t                        sessions;
    uint64_t                        sessions_capacity;
    uint64_t                        users;
    uint64_t                        users_capacity;
    uint64_t                        evictions;
    uint64_t                        expired;
    uint64_t                        ring_depth;
    uint64_t                        ring_size;
    uint64_t                        ring_overflows;
    uint64_t                        ua_failures;
    uint64_t                        profile_failures;
    uint64_t                        resets;
    uint64_t                        batches;
    uint64_t                        statements;
    uint64_t                        rows;
    uint64_t                        errors;
    uint64_t                        missing;
    uint64_t                        deactivated;
    uint64_t                        last_ok;
    uint64_t                        connected;
    uint64_t                        flusher_pid;
    uint64_t                        peak;
} ngx_http_presence_snapshot_t;


static ngx_int_t ngx_http_presence_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_presence_metric(u_char *p, ngx_str_t *zone,
    const char *name, ngx_uint_t type, const char *help, const char *label,
    const char **values, uint64_t *v, ngx_uint_t n);


char *
ngx_http_presence_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_presence_metrics_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_presence_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_presence_metrics_handler(ngx_http_request_t *r)
{
    u_char                         *p, name[128];
    ngx_int_t                       rc;
    ngx_str_t                       zname;
    ngx_buf_t                      *b;
    ngx_uint_t                      h, i;
    ngx_chain_t                     out;
    ngx_slab_pool_t                *shpool;
    ngx_http_presence_shm_t        *sh;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_main_conf_t  *pmcf;
    ngx_http_presence_snapshot_t    m;

    static const char  *thresholds[] = { "very_active", "online", "recent" };
    static const char  *jwt[] = { "valid", "missing", "invalid", "expired" };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);

    if (pmcf->shm_zone == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    zone = pmcf->shm_zone->data;
    shpool = zone->shpool;

    ngx_memzero(&m, sizeof(ngx_http_presence_snapshot_t));

    ngx_http_presence_lock(zone, r->connection->log);

    sh = zone->sh;
    ngx_http_presence_advance(zone, ngx_time());
    ngx_http_presence_sample_peak(zone, pmcf->online);

    m.online[0] = ngx_http_presence_count(zone, pmcf->very_active, 0);
    m.online[1] = ngx_http_presence_count(zone, pmcf->online, 0);
    m.online[2] = ngx_http_presence_count(zone, pmcf->recent, 0);
    m.active_sessions = ngx_http_presence_count(zone, pmcf->online, 1);

    for (h = 0; h < NGX_HTTP_PRESENCE_SLOTS; h++) {
        for (i = 0; i < 4; i++) {
            m.requests[i] += sh->counters[h].requests[i + 1];
        }

        m.cache_hits += sh->counters[h].cache_hits;
        m.cache_misses += sh->counters[h].cache_misses;
    }
    m.zone_bytes = shpool->end - (u_char *) shpool;
    m.zone_free = shpool->pfree * ngx_pagesize;
    m.sessions = sh->sessions_used;
    m.sessions_capacity = sh->nsessions;
    m.users = sh->users_used;
    m.users_capacity = sh->nusers;
    m.evictions = sh->evictions;
    m.expired = sh->expired;
    m.ring_depth = sh->ring_tail - sh->ring_head;
    m.ring_size = sh->nring;
    m.ring_overflows = sh->ring_overflows;
    m.ua_failures = sh->ua_failures;
    m.profile_failures = sh->profile_failures;
    m.resets = sh->resets;
    m.batches = sh->flush_batches;
    m.statements = sh->flush_statements;
    m.rows = sh->flush_rows;
    m.errors = sh->flush_errors;
    m.missing = sh->flush_missing_users;
    m.deactivated = sh->flush_deactivated;
    m.last_ok = sh->flush_last_ok;
    m.connected = sh->db_connected;
    m.flusher_pid = sh->lease_pid;

    for (h = 0; h < 24; h++) {
        if (sh->peak[h] > m.peak) {
            m.peak = sh->peak[h];
        }
    }

    ngx_http_presence_unlock(zone);

    /* the zone's name as a label value */

    p = name;

    for (i = 0; i < zone->name.len && p < name + sizeof(name) - 2; i++) {
        if (zone->name.data[i] == '\\' || zone->name.data[i] == '"') {
            *p++ = '\\';
        }

        *p++ = zone->name.data[i];
    }

    zname.data = name;
    zname.len = p - name;

    b = ngx_create_temp_buf(r->pool, 16384);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    p = ngx_cpymem(p, NGX_HTTP_PRESENCE_BUILD_INFO,
                   sizeof(NGX_HTTP_PRESENCE_BUILD_INFO) - 1);

    p = ngx_http_presence_metric(p, &zname, "online_users",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Users whose latest activity is within the threshold.",
            "threshold", thresholds, m.online, 3);
    p = ngx_http_presence_metric(p, &zname, "active_sessions",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Sessions active within the online threshold.",
            NULL, NULL, &m.active_sessions, 1);
    p = ngx_http_presence_metric(p, &zname, "requests_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Requests in presence locations, by JWT status.",
            "jwt", jwt, m.requests, 4);
    p = ngx_http_presence_metric(p, &zname, "jwt_cache_hits_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Tokens found in the workers' verdict caches.",
            NULL, NULL, &m.cache_hits, 1);
    p = ngx_http_presence_metric(p, &zname, "jwt_cache_misses_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Tokens verified because no cache had them.",
            NULL, NULL, &m.cache_misses, 1);
    p = ngx_http_presence_metric(p, &zname, "zone_size_bytes",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Size of the shared memory zone.",
            NULL, NULL, &m.zone_bytes, 1);
    p = ngx_http_presence_metric(p, &zname, "zone_free_bytes",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Free pages of the zone, for User-Agents and profiles.",
            NULL, NULL, &m.zone_free, 1);
    p = ngx_http_presence_metric(p, &zname, "sessions",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Sessions held in the zone.",
            NULL, NULL, &m.sessions, 1);
    p = ngx_http_presence_metric(p, &zname, "sessions_capacity",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Sessions the zone can hold.",
            NULL, NULL, &m.sessions_capacity, 1);
    p = ngx_http_presence_metric(p, &zname, "users",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Users held in the zone.",
            NULL, NULL, &m.users, 1);
    p = ngx_http_presence_metric(p, &zname, "users_capacity",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Users the zone can hold.",
            NULL, NULL, &m.users_capacity, 1);
    p = ngx_http_presence_metric(p, &zname, "evictions_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Sessions evicted because the zone was full.",
            NULL, NULL, &m.evictions, 1);
    p = ngx_http_presence_metric(p, &zname, "expired_sessions_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Sessions expired and freed.",
            NULL, NULL, &m.expired, 1);
    p = ngx_http_presence_metric(p, &zname, "ring_depth",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Changed sessions queued for the flusher.",
            NULL, NULL, &m.ring_depth, 1);
    p = ngx_http_presence_metric(p, &zname, "ring_size",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Size of the changed-session queue.",
            NULL, NULL, &m.ring_size, 1);
    p = ngx_http_presence_metric(p, &zname, "ring_overflows_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Changed sessions left to the flusher's sweep, the queue full.",
            NULL, NULL, &m.ring_overflows, 1);
    p = ngx_http_presence_metric(p, &zname, "string_store_failures_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "User-Agents and profiles not stored, the zone full.",
            NULL, NULL, &m.ua_failures, 1);
    p = ngx_http_presence_metric(p, &zname, "zone_resets_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Zone restarts after a worker died while updating it.",
            NULL, NULL, &m.resets, 1);
    p = ngx_http_presence_metric(p, &zname, "flush_batches_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Batches of changed sessions written to PostgreSQL.",
            NULL, NULL, &m.batches, 1);
    p = ngx_http_presence_metric(p, &zname, "flush_statements_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Write statements that succeeded.",
            NULL, NULL, &m.statements, 1);
    p = ngx_http_presence_metric(p, &zname, "flush_rows_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Session rows inserted or advanced.",
            NULL, NULL, &m.rows, 1);
    p = ngx_http_presence_metric(p, &zname, "flush_errors_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Write statements that failed (they are retried).",
            NULL, NULL, &m.errors, 1);
    p = ngx_http_presence_metric(p, &zname,
            "flush_unknown_user_sessions_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Sessions not written: their user is not in the users table.",
            NULL, NULL, &m.missing, 1);
    p = ngx_http_presence_metric(p, &zname, "flush_deactivated_rows_total",
            NGX_HTTP_PRESENCE_METRIC_COUNTER,
            "Rows set inactive by the expiry rule.",
            NULL, NULL, &m.deactivated, 1);
    p = ngx_http_presence_metric(p, &zname,
            "flush_last_success_timestamp_seconds",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "When a write statement last succeeded.",
            NULL, NULL, &m.last_ok, 1);
    p = ngx_http_presence_metric(p, &zname, "database_connected",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Whether the flusher is connected to PostgreSQL.",
            NULL, NULL, &m.connected, 1);
    p = ngx_http_presence_metric(p, &zname, "flusher_pid",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "The worker holding the flusher lease (0: none).",
            NULL, NULL, &m.flusher_pid, 1);
    p = ngx_http_presence_metric(p, &zname, "peak_users_today",
            NGX_HTTP_PRESENCE_METRIC_GAUGE,
            "Today's highest sampled online_users (UTC day).",
            NULL, NULL, &m.peak, 1);

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_presence_metric(u_char *p, ngx_str_t *zone, const char *name,
    ngx_uint_t type, const char *help, const char *label,
    const char **values, uint64_t *v, ngx_uint_t n)
{
    ngx_uint_t  i;

    p = ngx_sprintf(p, "# HELP nginx_presence_%s %s\n"
                       "# TYPE nginx_presence_%s %s\n",
                    name, help, name,
                    type == NGX_HTTP_PRESENCE_METRIC_COUNTER ? "counter"
                                                             : "gauge");

    for (i = 0; i < n; i++) {
        if (label) {
            p = ngx_sprintf(p, "nginx_presence_%s{zone=\"%V\",%s=\"%s\"} "
                               "%uL\n", name, zone, label, values[i], v[i]);

        } else {
            p = ngx_sprintf(p, "nginx_presence_%s{zone=\"%V\"} %uL\n",
                            name, zone, v[i]);
        }
    }

    return p;
}
