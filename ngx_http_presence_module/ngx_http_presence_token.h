
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The request's token: found (presence_jwt_token or the Bearer header),
 * verified with ngx_http_presence_jwt.c through a per-worker verdict
 * cache, and kept as the main request's context; the presence_jwt_*
 * directives and the token variables.
 */


#ifndef _NGX_HTTP_PRESENCE_TOKEN_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_TOKEN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"


/* the data of ngx_http_presence_token_variable() */

#define NGX_HTTP_PRESENCE_VAR_USER_ID     0
#define NGX_HTTP_PRESENCE_VAR_STATUS      1
#define NGX_HTTP_PRESENCE_VAR_SESSION_ID  2


/* the request's verdict, evaluated once, on first use */

typedef struct {
    ngx_http_presence_jwt_status_e  status;
    ngx_uint_t                      tracked;
    int64_t                         user_id;
    int64_t                         exp;
    uint32_t                        matched;
    u_char                          session_id[NGX_HTTP_PRESENCE_ID_LEN];
    void                           *stream;      /* GET stream's subscriber */
} ngx_http_presence_ctx_t;


char *ngx_http_presence_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_algorithms(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_string(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_audience(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_presence_jwt_init_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf);

ngx_http_presence_ctx_t *ngx_http_presence_token(ngx_http_request_t *r);
ngx_int_t ngx_http_presence_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_HTTP_PRESENCE_TOKEN_H_INCLUDED_ */
