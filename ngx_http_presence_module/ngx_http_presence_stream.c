
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * GET stream.  A subscriber is a request kept open (HTTP/1.1 chunked or
 * an HTTP/2 stream) with its watch list; the worker keeps its subscribers
 * in a queue and their watched ids in a red-black tree keyed by user id,
 * so that one event costs the subscribers that watch its user.  A timer
 * (every 100 ms while the worker has subscribers) reads the zone's change
 * log after the worker's cursor and fans the events out; once a second it
 * also sends the aggregate counts, heartbeats, and ends the streams whose
 * token expired.
 *
 * A subscriber is a state machine:
 *
 *     live <-> blocked (the client reads slower than events come)
 *     live, blocked -> closing (token expired, worker exiting, too slow)
 *
 * Output goes in buffers of its own memory, freed as soon as they are
 * sent: an idle subscriber holds its watch list and its cursor, nothing
 * more; one that does not read is dropped at presence_stream_backlog.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_stream.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_api.h"
#include "ngx_http_presence_json.h"


#define NGX_HTTP_PRESENCE_STREAM_POLL     100      /* ms */
#define NGX_HTTP_PRESENCE_STREAM_READ     512      /* events a hold */
#define NGX_HTTP_PRESENCE_STREAM_RETRY    "retry: 3000\n\n"


typedef enum {
    NGX_HTTP_PRESENCE_SUB_LIVE = 0,
    NGX_HTTP_PRESENCE_SUB_BLOCKED,
    NGX_HTTP_PRESENCE_SUB_CLOSING
} ngx_http_presence_sub_state_e;


typedef struct ngx_http_presence_sub_s  ngx_http_presence_sub_t;


typedef struct {
    ngx_rbtree_node_t                node;       /* key: the user id */
    ngx_http_presence_sub_t         *sub;
} ngx_http_presence_watch_t;


struct ngx_http_presence_sub_s {
    ngx_queue_t                      queue;      /* the worker's */
    ngx_queue_t                      dirty;      /* written this round */
    ngx_http_request_t              *r;
    ngx_http_presence_sub_state_e    state;
    uint64_t                         cursor;     /* the last event it has */
    time_t                           exp;        /* the token's, 0: none */
    time_t                           written;    /* for heartbeats */
    ngx_chain_t                     *out;        /* to the filters */
    ngx_chain_t                    **last;
    ngx_chain_t                     *busy;       /* given, not yet sent */
    size_t                           size;       /* accounted */
    ngx_http_presence_counts_t       counts;     /* aggregate: last sent */
    ngx_uint_t                       aggregate;
    ngx_http_presence_viewer_t       viewer;     /* quiet: it hides */
    ngx_uint_t                       nids;
    ngx_http_presence_watch_t        watches[1];  /* by user id */
};


/* the worker's subscribers */

typedef struct {
    ngx_rbtree_t                     watches;
    ngx_rbtree_node_t                sentinel;
    ngx_queue_t                      subs;
    ngx_queue_t                      dirty;
    ngx_uint_t                       nsubs;
    ngx_uint_t                       naggregate;
    uint64_t                         cursor;     /* the last event fanned */
    time_t                           second;     /* once-a-second work */
    time_t                           drop_logged;
    ngx_event_t                      poll;
    ngx_event_t                      kick;       /* flushes, posted */
    ngx_http_presence_zone_t        *zone;
    ngx_http_presence_main_conf_t   *pmcf;
    ngx_http_presence_event_t        events[NGX_HTTP_PRESENCE_STREAM_READ];
} ngx_http_presence_streams_t;


static ngx_int_t ngx_http_presence_stream_open(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx, ngx_uint_t watch);
static void ngx_http_presence_stream_init(ngx_http_presence_zone_t *zone,
    ngx_http_presence_main_conf_t *pmcf);
static ngx_int_t ngx_http_presence_stream_start(ngx_http_request_t *r,
    ngx_http_presence_sub_t *sub, ngx_http_presence_ctx_t *ctx);
static ngx_int_t ngx_http_presence_stream_header(ngx_http_request_t *r);
static ngx_int_t ngx_http_presence_stream_resume(ngx_http_request_t *r,
    ngx_http_presence_sub_t *sub);
static ngx_int_t ngx_http_presence_stream_snapshot(
    ngx_http_presence_sub_t *sub);
static void ngx_http_presence_stream_add(ngx_http_presence_sub_t *sub);
static void ngx_http_presence_stream_cleanup(void *data);
static void ngx_http_presence_stream_poll(ngx_event_t *ev);
static void ngx_http_presence_stream_kick(ngx_event_t *ev);
static void ngx_http_presence_stream_fanout(ngx_http_presence_event_t *ev,
    ngx_pool_t *pool);
