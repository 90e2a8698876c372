
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence.h"


static ngx_int_t ngx_http_presence_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_presence_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_presence_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_presence_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_presence_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_presence_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


static ngx_command_t  ngx_http_presence_commands[] = {

    { ngx_string("presence_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_presence_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("presence"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
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
    return ngx_http_presence_init_tracking(cf);
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

    pmcf->very_active = NGX_CONF_UNSET;
    pmcf->online = NGX_CONF_UNSET;
    pmcf->recent = NGX_CONF_UNSET;
    pmcf->session_timeout = NGX_CONF_UNSET;
    pmcf->cleanup_interval = NGX_CONF_UNSET_MSEC;
    pmcf->flush_interval = NGX_CONF_UNSET_MSEC;
    pmcf->profile_ttl = NGX_CONF_UNSET;
    pmcf->cluster = NGX_CONF_UNSET;

    pmcf->jwt_leeway = NGX_CONF_UNSET;
    pmcf->jwt_require_exp = NGX_CONF_UNSET;
    pmcf->jwt_max_size = NGX_CONF_UNSET_SIZE;
    pmcf->jwt_cache_size = NGX_CONF_UNSET_UINT;

    return pmcf;
}


static char *
ngx_http_presence_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    if (ngx_http_presence_init_flusher_conf(cf, pmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_presence_jwt_init_conf(cf, pmcf);
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
    plcf->jwt_token = NGX_CONF_UNSET_PTR;

    return plcf;
}


static char *
ngx_http_presence_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_presence_loc_conf_t *prev = parent;
    ngx_http_presence_loc_conf_t *conf = child;

    ngx_http_presence_main_conf_t  *pmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->admin_check, prev->admin_check, -1);
    ngx_conf_merge_ptr_value(conf->jwt_token, prev->jwt_token, NULL);

    if (conf->enable) {
        pmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_presence_module);
        pmcf->used = 1;
    }

    return NGX_CONF_OK;
}
