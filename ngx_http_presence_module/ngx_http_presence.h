
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_jwt.h"
#include "ngx_http_presence_pg.h"


#define NGX_HTTP_PRESENCE_ZONE_MAGIC    0x50524553  /* "PRES" */
#define NGX_HTTP_PRESENCE_ZONE_VERSION  3

#define NGX_HTTP_PRESENCE_NIL           0xffffffff

/* the counting window: one slot per second of the last day */
#define NGX_HTTP_PRESENCE_WINDOW        86400

#define NGX_HTTP_PRESENCE_UA_MAX        512
#define NGX_HTTP_PRESENCE_URI_MAX       48
#define NGX_HTTP_PRESENCE_METHOD_MAX    8
#define NGX_HTTP_PRESENCE_UA_BUCKETS    4096

#define NGX_HTTP_PRESENCE_IN_RING       0x01

#define NGX_HTTP_PRESENCE_PROFILE_MISSING  0x01   /* no row in "users" */


/*
 * A session: fixed size, preallocated, linked by array indices.  Its id is
 * the raw SHA-256 (of the token, or of the user id and the "sid").
 */

typedef struct {
    u_char                          id[32];
    int64_t                         user_id;
    int64_t                         created_ms;
    int64_t                         last_ms;
    int64_t                         flushed_ms;  /* written to PostgreSQL */
    int64_t                         exp;         /* token exp, seconds */
    uint32_t                        hash_next;
    uint32_t                        lru_prev;    /* all sessions, by */
    uint32_t                        lru_next;    /* last activity */
    uint32_t                        user_prev;   /* its user's sessions */
    uint32_t                        user_next;
    uint32_t                        user;
    uint32_t                        ua;          /* offset / 8, 0: none */
    u_char                          addr[16];
    uint8_t                         family;      /* AF_INET, AF_INET6, 0 */
    uint8_t                         flags;
    uint8_t                         method_len;
    uint8_t                         uri_len;
    u_char                          method[NGX_HTTP_PRESENCE_METHOD_MAX];
    u_char                          uri[NGX_HTTP_PRESENCE_URI_MAX];
} ngx_http_presence_session_t;


typedef struct {
    int64_t                         user_id;     /* 0: free */
    int64_t                         last_ms;
    uint32_t                        hash_next;
    uint32_t                        q_prev;      /* all users, by */
    uint32_t                        q_next;      /* last activity */
    uint32_t                        sessions;    /* head of its sessions */
    uint32_t                        nsessions;
    uint32_t                        profile;     /* offset / 8, 0: none */
    uint32_t                        profile_at;  /* seconds */
    uint32_t                        flags;
} ngx_http_presence_user_t;


/* a user's profile from the "users" table; NULL fields have length -1 */

typedef struct {
    int16_t                         len[3];      /* username, display_name, */
    u_char                          data[1];     /* avatar_url */
} ngx_http_presence_profile_t;


/* a User-Agent string, shared by the sessions that have it */

typedef struct {
    uint32_t                        hash_next;   /* offset / 8 */
    uint32_t                        refs;
    uint32_t                        hash;
    uint32_t                        len;
    u_char                          data[1];
} ngx_http_presence_ua_t;


#define NGX_HTTP_PRESENCE_SLOTS  64


typedef struct {
    ngx_atomic_t                    requests[5]; /* by JWT status */
    ngx_atomic_t                    cache_hits;
    ngx_atomic_t                    cache_misses;
    ngx_atomic_t                    pad;         /* 64 bytes */
} ngx_http_presence_counters_t;


#define ngx_http_presence_counter(sh)                                         \
    (&(sh)->counters[(ngx_worker == NGX_INVALID_ARRAY_INDEX ? 0 : ngx_worker) \
                     % NGX_HTTP_PRESENCE_SLOTS])


/* the header at the start of the shared zone */

