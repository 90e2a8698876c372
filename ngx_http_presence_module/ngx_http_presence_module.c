
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_token.h"
#include "ngx_http_presence_track.h"
#include "ngx_http_presence_api.h"
#include "ngx_http_presence_dashboard.h"
#include "ngx_http_presence_flush.h"
#include "ngx_http_presence_metrics.h"


/* the per-worker tick, in milliseconds */
#define NGX_HTTP_PRESENCE_TICK  1000


static ngx_int_t ngx_http_presence_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_presence_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_presence_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_presence_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_presence_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_presence_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_presence_check_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf);
static char *ngx_http_presence_thresholds(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_presence_privacy_column(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_presence_lookup_limit(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_presence_init_process(ngx_cycle_t *cycle);
static void ngx_http_presence_exit_process(ngx_cycle_t *cycle);
static void ngx_http_presence_tick(ngx_event_t *ev);


static ngx_conf_num_bounds_t  ngx_http_presence_max_sessions_bounds = {
    ngx_conf_check_num_bounds, 0, 65535
};

static ngx_conf_num_bounds_t  ngx_http_presence_stream_ids_bounds = {
    ngx_conf_check_num_bounds, 1, 100000
};


static ngx_command_t  ngx_http_presence_commands[] = {

    { ngx_string("presence_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_presence_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_presence_enable,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_presence_loc_conf_t, enable),
      NULL },

    { ngx_string("presence_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_presence_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_api_admin_claim"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_presence_api_admin_claim,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_api_require_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_presence_loc_conf_t, require_user),
      NULL },

    { ngx_string("presence_dashboard"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_presence_dashboard,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_presence_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_thresholds"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_presence_thresholds,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_session_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, session_timeout),
      NULL },

    { ngx_string("presence_privacy_column"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_presence_privacy_column,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_privacy_counts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, privacy_counts),
      NULL },

    { ngx_string("presence_privacy_reciprocal"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, privacy_reciprocal),
      NULL },

    { ngx_string("presence_last_seen_precision"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, last_seen_precision),
      NULL },

    { ngx_string("presence_lookup_limit"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_presence_lookup_limit,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_stream_max_ids"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, stream_max_ids),
      &ngx_http_presence_stream_ids_bounds },

    { ngx_string("presence_stream_heartbeat"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, stream_heartbeat),
      NULL },

    { ngx_string("presence_stream_backlog"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, stream_backlog),
      NULL },

    { ngx_string("presence_max_sessions_per_user"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, max_sessions),
      &ngx_http_presence_max_sessions_bounds },

    { ngx_string("presence_cleanup_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, cleanup_interval),
      NULL },

    { ngx_string("presence_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_presence_postgres,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_flush_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, flush_interval),
      NULL },

    { ngx_string("presence_profile_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, profile_ttl),
      NULL },

    { ngx_string("presence_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, cluster),
      NULL },

    { ngx_string("presence_node"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, node),
      NULL },

    { ngx_string("presence_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_presence_jwt_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_presence_jwt_key_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_jwt_algorithms"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_presence_jwt_algorithms,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_jwt_claim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_presence_jwt_string,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt.claim),
      NULL },

    { ngx_string("presence_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_presence_jwt_string,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt.issuer),
      NULL },

    { ngx_string("presence_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_presence_jwt_audience,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt_leeway),
      NULL },

    { ngx_string("presence_jwt_require_exp"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt_require_exp),
      NULL },

    { ngx_string("presence_jwt_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt_max_size),
      NULL },

    { ngx_string("presence_jwt_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_presence_main_conf_t, jwt_cache_size),
      NULL },

    { ngx_string("presence_jwt_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_presence_loc_conf_t, jwt_token),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_presence_module_ctx = {
    ngx_http_presence_preconfiguration,    /* preconfiguration */
    ngx_http_presence_postconfiguration,   /* postconfiguration */

    ngx_http_presence_create_main_conf,    /* create main configuration */
    ngx_http_presence_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_presence_create_loc_conf,     /* create location configuration */
    ngx_http_presence_merge_loc_conf       /* merge location configuration */
};


static ngx_http_variable_t  ngx_http_presence_vars[] = {

    { ngx_string("presence_user_id"), NULL,
      ngx_http_presence_token_variable, NGX_HTTP_PRESENCE_VAR_USER_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("presence_jwt_status"), NULL,
      ngx_http_presence_token_variable, NGX_HTTP_PRESENCE_VAR_STATUS,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("presence_session_id"), NULL,
      ngx_http_presence_token_variable, NGX_HTTP_PRESENCE_VAR_SESSION_ID,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("presence_online_count"), NULL,
      ngx_http_presence_online_count_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_module_t  ngx_http_presence_module = {
    NGX_MODULE_V1,
    &ngx_http_presence_module_ctx,         /* module context */
    ngx_http_presence_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_presence_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_presence_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_presence_preconfiguration(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_presence_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_presence_postconfiguration(ngx_conf_t *cf)
{
    return ngx_http_presence_track_init(cf);
}


static void *
ngx_http_presence_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_presence_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     pmcf->shm_zone = NULL;
     *     pmcf->jwt_cache = NULL;
     *     pmcf->jwt_keys_set = 0;
     *     pmcf->jwt_algorithms_set = 0;
     */

    ngx_http_presence_jwt_init(&pmcf->jwt);

    pmcf->thresholds[NGX_HTTP_PRESENCE_VERY_ACTIVE] = NGX_CONF_UNSET;
    pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE] = NGX_CONF_UNSET;
    pmcf->thresholds[NGX_HTTP_PRESENCE_RECENT] = NGX_CONF_UNSET;
    pmcf->session_timeout = NGX_CONF_UNSET;
    pmcf->cleanup_interval = NGX_CONF_UNSET_MSEC;
    pmcf->max_sessions = NGX_CONF_UNSET_UINT;
    pmcf->privacy_counts = NGX_CONF_UNSET;
    pmcf->privacy_reciprocal = NGX_CONF_UNSET;
    pmcf->last_seen_precision = NGX_CONF_UNSET;
    pmcf->lookup_limit = NGX_CONF_UNSET_UINT;
    pmcf->lookup_period = NGX_CONF_UNSET;
    pmcf->stream_max_ids = NGX_CONF_UNSET_UINT;
    pmcf->stream_heartbeat = NGX_CONF_UNSET_MSEC;
    pmcf->stream_backlog = NGX_CONF_UNSET_SIZE;
    pmcf->flush_interval = NGX_CONF_UNSET_MSEC;
    pmcf->profile_ttl = NGX_CONF_UNSET;
    pmcf->cluster = NGX_CONF_UNSET;

    pmcf->jwt_leeway = NGX_CONF_UNSET;
    pmcf->jwt_require_exp = NGX_CONF_UNSET;
    pmcf->jwt_max_size = NGX_CONF_UNSET_SIZE;
    pmcf->jwt_cache_size = NGX_CONF_UNSET_UINT;

    return pmcf;
}


/* every default, then every check across directives */

static char *
ngx_http_presence_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    time_t                          *t;
    ngx_http_presence_store_conf_t   sc;

    t = pmcf->thresholds;

    ngx_conf_init_value(t[NGX_HTTP_PRESENCE_VERY_ACTIVE], 5 * 60);
    ngx_conf_init_value(t[NGX_HTTP_PRESENCE_ONLINE], 15 * 60);
    ngx_conf_init_value(t[NGX_HTTP_PRESENCE_RECENT], 60 * 60);
    ngx_conf_init_value(pmcf->session_timeout, NGX_HTTP_PRESENCE_DAY);
    ngx_conf_init_msec_value(pmcf->cleanup_interval, 60 * 1000);
    ngx_conf_init_uint_value(pmcf->max_sessions, 32);

    ngx_conf_init_value(pmcf->privacy_counts, 1);
    ngx_conf_init_value(pmcf->privacy_reciprocal, 0);
    ngx_conf_init_value(pmcf->last_seen_precision, 0);
    ngx_conf_init_uint_value(pmcf->lookup_limit, 0);
    ngx_conf_init_value(pmcf->lookup_period, NGX_HTTP_PRESENCE_HOUR);

    if (pmcf->shm_zone) {
        sc.max_sessions = pmcf->max_sessions;
        sc.online = t[NGX_HTTP_PRESENCE_ONLINE];
        sc.recent = t[NGX_HTTP_PRESENCE_RECENT];
        sc.privacy = (pmcf->privacy_column.len != 0);
        sc.privacy_counts = pmcf->privacy_counts;
        sc.precision = pmcf->last_seen_precision;
        sc.lookup_limit = pmcf->lookup_limit;
        sc.lookup_period = pmcf->lookup_period;

        ngx_http_presence_store_configure(pmcf->shm_zone->data, &sc);
    }

    ngx_conf_init_uint_value(pmcf->stream_max_ids, 1000);
    ngx_conf_init_msec_value(pmcf->stream_heartbeat, 15000);
    ngx_conf_init_size_value(pmcf->stream_backlog, 64 * 1024);

    ngx_conf_init_msec_value(pmcf->flush_interval, 1000);
    ngx_conf_init_value(pmcf->profile_ttl, 300);
    ngx_conf_init_value(pmcf->cluster, 0);

    ngx_conf_init_value(pmcf->jwt_leeway, 0);
    ngx_conf_init_value(pmcf->jwt_require_exp, 1);
    ngx_conf_init_size_value(pmcf->jwt_max_size, 8192);
    ngx_conf_init_uint_value(pmcf->jwt_cache_size, 8192);

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

    if (ngx_http_presence_jwt_init_conf(cf, pmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_presence_check_conf(cf, pmcf);
}


static char *
ngx_http_presence_check_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf)
{
    char     err[NGX_HTTP_PRESENCE_JWT_ERRLEN];
    time_t  *t;

    t = pmcf->thresholds;

    if (pmcf->privacy_column.len && pmcf->pg_conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"presence_privacy_column\" needs "
                           "\"presence_postgres\": the column is read with "
                           "the profiles");
        return NGX_CONF_ERROR;
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

    if ((pmcf->jwt_keys_set || pmcf->jwt_algorithms_set)
        && !ngx_http_presence_jwt_check(&pmcf->jwt, err))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_algorithms: %s", err);
        return NGX_CONF_ERROR;
    }

    if (t[NGX_HTTP_PRESENCE_VERY_ACTIVE] > t[NGX_HTTP_PRESENCE_ONLINE]
        || t[NGX_HTTP_PRESENCE_ONLINE] > t[NGX_HTTP_PRESENCE_RECENT])
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_thresholds: very_active (%T s) <= "
                           "online (%T s) <= recent (%T s) must hold",
                           t[NGX_HTTP_PRESENCE_VERY_ACTIVE],
                           t[NGX_HTTP_PRESENCE_ONLINE],
                           t[NGX_HTTP_PRESENCE_RECENT]);
        return NGX_CONF_ERROR;
    }

    if (!pmcf->used) {
        return NGX_CONF_OK;
    }

    if (pmcf->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"presence\" and \"presence_api\" need a "
                           "\"presence_zone\" in the http block");
        return NGX_CONF_ERROR;
    }

    if (!pmcf->jwt_keys_set) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"presence\" and \"presence_api\" need "
                           "\"presence_jwt_secret\" or "
                           "\"presence_jwt_key_file\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_presence_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_presence_loc_conf_t  *plcf;

    plcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_presence_loc_conf_t));
    if (plcf == NULL) {
        return NULL;
    }

    plcf->enable = NGX_CONF_UNSET;
    plcf->admin_check = NGX_CONF_UNSET;
    plcf->require_user = NGX_CONF_UNSET;
    plcf->jwt_token = NGX_CONF_UNSET_PTR;

    return plcf;
}


static char *
ngx_http_presence_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_presence_loc_conf_t *prev = parent;
    ngx_http_presence_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->admin_check, prev->admin_check, -1);
    ngx_conf_merge_value(conf->require_user, prev->require_user, 0);
    ngx_conf_merge_ptr_value(conf->jwt_token, prev->jwt_token, NULL);

    return NGX_CONF_OK;
}


/*
 * presence_privacy_column NAME;  a boolean column of "users", read with
 * the profiles: a plain identifier, as it goes into SQL
 */

static char *
ngx_http_presence_privacy_column(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (pmcf->privacy_column.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 63
        || (value[1].data[0] >= '0' && value[1].data[0] <= '9'))
    {
        goto invalid;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z')
              || (*p >= '0' && *p <= '9')))
        {
            goto invalid;
        }
    }

    pmcf->privacy_column = value[1];

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "presence_privacy_column: \"%V\" is not a plain "
                       "column name (lowercase letters, digits, \"_\")",
                       &value[1]);

    return NGX_CONF_ERROR;
}


/* presence_lookup_limit N [per=1h]; */

static char *
ngx_http_presence_lookup_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, s;

    if (pmcf->lookup_limit != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n <= 0 || n > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_lookup_limit: \"%V\" is not a number "
                           "of ids from 1 to 100000", &value[1]);
        return NGX_CONF_ERROR;
    }

    pmcf->lookup_limit = n;

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "per=", 4) != 0) {
            goto invalid;
        }

        s.data = value[2].data + 4;
        s.len = value[2].len - 4;

        pmcf->lookup_period = ngx_parse_time(&s, 1);
        if (pmcf->lookup_period == (time_t) NGX_ERROR
            || pmcf->lookup_period <= 0)
        {
            goto invalid;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "presence_lookup_limit: invalid \"%V\", "
                       "expected \"per=TIME\"", &value[2]);

    return NGX_CONF_ERROR;
}


/* presence_thresholds very_active=5m online=15m recent=1h; */

static char *
ngx_http_presence_thresholds(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    time_t      *t;
    u_char      *eq;
    ngx_str_t   *value, name, v;
    ngx_uint_t   i;

    for (i = 0; i < NGX_HTTP_PRESENCE_THRESHOLDS; i++) {
        if (pmcf->thresholds[i] != NGX_CONF_UNSET) {
            return "is duplicate";
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        eq = (u_char *) ngx_strchr(value[i].data, '=');

        if (eq == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;
        v.data = eq + 1;
        v.len = value[i].data + value[i].len - v.data;

        if (name.len == 11
            && ngx_strncmp(name.data, "very_active", 11) == 0)
        {
            t = &pmcf->thresholds[NGX_HTTP_PRESENCE_VERY_ACTIVE];

        } else if (name.len == 6 && ngx_strncmp(name.data, "online", 6) == 0)
        {
            t = &pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE];

        } else if (name.len == 6 && ngx_strncmp(name.data, "recent", 6) == 0)
        {
            t = &pmcf->thresholds[NGX_HTTP_PRESENCE_RECENT];

        } else {
            goto invalid;
        }

        if (*t != NGX_CONF_UNSET) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_thresholds: \"%V\" is given twice",
                               &name);
            return NGX_CONF_ERROR;
        }

        *t = ngx_parse_time(&v, 1);

        if (*t == (time_t) NGX_ERROR || *t < 1
            || *t > NGX_HTTP_PRESENCE_DAY)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_thresholds: invalid time \"%V\", "
                               "from 1s to 24h", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "presence_thresholds: invalid parameter \"%V\", "
                       "expected very_active=, online= or recent=",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_presence_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t                    *ev;
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_presence_module);

    if (pmcf == NULL || pmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (ngx_http_presence_flusher_init(cycle, pmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ev = &pmcf->tick;

    ev->handler = ngx_http_presence_tick;
    ev->data = pmcf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_random() % NGX_HTTP_PRESENCE_TICK + 1);

    return NGX_OK;
}


static void
ngx_http_presence_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_presence_module);

    if (pmcf != NULL && pmcf->shm_zone != NULL) {
        ngx_http_presence_flusher_exit(pmcf);
    }
}


/*
 * Every second, in every worker: the store's clock, peak and expiry (a
 * slice left over is taken at once), and the flusher's lease.
 */

static void
ngx_http_presence_tick(ngx_event_t *ev)
{
    ngx_msec_t                      next;
    ngx_uint_t                      more;
    ngx_http_presence_main_conf_t  *pmcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    pmcf = ev->data;

    more = ngx_http_presence_store_tick(pmcf->shm_zone->data,
                                 pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 pmcf->session_timeout,
                                 pmcf->cleanup_interval, ev->log);

    ngx_http_presence_flusher_tick(pmcf);

    next = more ? 1 : ngx_min(NGX_HTTP_PRESENCE_TICK,
                              pmcf->cleanup_interval);

    ngx_add_timer(ev, next);
}
