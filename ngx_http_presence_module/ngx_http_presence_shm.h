
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The shared-memory store: the only code that reads or writes the zone.
 * Every operation takes the lock, moves the zone's clock to now, does its
 * work and releases the lock; what a caller needs is copied out, so
 * nothing of the zone is used after the lock is gone.  The zone's record
 * layout is private to ngx_http_presence_shm.c.
 */


#ifndef _NGX_HTTP_PRESENCE_SHM_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_SHM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"


/* a user's profile: username, display_name, avatar_url */
#define NGX_HTTP_PRESENCE_PROFILE_FIELDS  3


/* a tracked request (or a row pulled from PostgreSQL), made ready */

typedef struct {
    u_char                          id[NGX_HTTP_PRESENCE_ID_LEN];
    int64_t                         user_id;
    int64_t                         exp;         /* token exp, seconds */
    int64_t                         now_ms;
    int64_t                         created_ms;  /* pulled; 0: now */
    u_char                          addr[16];
    uint8_t                         family;      /* AF_INET, AF_INET6, 0 */
    uint8_t                         device;      /* DEVICE_MOBILE ... */
    uint32_t                        ua_hash;
    size_t                          ua_len;
    size_t                          method_len;
    size_t                          uri_len;
    u_char                          ua[NGX_HTTP_PRESENCE_UA_MAX];
    u_char                          method[NGX_HTTP_PRESENCE_METHOD_MAX];
    u_char                          uri[NGX_HTTP_PRESENCE_URI_MAX];
} ngx_http_presence_activity_t;


/* one session, copied out: for the API, the flusher and the metrics */

typedef struct {
    uint32_t                        index;       /* its record */
    u_char                          id[NGX_HTTP_PRESENCE_ID_LEN];
    int64_t                         user_id;
    int64_t                         created_ms;
    int64_t                         last_ms;
    int64_t                         exp;
    u_char                          addr[16];
    uint8_t                         family;
    uint8_t                         device;
    uint16_t                        ua_len;
    u_char                          ua[NGX_HTTP_PRESENCE_UA_MAX];
} ngx_http_presence_session_info_t;


/* one user of a page of the activity queue */

typedef struct {
    int64_t                         user_id;
    int64_t                         last_ms;
    ngx_uint_t                      sessions;    /* within the threshold */
    ngx_uint_t                      order;       /* in the queue */
    ssize_t                         len[NGX_HTTP_PRESENCE_PROFILE_FIELDS];
    u_char                         *profile[NGX_HTTP_PRESENCE_PROFILE_FIELDS];
} ngx_http_presence_user_info_t;


/*
 * A page: the caller gives offset, limit, threshold, timeout, room for
 * "limit" users and an area for their profiles; the store fills in the
 * users, the total within the threshold, the zone's clock, and how many
 * bytes the profiles needed: when that is more than the area, the page
 * is incomplete (profiles that did not fit have len -1) and the caller
 * asks again with a larger area.
 */

typedef struct {
    ngx_uint_t                      offset;
    ngx_uint_t                      limit;
    ngx_uint_t                      visible_only;  /* what others may see */
    time_t                          threshold;
    time_t                          timeout;
    ngx_http_presence_user_info_t  *users;
    u_char                         *area;
    u_char                         *area_end;

    ngx_uint_t                      nusers;
    ngx_uint_t                      total;
    time_t                          now;
    size_t                          needed;      /* profile bytes */
} ngx_http_presence_page_t;


/* the numbers of stats and of the metrics */

typedef struct {
    ngx_uint_t                      users[NGX_HTTP_PRESENCE_THRESHOLDS];
    ngx_uint_t                      sessions;    /* within "online" */
    ngx_uint_t                      peak;        /* today's highest */
    ngx_int_t                       peak_hour;   /* -1: no sample */
    ngx_uint_t                      warm_done;
    uint64_t                        warm_loaded;
} ngx_http_presence_counts_t;


/* the request path's counters, by $presence_jwt_status */
#define NGX_HTTP_PRESENCE_JWT_STATUSES  4


/* every number of the metrics, as uint64_t: read through one table */

