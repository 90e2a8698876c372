
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The shared-memory store.  Sessions and users are fixed-size records in
 * arrays preallocated from the zone, linked by 32-bit indices: a hash
 * chain each, a list of all sessions and a queue of all users ordered by
 * last activity (most recent first), and each user's list of sessions.
 * Users and sessions are counted in two Fenwick trees over the seconds of
 * the last day, each in the second of its latest activity only, so the
 * number active within any threshold is two prefix sums.  The slab
 * mutex is the only lock; a writer marks the header with its pid while it
 * changes links, and a worker that finds the mark of a writer that died
 * resets the zone.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence.h"


#define NGX_HTTP_PRESENCE_MIN_SESSIONS  16


typedef char ngx_http_presence_session_size_check[
    sizeof(ngx_http_presence_session_t) <= 192 ? 1 : -1];

typedef char ngx_http_presence_user_size_check[
    sizeof(ngx_http_presence_user_t) <= 64 ? 1 : -1];


static ngx_int_t ngx_http_presence_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_presence_layout(ngx_http_presence_zone_t *zone,
    ngx_str_t *name, ngx_log_t *log);
static void ngx_http_presence_bit_add(int32_t *bit, int64_t t,
    int32_t delta);
static int64_t ngx_http_presence_bit_sum(int32_t *bit, ngx_uint_t i);
static void ngx_http_presence_bit_move(ngx_http_presence_shm_t *sh,
    int32_t *bit, int64_t from, int64_t to);
static uint32_t ngx_http_presence_session_bucket(ngx_http_presence_shm_t *sh,
    u_char *id);
static uint32_t ngx_http_presence_user_bucket(ngx_http_presence_shm_t *sh,
    int64_t user_id);
static uint32_t ngx_http_presence_find_session(ngx_http_presence_shm_t *sh,
    u_char *id);
static uint32_t ngx_http_presence_new_session(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_log_t *log);
static uint32_t ngx_http_presence_new_user(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log);
static void ngx_http_presence_free_session(ngx_http_presence_zone_t *zone,
    uint32_t i);
static void ngx_http_presence_free_user(ngx_http_presence_zone_t *zone,
    uint32_t i);
static void ngx_http_presence_evicted(ngx_http_presence_zone_t *zone,
    ngx_uint_t n, ngx_log_t *log);
static void ngx_http_presence_lru_head(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_lru_unlink(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_q_head(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_q_place(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_q_unlink(ngx_http_presence_shm_t *sh,
    uint32_t i);
static uint32_t ngx_http_presence_ua_get(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act);
static void ngx_http_presence_ua_put(ngx_http_presence_zone_t *zone,
    uint32_t off);
static void ngx_http_presence_update(ngx_http_presence_zone_t *zone,
    ngx_http_presence_session_t *s, ngx_http_presence_activity_t *act);


#define ngx_http_presence_ptr(shpool, off)                                    \
    ((void *) ((u_char *) (shpool) + ((size_t) (off) << 3)))

#define ngx_http_presence_off(shpool, p)                                      \
    ((uint32_t) (((u_char *) (p) - (u_char *) (shpool)) >> 3))


char *
ngx_http_presence_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    u_char                    *p;
    ssize_t                    size;
    ngx_int_t                  ring;
    ngx_str_t                 *value, name, s;
    ngx_uint_t                 i;
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

    if (size < 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: %z bytes, "
                           "the minimum is 1m", &name, size);
        return NGX_CONF_ERROR;
    }

    if ((uint64_t) size > (uint64_t) 32 * 1024 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too large: the maximum is 32g",
                           &name);
        return NGX_CONF_ERROR;
    }

    ring = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ring=", 5) == 0 && ring == 0) {
            ring = ngx_atoi(value[i].data + 5, value[i].len - 5);

            if (ring < 64 || ring > 0x7fffffff) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid ring size \"%V\": a number "
                                   "from 64", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_presence_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->ring = ring;
    zone->name = name;

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

    ngx_http_presence_zone_t  *zone;
    ngx_http_presence_shm_t   *sh;

    zone = shm_zone->data;

    if (ozone) {

        /*
         * a reload with the same name and size: the old workers are still
         * writing into the zone, so it is taken over as it is, never
         * scanned
         */

        sh = ozone->sh;

        if (sh->magic != NGX_HTTP_PRESENCE_ZONE_MAGIC
            || sh->version != NGX_HTTP_PRESENCE_ZONE_VERSION
            || sh->session_size != sizeof(ngx_http_presence_session_t)
            || sh->user_size != sizeof(ngx_http_presence_user_t))
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "presence zone \"%V\" has layout version %uD, "
                          "this module uses %d: restart nginx or change "
                          "the zone size", &shm_zone->shm.name,
                          sh->version, NGX_HTTP_PRESENCE_ZONE_VERSION);
            return NGX_ERROR;
        }

        if (zone->ring && zone->ring != sh->nring) {
            ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                          "presence zone \"%V\" keeps ring=%uD until it is "
                          "recreated", &shm_zone->shm.name, sh->nring);
        }

        zone->sh = sh;
        zone->shpool = ozone->shpool;

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "presence zone \"%V\" kept, %uz bytes, %uD of %uD "
                      "sessions used", &shm_zone->shm.name,
                      shm_zone->shm.size, sh->sessions_used, sh->nsessions);

        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    if (ngx_http_presence_layout(zone, &shm_zone->shm.name,
                                 shm_zone->shm.log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "presence zone \"%V\" created, %uz bytes, %uD sessions, "
                  "%uD users, ring %uD, module "
                  NGX_HTTP_PRESENCE_VERSION, &shm_zone->shm.name,
                  shm_zone->shm.size, zone->sh->nsessions, zone->sh->nusers,
                  zone->sh->nring);

    return NGX_OK;
}


