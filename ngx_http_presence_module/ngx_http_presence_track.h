
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_TRACK_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_TRACK_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"


char *ngx_http_presence_enable(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_presence_track_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_PRESENCE_TRACK_H_INCLUDED_ */
