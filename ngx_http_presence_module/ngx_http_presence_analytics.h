
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_ANALYTICS_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_ANALYTICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_json.h"


void ngx_http_presence_analytics_json(ngx_http_presence_json_t *w,
    ngx_http_presence_analytics_t *a);
void ngx_http_presence_analytics_daily_json(ngx_http_presence_json_t *w,
    ngx_http_presence_day_t *rows, ngx_uint_t nrows, int64_t today,
    ngx_uint_t days);


#endif /* _NGX_HTTP_PRESENCE_ANALYTICS_H_INCLUDED_ */