/*
 * Carves the zone: the header, the two trees, then per session its record,
 * a user record, a bucket in each hash and its share of the ring; 1/16 of
 * what is left stays free for User-Agent strings and profiles.
 */

static ngx_int_t
ngx_http_presence_layout(ngx_http_presence_zone_t *zone, ngx_str_t *name,
    ngx_log_t *log)
{
    size_t                    avail, per, ring, len, bits;
    uint32_t                  i, n;
    ngx_slab_pool_t          *shpool;
    ngx_http_presence_shm_t  *sh;

    shpool = zone->shpool;

    sh = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_presence_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    zone->sh = sh;

    len = sizeof(" in presence zone \"\"") + name->len;

    shpool->log_ctx = ngx_slab_alloc_locked(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in presence zone \"%V\"%Z", name);

    shpool->log_nomem = 0;

    bits = (NGX_HTTP_PRESENCE_WINDOW + 1) * sizeof(int32_t);

    sh->users_bit = ngx_slab_calloc_locked(shpool, bits);
    sh->sessions_bit = ngx_slab_calloc_locked(shpool, bits);

    if (sh->users_bit == NULL || sh->sessions_bit == NULL) {
        goto small;
    }

    /* whole pages are what is left; each array wastes at most one */

    avail = shpool->pfree * ngx_pagesize;

    if (avail < 8 * ngx_pagesize) {
        goto small;
    }

    avail -= 8 * ngx_pagesize;
    avail -= avail / 16;

    per = sizeof(ngx_http_presence_session_t)
          + sizeof(ngx_http_presence_user_t) + 2 * sizeof(uint32_t);

    if (zone->ring) {
        ring = zone->ring * sizeof(uint32_t);

        if (ring >= avail) {
            goto small;
        }

        n = (uint32_t) ngx_min((avail - ring) / per, 0x7fffffff);

    } else {
        /* a ring of a quarter of the sessions */
        n = (uint32_t) ngx_min(avail / (per + sizeof(uint32_t) / 4),
                               0x7fffffff);
    }

    if (n < NGX_HTTP_PRESENCE_MIN_SESSIONS) {
        goto small;
    }

    sh->nsessions = n;
    sh->nusers = n;
    sh->nring = zone->ring ? zone->ring : ngx_max(n / 4, 64);

    sh->sessions = ngx_slab_alloc_locked(shpool,
                              n * sizeof(ngx_http_presence_session_t));
    sh->users = ngx_slab_calloc_locked(shpool,
                              n * sizeof(ngx_http_presence_user_t));
    sh->session_hash = ngx_slab_alloc_locked(shpool, n * sizeof(uint32_t));
    sh->user_hash = ngx_slab_alloc_locked(shpool, n * sizeof(uint32_t));
    sh->ring = ngx_slab_alloc_locked(shpool, sh->nring * sizeof(uint32_t));

    if (sh->sessions == NULL || sh->users == NULL || sh->session_hash == NULL
        || sh->user_hash == NULL || sh->ring == NULL)
    {
        goto small;
    }

    for (i = 0; i < n; i++) {
        sh->session_hash[i] = NGX_HTTP_PRESENCE_NIL;
        sh->user_hash[i] = NGX_HTTP_PRESENCE_NIL;

        sh->sessions[i].hash_next = (i + 1 < n) ? i + 1
                                                : NGX_HTTP_PRESENCE_NIL;
        sh->sessions[i].user = NGX_HTTP_PRESENCE_NIL;
        sh->users[i].hash_next = (i + 1 < n) ? i + 1 : NGX_HTTP_PRESENCE_NIL;
    }

    for (i = 0; i < NGX_HTTP_PRESENCE_UA_BUCKETS; i++) {
        sh->ua_hash[i] = 0;
    }

    sh->session_free = 0;
    sh->user_free = 0;
    sh->lru_head = NGX_HTTP_PRESENCE_NIL;
    sh->lru_tail = NGX_HTTP_PRESENCE_NIL;
    sh->q_head = NGX_HTTP_PRESENCE_NIL;
    sh->q_tail = NGX_HTTP_PRESENCE_NIL;
    sh->clock = ngx_time();

    sh->magic = NGX_HTTP_PRESENCE_ZONE_MAGIC;
    sh->version = NGX_HTTP_PRESENCE_ZONE_VERSION;
    sh->session_size = sizeof(ngx_http_presence_session_t);
    sh->user_size = sizeof(ngx_http_presence_user_t);
    sh->size = shpool->end - (u_char *) shpool;

    return NGX_OK;

small:

    ngx_log_error(NGX_LOG_EMERG, log, 0,
                  "presence zone \"%V\" is too small for %d sessions%s",
                  name, NGX_HTTP_PRESENCE_MIN_SESSIONS,
                  zone->ring ? " and its ring" : "");

    return NGX_ERROR;
}


