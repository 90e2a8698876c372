
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_PRESENCE_ZONE_MAGIC    0x50524553  /* "PRES" */
#define NGX_HTTP_PRESENCE_ZONE_VERSION  1


/* the header at the start of the shared zone */

typedef struct {
    uint32_t                        magic;
    uint32_t                        version;
    uint64_t                        size;
    ngx_atomic_t                    generation;
} ngx_http_presence_shm_t;


typedef struct {
    ngx_http_presence_shm_t        *sh;
    ngx_slab_pool_t                *shpool;
} ngx_http_presence_zone_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;
} ngx_http_presence_main_conf_t;


char *ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


extern ngx_module_t  ngx_http_presence_module;


#endif /* _NGX_HTTP_PRESENCE_H_INCLUDED_ */
