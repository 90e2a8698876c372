
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * presence_metrics: the zone's gauges and counters in the Prometheus text
 * exposition format (version 0.0.4).  The numbers are a snapshot the store
 * copies under its lock; the text is written after, from one table, into
 * a buffer whose size is computed first.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_metrics.h"
#include "ngx_http_presence_shm.h"


#define NGX_HTTP_PRESENCE_METRIC_GAUGE    0
#define NGX_HTTP_PRESENCE_METRIC_COUNTER  1

/* the zone's name as a label value, escaped: at most this long */
#define NGX_HTTP_PRESENCE_METRIC_ZONE     128

#define NGX_HTTP_PRESENCE_BUILD_INFO                                          \
    "# HELP nginx_presence_build_info The module's version.\n"               \
    "# TYPE nginx_presence_build_info gauge\n"                               \
    "nginx_presence_build_info{version=\"" NGX_HTTP_PRESENCE_VERSION "\"} 1\n"


typedef struct {
    const char                     *name;
    ngx_uint_t                      type;
    const char                     *help;
    const char                     *label;       /* NULL: none */
    const char                    **values;      /* of the label */
    size_t                          offset;      /* in the snapshot */
    ngx_uint_t                      n;           /* values */
} ngx_http_presence_metric_t;


static ngx_int_t ngx_http_presence_metrics_handler(ngx_http_request_t *r);
static size_t ngx_http_presence_metrics_size(ngx_str_t *zone);
static u_char *ngx_http_presence_metric(u_char *p, ngx_str_t *zone,
    ngx_http_presence_metric_t *m, ngx_http_presence_store_stats_t *st);
static void ngx_http_presence_metrics_zone(ngx_str_t *name, ngx_str_t *zone);
static size_t ngx_http_presence_histogram_size(ngx_str_t *zone);
static u_char *ngx_http_presence_histogram(u_char *p, ngx_str_t *zone,
    ngx_http_presence_store_stats_t *st);


static const char  *ngx_http_presence_metric_thresholds[] = {
    "very_active", "online", "recent"
};

static const char  *ngx_http_presence_metric_devices[] = {
    "other", "mobile", "tablet", "desktop", "bot"
};

static const char  *ngx_http_presence_metric_jwt[] = {
    "valid", "missing", "invalid", "expired"
};


#define ngx_http_presence_stat(field)                                         \
    offsetof(ngx_http_presence_store_stats_t, field)

#define NGX_HTTP_PRESENCE_GAUGE(name, help, field)                            \
    { name, NGX_HTTP_PRESENCE_METRIC_GAUGE, help, NULL, NULL,                 \
      ngx_http_presence_stat(field), 1 }

#define NGX_HTTP_PRESENCE_COUNTER(name, help, field)                          \
    { name, NGX_HTTP_PRESENCE_METRIC_COUNTER, help, NULL, NULL,               \
      ngx_http_presence_stat(field), 1 }