typedef struct {
    uint64_t                        online[NGX_HTTP_PRESENCE_THRESHOLDS];
    uint64_t                        active_sessions;
    uint64_t                        peak;
    uint64_t                        requests[NGX_HTTP_PRESENCE_JWT_STATUSES];
    uint64_t                        cache_hits;
    uint64_t                        cache_misses;
    uint64_t                        zone_bytes;
    uint64_t                        zone_free;
    uint64_t                        sessions;
    uint64_t                        sessions_capacity;
    uint64_t                        users;
    uint64_t                        users_capacity;
    uint64_t                        evictions;
    uint64_t                        cap_evictions;
    uint64_t                        expired;
    uint64_t                        ring_depth;
    uint64_t                        ring_size;
    uint64_t                        ua_buckets;
    uint64_t                        ring_overflows;
    uint64_t                        string_failures;  /* User-Agents, */
                                                      /* profiles */
    uint64_t                        resets;
    uint64_t                        page_steps;
    uint64_t                        crowd_builds;
    uint64_t                        batches;
    uint64_t                        statements;
    uint64_t                        rows;
    uint64_t                        errors;
    uint64_t                        missing;
    uint64_t                        deactivated;
    uint64_t                        last_ok;
    uint64_t                        connected;
    uint64_t                        flusher_pid;
    uint64_t                        pulled;
    uint64_t                        pull_skipped;
    uint64_t                        warm_done;
    uint64_t                        warm_total;
    uint64_t                        warm_loaded;
    uint64_t                        warm_seconds;
    uint64_t                        subscribers;
    uint64_t                        subscriber_bytes;
    uint64_t                        events_sent;
    uint64_t                        slow_drops;
    uint64_t                        events_logged;
    uint64_t                        lookup_callers;
    uint64_t                        lookup_limited;
    uint64_t                        lookup_evictions;
    uint64_t                        devices[5];  /* online sessions */
    uint64_t                        durations[16];  /* ended sessions, */
    uint64_t                        duration_count; /* since the zone */
    uint64_t                        duration_ms;    /* began */
} ngx_http_presence_store_stats_t;


/* what the store applies on its own, from the configuration */

typedef struct {
    ngx_uint_t                      max_sessions;  /* a user's, 0: any */
    time_t                          online;        /* statuses follow */
    time_t                          recent;        /* the thresholds */
    ngx_uint_t                      privacy;       /* a privacy column */
    ngx_uint_t                      privacy_counts;  /* hidden users too */
    time_t                          precision;     /* others' last seen */
    ngx_uint_t                      lookup_limit;  /* ids, 0: none */
    time_t                          lookup_period;
} ngx_http_presence_store_conf_t;


/* session durations: the upper bounds of the histogram's buckets, s */
#define NGX_HTTP_PRESENCE_DURATIONS  16

extern const uint32_t  ngx_http_presence_duration_bounds[];

/* days of presence_daily kept in the zone */
#define NGX_HTTP_PRESENCE_HISTORY    366


/* one UTC day's numbers: presence_daily's row */

typedef struct {
    int64_t                         day;         /* since the epoch */
    uint64_t                        peak_online;
    uint64_t                        active_users;
    uint64_t                        users_new;   /* with a new session */
    uint64_t                        started;     /* sessions */
    uint64_t                        ended;
    uint64_t                        duration_count;
    uint64_t                        duration_ms;  /* their sum */
} ngx_http_presence_day_t;


/* GET analytics: today, from the zone */

typedef struct {
    uint64_t                        devices[5];  /* online sessions */
    uint64_t                        active;      /* sessions, online */
    ngx_http_presence_day_t         today;
    uint64_t                        durations[NGX_HTTP_PRESENCE_DURATIONS];
    uint64_t                        hour_peak[NGX_HTTP_PRESENCE_HOURS];
    uint64_t                        hour_users[NGX_HTTP_PRESENCE_HOURS];
    uint64_t                        all_durations[NGX_HTTP_PRESENCE_DURATIONS];
    uint64_t                        all_count;   /* since the zone began */
    uint64_t                        all_ms;
} ngx_http_presence_analytics_t;


/* a user's status, as the API tells it and the change log records it */
#define NGX_HTTP_PRESENCE_STATUS_OFFLINE  0
#define NGX_HTTP_PRESENCE_STATUS_RECENT   1
#define NGX_HTTP_PRESENCE_STATUS_ONLINE   2


/* a transition in the zone's change log */

typedef struct {
    uint64_t                        seq;         /* the event's id */
    int64_t                         user_id;
    int64_t                         last_ms;     /* last seen */
    int64_t                         at_ms:62;    /* when */
    uint64_t                        status:2;
} ngx_http_presence_event_t;


/* the stream's numbers in the zone */
#define NGX_HTTP_PRESENCE_STREAM_SUBSCRIBERS  0
#define NGX_HTTP_PRESENCE_STREAM_BYTES        1
#define NGX_HTTP_PRESENCE_STREAM_EVENTS       2
#define NGX_HTTP_PRESENCE_STREAM_DROPS        3
#define NGX_HTTP_PRESENCE_STREAM_STATS        4


/*
 * The flusher's batch: the changed sessions drained from the ring (and,
 * after a ring overflow, from a slice of the session array), and what the
 * zone says of cleanup requests and of this hour's peak.
 */

