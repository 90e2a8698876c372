
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_DASHBOARD_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_DASHBOARD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"


char *ngx_http_presence_dashboard(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_PRESENCE_DASHBOARD_H_INCLUDED_ */