/*
 * The lock.  A pid left in the header means its owner died while changing
 * links (the master released the mutex): the structures cannot be
 * trusted, so the zone starts afresh.
 */

void
ngx_http_presence_lock(ngx_http_presence_zone_t *zone, ngx_log_t *log)
{
    ngx_pid_t         pid;
    uint64_t          resets;
    ngx_slab_pool_t  *shpool;

    shpool = zone->shpool;

    ngx_shmtx_lock(&shpool->mutex);

    zone->sh = shpool->data;
    pid = zone->sh->writer;

    if (pid == 0) {
        return;
    }

    resets = zone->sh->resets;

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "presence zone \"%V\": process %P died while updating "
                  "it, starting the zone afresh", &zone->name, pid);

    ngx_slab_init(shpool);

    if (ngx_http_presence_layout(zone, &zone->name, log) != NGX_OK)
    {
        /* the same layout fitted before */
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "presence zone \"%V\": reset failed", &zone->name);
    }

    zone->sh->resets = resets + 1;
}


void
ngx_http_presence_unlock(ngx_http_presence_zone_t *zone)
{
    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* Fenwick trees over the seconds of the window, indexed 1..WINDOW */

static void
ngx_http_presence_bit_add(int32_t *bit, int64_t t, int32_t delta)
{
    ngx_uint_t  i;

    for (i = t % NGX_HTTP_PRESENCE_WINDOW + 1;
         i <= NGX_HTTP_PRESENCE_WINDOW;
         i += i & -i)
    {
        bit[i] += delta;
    }
}


static int64_t
ngx_http_presence_bit_sum(int32_t *bit, ngx_uint_t i)
{
    int64_t  sum;

    sum = 0;

    for ( /* void */ ; i > 0; i -= i & -i) {
        sum += bit[i];
    }

    return sum;
}


/* moves one count from second "from" (if still in the window) to "to" */

static void
ngx_http_presence_bit_move(ngx_http_presence_shm_t *sh, int32_t *bit,
    int64_t from, int64_t to)
{
    if (from == to) {
        return;
    }

    if (from > sh->clock - NGX_HTTP_PRESENCE_WINDOW) {
        ngx_http_presence_bit_add(bit, from, -1);
    }

    if (to >= 0) {
        ngx_http_presence_bit_add(bit, to, 1);
    }
}


/* the clock moves on: the slots of seconds a day old are emptied */

void
ngx_http_presence_advance(ngx_http_presence_zone_t *zone, time_t now)
{
    int64_t                   t, v;
    ngx_uint_t                i;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    if (now <= sh->clock) {
        return;
    }

    if (now - sh->clock >= NGX_HTTP_PRESENCE_WINDOW) {
        ngx_memzero(sh->users_bit,
                    (NGX_HTTP_PRESENCE_WINDOW + 1) * sizeof(int32_t));
        ngx_memzero(sh->sessions_bit,
                    (NGX_HTTP_PRESENCE_WINDOW + 1) * sizeof(int32_t));
        sh->clock = now;
        return;
    }

    for (t = sh->clock + 1; t <= now; t++) {
        i = t % NGX_HTTP_PRESENCE_WINDOW + 1;

        v = ngx_http_presence_bit_sum(sh->users_bit, i)
            - ngx_http_presence_bit_sum(sh->users_bit, i - 1);
        if (v) {
            ngx_http_presence_bit_add(sh->users_bit, t, (int32_t) -v);
        }

        v = ngx_http_presence_bit_sum(sh->sessions_bit, i)
            - ngx_http_presence_bit_sum(sh->sessions_bit, i - 1);
        if (v) {
            ngx_http_presence_bit_add(sh->sessions_bit, t, (int32_t) -v);
        }
    }

    sh->clock = now;
}


/* users (or sessions) whose latest activity is within "seconds" of now */

ngx_uint_t
ngx_http_presence_count(ngx_http_presence_zone_t *zone, time_t seconds,
    ngx_uint_t sessions)
{
    int32_t                  *bit;
    int64_t                   from, to, sum;
    ngx_uint_t                a, b;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    bit = sessions ? sh->sessions_bit : sh->users_bit;

    if (seconds <= 0) {
        return 0;
    }

    if (seconds > NGX_HTTP_PRESENCE_WINDOW) {
        seconds = NGX_HTTP_PRESENCE_WINDOW;
    }

    to = sh->clock;
    from = to - seconds + 1;

    a = from % NGX_HTTP_PRESENCE_WINDOW + 1;
    b = to % NGX_HTTP_PRESENCE_WINDOW + 1;

    if (a <= b) {
        sum = ngx_http_presence_bit_sum(bit, b)
              - ngx_http_presence_bit_sum(bit, a - 1);

    } else {
        sum = ngx_http_presence_bit_sum(bit, NGX_HTTP_PRESENCE_WINDOW)
              - ngx_http_presence_bit_sum(bit, a - 1)
              + ngx_http_presence_bit_sum(bit, b);
    }

    return sum > 0 ? (ngx_uint_t) sum : 0;
}


/* today's hourly peak of online users, sampled now */

void
ngx_http_presence_sample_peak(ngx_http_presence_zone_t *zone, time_t online)
{
    int64_t                   day;
    ngx_uint_t                n, hour;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    day = sh->clock / 86400;

    if (day != sh->peak_day) {
        ngx_memzero(sh->peak, sizeof(sh->peak));
        sh->peak_day = day;
    }

    hour = (sh->clock % 86400) / 3600;
    n = ngx_http_presence_count(zone, online, 0);

    if (n > sh->peak[hour]) {
        sh->peak[hour] = (uint32_t) n;
    }
}


static uint32_t
ngx_http_presence_session_bucket(ngx_http_presence_shm_t *sh, u_char *id)
{
    uint32_t  h;

    ngx_memcpy(&h, id, sizeof(uint32_t));

    return (uint32_t) (((uint64_t) h * sh->nsessions) >> 32);
}


static uint32_t
ngx_http_presence_user_bucket(ngx_http_presence_shm_t *sh, int64_t user_id)
{
    uint64_t  h;

    h = ((uint64_t) user_id * 0x9e3779b97f4a7c15ULL) >> 32;

    return (uint32_t) ((h * sh->nusers) >> 32);
}


static uint32_t
ngx_http_presence_find_session(ngx_http_presence_shm_t *sh, u_char *id)
{
    uint32_t  i;

    i = sh->session_hash[ngx_http_presence_session_bucket(sh, id)];

    while (i != NGX_HTTP_PRESENCE_NIL) {
        if (ngx_memcmp(sh->sessions[i].id, id, 32) == 0) {
            return i;
        }

        i = sh->sessions[i].hash_next;
    }

    return NGX_HTTP_PRESENCE_NIL;
}


ngx_http_presence_user_t *
ngx_http_presence_find_user(ngx_http_presence_zone_t *zone, int64_t user_id)
{
    uint32_t                  i;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    i = sh->user_hash[ngx_http_presence_user_bucket(sh, user_id)];

    while (i != NGX_HTTP_PRESENCE_NIL) {
        if (sh->users[i].user_id == user_id) {
            return &sh->users[i];
        }

        i = sh->users[i].hash_next;
    }

    return NULL;
}


ngx_int_t
ngx_http_presence_expired(ngx_http_presence_session_t *s, time_t now,
    time_t timeout)
{
    return now - s->last_ms / 1000 > timeout || now - timeout > s->exp;
}


/* records activity: the only thing the request path does under the lock */

void
ngx_http_presence_touch(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log)
{
    ngx_http_presence_lock(zone, log);

    ngx_http_presence_advance(zone, act->now_ms / 1000);

    zone->sh->writer = ngx_pid;
    ngx_http_presence_record(zone, act, timeout, log, 0);
    zone->sh->writer = 0;

    ngx_http_presence_unlock(zone);
}


/*
 * Under the lock.  Local activity moves time forward and queues the
 * session for the flusher; activity pulled from another node (remote)
 * keeps its own time, is placed in order, and is never written back.
 */

void
ngx_http_presence_record(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log,
    ngx_uint_t remote)
{
    int64_t                       now_ms, old_ms;
    uint32_t                      i, u, b;
    ngx_uint_t                    clean;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;

    if (remote) {

        /*
         * another node's clock: what is ahead of ours counts as now, the
         * counting trees never hold a second the clock has not reached
         */

        now_ms = ngx_min(act->now_ms, sh->clock * 1000 + 999);

        if (now_ms / 1000 <= sh->clock - NGX_HTTP_PRESENCE_WINDOW) {
            return;
        }

    } else {
        /* time never goes back, whichever worker's clock is behind */
        now_ms = ngx_max(act->now_ms, sh->clock * 1000);
    }

    i = ngx_http_presence_find_session(sh, act->id);

    if (i != NGX_HTTP_PRESENCE_NIL) {
        s = &sh->sessions[i];
        user = &sh->users[s->user];

        if (remote && s->last_ms >= now_ms) {
            return;     /* ours is newer */
        }

        clean = (s->flushed_ms >= s->last_ms);
        old_ms = s->last_ms;

        /*
         * lists are kept in order to the second: within the same second
         * nothing is relinked, so a busy session costs a few writes
         */

        if (now_ms / 1000 > old_ms / 1000) {
            ngx_http_presence_bit_move(sh, sh->sessions_bit, old_ms / 1000,
                                       now_ms / 1000);

            if (sh->lru_head != i) {
                ngx_http_presence_lru_unlink(sh, i);
                ngx_http_presence_lru_head(sh, i);
            }
        }

        s->last_ms = ngx_max(s->last_ms, now_ms);
        s->exp = act->exp;

        ngx_http_presence_update(zone, s, act);

        if (remote && clean) {
            s->flushed_ms = s->last_ms;
        }

        goto user;
    }

    i = ngx_http_presence_new_session(zone, timeout, log);

    user = ngx_http_presence_find_user(zone, act->user_id);

    if (user == NULL) {
        u = ngx_http_presence_new_user(zone, act->user_id, log);
        user = &sh->users[u];
        user->last_ms = now_ms;

        ngx_http_presence_bit_move(sh, sh->users_bit, -1, now_ms / 1000);
        ngx_http_presence_q_place(sh, u);

    } else {
        u = user - sh->users;
    }

    s = &sh->sessions[i];

    ngx_memcpy(s->id, act->id, 32);
    s->user_id = act->user_id;
    s->created_ms = (remote && act->created_ms) ? act->created_ms : now_ms;
    s->last_ms = now_ms;
    s->flushed_ms = remote ? now_ms : 0;
    s->exp = act->exp;
    s->flags = 0;
    s->ua = 0;
    s->user = u;

    ngx_http_presence_update(zone, s, act);

    b = ngx_http_presence_session_bucket(sh, s->id);
    s->hash_next = sh->session_hash[b];
    sh->session_hash[b] = i;

    s->user_prev = NGX_HTTP_PRESENCE_NIL;
    s->user_next = user->sessions;

    if (user->sessions != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[user->sessions].user_prev = i;
    }

    user->sessions = i;
    user->nsessions++;

    ngx_http_presence_lru_head(sh, i);
    ngx_http_presence_bit_move(sh, sh->sessions_bit, -1, now_ms / 1000);

    sh->sessions_used++;

user:

    if (now_ms / 1000 > user->last_ms / 1000) {
        ngx_http_presence_bit_move(sh, sh->users_bit, user->last_ms / 1000,
                                   now_ms / 1000);
        user->last_ms = now_ms;
        ngx_http_presence_q_unlink(sh, user - sh->users);
        ngx_http_presence_q_place(sh, user - sh->users);

    } else if (now_ms > user->last_ms) {
        user->last_ms = now_ms;
    }

    if (!remote && s->last_ms > s->flushed_ms
        && !(s->flags & NGX_HTTP_PRESENCE_IN_RING))
    {
        ngx_http_presence_ring_add(sh, i);
    }
}


/* another node deactivated a session: it goes unless ours is newer */

void
ngx_http_presence_forget(ngx_http_presence_zone_t *zone, u_char *id,
    int64_t last_ms)
{
    uint32_t  i;

    i = ngx_http_presence_find_session(zone->sh, id);

    if (i != NGX_HTTP_PRESENCE_NIL
        && zone->sh->sessions[i].last_ms <= last_ms)
    {
        ngx_http_presence_free_session(zone, i);
        zone->sh->expired++;
    }
}


static void
ngx_http_presence_update(ngx_http_presence_zone_t *zone,
    ngx_http_presence_session_t *s, ngx_http_presence_activity_t *act)
{
    size_t                   len;
    u_char                  *ua;
    uint32_t                 off;

    ngx_memcpy(s->addr, act->addr, sizeof(s->addr));
    s->family = act->family;

    s->method_len = (uint8_t) act->method_len;
    ngx_memcpy(s->method, act->method, act->method_len);

    s->uri_len = (uint8_t) act->uri_len;
    ngx_memcpy(s->uri, act->uri, act->uri_len);

    if (s->ua) {
        ua = ngx_http_presence_ua(zone, s->ua, &len);

        if (len == act->ua_len && ngx_memcmp(ua, act->ua, len) == 0) {
            return;
        }
    }

    off = ngx_http_presence_ua_get(zone, act);

    if (s->ua) {
        ngx_http_presence_ua_put(zone, s->ua);
    }

    s->ua = off;
}


void
ngx_http_presence_ring_add(ngx_http_presence_shm_t *sh, uint32_t i)
{
    if (sh->ring_tail - sh->ring_head >= sh->nring) {

        /* it stays dirty: the flusher's sweep finds it */

        sh->ring_overflows++;
        sh->ring_overflow = 1;
        return;
    }

    sh->ring[sh->ring_tail++ % sh->nring] = i;
    sh->sessions[i].flags |= NGX_HTTP_PRESENCE_IN_RING;
}


/*
 * A free session record: an expired one from the tail first, else the
 * least recently active one is evicted.
 */

static uint32_t
ngx_http_presence_new_session(ngx_http_presence_zone_t *zone, time_t timeout,
    ngx_log_t *log)
{
    uint32_t                  i, n;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    for (n = 0; n < 2 && sh->lru_tail != NGX_HTTP_PRESENCE_NIL; n++) {
        i = sh->lru_tail;

        if (!ngx_http_presence_expired(&sh->sessions[i], sh->clock, timeout))
        {
            break;
        }

        ngx_http_presence_free_session(zone, i);
        sh->expired++;
    }

    if (sh->session_free == NGX_HTTP_PRESENCE_NIL) {
        ngx_http_presence_free_session(zone, sh->lru_tail);
        ngx_http_presence_evicted(zone, 1, log);
    }

    i = sh->session_free;
    sh->session_free = sh->sessions[i].hash_next;

    return i;
}


static uint32_t
ngx_http_presence_new_user(ngx_http_presence_zone_t *zone, int64_t user_id,
    ngx_log_t *log)
{
    uint32_t                   i, b;
    ngx_uint_t                 n;
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    sh = zone->sh;

    if (sh->user_free == NGX_HTTP_PRESENCE_NIL) {

        /* the least recently active user goes, with its sessions */

        user = &sh->users[sh->q_tail];
        n = user->nsessions;

        while (user->sessions != NGX_HTTP_PRESENCE_NIL) {
            ngx_http_presence_free_session(zone, user->sessions);
        }

        ngx_http_presence_evicted(zone, n, log);
    }

    i = sh->user_free;
    user = &sh->users[i];
    sh->user_free = user->hash_next;

    ngx_memzero(user, sizeof(ngx_http_presence_user_t));

    user->user_id = user_id;
    user->sessions = NGX_HTTP_PRESENCE_NIL;
    user->q_prev = NGX_HTTP_PRESENCE_NIL;
    user->q_next = NGX_HTTP_PRESENCE_NIL;

    b = ngx_http_presence_user_bucket(sh, user_id);
    user->hash_next = sh->user_hash[b];
    sh->user_hash[b] = i;

    sh->users_used++;

    return i;
}


static void
ngx_http_presence_evicted(ngx_http_presence_zone_t *zone, ngx_uint_t n,
    ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    sh->evictions += n;

    if (ngx_time() - sh->last_evict_log < 60) {
        return;
    }

    sh->last_evict_log = ngx_time();

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "presence zone \"%V\" is full (%uD sessions): evicting "
                  "the least recently active, %uL so far",
                  &zone->name, sh->nsessions, sh->evictions);
}


