
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#ifndef _NGX_HTTP_PRESENCE_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_jwt.h"


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


/* a per-worker cache of verified tokens, keyed by their SHA-256 */

typedef struct {
    ngx_rbtree_node_t               node;
    ngx_queue_t                     queue;
    u_char                          digest[32];
    ngx_http_presence_jwt_status_e  status;
    time_t                          until;
    int64_t                         user_id;
    int64_t                         exp;
    u_char                          session_id[32];
} ngx_http_presence_jwt_cache_node_t;


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     lru;
    ngx_queue_t                     free;
    ngx_uint_t                      hits;
    ngx_uint_t                      misses;
} ngx_http_presence_jwt_cache_t;


typedef struct {
    ngx_shm_zone_t                 *shm_zone;

    ngx_http_presence_jwt_t         jwt;
    time_t                          jwt_leeway;
    ngx_flag_t                      jwt_require_exp;
    size_t                          jwt_max_size;
    ngx_uint_t                      jwt_cache_size;
    ngx_http_presence_jwt_cache_t  *jwt_cache;

    unsigned                        jwt_keys_set:1;
    unsigned                        jwt_algorithms_set:1;
} ngx_http_presence_main_conf_t;


typedef struct {
    ngx_http_complex_value_t       *jwt_token;
} ngx_http_presence_loc_conf_t;


/* the request's verdict, evaluated once, on first use */

typedef struct {
    ngx_http_presence_jwt_status_e  status;
    int64_t                         user_id;
    int64_t                         exp;
    u_char                          session_id[32];
} ngx_http_presence_ctx_t;


char *ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

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
ngx_int_t ngx_http_presence_add_variables(ngx_conf_t *cf);
ngx_http_presence_ctx_t *ngx_http_presence_token(ngx_http_request_t *r);


extern ngx_module_t  ngx_http_presence_module;


#endif /* _NGX_HTTP_PRESENCE_H_INCLUDED_ */
