
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence.h"


static ngx_int_t ngx_http_presence_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


char *
ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    u_char                    *p;
    ssize_t                    size;
    ngx_str_t                 *value, name, s;
    ngx_http_presence_zone_t  *zone;

    if (pmcf->shm_zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected "
                           "\"zone=NAME:SIZE\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 5;

    p = (u_char *) ngx_strchr(name.data, ':');

    if (p == NULL || p == name.data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected \"zone=NAME:SIZE\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.len = p - name.data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &s);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: %z bytes, "
                           "the minimum is %uz", &name, size,
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_presence_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    pmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_presence_module);
    if (pmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (pmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used by another "
                           "presence_zone", &name);
        return NGX_CONF_ERROR;
    }

    pmcf->shm_zone->init = ngx_http_presence_init_zone;
    pmcf->shm_zone->data = zone;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_presence_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_presence_zone_t  *ozone = data;

    size_t                     len;
    ngx_http_presence_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {

        /*
         * a reload with the same name and size: the old workers are still
         * writing into the zone, so it is taken over as it is, never scanned
         */

        if (ozone->sh->magic != NGX_HTTP_PRESENCE_ZONE_MAGIC
            || ozone->sh->version != NGX_HTTP_PRESENCE_ZONE_VERSION)
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "presence zone \"%V\" has layout version %uD, "
                          "this module uses %d: restart nginx or change "
                          "the zone size", &shm_zone->shm.name,
                          ozone->sh->version,
                          NGX_HTTP_PRESENCE_ZONE_VERSION);
            return NGX_ERROR;
        }

        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "presence zone \"%V\" kept, %uz bytes",
                      &shm_zone->shm.name, shm_zone->shm.size);

        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_calloc(zone->shpool, sizeof(ngx_http_presence_shm_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    zone->sh->magic = NGX_HTTP_PRESENCE_ZONE_MAGIC;
    zone->sh->version = NGX_HTTP_PRESENCE_ZONE_VERSION;
    zone->sh->size = shm_zone->shm.size;

    len = sizeof(" in presence zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in presence zone \"%V\"%Z",
                &shm_zone->shm.name);

    zone->shpool->log_nomem = 0;

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "presence zone \"%V\" created, %uz bytes",
                  &shm_zone->shm.name, shm_zone->shm.size);

    return NGX_OK;
}
