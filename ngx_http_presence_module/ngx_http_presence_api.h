
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_API_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_json.h"


#define NGX_HTTP_PRESENCE_422  422


char *ngx_http_presence_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_presence_api_admin_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_presence_online_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* how the caller may see others: presence_last_seen_precision, and */
/* presence_privacy_reciprocal for a caller who hides */

typedef struct {
    int64_t                         caller;
    time_t                          precision;   /* seconds, 0: exact */
    ngx_uint_t                      no_last_seen;
} ngx_http_presence_viewer_t;


/* shared with the stream and the dashboard */
void ngx_http_presence_api_path(ngx_http_request_t *r, ngx_str_t *name);
void ngx_http_presence_api_viewer(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    int64_t caller, ngx_http_presence_viewer_t *viewer);
ngx_int_t ngx_http_presence_api_lookup(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, int64_t caller, int64_t *ids,
    ngx_uint_t n);
ngx_int_t ngx_http_presence_api_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_presence_json_t *w);
ngx_int_t ngx_http_presence_api_ids(ngx_http_request_t *r, int64_t *ids,
    ngx_uint_t max, ngx_uint_t optional, ngx_uint_t *n,
    ngx_http_presence_json_t *w);
ngx_int_t ngx_http_presence_api_analytics(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);
ngx_int_t ngx_http_presence_api_daily(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);
void ngx_http_presence_api_statuses(ngx_http_presence_json_t *w,
    ngx_http_presence_main_conf_t *pmcf, ngx_http_presence_viewer_t *viewer,
    int64_t *ids, int64_t *last, u_char *hidden, ngx_uint_t n, time_t now);


#endif /* _NGX_HTTP_PRESENCE_API_H_INCLUDED_ */