static void ngx_http_presence_stream_second(time_t now);
static void ngx_http_presence_stream_lost(void);
static void ngx_http_presence_stream_event(ngx_http_presence_json_t *w,
    ngx_http_presence_event_t *ev);
static void ngx_http_presence_stream_counts(ngx_http_presence_json_t *w,
    const char *name, uint64_t id, ngx_http_presence_counts_t *c);
static ngx_int_t ngx_http_presence_stream_watches(
    ngx_http_presence_sub_t *sub, int64_t user_id);
static ngx_int_t ngx_http_presence_stream_write(ngx_http_presence_sub_t *sub,
    ngx_http_presence_json_t *w);
static void ngx_http_presence_stream_flush(ngx_http_presence_sub_t *sub);
static void ngx_http_presence_stream_writer(ngx_http_request_t *r);
static void ngx_http_presence_stream_sent(ngx_http_presence_sub_t *sub,
    ngx_int_t rc);
static void ngx_http_presence_stream_goto(ngx_http_presence_sub_t *sub,
    ngx_http_presence_sub_state_e state);
static void ngx_http_presence_stream_close(ngx_http_presence_sub_t *sub,
    ngx_uint_t graceful, const char *why);
static void ngx_http_presence_stream_remove(ngx_http_presence_sub_t *sub);
static int ngx_libc_cdecl ngx_http_presence_stream_cmp(const void *one,
    const void *two);


static const char  *ngx_http_presence_sub_states[] = {
    "live", "blocked", "closing"
};

static const char  *ngx_http_presence_status_names[] = {
    "offline", "recently_active", "online"
};


static ngx_http_presence_streams_t  ngx_http_presence_streams;


ngx_int_t
ngx_http_presence_stream(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx)
{
    return ngx_http_presence_stream_open(r, zone, pmcf, ctx, 1);
}


/* the dashboard's: the counts, whatever the query string says */

ngx_int_t
ngx_http_presence_stream_counts_only(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx)
{
    return ngx_http_presence_stream_open(r, zone, pmcf, ctx, 0);
}