static void
ngx_http_presence_free_session(ngx_http_presence_zone_t *zone, uint32_t i)
{
    uint32_t                     *p;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;
    s = &sh->sessions[i];

    p = &sh->session_hash[ngx_http_presence_session_bucket(sh, s->id)];

    while (*p != i) {
        p = &sh->sessions[*p].hash_next;
    }

    *p = s->hash_next;

    ngx_http_presence_lru_unlink(sh, i);

    if (s->last_ms / 1000 > sh->clock - NGX_HTTP_PRESENCE_WINDOW) {
        ngx_http_presence_bit_add(sh->sessions_bit, s->last_ms / 1000, -1);
    }

    user = &sh->users[s->user];

    if (s->user_prev != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[s->user_prev].user_next = s->user_next;

    } else {
        user->sessions = s->user_next;
    }

    if (s->user_next != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[s->user_next].user_prev = s->user_prev;
    }

    if (s->ua) {
        ngx_http_presence_ua_put(zone, s->ua);
        s->ua = 0;
    }

    s->flags = 0;
    s->user = NGX_HTTP_PRESENCE_NIL;
    s->hash_next = sh->session_free;
    sh->session_free = i;
    sh->sessions_used--;

    if (--user->nsessions == 0) {
        ngx_http_presence_free_user(zone, user - sh->users);
    }
}