typedef struct {
    uint32_t                        magic;
    uint32_t                        version;
    uint32_t                        session_size;
    uint32_t                        user_size;
    uint64_t                        size;

    uint32_t                        nsessions;   /* capacities */
    uint32_t                        nusers;
    uint32_t                        nring;

    ngx_pid_t                       writer;      /* mid-update, or 0 */

    uint32_t                        sessions_used;
    uint32_t                        users_used;
    uint32_t                        session_free;
    uint32_t                        user_free;
    uint32_t                        lru_head;    /* most recent first */
    uint32_t                        lru_tail;
    uint32_t                        q_head;
    uint32_t                        q_tail;

    uint64_t                        ring_head;   /* ring[head % nring] */
    uint64_t                        ring_tail;
    ngx_atomic_t                    ring_overflow;  /* a sweep is due */

    int64_t                         clock;       /* seconds, monotonic */
    int64_t                         peak_day;    /* days since the epoch */
    uint32_t                        peak[24];    /* today's hourly peaks */
    time_t                          next_sweep;
    time_t                          last_evict_log;

    /* the flusher's lease */
    ngx_pid_t                       lease_pid;
    uint64_t                        lease_gen;
    ngx_msec_t                      lease_beat;
    ngx_uint_t                      cleanup_requested;
    uint32_t                        sweep_cursor;
    uint64_t                        sweep_mark;
    int64_t                         pull_watermark;  /* DB clock, us */
    uint64_t                        pulled_rows;

    /* counters */
    uint64_t                        flush_batches;
    uint64_t                        flush_statements;
    uint64_t                        flush_rows;
    uint64_t                        flush_errors;
    uint64_t                        flush_missing_users;
    uint64_t                        flush_deactivated;
    time_t                          flush_last_ok;
    ngx_uint_t                      db_connected;
    uint64_t                        profile_failures;
    uint64_t                        evictions;
    uint64_t                        expired;
    uint64_t                        ring_overflows;
    uint64_t                        ua_failures;
    uint64_t                        resets;
    /* the request path's counters: one line per worker, no sharing */
    ngx_http_presence_counters_t    counters[NGX_HTTP_PRESENCE_SLOTS];

    uint32_t                       *session_hash;
    uint32_t                       *user_hash;
    uint32_t                       *ring;
    int32_t                        *users_bit;   /* Fenwick trees over */
    int32_t                        *sessions_bit; /* the window */
    ngx_http_presence_session_t    *sessions;
    ngx_http_presence_user_t       *users;
    uint32_t                        ua_hash[NGX_HTTP_PRESENCE_UA_BUCKETS];
} ngx_http_presence_shm_t;


typedef struct {
    ngx_http_presence_shm_t        *sh;
    ngx_slab_pool_t                *shpool;
    ngx_str_t                       name;
    ngx_uint_t                      ring;        /* ring=N, 0: default */
} ngx_http_presence_zone_t;


/* a tracked request, prepared before the lock is taken */

typedef struct {
    u_char                          id[32];
    int64_t                         user_id;
    int64_t                         exp;
    int64_t                         now_ms;
    int64_t                         created_ms;  /* pulled from PostgreSQL */
    u_char                          addr[16];
    uint8_t                         family;
    uint32_t                        ua_hash;
    size_t                          ua_len;
    size_t                          method_len;
    size_t                          uri_len;
    u_char                          ua[NGX_HTTP_PRESENCE_UA_MAX];
    u_char                          method[NGX_HTTP_PRESENCE_METHOD_MAX];
    u_char                          uri[NGX_HTTP_PRESENCE_URI_MAX];
} ngx_http_presence_activity_t;


/*
 * a per-worker cache of verdicts: the token's bytes are the key (a fast
 * hash picks the place), tokens longer than 1k are verified every time
 */

#define NGX_HTTP_PRESENCE_JWT_CACHE_TOKEN  1024

typedef struct {
    ngx_rbtree_node_t               node;
    ngx_queue_t                     queue;
    u_char                         *token;
    size_t                          len;
    ngx_http_presence_jwt_status_e  status;
    time_t                          until;
    int64_t                         user_id;
    int64_t                         exp;
    uint32_t                        matched;
    u_char                          session_id[32];
} ngx_http_presence_jwt_cache_node_t;


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     lru;
    ngx_queue_t                     free;
    ngx_uint_t                      hits;
    ngx_uint_t                      misses;
} ngx_http_presence_jwt_cache_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;

    time_t                          very_active;
    time_t                          online;
    time_t                          recent;
    time_t                          session_timeout;
    ngx_msec_t                      cleanup_interval;

    ngx_event_t                     sweep_event;

    ngx_str_t                       pg_conninfo;
    const char                    **pg_keywords;
    const char                    **pg_values;
    ngx_msec_t                      flush_interval;
    time_t                          profile_ttl;
    ngx_flag_t                      cluster;
    ngx_str_t                       node;
    void                           *flusher;     /* this worker's */

    ngx_uint_t                      used;        /* presence or the API */

    ngx_http_presence_jwt_t         jwt;
    time_t                          jwt_leeway;
    ngx_flag_t                      jwt_require_exp;
    size_t                          jwt_max_size;
    ngx_uint_t                      jwt_cache_size;
    ngx_http_presence_jwt_cache_t  *jwt_cache;

    unsigned                        jwt_keys_set:1;
    unsigned                        jwt_algorithms_set:1;
} ngx_http_presence_main_conf_t;


typedef struct {
    ngx_flag_t                      enable;
    ngx_flag_t                      api;
    ngx_int_t                       admin_check;  /* -1: none */
    ngx_http_complex_value_t       *jwt_token;
} ngx_http_presence_loc_conf_t;