static ngx_int_t
ngx_http_presence_stream_open(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx, ngx_uint_t watch)
{
    size_t                        size;
    int64_t                      *ids;
    ngx_int_t                     rc;
    ngx_uint_t                    i, n;
    ngx_pool_t                   *pool;
    ngx_pool_cleanup_t           *cln;
    ngx_http_presence_json_t      w;
    ngx_http_presence_sub_t      *sub;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    ids = ngx_alloc(pmcf->stream_max_ids * sizeof(int64_t),
                    r->connection->log);
    if (ids == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * parsed in a pool of its own: a subscriber keeps nothing of it (a 422
     * body goes out of it, and it goes with the request)
     */

    pool = ngx_create_pool(1024, r->connection->log);
    if (pool == NULL) {
        ngx_free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_presence_json_init(&w, pool, 512);

    rc = watch ? ngx_http_presence_api_ids(r, ids, pmcf->stream_max_ids, 1,
                                           &n, &w)
               : NGX_DONE;

    if (rc == NGX_DECLINED) {
        ngx_free(ids);

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            ngx_destroy_pool(pool);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = (ngx_pool_cleanup_pt) ngx_destroy_pool;
        cln->data = pool;

        return ngx_http_presence_api_send(r, NGX_HTTP_PRESENCE_422, &w);
    }

    ngx_destroy_pool(pool);

    if (rc == NGX_ERROR) {
        ngx_free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DONE) {
        n = 0;              /* the aggregate stream */
    }

    /* a watch list is a lookup: presence_lookup_limit */

    rc = n ? ngx_http_presence_api_lookup(r, zone, ctx->user_id, ids, n)
           : NGX_OK;

    if (rc != NGX_OK) {
        ngx_free(ids);
        return rc;
    }

    if (r->method == NGX_HTTP_HEAD) {
        ngx_free(ids);
        return ngx_http_presence_stream_header(r);
    }

    /*
     * in the request's pool: nginx has started a second block of it before
     * any module runs, and a watch list of up to about 60 ids fits in what
     * is left of it (a longer one is a large allocation of the pool)
     */

    size = sizeof(ngx_http_presence_sub_t)
           + (n ? n - 1 : 0) * sizeof(ngx_http_presence_watch_t);

    sub = ngx_pcalloc(r->pool, size);
    if (sub == NULL) {
        ngx_free(ids);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sub->r = r;
    sub->size = size;
    sub->nids = n;
    sub->aggregate = (n == 0);
    sub->exp = (ctx->exp > 0) ? (time_t) ctx->exp : 0;

    ngx_http_presence_api_viewer(r, zone, pmcf, ctx->user_id, &sub->viewer);
    sub->last = &sub->out;
    ngx_queue_init(&sub->dirty);

    for (i = 0; i < n; i++) {
        sub->watches[i].node.key = (ngx_rbtree_key_t) ids[i];
        sub->watches[i].sub = sub;
    }

    ngx_free(ids);

    /* by user id: the snapshot's order, and a resume's lookups */

    ngx_qsort(sub->watches, n, sizeof(ngx_http_presence_watch_t),
              ngx_http_presence_stream_cmp);

    if (st->zone == NULL) {
        ngx_http_presence_stream_init(zone, pmcf);
    }

    return ngx_http_presence_stream_start(r, sub, ctx);
}


/* the worker's first subscriber */

static void
ngx_http_presence_stream_init(ngx_http_presence_zone_t *zone,
    ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    st->zone = zone;
    st->pmcf = pmcf;

    ngx_rbtree_init(&st->watches, &st->sentinel, ngx_rbtree_insert_value);
    ngx_queue_init(&st->subs);
    ngx_queue_init(&st->dirty);

    st->poll.handler = ngx_http_presence_stream_poll;
    st->poll.data = st;
    st->poll.log = ngx_cycle->log;
    st->poll.cancelable = 1;

    st->kick.handler = ngx_http_presence_stream_kick;
    st->kick.data = st;
    st->kick.log = ngx_cycle->log;
}


/* headers, the subscriber in the worker's indexes, then what it missed */

static ngx_int_t
ngx_http_presence_stream_start(ngx_http_request_t *r,
    ngx_http_presence_sub_t *sub, ngx_http_presence_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_presence_stream_cleanup;
    cln->data = sub;

    rc = ngx_http_presence_stream_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        sub->state = NGX_HTTP_PRESENCE_SUB_CLOSING;
        return rc;
    }

    ctx->stream = sub;

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_presence_stream_writer;

    ngx_http_presence_stream_add(sub);

    if (ngx_http_presence_stream_resume(r, sub) != NGX_OK
        && ngx_http_presence_stream_snapshot(sub) != NGX_OK)
    {
        ngx_http_presence_stream_remove(sub);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the first output goes once the handler has returned */

    r->main->count++;

    ngx_post_event(&ngx_http_presence_streams.kick, &ngx_posted_events);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_presence_stream_header(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;

    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Accel-Buffering");
    ngx_str_set(&h->value, "no");

    return ngx_http_send_header(r);
}


/*
 * Last-Event-ID: the watched users' transitions after it, while the
 * change log still holds them (NGX_OK); otherwise a snapshot is due
 */

static ngx_int_t
ngx_http_presence_stream_resume(ngx_http_request_t *r,
    ngx_http_presence_sub_t *sub)
{
    off_t                         id;
    uint64_t                      cursor;
    ngx_int_t                     rc;
    ngx_uint_t                    i, n;
    ngx_pool_t                   *pool;
    ngx_list_part_t              *part;
    ngx_table_elt_t              *h;
    ngx_http_presence_json_t      w;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    if (sub->aggregate) {
        return NGX_DECLINED;
    }

    id = NGX_ERROR;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Last-Event-ID") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Last-Event-ID",
                               h[i].key.len) == 0)
        {
            id = ngx_atoof(h[i].value.data, h[i].value.len);
        }
    }

    if (id == NGX_ERROR) {
        return NGX_DECLINED;
    }

    cursor = (uint64_t) id;

    pool = ngx_create_pool(4096, r->connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ngx_http_presence_json_init(&w, pool, 1024);

    do {
        if (ngx_http_presence_store_events(st->zone, &cursor, st->events,
                                           NGX_HTTP_PRESENCE_STREAM_READ,
                                           &n, r->connection->log)
            != NGX_OK)
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "presence stream: Last-Event-ID %O is not held, "
                           "a snapshot", id);
            ngx_destroy_pool(pool);
            return NGX_DECLINED;
        }

        for (i = 0; i < n; i++) {
            if (ngx_http_presence_stream_watches(sub, st->events[i].user_id)
                == NGX_OK)
            {
                ngx_http_presence_stream_event(&w, &st->events[i]);
            }
        }

    } while (n == NGX_HTTP_PRESENCE_STREAM_READ);

    sub->cursor = cursor;

    rc = ngx_http_presence_stream_write(sub, &w);

    ngx_destroy_pool(pool);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "presence stream: resumed after %O up to %uL", id, cursor);

    return NGX_OK;
}