typedef struct {
    ngx_http_presence_session_info_t  *rows;
    uint32_t                          *seen;     /* 2 * max, scratch */
    ngx_uint_t                         max;
    ngx_uint_t                         nrows;

    uint64_t                           ring_head;  /* after this batch */
    uint64_t                           resets;
    ngx_uint_t                         cleanup_requested;
    int64_t                            peak_day;
    ngx_uint_t                         peak_hour;
    uint32_t                           peak;       /* of this hour */
} ngx_http_presence_batch_t;


/* how the batch's statement went */

typedef struct {
    ngx_uint_t                      ok;
    ngx_uint_t                      cleanup;     /* it deactivated rows */
    uint64_t                        rows;        /* inserted or advanced */
    uint64_t                        missing;     /* users not in "users" */
    uint64_t                        deactivated;
} ngx_http_presence_written_t;


/* the flusher's lease, as one worker holds it */

typedef struct {
    uint64_t                        gen;
    ngx_uint_t                      owner;
    ngx_msec_t                      stale;       /* a heartbeat older */
    ngx_uint_t                      connected;   /* to PostgreSQL */
    ngx_pid_t                       previous;    /* when taken over */
} ngx_http_presence_lease_t;


/* a user's profile from the "users" table; data NULL: SQL NULL */

typedef struct {
    int64_t                         user_id;
    ngx_int_t                       active;      /* users.is_active; -1: */
                                                 /* no such column */
    ngx_int_t                       visible;     /* the privacy column; */
                                                 /* -1: NULL, or none */
    ngx_str_t                       fields[NGX_HTTP_PRESENCE_PROFILE_FIELDS];
} ngx_http_presence_profile_in_t;


/* what the profile loader knows of a user */
#define NGX_HTTP_PRESENCE_USER_UNKNOWN   0       /* not read yet */
#define NGX_HTTP_PRESENCE_USER_ACTIVE    1
#define NGX_HTTP_PRESENCE_USER_MISSING   2       /* no row in "users" */
#define NGX_HTTP_PRESENCE_USER_INACTIVE  3       /* users.is_active false */


/* where the cluster pull is: the last row's updated_at (us) and id */

typedef struct {
    int64_t                         us;
    int64_t                         id;
} ngx_http_presence_mark_t;


/*
 * The warm start of a new zone: pending until a flusher begins it, then
 * loading page by page (mark: where the last page ended), then done.
 */

#define NGX_HTTP_PRESENCE_WARM_PENDING  0
#define NGX_HTTP_PRESENCE_WARM_LOADING  1
#define NGX_HTTP_PRESENCE_WARM_DONE     2

typedef struct {
    ngx_uint_t                      state;
    ngx_http_presence_mark_t        mark;        /* last_activity us, id */
    uint64_t                        total;       /* rows when it began */
    uint64_t                        loaded;
    int64_t                         msec;        /* how long it took */
} ngx_http_presence_warm_t;


/*
 * A row of the cluster pull, read under the lock: NGX_OK records "act" as
 * another node's activity, NGX_DONE forgets the session act->id unless
 * ours is newer than act->now_ms, NGX_DECLINED skips the row.
 */

typedef ngx_int_t (*ngx_http_presence_row_pt)(void *data, ngx_uint_t i,
    ngx_http_presence_activity_t *act);

/* the warm start's row i: its user's profile; NGX_DECLINED: no such user */

typedef ngx_int_t (*ngx_http_presence_profile_pt)(void *data, ngx_uint_t i,
    ngx_http_presence_profile_in_t *in);


char *ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

ngx_str_t *ngx_http_presence_store_name(ngx_http_presence_zone_t *zone);
void ngx_http_presence_store_configure(ngx_http_presence_zone_t *zone,
    ngx_http_presence_store_conf_t *conf);

/* the request path */
void ngx_http_presence_store_touch(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log);
void ngx_http_presence_store_count_request(ngx_http_presence_zone_t *zone,
    ngx_uint_t status);
void ngx_http_presence_store_count_cache(ngx_http_presence_zone_t *zone,
    ngx_uint_t hit);

/* every worker, every second */
ngx_uint_t ngx_http_presence_store_tick(ngx_http_presence_zone_t *zone,
    time_t online, time_t timeout, ngx_msec_t cleanup_interval,
    ngx_log_t *log);

/* the API and the metrics */
ngx_uint_t ngx_http_presence_store_online(ngx_http_presence_zone_t *zone,
    time_t seconds, ngx_log_t *log);
void ngx_http_presence_store_counts(ngx_http_presence_zone_t *zone,
    time_t *thresholds, ngx_http_presence_counts_t *counts, ngx_log_t *log);