static void
ngx_http_presence_free_user(ngx_http_presence_zone_t *zone, uint32_t i)
{
    uint32_t                  *p;
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    sh = zone->sh;
    user = &sh->users[i];

    p = &sh->user_hash[ngx_http_presence_user_bucket(sh, user->user_id)];

    while (*p != i) {
        p = &sh->users[*p].hash_next;
    }

    *p = user->hash_next;

    ngx_http_presence_q_unlink(sh, i);

    if (user->last_ms / 1000 > sh->clock - NGX_HTTP_PRESENCE_WINDOW) {
        ngx_http_presence_bit_add(sh->users_bit, user->last_ms / 1000, -1);
    }

    if (user->profile) {
        ngx_slab_free_locked(zone->shpool,
                             ngx_http_presence_ptr(zone->shpool,
                                                   user->profile));
        user->profile = 0;
    }

    user->user_id = 0;
    user->hash_next = sh->user_free;
    sh->user_free = i;
    sh->users_used--;
}


/* expires up to "limit" sessions from the least recently active end */

ngx_uint_t
ngx_http_presence_expire(ngx_http_presence_zone_t *zone, time_t timeout,
    ngx_uint_t limit, ngx_uint_t *more)
{
    uint32_t                  i;
    ngx_uint_t                n;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    *more = 0;

    sh->writer = ngx_pid;

    for (n = 0; sh->lru_tail != NGX_HTTP_PRESENCE_NIL; n++) {
        i = sh->lru_tail;

        if (!ngx_http_presence_expired(&sh->sessions[i], sh->clock, timeout))
        {
            break;
        }

        if (n == limit) {
            *more = 1;
            break;
        }

        ngx_http_presence_free_session(zone, i);
    }

    sh->expired += n;
    sh->writer = 0;

    return n;
}