/* retry, then the watched users' statuses (or the counts) as of now */

static ngx_int_t
ngx_http_presence_stream_snapshot(ngx_http_presence_sub_t *sub)
{
    u_char                       *hidden;
    time_t                        now;
    int64_t                      *ids, *last;
    uint64_t                      head;
    ngx_int_t                     rc;
    ngx_uint_t                    i;
    ngx_pool_t                   *pool;
    ngx_http_request_t           *r;
    ngx_http_presence_json_t      w;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;
    r = sub->r;

    pool = ngx_create_pool(4096, r->connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ngx_http_presence_json_init(&w, pool, 512);
    ngx_http_presence_json_lit(&w, NGX_HTTP_PRESENCE_STREAM_RETRY);

    if (sub->aggregate) {
        ngx_http_presence_store_counts(st->zone, st->pmcf->thresholds,
                                       &sub->counts, r->connection->log);
        sub->cursor = ngx_http_presence_store_log_head(st->zone);

        ngx_http_presence_stream_counts(&w, "snapshot", sub->cursor,
                                        &sub->counts);

        rc = ngx_http_presence_stream_write(sub, &w);
        ngx_destroy_pool(pool);

        return rc;
    }

    ids = ngx_alloc(2 * sub->nids * sizeof(int64_t) + sub->nids,
                    r->connection->log);
    if (ids == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    last = ids + sub->nids;
    hidden = (u_char *) (last + sub->nids);

    for (i = 0; i < sub->nids; i++) {
        ids[i] = (int64_t) sub->watches[i].node.key;
    }

    now = ngx_http_presence_store_last_seen(st->zone, ids, sub->nids, last,
                                            hidden, &head,
                                            r->connection->log);
    sub->cursor = head;

    ngx_http_presence_json_lit(&w, "id: ");
    ngx_http_presence_json_int(&w, (int64_t) head);
    ngx_http_presence_json_lit(&w, "\nevent: snapshot\ndata: ");
    ngx_http_presence_api_statuses(&w, st->pmcf, &sub->viewer, ids, last,
                                   hidden, sub->nids, now);
    ngx_http_presence_json_lit(&w, "\n\n");

    ngx_free(ids);

    rc = ngx_http_presence_stream_write(sub, &w);

    ngx_destroy_pool(pool);

    return rc;
}


/* into the worker's indexes; the first subscriber starts the timer */

static void
ngx_http_presence_stream_add(ngx_http_presence_sub_t *sub)
{
    ngx_uint_t                    i;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    if (st->nsubs == 0) {
        st->cursor = ngx_http_presence_store_log_head(st->zone);
        st->second = ngx_time();
        ngx_add_timer(&st->poll, NGX_HTTP_PRESENCE_STREAM_POLL);
    }

    ngx_queue_insert_tail(&st->subs, &sub->queue);
    st->nsubs++;
    st->naggregate += sub->aggregate;

    for (i = 0; i < sub->nids; i++) {
        ngx_rbtree_insert(&st->watches, &sub->watches[i].node);
    }

    sub->written = ngx_time();

    ngx_http_presence_store_stream_stat(st->zone,
                                    NGX_HTTP_PRESENCE_STREAM_SUBSCRIBERS, 1);
    ngx_http_presence_store_stream_stat(st->zone,
                                    NGX_HTTP_PRESENCE_STREAM_BYTES,
                                    (ngx_atomic_int_t) sub->size);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, sub->r->connection->log, 0,
                   "presence stream: subscriber of %ui ids, %uz bytes, "
                   "%ui in this worker", sub->nids, sub->size, st->nsubs);
}


/* out of the worker's indexes: no event reaches it any more */

static void
ngx_http_presence_stream_remove(ngx_http_presence_sub_t *sub)
{
    ngx_uint_t                    i;
    ngx_http_presence_streams_t  *st;

    if (sub->state == NGX_HTTP_PRESENCE_SUB_CLOSING) {
        return;
    }

    st = &ngx_http_presence_streams;

    ngx_http_presence_stream_goto(sub, NGX_HTTP_PRESENCE_SUB_CLOSING);

    for (i = 0; i < sub->nids; i++) {
        ngx_rbtree_delete(&st->watches, &sub->watches[i].node);
    }

    ngx_queue_remove(&sub->queue);

    if (!ngx_queue_empty(&sub->dirty)) {
        ngx_queue_remove(&sub->dirty);
        ngx_queue_init(&sub->dirty);
    }

    st->nsubs--;
    st->naggregate -= sub->aggregate;

    ngx_http_presence_store_stream_stat(st->zone,
                                    NGX_HTTP_PRESENCE_STREAM_SUBSCRIBERS, -1);
    ngx_http_presence_store_stream_stat(st->zone,
                                    NGX_HTTP_PRESENCE_STREAM_BYTES,
                                    - (ngx_atomic_int_t) sub->size);

    if (st->nsubs == 0 && st->poll.timer_set) {
        ngx_del_timer(&st->poll);
    }
}


/* the request's pool goes: the subscriber's unsent output too */

static void
ngx_http_presence_stream_cleanup(void *data)
{
    ngx_http_presence_sub_t *sub = data;

    ngx_chain_t  *cl;

    ngx_http_presence_stream_remove(sub);

    for (cl = sub->busy; cl; cl = cl->next) {
        ngx_free(cl->buf);
    }

    for (cl = sub->out; cl; cl = cl->next) {
        ngx_free(cl->buf);
    }
}


/*
 * The worker's timer: closes everything when the worker exits (a reload
 * never waits for them: clients reconnect to the new workers with
 * Last-Event-ID), fans out the change log, and once a second the rest.
 */

static void
ngx_http_presence_stream_poll(ngx_event_t *ev)
{
    time_t                        now;
    ngx_int_t                     rc;
    ngx_uint_t                    i, n;
    ngx_pool_t                   *pool;
    ngx_http_presence_sub_t      *sub;
    ngx_http_presence_streams_t  *st;

    st = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        while (!ngx_queue_empty(&st->subs)) {
            sub = ngx_queue_data(ngx_queue_head(&st->subs),
                                 ngx_http_presence_sub_t, queue);
            ngx_http_presence_stream_close(sub, 1, "the worker is exiting");
        }

        return;
    }

    /* each event written once, in a pool of this round's */

    pool = NULL;

    do {
        rc = ngx_http_presence_store_events(st->zone, &st->cursor,
                                            st->events,
                                            NGX_HTTP_PRESENCE_STREAM_READ,
                                            &n, ev->log);
        if (rc != NGX_OK) {
            ngx_http_presence_stream_lost();
        }

        if (n && pool == NULL) {
            pool = ngx_create_pool(1024, ev->log);
        }

        for (i = 0; pool && i < n; i++) {
            ngx_http_presence_stream_fanout(&st->events[i], pool);
            ngx_reset_pool(pool);
        }

    } while (n == NGX_HTTP_PRESENCE_STREAM_READ);

    if (pool) {
        ngx_destroy_pool(pool);
    }

    now = ngx_time();

    if (now != st->second) {
        st->second = now;
        ngx_http_presence_stream_second(now);
    }

    ngx_http_presence_stream_kick(&st->kick);

    if (st->nsubs && !ev->timer_set) {
        ngx_add_timer(ev, NGX_HTTP_PRESENCE_STREAM_POLL);
    }
}