static ngx_http_presence_metric_t  ngx_http_presence_metrics_table[] = {

    { "online_users", NGX_HTTP_PRESENCE_METRIC_GAUGE,
      "Users whose latest activity is within the threshold.",
      "threshold", ngx_http_presence_metric_thresholds,
      ngx_http_presence_stat(online), NGX_HTTP_PRESENCE_THRESHOLDS },

    NGX_HTTP_PRESENCE_GAUGE("active_sessions",
      "Sessions active within the online threshold.", active_sessions),

    { "requests_total", NGX_HTTP_PRESENCE_METRIC_COUNTER,
      "Requests in presence locations, by JWT status.",
      "jwt", ngx_http_presence_metric_jwt,
      ngx_http_presence_stat(requests), NGX_HTTP_PRESENCE_JWT_STATUSES },

    NGX_HTTP_PRESENCE_COUNTER("jwt_cache_hits_total",
      "Tokens found in the workers' verdict caches.", cache_hits),
    NGX_HTTP_PRESENCE_COUNTER("jwt_cache_misses_total",
      "Tokens verified because no cache had them.", cache_misses),
    NGX_HTTP_PRESENCE_GAUGE("zone_size_bytes",
      "Size of the shared memory zone.", zone_bytes),
    NGX_HTTP_PRESENCE_GAUGE("zone_free_bytes",
      "Free pages of the zone, for User-Agents and profiles.", zone_free),
    NGX_HTTP_PRESENCE_GAUGE("sessions",
      "Sessions held in the zone.", sessions),
    NGX_HTTP_PRESENCE_GAUGE("sessions_capacity",
      "Sessions the zone can hold.", sessions_capacity),
    NGX_HTTP_PRESENCE_GAUGE("users",
      "Users held in the zone.", users),
    NGX_HTTP_PRESENCE_GAUGE("users_capacity",
      "Users the zone can hold.", users_capacity),
    NGX_HTTP_PRESENCE_COUNTER("evictions_total",
      "Sessions evicted because the zone was full.", evictions),
    NGX_HTTP_PRESENCE_COUNTER("session_cap_evictions_total",
      "Sessions freed for a newer one of the same user "
      "(presence_max_sessions_per_user).", cap_evictions),
    NGX_HTTP_PRESENCE_COUNTER("expired_sessions_total",
      "Sessions expired and freed.", expired),
    NGX_HTTP_PRESENCE_GAUGE("ring_depth",
      "Changed sessions queued for the flusher.", ring_depth),
    NGX_HTTP_PRESENCE_GAUGE("ring_size",
      "Size of the changed-session queue.", ring_size),
    NGX_HTTP_PRESENCE_GAUGE("user_agent_buckets",
      "Buckets of the User-Agent table (one for four sessions).",
      ua_buckets),
    NGX_HTTP_PRESENCE_COUNTER("ring_overflows_total",
      "Changed sessions left to the flusher's sweep, the queue full.",
      ring_overflows),
    NGX_HTTP_PRESENCE_COUNTER("string_store_failures_total",
      "User-Agents and profiles not stored, the zone full.",
      string_failures),
    NGX_HTTP_PRESENCE_COUNTER("zone_resets_total",
      "Zone restarts after a worker died while updating it.", resets),
    NGX_HTTP_PRESENCE_COUNTER("page_steps_total",
      "Users stepped over to find where a users page starts.", page_steps),
    NGX_HTTP_PRESENCE_COUNTER("page_crowd_indexes_total",
      "Indexes built for seconds crowded with users (users pages).",
      crowd_builds),
    NGX_HTTP_PRESENCE_COUNTER("flush_batches_total",
      "Batches of changed sessions written to PostgreSQL.", batches),
    NGX_HTTP_PRESENCE_COUNTER("flush_statements_total",
      "Write statements that succeeded.", statements),
    NGX_HTTP_PRESENCE_COUNTER("flush_rows_total",
      "Session rows inserted or advanced.", rows),
    NGX_HTTP_PRESENCE_COUNTER("flush_errors_total",
      "Write statements that failed (they are retried).", errors),
    NGX_HTTP_PRESENCE_COUNTER("flush_unknown_user_sessions_total",
      "Sessions not written: their user is not in the users table.",
      missing),
    NGX_HTTP_PRESENCE_COUNTER("flush_deactivated_rows_total",
      "Rows set inactive by the expiry rule.", deactivated),
    NGX_HTTP_PRESENCE_GAUGE("flush_last_success_timestamp_seconds",
      "When a write statement last succeeded.", last_ok),
    NGX_HTTP_PRESENCE_GAUGE("database_connected",
      "Whether the flusher is connected to PostgreSQL.", connected),
    NGX_HTTP_PRESENCE_GAUGE("flusher_pid",
      "The worker holding the flusher lease (0: none).", flusher_pid),
    NGX_HTTP_PRESENCE_GAUGE("peak_users_today",
      "Today's highest sampled online_users (UTC day).", peak),
    NGX_HTTP_PRESENCE_COUNTER("pull_rows_total",
      "Rows of other writers pulled (presence_cluster).", pulled),
    NGX_HTTP_PRESENCE_COUNTER("pull_skipped_rows_total",
      "Pulled rows skipped: a time or id the zone cannot hold.",
      pull_skipped),
    NGX_HTTP_PRESENCE_GAUGE("warm_start_done",
      "Whether the warm start from PostgreSQL is over.", warm_done),
    NGX_HTTP_PRESENCE_GAUGE("warm_start_rows",
      "Active sessions PostgreSQL held when the warm start began.",
      warm_total),
    NGX_HTTP_PRESENCE_GAUGE("warm_start_loaded_sessions",
      "Sessions the warm start loaded into the zone.", warm_loaded),
    NGX_HTTP_PRESENCE_GAUGE("warm_start_seconds",
      "How long the warm start took.", warm_seconds),
    NGX_HTTP_PRESENCE_GAUGE("stream_subscribers",
      "Open GET stream connections, all workers.", subscribers),
    NGX_HTTP_PRESENCE_GAUGE("stream_subscriber_bytes",
      "Memory the subscribers' watch lists and cursors hold.",
      subscriber_bytes),
    NGX_HTTP_PRESENCE_COUNTER("stream_transitions_total",
      "Status transitions written to the zone's change log.",
      events_logged),
    NGX_HTTP_PRESENCE_COUNTER("stream_events_sent_total",
      "presence events written to subscribers.", events_sent),
    NGX_HTTP_PRESENCE_COUNTER("stream_slow_client_drops_total",
      "Subscribers dropped: more than presence_stream_backlog unsent.",
      slow_drops),
    NGX_HTTP_PRESENCE_GAUGE("lookup_callers",
      "Callers whose distinct lookups are counted (presence_lookup_limit).",
      lookup_callers),
    NGX_HTTP_PRESENCE_COUNTER("lookup_limited_total",
      "Answers refused with 429: past presence_lookup_limit.",
      lookup_limited),
    NGX_HTTP_PRESENCE_COUNTER("lookup_evictions_total",
      "Callers' lookup records evicted for room.", lookup_evictions),

    { "sessions_by_device", NGX_HTTP_PRESENCE_METRIC_GAUGE,
      "Sessions active within the online threshold, by device class.",
      "device", ngx_http_presence_metric_devices,
      ngx_http_presence_stat(devices), 5 }
};


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
    u_char                           name[NGX_HTTP_PRESENCE_METRIC_ZONE];
    ngx_int_t                        rc;
    ngx_str_t                        zone;
    ngx_buf_t                       *b;
    ngx_uint_t                       i;
    ngx_chain_t                      out;
    ngx_http_presence_main_conf_t   *pmcf;
    ngx_http_presence_store_stats_t  st;

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

    ngx_http_presence_store_stats(pmcf->shm_zone->data, pmcf->thresholds,
                                  &st, r->connection->log);

    zone.data = name;
    ngx_http_presence_metrics_zone(
                      ngx_http_presence_store_name(pmcf->shm_zone->data),
                      &zone);

    b = ngx_create_temp_buf(r->pool, ngx_http_presence_metrics_size(&zone)
                                     + ngx_http_presence_histogram_size(&zone));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, NGX_HTTP_PRESENCE_BUILD_INFO,
                         sizeof(NGX_HTTP_PRESENCE_BUILD_INFO) - 1);

    for (i = 0; i < sizeof(ngx_http_presence_metrics_table)
                    / sizeof(ngx_http_presence_metric_t); i++)
    {
        b->last = ngx_http_presence_metric(b->last, &zone,
                                       &ngx_http_presence_metrics_table[i],
                                       &st);
    }

    b->last = ngx_http_presence_histogram(b->last, &zone, &st);

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