static void
ngx_http_presence_lru_head(ngx_http_presence_shm_t *sh, uint32_t i)
{
    ngx_http_presence_session_t  *s;

    s = &sh->sessions[i];

    s->lru_prev = NGX_HTTP_PRESENCE_NIL;
    s->lru_next = sh->lru_head;

    if (sh->lru_head != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[sh->lru_head].lru_prev = i;

    } else {
        sh->lru_tail = i;
    }

    sh->lru_head = i;
}


static void
ngx_http_presence_lru_unlink(ngx_http_presence_shm_t *sh, uint32_t i)
{
    ngx_http_presence_session_t  *s;

    s = &sh->sessions[i];

    if (s->lru_prev != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[s->lru_prev].lru_next = s->lru_next;

    } else {
        sh->lru_head = s->lru_next;
    }

    if (s->lru_next != NGX_HTTP_PRESENCE_NIL) {
        sh->sessions[s->lru_next].lru_prev = s->lru_prev;

    } else {
        sh->lru_tail = s->lru_prev;
    }
}


static void
ngx_http_presence_q_head(ngx_http_presence_shm_t *sh, uint32_t i)
{
    ngx_http_presence_user_t  *user;

    user = &sh->users[i];

    user->q_prev = NGX_HTTP_PRESENCE_NIL;
    user->q_next = sh->q_head;

    if (sh->q_head != NGX_HTTP_PRESENCE_NIL) {
        sh->users[sh->q_head].q_prev = i;

    } else {
        sh->q_tail = i;
    }

    sh->q_head = i;
}