/* what the subscribers were written, to their connections */

static void
ngx_http_presence_stream_kick(ngx_event_t *ev)
{
    ngx_queue_t                  *q;
    ngx_http_presence_sub_t      *sub;
    ngx_http_presence_streams_t  *st;

    st = ev->data;

    while (!ngx_queue_empty(&st->dirty)) {
        q = ngx_queue_head(&st->dirty);
        sub = ngx_queue_data(q, ngx_http_presence_sub_t, dirty);

        ngx_queue_remove(q);
        ngx_queue_init(q);

        ngx_http_presence_stream_flush(sub);
    }
}


/* one event to the subscribers that watch its user, written once */

static void
ngx_http_presence_stream_fanout(ngx_http_presence_event_t *ev,
    ngx_pool_t *pool)
{
    ngx_uint_t                    sent;
    ngx_rbtree_key_t              key;
    ngx_rbtree_node_t            *node, *sentinel, *first;
    ngx_http_presence_json_t      w;
    ngx_http_presence_watch_t    *watch;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;
    key = (ngx_rbtree_key_t) ev->user_id;
    node = st->watches.root;
    sentinel = st->watches.sentinel;
    first = NULL;

    /* the leftmost node of the key */

    while (node != sentinel) {
        if (key < node->key) {
            node = node->left;

        } else if (key > node->key) {
            node = node->right;

        } else {
            first = node;
            node = node->left;
        }
    }

    if (first == NULL) {
        return;
    }

    ngx_http_presence_json_init(&w, pool, 256);
    ngx_http_presence_stream_event(&w, ev);

    sent = 0;

    for (node = first;
         node && node->key == key;
         node = ngx_rbtree_next(&st->watches, node))
    {
        watch = (ngx_http_presence_watch_t *) node;

        if (ev->seq <= watch->sub->cursor || watch->sub->viewer.no_last_seen)
        {
            continue;           /* a resume or a snapshot has it, or the */
        }                       /* caller hides: it sees no events */

        watch->sub->cursor = ev->seq;

        if (ngx_http_presence_stream_write(watch->sub, &w) == NGX_OK) {
            sent++;
        }
    }

    ngx_http_presence_store_stream_stat(st->zone,
                                        NGX_HTTP_PRESENCE_STREAM_EVENTS,
                                        (ngx_atomic_int_t) sent);
}


