
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The flusher: one worker at a time (a lease in the zone) writes changed
 * sessions to PostgreSQL through the connection of ngx_http_presence_pg.c,
 * as an explicit state machine.  Each interval:
 *
 *     idle -> warm (a new zone only: pages of the sessions PostgreSQL
 *             holds as active, until all are loaded)
 *          -> upsert (a batch with deactivation and the hour's peak as
 *             CTEs: one statement; repeated while the ring holds more)
 *          -> pull -> pull peaks (presence_cluster only)
 *          -> profiles -> daily (presence_daily, every 5 s) -> idle
 *
 * A new connection goes connect -> schema (the columns of "users") ->
 * peaks -> warm -> upsert ...; at worker exit the last batch goes upsert
 * -> done.  ngx_http_presence_flush.c holds the lease, the dispatcher and
 * the upsert; ngx_http_presence_cluster.c (warm, pull) and
 * ngx_http_presence_profiles.c (schema, profiles) the other steps.
 */


#ifndef _NGX_HTTP_PRESENCE_FLUSH_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_FLUSH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_pg.h"


#define NGX_HTTP_PRESENCE_PROFILE_MAX   500   /* ids in one query */
#define NGX_HTTP_PRESENCE_PROFILE_ROUNDS  8   /* full queries a flush */


typedef enum {
    NGX_HTTP_PRESENCE_FLUSH_IDLE = 0,
    NGX_HTTP_PRESENCE_FLUSH_CONNECT,
    NGX_HTTP_PRESENCE_FLUSH_SCHEMA,
    NGX_HTTP_PRESENCE_FLUSH_PEAKS,
    NGX_HTTP_PRESENCE_FLUSH_WARM,
    NGX_HTTP_PRESENCE_FLUSH_UPSERT,
    NGX_HTTP_PRESENCE_FLUSH_PULL,
    NGX_HTTP_PRESENCE_FLUSH_PULL_PEAKS,
    NGX_HTTP_PRESENCE_FLUSH_PROFILES,
    NGX_HTTP_PRESENCE_FLUSH_DAILY,
    NGX_HTTP_PRESENCE_FLUSH_DONE
} ngx_http_presence_flush_phase_e;


struct ngx_http_presence_flusher_s {
    ngx_http_presence_pg_t           pg;
    ngx_event_t                      event;      /* every flush interval */
    ngx_http_presence_main_conf_t   *pmcf;
    ngx_http_presence_zone_t        *zone;

    ngx_http_presence_flush_phase_e  phase;
    ngx_http_presence_lease_t        lease;
    ngx_uint_t                       exiting;    /* the last batch */
    ngx_uint_t                       ascii;      /* the database's is not
                                                    UTF-8: strings folded */
    ngx_uint_t                       chained;    /* batches this interval */

    /* upsert */
    ngx_http_presence_batch_t        batch;
    ngx_uint_t                       cleanup;    /* in this batch */
    time_t                           last_cleanup;
    uint32_t                         peak;       /* in this batch, or 0 */
    uint32_t                         peak_written;
    int64_t                          peak_day;
    ngx_uint_t                       peak_hour;

    /* warm, pull */
    char                            *warm_sql[2][2];  /* is_active; next */
    ngx_uint_t                       catchup;    /* the last page was full */

    /* profiles */
    ngx_uint_t                       users_active;  /* the column exists */
    char                            *profiles_sql[2];  /* without, with it */
    int64_t                          ids[NGX_HTTP_PRESENCE_PROFILE_MAX];

    /* daily */
    ngx_msec_t                       daily_at;   /* today's last written */
    int64_t                          daily_day;  /* the row in flight */
    ngx_uint_t                       daily_pending;  /* a closed day */
    ngx_uint_t                       daily_history;  /* read back */
    ngx_uint_t                       nids;
    ngx_uint_t                       profile_rounds;  /* this flush's */
    ngx_http_presence_profile_in_t   profiles[NGX_HTTP_PRESENCE_PROFILE_MAX];
};


char *ngx_http_presence_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

ngx_int_t ngx_http_presence_flusher_init(ngx_cycle_t *cycle,
    ngx_http_presence_main_conf_t *pmcf);
void ngx_http_presence_flusher_tick(ngx_http_presence_main_conf_t *pmcf);
void ngx_http_presence_flusher_exit(ngx_http_presence_main_conf_t *pmcf);

/*
 * A step starts its statement (NGX_AGAIN), has nothing to do (NGX_DECLINED)
 * or cannot start (NGX_ERROR); its result handler says NGX_OK (go on),
 * NGX_AGAIN (the same step once more) or NGX_ERROR.
 */
ngx_int_t ngx_http_presence_cluster_init(ngx_http_presence_flusher_t *f,
    ngx_pool_t *pool);
ngx_int_t ngx_http_presence_cluster_warm(ngx_http_presence_flusher_t *f);
ngx_int_t ngx_http_presence_cluster_warmed(ngx_http_presence_flusher_t *f,
    PGresult *res);
ngx_int_t ngx_http_presence_cluster_pull(ngx_http_presence_flusher_t *f);
ngx_int_t ngx_http_presence_cluster_pulled(ngx_http_presence_flusher_t *f,
    PGresult *res);
ngx_int_t ngx_http_presence_profiles_init(ngx_http_presence_flusher_t *f,
    ngx_pool_t *pool);
size_t ngx_http_presence_profiles_size(ngx_http_presence_flusher_t *f);
u_char *ngx_http_presence_profiles_columns(u_char *p,
    ngx_http_presence_flusher_t *f, ngx_uint_t active);
void ngx_http_presence_profiles_row(PGresult *res, int i, int col,
    ngx_http_presence_profile_in_t *in);
ngx_int_t ngx_http_presence_analytics_daily(ngx_http_presence_flusher_t *f);
ngx_int_t ngx_http_presence_analytics_written(ngx_http_presence_flusher_t *f,
    PGresult *res);
ngx_int_t ngx_http_presence_profiles_schema(ngx_http_presence_flusher_t *f);
ngx_int_t ngx_http_presence_profiles_schema_loaded(
    ngx_http_presence_flusher_t *f, PGresult *res);
ngx_int_t ngx_http_presence_profiles_load(ngx_http_presence_flusher_t *f);
ngx_int_t ngx_http_presence_profiles_loaded(ngx_http_presence_flusher_t *f,
    PGresult *res);
ngx_int_t ngx_http_presence_flush_send(ngx_http_presence_flusher_t *f,
    const char *statement, const char *sql, int nparams,
    const char *const *params);


#endif /* _NGX_HTTP_PRESENCE_FLUSH_H_INCLUDED_ */
