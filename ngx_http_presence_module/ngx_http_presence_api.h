
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_API_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"


char *ngx_http_presence_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_presence_api_admin_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_presence_online_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_HTTP_PRESENCE_API_H_INCLUDED_ */