void ngx_http_presence_store_page(ngx_http_presence_zone_t *zone,
    ngx_http_presence_page_t *page, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_nsessions(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_sessions(ngx_http_presence_zone_t *zone,
    int64_t user_id, time_t timeout, ngx_http_presence_session_info_t *rows,
    ngx_uint_t max, ngx_log_t *log);
time_t ngx_http_presence_store_last_seen(ngx_http_presence_zone_t *zone,
    int64_t *ids, ngx_uint_t n, int64_t *last, u_char *hidden,
    uint64_t *head, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_cleanup(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_log_t *log);
void ngx_http_presence_store_stats(ngx_http_presence_zone_t *zone,
    time_t *thresholds, ngx_http_presence_store_stats_t *st, ngx_log_t *log);

/* the flusher */
ngx_int_t ngx_http_presence_store_lease(ngx_http_presence_zone_t *zone,
    ngx_http_presence_lease_t *lease, ngx_log_t *log);
void ngx_http_presence_store_release(ngx_http_presence_zone_t *zone,
    ngx_http_presence_lease_t *lease, ngx_log_t *log);
void ngx_http_presence_store_connected(ngx_http_presence_zone_t *zone,
    ngx_uint_t connected, ngx_log_t *log);
void ngx_http_presence_store_drain(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, time_t online, ngx_log_t *log);
ngx_int_t ngx_http_presence_store_written(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, ngx_http_presence_written_t *w,
    ngx_log_t *log);
uint64_t ngx_http_presence_store_ring_depth(ngx_http_presence_zone_t *zone,
    ngx_log_t *log);
void ngx_http_presence_store_merge_peaks(ngx_http_presence_zone_t *zone,
    time_t online, uint32_t *peaks, ngx_log_t *log);
void ngx_http_presence_store_watermark(ngx_http_presence_zone_t *zone,
    ngx_http_presence_mark_t *mark, ngx_log_t *log);
void ngx_http_presence_store_merge(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_http_presence_row_pt row, void *data, ngx_uint_t n,
    ngx_http_presence_mark_t *mark, ngx_log_t *log);
void ngx_http_presence_store_warm(ngx_http_presence_zone_t *zone,
    ngx_http_presence_warm_t *warm, ngx_uint_t begin, ngx_log_t *log);
ngx_int_t ngx_http_presence_store_warm_merge(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_http_presence_row_pt row,
    ngx_http_presence_profile_pt profile, void *data, ngx_uint_t n,
    ngx_http_presence_warm_t *warm, ngx_uint_t last, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_stale_profiles(
    ngx_http_presence_zone_t *zone, time_t ttl, int64_t *ids,
    ngx_uint_t max, ngx_uint_t scan, ngx_log_t *log);
/* the stream */
uint64_t ngx_http_presence_store_log_head(ngx_http_presence_zone_t *zone);
ngx_int_t ngx_http_presence_store_events(ngx_http_presence_zone_t *zone,
    uint64_t *cursor, ngx_http_presence_event_t *events, ngx_uint_t max,
    ngx_uint_t *n, ngx_log_t *log);
void ngx_http_presence_store_stream_stat(ngx_http_presence_zone_t *zone,
    ngx_uint_t stat, ngx_atomic_int_t delta);

/* privacy */
ngx_uint_t ngx_http_presence_store_hides(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log);
ngx_int_t ngx_http_presence_store_lookup(ngx_http_presence_zone_t *zone,
    int64_t caller, int64_t *ids, ngx_uint_t n, time_t *retry,
    ngx_log_t *log);

/* analytics */
void ngx_http_presence_store_analytics(ngx_http_presence_zone_t *zone,
    time_t online, ngx_http_presence_analytics_t *a, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_day(ngx_http_presence_zone_t *zone,
    time_t online, ngx_http_presence_day_t *today,
    ngx_http_presence_day_t *prev, ngx_uint_t *history, ngx_log_t *log);
void ngx_http_presence_store_day_written(ngx_http_presence_zone_t *zone,
    int64_t day, ngx_log_t *log);
void ngx_http_presence_store_set_history(ngx_http_presence_zone_t *zone,
    ngx_http_presence_day_t *days, ngx_uint_t n, ngx_log_t *log);
ngx_uint_t ngx_http_presence_store_history(ngx_http_presence_zone_t *zone,
    int64_t from, ngx_http_presence_day_t *days, ngx_uint_t max,
    ngx_log_t *log);

ngx_uint_t ngx_http_presence_store_user(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log);
void ngx_http_presence_store_set_profiles(ngx_http_presence_zone_t *zone,
    int64_t *ids, ngx_uint_t nids, ngx_http_presence_profile_in_t *profiles,
    ngx_uint_t n, ngx_log_t *log);


#endif /* _NGX_HTTP_PRESENCE_SHM_H_INCLUDED_ */