/* the durations of the sessions that ended: a Prometheus histogram */

#define NGX_HTTP_PRESENCE_HISTOGRAM  "session_duration_seconds"

static size_t
ngx_http_presence_histogram_size(ngx_str_t *zone)
{
    return 256 + (NGX_HTTP_PRESENCE_DURATIONS + 2)
                 * (sizeof("nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                           "_bucket{zone=\"\",le=\"+Inf\"} \n")
                    + zone->len + 2 * NGX_INT64_LEN);
}


static u_char *
ngx_http_presence_histogram(u_char *p, ngx_str_t *zone,
    ngx_http_presence_store_stats_t *st)
{
    uint64_t    sum;
    ngx_uint_t  i;

    p = ngx_sprintf(p, "# HELP nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                       " How long sessions lasted (last activity - start), "
                       "counted when they expire or are cleaned.\n"
                       "# TYPE nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                       " histogram\n");

    for (sum = 0, i = 0; i < NGX_HTTP_PRESENCE_DURATIONS; i++) {
        sum += st->durations[i];

        if (i == NGX_HTTP_PRESENCE_DURATIONS - 1) {
            p = ngx_sprintf(p, "nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                               "_bucket{zone=\"%V\",le=\"+Inf\"} %uL\n",
                            zone, sum);
            break;
        }

        p = ngx_sprintf(p, "nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                           "_bucket{zone=\"%V\",le=\"%uD\"} %uL\n",
                        zone, ngx_http_presence_duration_bounds[i], sum);
    }

    return ngx_sprintf(p, "nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                          "_sum{zone=\"%V\"} %uL.%03uL\n"
                          "nginx_presence_" NGX_HTTP_PRESENCE_HISTOGRAM
                          "_count{zone=\"%V\"} %uL\n",
                       zone, st->duration_ms / 1000, st->duration_ms % 1000,
                       zone, st->duration_count);
}


/* what the table can write at most, with this zone's name */

static size_t
ngx_http_presence_metrics_size(ngx_str_t *zone)
{
    size_t                       size, line;
    ngx_uint_t                   i, k;
    ngx_http_presence_metric_t  *m;

    size = sizeof(NGX_HTTP_PRESENCE_BUILD_INFO) - 1;

    for (i = 0; i < sizeof(ngx_http_presence_metrics_table)
                    / sizeof(ngx_http_presence_metric_t); i++)
    {
        m = &ngx_http_presence_metrics_table[i];

        size += sizeof("# HELP nginx_presence_ \n") - 1
                + ngx_strlen(m->name) + ngx_strlen(m->help)
                + sizeof("# TYPE nginx_presence_ counter\n") - 1
                + ngx_strlen(m->name);

        line = sizeof("nginx_presence_{zone=\"\"}  \n") - 1
               + ngx_strlen(m->name) + zone->len + NGX_INT64_LEN;

        for (k = 0; k < m->n; k++) {
            size += line;

            if (m->label) {
                size += sizeof(",=\"\"") - 1 + ngx_strlen(m->label)
                        + ngx_strlen(m->values[k]);
            }
        }
    }

    return size;
}


static u_char *
ngx_http_presence_metric(u_char *p, ngx_str_t *zone,
    ngx_http_presence_metric_t *m, ngx_http_presence_store_stats_t *st)
{
    uint64_t    *v;
    ngx_uint_t   i;

    v = (uint64_t *) ((u_char *) st + m->offset);

    p = ngx_sprintf(p, "# HELP nginx_presence_%s %s\n"
                       "# TYPE nginx_presence_%s %s\n",
                    m->name, m->help, m->name,
                    m->type == NGX_HTTP_PRESENCE_METRIC_COUNTER ? "counter"
                                                                : "gauge");

    for (i = 0; i < m->n; i++) {
        if (m->label) {
            p = ngx_sprintf(p, "nginx_presence_%s{zone=\"%V\",%s=\"%s\"} "
                               "%uL\n", m->name, zone, m->label,
                            m->values[i], v[i]);

        } else {
            p = ngx_sprintf(p, "nginx_presence_%s{zone=\"%V\"} %uL\n",
                            m->name, zone, v[i]);
        }
    }

    return p;
}


/* the zone's name as a label value: quotes and backslashes escaped */

static void
ngx_http_presence_metrics_zone(ngx_str_t *name, ngx_str_t *zone)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    p = zone->data;
    last = zone->data + NGX_HTTP_PRESENCE_METRIC_ZONE - 2;

    for (i = 0; i < name->len && p < last; i++) {
        if (name->data[i] == '\\' || name->data[i] == '"') {
            *p++ = '\\';
        }

        *p++ = name->data[i];
    }

    zone->len = p - zone->data;
}
