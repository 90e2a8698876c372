
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * GET stream: Server-Sent Events of who comes online and goes away.  The
 * zone's change log holds the transitions; each worker fans them out to its
 * own subscribers from a short timer, through an index from user id to the
 * subscribers that watch it.
 */


#ifndef _NGX_HTTP_PRESENCE_STREAM_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_STREAM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_token.h"


ngx_int_t ngx_http_presence_stream(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx);
ngx_int_t ngx_http_presence_stream_counts_only(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx);


#endif /* _NGX_HTTP_PRESENCE_STREAM_H_INCLUDED_ */