/* into the users queue at its place: most recent first */

static void
ngx_http_presence_q_place(ngx_http_presence_shm_t *sh, uint32_t i)
{
    uint32_t                   j, prev;
    ngx_http_presence_user_t  *user;

    user = &sh->users[i];

    if (sh->q_head == NGX_HTTP_PRESENCE_NIL
        || sh->users[sh->q_head].last_ms / 1000 <= user->last_ms / 1000)
    {
        ngx_http_presence_q_head(sh, i);
        return;
    }

    prev = sh->q_head;

    for (j = sh->users[prev].q_next;
         j != NGX_HTTP_PRESENCE_NIL
         && sh->users[j].last_ms / 1000 > user->last_ms / 1000;
         j = sh->users[j].q_next)
    {
        prev = j;
    }

    user->q_prev = prev;
    user->q_next = j;
    sh->users[prev].q_next = i;

    if (j != NGX_HTTP_PRESENCE_NIL) {
        sh->users[j].q_prev = i;

    } else {
        sh->q_tail = i;
    }
}


static void
ngx_http_presence_q_unlink(ngx_http_presence_shm_t *sh, uint32_t i)
{
    ngx_http_presence_user_t  *user;

    user = &sh->users[i];

    if (user->q_prev != NGX_HTTP_PRESENCE_NIL) {
        sh->users[user->q_prev].q_next = user->q_next;

    } else {
        sh->q_head = user->q_next;
    }

    if (user->q_next != NGX_HTTP_PRESENCE_NIL) {
        sh->users[user->q_next].q_prev = user->q_prev;

    } else {
        sh->q_tail = user->q_prev;
    }
}


