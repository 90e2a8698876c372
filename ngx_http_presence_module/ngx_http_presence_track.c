
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * Tracking: the access-phase handler of "presence on" locations, and the
 * preparation of what it records, before the zone's lock is taken.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_track.h"
#include "ngx_http_presence_token.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_args.h"


static ngx_int_t ngx_http_presence_handler(ngx_http_request_t *r);
static void ngx_http_presence_tracked_marker(void *data);
static ngx_uint_t ngx_http_presence_tracked(ngx_http_request_t *r);
static void ngx_http_presence_prepare(ngx_http_request_t *r,
    ngx_http_presence_ctx_t *ctx, ngx_http_presence_activity_t *act);


/* presence on | off; a location that tracks makes the module "used" */

char *
ngx_http_presence_enable(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_loc_conf_t *plcf = conf;

    char                           *rv;
    ngx_http_presence_main_conf_t  *pmcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK && plcf->enable) {
        pmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_presence_module);
        pmcf->used = 1;
    }

    return rv;
}


ngx_int_t
ngx_http_presence_track_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_presence_handler;

    return NGX_OK;
}


/*
 * Runs first in the access phase (a dynamic module registers last), so
 * "satisfy any" cannot skip it; subrequests never reach the access phase.
 * It always declines: tracking never changes the request.
 */

static ngx_int_t
ngx_http_presence_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_presence_ctx_t        *ctx;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_loc_conf_t   *plcf;
    ngx_http_presence_main_conf_t  *pmcf;
    ngx_http_presence_activity_t    act;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_presence_module);

    if (!plcf->enable || r != r->main || ngx_http_presence_tracked(r)) {
        return NGX_DECLINED;
    }

    /* after an internal redirect the request is not counted again */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_presence_tracked_marker;

    ctx = ngx_http_presence_token(r);
    if (ctx == NULL) {
        return NGX_DECLINED;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);
    zone = pmcf->shm_zone->data;

    ngx_http_presence_store_count_request(zone, ctx->status);

    if (ctx->status != NGX_HTTP_PRESENCE_JWT_VALID) {
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "presence: tracking user %L", ctx->user_id);

    ngx_http_presence_prepare(r, ctx, &act);

    ngx_http_presence_store_touch(zone, &act, pmcf->session_timeout,
                                  r->connection->log);

    ctx->tracked = 1;

    return NGX_DECLINED;
}


static void
ngx_http_presence_tracked_marker(void *data)
{
    /* only a marker */
}


static ngx_uint_t
ngx_http_presence_tracked(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_presence_tracked_marker) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_presence_prepare(ngx_http_request_t *r, ngx_http_presence_ctx_t *ctx,
    ngx_http_presence_activity_t *act)
{
    ngx_time_t           *tp;
    ngx_table_elt_t      *ua;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    ngx_memcpy(act->id, ctx->session_id, NGX_HTTP_PRESENCE_ID_LEN);
    act->user_id = ctx->user_id;
    act->exp = ctx->exp;
    act->created_ms = 0;

    tp = ngx_timeofday();
    act->now_ms = (int64_t) tp->sec * 1000 + tp->msec;

    ngx_memzero(act->addr, sizeof(act->addr));
    act->family = 0;

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        ngx_memcpy(act->addr, &sin->sin_addr, 4);
        act->family = AF_INET;
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        ngx_memcpy(act->addr, &sin6->sin6_addr, 16);
        act->family = AF_INET6;
        break;
#endif
    }

    ua = r->headers_in.user_agent;

    act->ua_len = ua ? ngx_http_presence_sanitize(act->ua,
                                                  NGX_HTTP_PRESENCE_UA_MAX,
                                                  ua->value.data,
                                                  ua->value.len)
                     : 0;

    act->ua_hash = ngx_crc32_short(act->ua, act->ua_len);
    act->device = (uint8_t) ngx_http_presence_device(act->ua, act->ua_len);

    act->method_len = ngx_http_presence_sanitize(act->method,
                                                 NGX_HTTP_PRESENCE_METHOD_MAX,
                                                 r->method_name.data,
                                                 r->method_name.len);

    act->uri_len = ngx_http_presence_sanitize(act->uri,
                                              NGX_HTTP_PRESENCE_URI_MAX,
                                              r->uri.data, r->uri.len);
}