/* once a second: counts, heartbeats, expired tokens */

static void
ngx_http_presence_stream_second(time_t now)
{
    ngx_pool_t                   *pool;
    ngx_queue_t                  *q, *next;
    ngx_http_presence_sub_t      *sub;
    ngx_http_presence_json_t      w;
    ngx_http_presence_counts_t    c;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&c, sizeof(ngx_http_presence_counts_t));

    if (st->naggregate) {
        ngx_http_presence_store_counts(st->zone, st->pmcf->thresholds, &c,
                                       ngx_cycle->log);
    }

    for (q = ngx_queue_head(&st->subs);
         q != ngx_queue_sentinel(&st->subs);
         q = next)
    {
        next = ngx_queue_next(q);
        sub = ngx_queue_data(q, ngx_http_presence_sub_t, queue);

        if (sub->exp && now >= sub->exp) {
            ngx_http_presence_json_init(&w, pool, 128);
            ngx_http_presence_json_lit(&w, "event: expired\ndata: "
                                       "{\"detail\":\"Token expired\"}\n\n");
            (void) ngx_http_presence_stream_write(sub, &w);
            ngx_http_presence_stream_close(sub, 1, "the token expired");
            continue;
        }

        if (sub->aggregate
            && (c.users[0] != sub->counts.users[0]
                || c.users[1] != sub->counts.users[1]
                || c.users[2] != sub->counts.users[2]
                || c.sessions != sub->counts.sessions))
        {
            sub->counts = c;
            ngx_http_presence_json_init(&w, pool, 256);
            ngx_http_presence_stream_counts(&w, "counts", st->cursor, &c);
            (void) ngx_http_presence_stream_write(sub, &w);
            continue;
        }

        if ((ngx_msec_t) (now - sub->written) * 1000
            >= st->pmcf->stream_heartbeat)
        {
            ngx_http_presence_json_init(&w, pool, 32);
            ngx_http_presence_json_lit(&w, ": heartbeat\n\n");
            (void) ngx_http_presence_stream_write(sub, &w);
        }
    }

    ngx_destroy_pool(pool);
}


/* the change log moved on past the worker's cursor: snapshots again */

static void
ngx_http_presence_stream_lost(void)
{
    ngx_queue_t                  *q, *next;
    ngx_http_presence_sub_t      *sub;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "presence stream: the change log moved on faster than "
                  "this worker read it, %ui subscribers get a snapshot",
                  st->nsubs);

    for (q = ngx_queue_head(&st->subs);
         q != ngx_queue_sentinel(&st->subs);
         q = next)
    {
        next = ngx_queue_next(q);
        sub = ngx_queue_data(q, ngx_http_presence_sub_t, queue);

        if (!sub->aggregate
            && ngx_http_presence_stream_snapshot(sub) != NGX_OK)
        {
            ngx_http_presence_stream_close(sub, 0, "no memory");
        }
    }
}


static void
ngx_http_presence_stream_event(ngx_http_presence_json_t *w,
    ngx_http_presence_event_t *ev)
{
    ngx_http_presence_json_lit(w, "id: ");
    ngx_http_presence_json_int(w, (int64_t) ev->seq);
    ngx_http_presence_json_lit(w, "\nevent: presence\ndata: {\"user_id\":");
    ngx_http_presence_json_int(w, ev->user_id);
    ngx_http_presence_json_lit(w, ",\"status\":\"");
    ngx_http_presence_json_raw(w, ngx_http_presence_status_names[ev->status],
                       ngx_strlen(ngx_http_presence_status_names[ev->status]));
    ngx_http_presence_json_lit(w, "\",\"last_seen\":");

    if (ev->last_ms < 0) {
        ngx_http_presence_json_lit(w, "null");      /* the user hides */

    } else {
        ngx_http_presence_json_time(w, ev->last_ms);
    }

    ngx_http_presence_json_lit(w, ",\"timestamp\":");
    ngx_http_presence_json_time(w, ev->at_ms);
    ngx_http_presence_json_lit(w, "}\n\n");
}