/* the data of ngx_http_presence_token_variable() */

#define NGX_HTTP_PRESENCE_VAR_USER_ID     0
#define NGX_HTTP_PRESENCE_VAR_STATUS      1
#define NGX_HTTP_PRESENCE_VAR_SESSION_ID  2


/* the API's JSON writer */

typedef struct {
    ngx_pool_t                     *pool;
    ngx_chain_t                    *out;
    ngx_chain_t                   **last;
    ngx_buf_t                      *buf;
    off_t                           len;
    ngx_uint_t                      error;
} ngx_http_presence_json_t;


/* a literal: inlined when it fits the current buffer */

#define ngx_http_presence_json_lit(w, s)                                      \
    if ((w)->buf                                                              \
        && (size_t) ((w)->buf->end - (w)->buf->last) >= sizeof(s) - 1)       \
    {                                                                         \
        (w)->buf->last = ngx_cpymem((w)->buf->last, s "", sizeof(s) - 1);   \
        (w)->len += sizeof(s) - 1;                                            \
                                                                              \
    } else {                                                                  \
        ngx_http_presence_json_raw(w, s, sizeof(s) - 1);                      \
    }


/* the request's verdict, evaluated once, on first use */

typedef struct {
    ngx_http_presence_jwt_status_e  status;
    ngx_uint_t                      tracked;
    int64_t                         user_id;
    int64_t                         exp;
    uint32_t                        matched;
    u_char                          session_id[32];
} ngx_http_presence_ctx_t;


char *ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_presence_thresholds(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

void ngx_http_presence_lock(ngx_http_presence_zone_t *zone, ngx_log_t *log);
void ngx_http_presence_unlock(ngx_http_presence_zone_t *zone);
void ngx_http_presence_advance(ngx_http_presence_zone_t *zone, time_t now);
void ngx_http_presence_touch(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log);
void ngx_http_presence_record(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log,
    ngx_uint_t remote);
void ngx_http_presence_forget(ngx_http_presence_zone_t *zone, u_char *id,
    int64_t last_ms);
ngx_uint_t ngx_http_presence_count(ngx_http_presence_zone_t *zone,
    time_t seconds, ngx_uint_t sessions);
ngx_uint_t ngx_http_presence_expire(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_uint_t limit, ngx_uint_t *more);
ngx_int_t ngx_http_presence_expired(ngx_http_presence_session_t *s,
    time_t now, time_t timeout);
ngx_http_presence_user_t *ngx_http_presence_find_user(
    ngx_http_presence_zone_t *zone, int64_t user_id);
u_char *ngx_http_presence_ua(ngx_http_presence_zone_t *zone, uint32_t off,
    size_t *len);

void ngx_http_presence_sample_peak(ngx_http_presence_zone_t *zone,
    time_t online);

void ngx_http_presence_json_init(ngx_http_presence_json_t *w,
    ngx_pool_t *pool, size_t hint);
void ngx_http_presence_json_raw(ngx_http_presence_json_t *w, const char *s,
    size_t len);
void ngx_http_presence_json_str(ngx_http_presence_json_t *w, u_char *s,
    size_t len);
void ngx_http_presence_json_int(ngx_http_presence_json_t *w, int64_t v);
void ngx_http_presence_json_time(ngx_http_presence_json_t *w, int64_t ms);
void ngx_http_presence_json_now(ngx_http_presence_json_t *w);

ngx_int_t ngx_http_presence_online_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
size_t ngx_http_presence_sanitize(u_char *dst, size_t size, u_char *src,
    size_t len);
char *ngx_http_presence_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_presence_api_admin_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_presence_init_tracking(ngx_conf_t *cf);
ngx_int_t ngx_http_presence_init_process(ngx_cycle_t *cycle);
void ngx_http_presence_exit_process(ngx_cycle_t *cycle);

void ngx_http_presence_ring_add(ngx_http_presence_shm_t *sh, uint32_t i);
u_char *ngx_http_presence_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t field, ssize_t *len);
void ngx_http_presence_set_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_str_t *fields, time_t now);

char *ngx_http_presence_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_init_flusher_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf);
ngx_int_t ngx_http_presence_flusher_init(ngx_cycle_t *cycle,
    ngx_http_presence_main_conf_t *pmcf);
void ngx_http_presence_flusher_tick(ngx_http_presence_main_conf_t *pmcf);
void ngx_http_presence_flusher_exit(ngx_http_presence_main_conf_t *pmcf);

char *ngx_http_presence_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_algorithms(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_string(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_audience(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_init_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf);
ngx_int_t ngx_http_presence_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_http_presence_ctx_t *ngx_http_presence_token(ngx_http_request_t *r);


extern ngx_module_t  ngx_http_presence_module;


#endif /* _NGX_HTTP_PRESENCE_H_INCLUDED_ */