/* User-Agent strings, shared and counted */

static uint32_t
ngx_http_presence_ua_get(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act)
{
    uint32_t                 *b, off;
    ngx_http_presence_ua_t   *ua;
    ngx_http_presence_shm_t  *sh;

    if (act->ua_len == 0) {
        return 0;
    }

    sh = zone->sh;
    b = &sh->ua_hash[act->ua_hash % NGX_HTTP_PRESENCE_UA_BUCKETS];

    for (off = *b; off; off = ua->hash_next) {
        ua = ngx_http_presence_ptr(zone->shpool, off);

        if (ua->hash == act->ua_hash && ua->len == act->ua_len
            && ngx_memcmp(ua->data, act->ua, act->ua_len) == 0)
        {
            ua->refs++;
            return off;
        }
    }

    ua = ngx_slab_alloc_locked(zone->shpool,
                               offsetof(ngx_http_presence_ua_t, data)
                               + act->ua_len);
    if (ua == NULL) {
        sh->ua_failures++;
        return 0;
    }

    ua->refs = 1;
    ua->hash = act->ua_hash;
    ua->len = act->ua_len;
    ngx_memcpy(ua->data, act->ua, act->ua_len);

    ua->hash_next = *b;
    *b = ngx_http_presence_off(zone->shpool, ua);

    return *b;
}


static void
ngx_http_presence_ua_put(ngx_http_presence_zone_t *zone, uint32_t off)
{
    uint32_t                 *p;
    ngx_http_presence_ua_t   *ua, *prev;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    ua = ngx_http_presence_ptr(zone->shpool, off);

    if (--ua->refs) {
        return;
    }

    p = &sh->ua_hash[ua->hash % NGX_HTTP_PRESENCE_UA_BUCKETS];

    while (*p != off) {
        prev = ngx_http_presence_ptr(zone->shpool, *p);
        p = &prev->hash_next;
    }

    *p = ua->hash_next;

    ngx_slab_free_locked(zone->shpool, ua);
}


u_char *
ngx_http_presence_ua(ngx_http_presence_zone_t *zone, uint32_t off,
    size_t *len)
{
    ngx_http_presence_ua_t  *ua;

    if (off == 0) {
        *len = 0;
        return NULL;
    }

    ua = ngx_http_presence_ptr(zone->shpool, off);
    *len = ua->len;

    return ua->data;
}


/* profiles: three strings in one slab allocation */

u_char *
ngx_http_presence_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t field, ssize_t *len)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_presence_profile_t  *profile;

    if (user->profile == 0) {
        *len = -1;
        return NULL;
    }

    profile = ngx_http_presence_ptr(zone->shpool, user->profile);
    p = profile->data;

    for (i = 0; i < field; i++) {
        if (profile->len[i] > 0) {
            p += profile->len[i];
        }
    }

    *len = profile->len[field];

    return p;
}


void
ngx_http_presence_set_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_str_t *fields, time_t now)
{
    u_char                       *p;
    size_t                        size;
    ngx_uint_t                    i;
    ngx_http_presence_profile_t  *profile;

    if (user->profile) {
        ngx_slab_free_locked(zone->shpool,
                             ngx_http_presence_ptr(zone->shpool,
                                                   user->profile));
        user->profile = 0;
    }

    user->profile_at = (uint32_t) now;

    if (fields == NULL) {
        user->flags |= NGX_HTTP_PRESENCE_PROFILE_MISSING;
        return;
    }

    user->flags &= ~NGX_HTTP_PRESENCE_PROFILE_MISSING;

    size = offsetof(ngx_http_presence_profile_t, data);

    for (i = 0; i < 3; i++) {
        size += (fields[i].data ? fields[i].len : 0);
    }

    profile = ngx_slab_alloc_locked(zone->shpool, size);
    if (profile == NULL) {
        zone->sh->profile_failures++;
        return;
    }

    p = profile->data;

    for (i = 0; i < 3; i++) {
        if (fields[i].data == NULL) {
            profile->len[i] = -1;
            continue;
        }

        profile->len[i] = (int16_t) fields[i].len;
        p = ngx_cpymem(p, fields[i].data, fields[i].len);
    }

    user->profile = ngx_http_presence_off(zone->shpool, profile);
}