static void
ngx_http_presence_stream_counts(ngx_http_presence_json_t *w,
    const char *name, uint64_t id, ngx_http_presence_counts_t *c)
{
    ngx_http_presence_json_lit(w, "id: ");
    ngx_http_presence_json_int(w, (int64_t) id);
    ngx_http_presence_json_lit(w, "\nevent: ");
    ngx_http_presence_json_raw(w, name, ngx_strlen(name));
    ngx_http_presence_json_lit(w, "\ndata: {\"very_active_users\":");
    ngx_http_presence_json_int(w, c->users[NGX_HTTP_PRESENCE_VERY_ACTIVE]);
    ngx_http_presence_json_lit(w, ",\"online_users\":");
    ngx_http_presence_json_int(w, c->users[NGX_HTTP_PRESENCE_ONLINE]);
    ngx_http_presence_json_lit(w, ",\"recently_active_users\":");
    ngx_http_presence_json_int(w, c->users[NGX_HTTP_PRESENCE_RECENT]);
    ngx_http_presence_json_lit(w, ",\"total_active_sessions\":");
    ngx_http_presence_json_int(w, c->sessions);
    ngx_http_presence_json_lit(w, ",\"timestamp\":");
    ngx_http_presence_json_now(w);
    ngx_http_presence_json_lit(w, "}\n\n");
}


/* NGX_OK when the subscriber watches user_id (a binary search) */

static ngx_int_t
ngx_http_presence_stream_watches(ngx_http_presence_sub_t *sub,
    int64_t user_id)
{
    ngx_uint_t        lo, hi, mid;
    ngx_rbtree_key_t  key;

    key = (ngx_rbtree_key_t) user_id;
    lo = 0;
    hi = sub->nids;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (sub->watches[mid].node.key == key) {
            return NGX_OK;
        }

        if (sub->watches[mid].node.key < key) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NGX_DECLINED;
}


/*
 * What "w" holds, copied into one buffer of the subscriber's own memory,
 * queued for the next flush
 */

static ngx_int_t
ngx_http_presence_stream_write(ngx_http_presence_sub_t *sub,
    ngx_http_presence_json_t *w)
{
    u_char                       *p;
    ngx_buf_t                    *b;
    ngx_chain_t                  *cl, *in;
    ngx_http_presence_streams_t  *st;

    if (w->error) {
        return NGX_ERROR;
    }

    if (w->len == 0) {
        return NGX_OK;
    }

    b = ngx_alloc(sizeof(ngx_buf_t) + w->len, sub->r->connection->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    cl = ngx_alloc_chain_link(sub->r->pool);
    if (cl == NULL) {
        ngx_free(b);
        return NGX_ERROR;
    }

    ngx_memzero(b, sizeof(ngx_buf_t));

    p = (u_char *) (b + 1);
    b->start = p;
    b->pos = p;
    b->memory = 1;

    for (in = w->out; in; in = in->next) {
        p = ngx_cpymem(p, in->buf->pos, in->buf->last - in->buf->pos);
    }

    b->last = p;
    b->end = p;

    cl->buf = b;
    cl->next = NULL;
    *sub->last = cl;
    sub->last = &cl->next;

    sub->written = ngx_time();

    st = &ngx_http_presence_streams;

    if (ngx_queue_empty(&sub->dirty)
        && sub->state != NGX_HTTP_PRESENCE_SUB_CLOSING)
    {
        ngx_queue_insert_tail(&st->dirty, &sub->dirty);
    }

    return NGX_OK;
}


/* what is queued, to the output filters at once */

static void
ngx_http_presence_stream_flush(ngx_http_presence_sub_t *sub)
{
    ngx_int_t     rc;
    ngx_chain_t  *cl, **ll;

    if (sub->out == NULL) {
        return;
    }

    for (cl = sub->out; cl->next; cl = cl->next) { /* void */ }

    cl->buf->flush = 1;

    rc = ngx_http_output_filter(sub->r, sub->out);

    /* ours until they are sent */

    for (ll = &sub->busy; *ll; ll = &(*ll)->next) { /* void */ }

    *ll = sub->out;
    sub->out = NULL;
    sub->last = &sub->out;

    ngx_http_presence_stream_sent(sub, rc);
}


static void
ngx_http_presence_stream_writer(ngx_http_request_t *r)
{
    ngx_connection_t         *c;
    ngx_http_presence_ctx_t  *ctx;
    ngx_http_presence_sub_t  *sub;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_presence_module);
    sub = ctx->stream;

    if (c->write->timedout) {
        c->timedout = 1;
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "presence stream: client timed out, subscriber "
                      "state \"%s\"", ngx_http_presence_sub_states[sub->state]);
        ngx_http_presence_stream_close(sub, 0, "the client timed out");
        return;
    }

    ngx_http_presence_stream_sent(sub, ngx_http_output_filter(r, NULL));
}


