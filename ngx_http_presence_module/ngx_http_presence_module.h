
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * What every part of the module shares: its configuration, and the sizes
 * that the store, the API and the flusher must agree on.
 */


#ifndef _NGX_HTTP_PRESENCE_MODULE_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_jwt.h"


/* a session id: the raw SHA-256, and its lowercase hex spelling */
#define NGX_HTTP_PRESENCE_ID_LEN        NGX_HTTP_PRESENCE_JWT_SESSION_ID_LEN
#define NGX_HTTP_PRESENCE_ID_HEX_LEN    (2 * NGX_HTTP_PRESENCE_ID_LEN)

#define NGX_HTTP_PRESENCE_DAY           86400
#define NGX_HTTP_PRESENCE_HOUR          3600
#define NGX_HTTP_PRESENCE_HOURS         24

/* what a session keeps of its last request */
#define NGX_HTTP_PRESENCE_UA_MAX        512
#define NGX_HTTP_PRESENCE_URI_MAX       48
#define NGX_HTTP_PRESENCE_METHOD_MAX    8

/* the three thresholds, in this order wherever they come together */
#define NGX_HTTP_PRESENCE_VERY_ACTIVE   0
#define NGX_HTTP_PRESENCE_ONLINE        1
#define NGX_HTTP_PRESENCE_RECENT        2
#define NGX_HTTP_PRESENCE_THRESHOLDS    3


typedef struct ngx_http_presence_zone_s       ngx_http_presence_zone_t;
typedef struct ngx_http_presence_flusher_s    ngx_http_presence_flusher_t;
typedef struct ngx_http_presence_jwt_cache_s  ngx_http_presence_jwt_cache_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;

    time_t                          thresholds[NGX_HTTP_PRESENCE_THRESHOLDS];
    time_t                          session_timeout;
    ngx_msec_t                      cleanup_interval;
    ngx_uint_t                      max_sessions;  /* per user */

    ngx_event_t                     tick;        /* every worker's */

    ngx_str_t                       pg_conninfo;
    const char                    **pg_keywords;
    const char                    **pg_values;
    ngx_msec_t                      flush_interval;
    time_t                          profile_ttl;
    ngx_flag_t                      cluster;
    ngx_str_t                       node;
    ngx_http_presence_flusher_t    *flusher;     /* this worker's */

    ngx_str_t                       privacy_column;
    ngx_flag_t                      privacy_counts;
    ngx_flag_t                      privacy_reciprocal;
    time_t                          last_seen_precision;
    ngx_uint_t                      lookup_limit;
    time_t                          lookup_period;

    ngx_uint_t                      stream_max_ids;
    ngx_msec_t                      stream_heartbeat;
    size_t                          stream_backlog;

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
    ngx_flag_t                      require_user;
    ngx_http_complex_value_t       *jwt_token;
} ngx_http_presence_loc_conf_t;


extern ngx_module_t  ngx_http_presence_module;


#endif /* _NGX_HTTP_PRESENCE_MODULE_H_INCLUDED_ */