/*
 * After a write: sent buffers are freed, the backlog measured, a client
 * that reads too slowly is dropped, one that cannot take more now waits
 * for the write event (with send_timeout)
 */

static void
ngx_http_presence_stream_sent(ngx_http_presence_sub_t *sub, ngx_int_t rc)
{
    size_t                        backlog;
    ngx_chain_t                  *cl;
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_presence_streams_t  *st;

    st = &ngx_http_presence_streams;
    r = sub->r;
    c = r->connection;

    while (sub->busy && ngx_buf_size(sub->busy->buf) == 0) {
        cl = sub->busy;
        sub->busy = cl->next;

        ngx_free(cl->buf);
        ngx_free_chain(r->pool, cl);
    }

    if (sub->state == NGX_HTTP_PRESENCE_SUB_CLOSING) {
        return;                 /* its last words */
    }

    if (rc == NGX_ERROR) {
        ngx_http_presence_stream_close(sub, 0, "the connection failed");
        return;
    }

    backlog = 0;

    for (cl = sub->busy; cl; cl = cl->next) {
        backlog += ngx_buf_size(cl->buf);
    }

    if (backlog > st->pmcf->stream_backlog) {
        ngx_http_presence_store_stream_stat(st->zone,
                                            NGX_HTTP_PRESENCE_STREAM_DROPS, 1);

        if (st->drop_logged != ngx_time()) {
            st->drop_logged = ngx_time();
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "presence stream: a client reading too slowly "
                          "is dropped, %uz bytes not sent",
                          backlog);
        }

        ngx_http_presence_stream_close(sub, 0, "the client is too slow");
        return;
    }

    if (backlog == 0 && !c->buffered) {
        if (c->write->timer_set) {
            ngx_del_timer(c->write);
        }

        ngx_http_presence_stream_goto(sub, NGX_HTTP_PRESENCE_SUB_LIVE);
        return;
    }

    ngx_http_presence_stream_goto(sub, NGX_HTTP_PRESENCE_SUB_BLOCKED);

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!c->write->timer_set) {
        ngx_add_timer(c->write, clcf->send_timeout);
    }

    if (ngx_handle_write_event(c->write, clcf->send_lowat) != NGX_OK) {
        ngx_http_presence_stream_close(sub, 0, "no write event");
    }
}


static void
ngx_http_presence_stream_goto(ngx_http_presence_sub_t *sub,
    ngx_http_presence_sub_state_e state)
{
    if (sub->state == state) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sub->r->connection->log, 0,
                   "presence stream: %s -> %s",
                   ngx_http_presence_sub_states[sub->state],
                   ngx_http_presence_sub_states[state]);

    sub->state = state;
}


/*
 * Ends a stream: gracefully (what is queued is sent, then the last chunk)
 * or at once; either way no event reaches it any more.
 */

static void
ngx_http_presence_stream_close(ngx_http_presence_sub_t *sub,
    ngx_uint_t graceful, const char *why)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = sub->r;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "presence stream: closing in state \"%s\": %s",
                   ngx_http_presence_sub_states[sub->state], why);

    if (sub->state == NGX_HTTP_PRESENCE_SUB_CLOSING) {
        return;
    }

    ngx_http_presence_stream_remove(sub);

    if (graceful) {
        ngx_http_presence_stream_flush(sub);

    } else {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    rc = ngx_http_send_special(r, NGX_HTTP_LAST);

    ngx_http_finalize_request(r, rc);
}


static int ngx_libc_cdecl
ngx_http_presence_stream_cmp(const void *one, const void *two)
{
    const ngx_http_presence_watch_t  *a = one;
    const ngx_http_presence_watch_t  *b = two;

    return (a->node.key > b->node.key) - (a->node.key < b->node.key);
}
