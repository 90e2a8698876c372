
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

#include <math.h>

#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_args.h"


#define NGX_HTTP_PRESENCE_ZONE_MAGIC    0x50524553  /* "PRES" */
#define NGX_HTTP_PRESENCE_ZONE_VERSION  7

#define NGX_HTTP_PRESENCE_NIL           0xffffffff

/*
 * today's distinct users: a HyperLogLog sketch of 4 096 registers, a
 * standard error of 1.04 / sqrt(4096) = 1.6 %, exact-ish below 10 000 by
 * linear counting; each user is added once an hour
 */
#define NGX_HTTP_PRESENCE_HLL_BITS       12
#define NGX_HTTP_PRESENCE_HLL            (1 << NGX_HTTP_PRESENCE_HLL_BITS)


const uint32_t  ngx_http_presence_duration_bounds[] = {
    1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800,
    86400, 0xffffffff
};


/* User-Agent buckets: one for four sessions, at least this many */
#define NGX_HTTP_PRESENCE_UA_BUCKETS    4096

#define NGX_HTTP_PRESENCE_IN_RING       0x01

/* a session's device class: bits 4-6 of its flags */
#define NGX_HTTP_PRESENCE_DEVICE_SHIFT  4
#define NGX_HTTP_PRESENCE_DEVICE_MASK   0x70

#define ngx_http_presence_session_device(s)                                   \
    (((s)->flags & NGX_HTTP_PRESENCE_DEVICE_MASK)                             \
     >> NGX_HTTP_PRESENCE_DEVICE_SHIFT)

/*
 * the hour (hours since the epoch, modulo 2^12) and the day (modulo 2^8)
 * a user was last counted in today's numbers: the upper bits of its flags
 */
#define NGX_HTTP_PRESENCE_HOUR_SHIFT    8
#define NGX_HTTP_PRESENCE_HOUR_MASK     0x000fff00
#define NGX_HTTP_PRESENCE_HOUR_BITS     0xfff
#define NGX_HTTP_PRESENCE_DAY_SHIFT     24
#define NGX_HTTP_PRESENCE_DAY_MASK      0xff000000

#define NGX_HTTP_PRESENCE_PROFILE_MISSING  0x01   /* no row in "users" */
#define NGX_HTTP_PRESENCE_PROFILE_INACTIVE 0x02   /* users.is_active false */
#define NGX_HTTP_PRESENCE_PRIVACY_KNOWN    0x40   /* its setting was read */
#define NGX_HTTP_PRESENCE_INVISIBLE        0x80   /* it hides from others */

/* a user's run in the index of its crowded second: bits 20-23 */
#define NGX_HTTP_PRESENCE_RUN_SHIFT     20
#define NGX_HTTP_PRESENCE_RUN_MASK      0x00f00000

#define ngx_http_presence_user_run(user)                                     \
    (((user)->flags & NGX_HTTP_PRESENCE_RUN_MASK)                            \
     >> NGX_HTTP_PRESENCE_RUN_SHIFT)

/* a user's last status in the change log: bits 4-5 of its flags */
#define NGX_HTTP_PRESENCE_STATUS_SHIFT  4
#define NGX_HTTP_PRESENCE_STATUS_MASK   0x30

#define ngx_http_presence_user_status(user)                                  \
    (((user)->flags & NGX_HTTP_PRESENCE_STATUS_MASK)                         \
     >> NGX_HTTP_PRESENCE_STATUS_SHIFT)


/*
 * A session: fixed size, preallocated, linked by array indices.  Its id is
 * the raw SHA-256 (of the token, or of the user id and the "sid").
 */

typedef struct {
    u_char                          id[NGX_HTTP_PRESENCE_ID_LEN];
    int64_t                         user_id;
    int64_t                         created_ms;
    int64_t                         last_ms;
    int64_t                         flushed_ms;  /* written to PostgreSQL */
    int64_t                         exp;         /* token exp, seconds */
    uint32_t                        hash_next;
    uint32_t                        lru_prev;    /* all sessions, by */
    uint32_t                        lru_next;    /* last activity */
    uint32_t                        user_prev;   /* its user's sessions */
    uint32_t                        user_next;
    uint32_t                        user;
    uint32_t                        ua;          /* offset / 8, 0: none */
    u_char                          addr[16];
    uint8_t                         family;      /* AF_INET, AF_INET6, 0 */
    uint8_t                         flags;       /* IN_RING, the device */
    uint8_t                         method_len;
    uint8_t                         uri_len;
    u_char                          method[NGX_HTTP_PRESENCE_METHOD_MAX];
    u_char                          uri[NGX_HTTP_PRESENCE_URI_MAX];
} ngx_http_presence_session_t;


typedef struct {
    int64_t                         user_id;     /* 0: free */
    int64_t                         last_ms;
    uint32_t                        hash_next;
    uint32_t                        q_prev;      /* all users, by */
    uint32_t                        q_next;      /* last activity */
    uint32_t                        sessions;    /* head of its sessions */
    uint32_t                        nsessions;
    uint32_t                        profile;     /* offset / 8, 0: none */
    uint32_t                        profile_at;  /* seconds */
    uint32_t                        flags;       /* and the hour and day */
} ngx_http_presence_user_t;                      /* it was counted in */


/* a user's profile from the "users" table; NULL fields have length -1 */

typedef struct {
    int16_t                         len[NGX_HTTP_PRESENCE_PROFILE_FIELDS];
    u_char                          data[1];
} ngx_http_presence_profile_t;


/* a User-Agent string, shared by the sessions that have it */

typedef struct {
    uint32_t                        hash_next;   /* offset / 8 */
    uint32_t                        refs;
    uint32_t                        hash;
    uint32_t                        len;
    u_char                          data[1];
} ngx_http_presence_ua_t;


/* presence_lookup_limit: what one caller asked about in this period */

typedef struct {
    ngx_rbtree_node_t               node;        /* key: the caller */
    ngx_queue_t                     queue;       /* least recent last */
    time_t                          period;      /* its start */
    ngx_uint_t                      n;
    ngx_uint_t                      pos;         /* scratch */
    int64_t                         ids[1];      /* sorted */
} ngx_http_presence_lookup_t;


#define NGX_HTTP_PRESENCE_SLOTS  64


/*
 * A crowded second's index: its users, in the queue's order, in runs of
 * about equal length, each run's first user, its length and how many of
 * its users others may see.  A user's run is in its flags while the
 * second is indexed.
 */

#define NGX_HTTP_PRESENCE_RUNS   16

typedef struct {
    int64_t                         second;
    uint32_t                        built;       /* 0: free */
    uint32_t                        first[NGX_HTTP_PRESENCE_RUNS];
    uint32_t                        n[NGX_HTTP_PRESENCE_RUNS];
    uint32_t                        visible[NGX_HTTP_PRESENCE_RUNS];
} ngx_http_presence_crowd_t;


typedef struct {
    ngx_atomic_t                    requests[NGX_HTTP_PRESENCE_JWT_STATUSES
                                             + 1];  /* by JWT status */
    ngx_atomic_t                    cache_hits;
    ngx_atomic_t                    cache_misses;
    ngx_atomic_t                    pad;         /* 64 bytes */
} ngx_http_presence_counters_t;


#define ngx_http_presence_counter(sh)                                         \
    (&(sh)->counters[(ngx_worker == NGX_INVALID_ARRAY_INDEX ? 0 : ngx_worker) \
                     % NGX_HTTP_PRESENCE_SLOTS])


/* the header at the start of the shared zone */

typedef struct {
    uint32_t                        magic;
    uint32_t                        version;
    uint32_t                        session_size;
    uint32_t                        user_size;
    uint64_t                        size;

    uint32_t                        nsessions;   /* capacities */
    uint32_t                        nusers;
    uint32_t                        nring;

    ngx_pid_t                       writer;      /* mid-update, or 0 */

    uint32_t                        sessions_used;
    uint32_t                        users_used;
    uint32_t                        session_free;
    uint32_t                        user_free;
    uint32_t                        lru_head;    /* most recent first */
    uint32_t                        lru_tail;
    uint32_t                        q_head;
    uint32_t                        q_tail;
    uint32_t                        nslots;      /* entry points into the */
    uint32_t                        slot_step;   /* users queue: seconds */
    uint32_t                        ncrowds;     /* crowded seconds' */
                                                 /* indexes, a power of 2 */

    uint64_t                        ring_head;   /* ring[head % nring] */
    uint64_t                        ring_tail;
    ngx_atomic_t                    ring_overflow;  /* a sweep is due */

    int64_t                         clock;       /* seconds, monotonic */
    int64_t                         peak_day;    /* days since the epoch */
    uint32_t                        peak[NGX_HTTP_PRESENCE_HOURS];
    time_t                          next_sweep;
    time_t                          last_evict_log;

    /* the flusher's lease */
    ngx_pid_t                       lease_pid;
    uint64_t                        lease_gen;
    ngx_msec_t                      lease_beat;
    ngx_uint_t                      cleanup_requested;
    uint32_t                        sweep_cursor;
    uint64_t                        sweep_mark;
    int64_t                         pull_watermark;  /* DB clock, us */
    int64_t                         pull_watermark_id;  /* and row id */
    uint64_t                        pulled_rows;
    uint64_t                        pull_skipped;
    time_t                          profiles_since;  /* read before: stale */
    uint32_t                        profiles_cursor; /* the sweep's, in */
                                                     /* the users array */

    /* the warm start: sessions loaded from PostgreSQL into a new zone */
    ngx_uint_t                      warm;        /* WARM_PENDING ... */
    int64_t                         warm_us;     /* the last row's */
    int64_t                         warm_id;     /* last_activity and id */
    uint64_t                        warm_total;
    uint64_t                        warm_loaded;
    int64_t                         warm_start;  /* ms */
    int64_t                         warm_msec;   /* how long it took */

    /* counters */
    uint64_t                        flush_batches;
    uint64_t                        flush_statements;
    uint64_t                        flush_rows;
    uint64_t                        flush_errors;
    uint64_t                        flush_missing_users;
    uint64_t                        flush_deactivated;
    time_t                          flush_last_ok;
    ngx_uint_t                      db_connected;
    uint64_t                        profile_failures;
    uint64_t                        evictions;
    uint64_t                        cap_evictions;
    uint64_t                        expired;
    uint64_t                        ring_overflows;
    uint64_t                        ua_failures;
    uint64_t                        resets;
    uint64_t                        page_steps;  /* users stepped over */
    uint64_t                        crowd_builds;

    /*
     * the change log: a ring of status transitions, log[seq % nlog]; seq
     * goes on from log_base (the zone's creation time, so that an event id
     * of an earlier zone is never taken for one of this zone's)
     */
    ngx_http_presence_event_t      *log;
    uint64_t                        nlog;
    uint64_t                        log_base;
    ngx_atomic_t                    log_head;    /* the last seq written */
    int64_t                         aged[2];     /* the clock at the last */
                                                 /* ageing, per threshold */
    ngx_atomic_t                    stream[NGX_HTTP_PRESENCE_STREAM_STATS];

    /* presence_lookup_limit's callers */
    ngx_rbtree_t                    lookups;
    ngx_rbtree_node_t               lookup_sentinel;
    ngx_queue_t                     lookup_lru;
    uint64_t                        lookup_callers;
    uint64_t                        lookup_limited;
    uint64_t                        lookup_evictions;

    /* analytics: today (UTC), the day before until written, history */
    ngx_http_presence_day_t         today;
    ngx_http_presence_day_t         prev;
    ngx_uint_t                      prev_pending;
    ngx_uint_t                      history_due;
    ngx_uint_t                      history_read;
    uint32_t                        hour_users[NGX_HTTP_PRESENCE_HOURS];
    uint8_t                         today_users[NGX_HTTP_PRESENCE_HLL];
    uint64_t                        durations[NGX_HTTP_PRESENCE_DURATIONS];
    uint64_t                        all_durations[NGX_HTTP_PRESENCE_DURATIONS];
    uint64_t                        all_count;
    uint64_t                        all_ms;
    ngx_http_presence_day_t        *history;     /* from presence_daily: */
    ngx_uint_t                      nhistory;    /* in the strings' part */

    /* the request path's counters: one line per worker, no sharing */
    ngx_http_presence_counters_t    counters[NGX_HTTP_PRESENCE_SLOTS];

    uint32_t                       *session_hash;
    uint32_t                       *user_hash;
    uint32_t                       *ring;
    uint32_t                       *q_slots;     /* first user of a slot */
    ngx_http_presence_crowd_t      *crowds;      /* by second % ncrowds */
    int32_t                        *users_bit;   /* Fenwick trees over */
    int32_t                        *sessions_bit; /* the window */
    int32_t                        *visible_bit; /* users others may see */
    ngx_http_presence_session_t    *sessions;
    ngx_http_presence_user_t       *users;
    uint32_t                       *ua_hash;     /* User-Agent strings */
    uint32_t                        nua;
} ngx_http_presence_shm_t;


struct ngx_http_presence_zone_s {
    ngx_http_presence_shm_t        *sh;
    ngx_slab_pool_t                *shpool;
    ngx_str_t                       name;
    ngx_uint_t                      ring;        /* ring=N, 0: default */
    ngx_uint_t                      max_sessions;  /* a user's, 0: any */
    time_t                          online;      /* the thresholds that */
    time_t                          recent;      /* statuses follow */
    ngx_uint_t                      privacy;     /* presence_privacy_column */
    ngx_uint_t                      hide_counts; /* presence_privacy_counts */
    time_t                          precision;   /* last seen, for others */
    ngx_uint_t                      lookup_limit;
    time_t                          lookup_period;
    ngx_uint_t                      descending;  /* merging most recent */
};                                               /* first: the warm start */


#define NGX_HTTP_PRESENCE_MIN_SESSIONS  16
#define NGX_HTTP_PRESENCE_RING_MIN      64

/* a wall-clock step: the zone's clock is this far from the wall's */
#define NGX_HTTP_PRESENCE_CLOCK_STEP    60

/* users stepped over in one hold of the lock when a page starts deep */
#define NGX_HTTP_PRESENCE_WALK          1024

/*
 * a second with this many users gets an index when a page starts in it
 * (up to CROWD_MAX users: the index is built in one hold of the lock)
 */
#define NGX_HTTP_PRESENCE_CROWD_MIN     256
#define NGX_HTTP_PRESENCE_CROWD_MAX     (32 * NGX_HTTP_PRESENCE_WALK)
#define NGX_HTTP_PRESENCE_CROWDS_MAX    1024

#define NGX_HTTP_PRESENCE_ZONE_MIN      (1024 * 1024)
#define NGX_HTTP_PRESENCE_ZONE_MAX      ((uint64_t) 32 * 1024 * 1024 * 1024)

/* the change log's bounds, in events */
#define NGX_HTTP_PRESENCE_LOG_MIN       64
#define NGX_HTTP_PRESENCE_LOG_MAX       (1024 * 1024)

/* users looked at by the profiles' sweep in one hold of the lock */
#define NGX_HTTP_PRESENCE_PROFILE_CHUNK 4096

/* rows of the warm start merged in one hold of the lock */
#define NGX_HTTP_PRESENCE_WARM_SLICE    2000

/* the counting trees */
#define NGX_HTTP_PRESENCE_TREE_USERS     0
#define NGX_HTTP_PRESENCE_TREE_SESSIONS  1
#define NGX_HTTP_PRESENCE_TREE_VISIBLE   2   /* users others may see */
#define NGX_HTTP_PRESENCE_TREES          3

/* online sessions looked at for their device classes */
#define NGX_HTTP_PRESENCE_DEVICE_SCAN    100000

/* sessions freed in one hold of the lock by expiry */
#define NGX_HTTP_PRESENCE_EXPIRE_SLICE  1000

/* session records looked at per flush by the sweep after an overflow */
#define NGX_HTTP_PRESENCE_SWEEP_STEP    50000


typedef char ngx_http_presence_session_size_check[
    sizeof(ngx_http_presence_session_t) <= 192 ? 1 : -1];

typedef char ngx_http_presence_user_size_check[
    sizeof(ngx_http_presence_user_t) <= 64 ? 1 : -1];


static ngx_int_t ngx_http_presence_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_presence_lock(ngx_http_presence_zone_t *zone,
    ngx_log_t *log);
static void ngx_http_presence_unlock(ngx_http_presence_zone_t *zone);
static void ngx_http_presence_advance(ngx_http_presence_zone_t *zone,
    time_t now);
static void ngx_http_presence_rebase(ngx_http_presence_zone_t *zone,
    time_t now);
static ngx_uint_t ngx_http_presence_count(ngx_http_presence_zone_t *zone,
    time_t seconds, ngx_uint_t tree);
static void ngx_http_presence_sample_peak(ngx_http_presence_zone_t *zone,
    time_t online);
static ngx_http_presence_user_t *ngx_http_presence_find_user(
    ngx_http_presence_zone_t *zone, int64_t user_id);
static ngx_int_t ngx_http_presence_expired(ngx_http_presence_session_t *s,
    time_t now, time_t timeout);
static ngx_int_t ngx_http_presence_record(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log,
    ngx_uint_t remote);
static void ngx_http_presence_renew(ngx_http_presence_zone_t *zone,
    uint32_t i, ngx_http_presence_activity_t *act, int64_t now_ms,
    ngx_uint_t remote);
static uint32_t ngx_http_presence_insert(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, int64_t now_ms, time_t timeout,
    ngx_log_t *log, ngx_uint_t remote);
static void ngx_http_presence_user_active(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, int64_t now_ms);
static uint32_t ngx_http_presence_oldest(ngx_http_presence_shm_t *sh,
    ngx_http_presence_user_t *user);
static ngx_uint_t ngx_http_presence_room(ngx_http_presence_zone_t *zone,
    u_char *id, time_t timeout);
static ngx_uint_t ngx_http_presence_status_of(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user);
static ngx_uint_t ngx_http_presence_visible(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user);
static void ngx_http_presence_user_bits(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, int64_t from, int64_t to);
static int64_t ngx_http_presence_coarse(ngx_http_presence_zone_t *zone,
    int64_t ms);
static void ngx_http_presence_set_status(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t status);
static void ngx_http_presence_age(ngx_http_presence_zone_t *zone);
static void ngx_http_presence_set_privacy(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_int_t visible, ngx_uint_t known);
static ngx_http_presence_lookup_t *ngx_http_presence_lookup_find(
    ngx_http_presence_zone_t *zone, int64_t caller);
static ngx_int_t ngx_http_presence_lookup_pos(ngx_http_presence_lookup_t *lk,
    int64_t id);
static void ngx_http_presence_lookup_add(ngx_http_presence_lookup_t *lk,
    int64_t id);
static void ngx_http_presence_day_close(ngx_http_presence_zone_t *zone);
static void ngx_http_presence_devices(ngx_http_presence_zone_t *zone,
    time_t online, uint64_t *devices);
static void ngx_http_presence_today(ngx_http_presence_zone_t *zone,
    time_t online, ngx_http_presence_day_t *today);
static void ngx_http_presence_ended(ngx_http_presence_zone_t *zone,
    ngx_http_presence_session_t *s);
static void ngx_http_presence_hll_add(uint8_t *reg, int64_t user_id);
static uint64_t ngx_http_presence_hll_count(uint8_t *reg);
static void ngx_http_presence_forget(ngx_http_presence_zone_t *zone,
    u_char *id, int64_t last_ms);
static void ngx_http_presence_ring_add(ngx_http_presence_shm_t *sh,
    uint32_t i);
static ngx_uint_t ngx_http_presence_expire(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_uint_t limit, ngx_uint_t *more);
static u_char *ngx_http_presence_ua(ngx_http_presence_zone_t *zone,
    uint32_t off, size_t *len);
static u_char *ngx_http_presence_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t field, ssize_t *len);
static int ngx_libc_cdecl ngx_http_presence_profile_cmp(const void *one,
    const void *two);
static ngx_uint_t ngx_http_presence_profile_stale(ngx_http_presence_shm_t *sh,
    ngx_http_presence_user_t *user, time_t now, time_t ttl);
static void ngx_http_presence_set_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_http_presence_profile_in_t *in,
    time_t now);
static void ngx_http_presence_copy_session(ngx_http_presence_zone_t *zone,
    uint32_t i, ngx_http_presence_session_info_t *row);
static ngx_uint_t ngx_http_presence_take(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, uint32_t i);
static void ngx_http_presence_sweep(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch);
static ngx_http_presence_shm_t *ngx_http_presence_store_lock(
    ngx_http_presence_zone_t *zone, ngx_log_t *log);
static void ngx_http_presence_counts(ngx_http_presence_zone_t *zone,
    time_t *thresholds, ngx_http_presence_counts_t *counts);
static ngx_int_t ngx_http_presence_layout(ngx_http_presence_zone_t *zone,
    ngx_str_t *name, ngx_log_t *log);
static ngx_int_t ngx_http_presence_layout_arrays(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh);
static ngx_int_t ngx_http_presence_layout_trees(
    ngx_http_presence_zone_t *zone, ngx_http_presence_shm_t *sh);
static ngx_int_t ngx_http_presence_layout_log(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh);
static void ngx_http_presence_layout_crowds(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh);
static ngx_int_t ngx_http_presence_layout_slots(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh);
static void ngx_http_presence_layout_ua(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh);
static void ngx_http_presence_bit_add(int32_t *bit, int64_t t,
    int32_t delta);
static int64_t ngx_http_presence_bit_sum(int32_t *bit, ngx_uint_t i);
static ngx_uint_t ngx_http_presence_trees(ngx_http_presence_shm_t *sh,
    int32_t **trees);
static void ngx_http_presence_trees_zero(ngx_http_presence_shm_t *sh);
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
static void ngx_http_presence_lru_tail(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_lru_unlink(ngx_http_presence_shm_t *sh,
    uint32_t i);
static void ngx_http_presence_q_place(ngx_http_presence_zone_t *zone,
    uint32_t i);
static void ngx_http_presence_q_unlink(ngx_http_presence_zone_t *zone,
    uint32_t i);
static uint32_t ngx_http_presence_slot_first(ngx_http_presence_shm_t *sh,
    int64_t t);
static uint32_t ngx_http_presence_q_find(ngx_http_presence_zone_t *zone,
    int64_t t, ngx_uint_t placed);
static int64_t ngx_http_presence_latest(ngx_http_presence_zone_t *zone,
    int64_t lo, int64_t hi, ngx_uint_t n, ngx_uint_t tree);
static uint32_t ngx_http_presence_q_rank(ngx_http_presence_zone_t *zone,
    ngx_uint_t rank, time_t seconds, ngx_uint_t tree, ngx_uint_t *skip);
static ngx_http_presence_crowd_t *ngx_http_presence_crowd_find(
    ngx_http_presence_shm_t *sh, int64_t t);
static void ngx_http_presence_crowd_place(ngx_http_presence_zone_t *zone,
    uint32_t i, int64_t t, uint32_t prev, uint32_t next);
static void ngx_http_presence_crowd_unlink(ngx_http_presence_zone_t *zone,
    uint32_t i, int64_t t, uint32_t next);
static void ngx_http_presence_crowd_visible(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t is);
static uint32_t ngx_http_presence_crowd_rank(ngx_http_presence_zone_t *zone,
    int64_t t, ngx_uint_t tree, ngx_uint_t at, ngx_uint_t rank,
    ngx_uint_t *skip);
static ngx_uint_t ngx_http_presence_at(ngx_http_presence_zone_t *zone,
    int64_t t, ngx_uint_t tree);
static ngx_http_presence_crowd_t *ngx_http_presence_crowd_build(
    ngx_http_presence_zone_t *zone, int64_t t, ngx_uint_t n);
static uint32_t ngx_http_presence_q_seek(ngx_http_presence_zone_t *zone,
    ngx_http_presence_page_t *page, ngx_log_t *log);
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

/* the second of a user's latest activity, and its slot */

#define ngx_http_presence_second(sh, i)  ((sh)->users[i].last_ms / 1000)

#define ngx_http_presence_slot(sh, t)                                         \
    ((uint32_t) (((t) / (sh)->slot_step) % (sh)->nslots))


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

    if (size < NGX_HTTP_PRESENCE_ZONE_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: %z bytes, "
                           "the minimum is 1m", &name, size);
        return NGX_CONF_ERROR;
    }

    if ((uint64_t) size > NGX_HTTP_PRESENCE_ZONE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too large: the maximum is 32g",
                           &name);
        return NGX_CONF_ERROR;
    }

    ring = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ring=", 5) == 0 && ring == 0) {
            ring = ngx_atoi(value[i].data + 5, value[i].len - 5);

            if (ring < NGX_HTTP_PRESENCE_RING_MIN || ring > 0x7fffffff) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid ring size \"%V\": a number "
                                   "from %d", &value[i],
                                   NGX_HTTP_PRESENCE_RING_MIN);
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

        if (zone->privacy && sh->visible_bit == NULL) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "presence zone \"%V\" was made without "
                          "presence_privacy_column: restart nginx or change "
                          "the zone size", &shm_zone->shm.name);
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
    size_t                    avail, per, ring, len;
    uint32_t                  n;
    ngx_slab_pool_t          *shpool;
    ngx_http_presence_shm_t  *sh;

    shpool = zone->shpool;

    sh = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_presence_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    /* the smallest User-Agent table; larger from the reserve, below */

    sh->nua = NGX_HTTP_PRESENCE_UA_BUCKETS;
    sh->ua_hash = ngx_slab_calloc_locked(shpool,
                                         sh->nua * sizeof(uint32_t));
    if (sh->ua_hash == NULL) {
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

    if (ngx_http_presence_layout_trees(zone, sh) != NGX_OK) {
        goto small;
    }

    if (ngx_http_presence_layout_log(shpool, sh) != NGX_OK) {
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
    sh->nring = zone->ring ? zone->ring : ngx_max(n / 4,
                                               NGX_HTTP_PRESENCE_RING_MIN);

    if (ngx_http_presence_layout_arrays(shpool, sh) != NGX_OK
        || ngx_http_presence_layout_slots(shpool, sh) != NGX_OK)
    {
        goto small;
    }

    ngx_http_presence_layout_crowds(shpool, sh);
    ngx_http_presence_layout_ua(shpool, sh);

    /* a new zone, or one started afresh: filled from PostgreSQL */

    sh->warm = NGX_HTTP_PRESENCE_WARM_PENDING;
    sh->today.day = ngx_time() / NGX_HTTP_PRESENCE_DAY;

    ngx_rbtree_init(&sh->lookups, &sh->lookup_sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&sh->lookup_lru);

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


/* the records, the hashes and the ring; every record on its free list */

static ngx_int_t
ngx_http_presence_layout_arrays(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh)
{
    uint32_t  i, n;

    n = sh->nsessions;

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
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        sh->session_hash[i] = NGX_HTTP_PRESENCE_NIL;
        sh->user_hash[i] = NGX_HTTP_PRESENCE_NIL;

        sh->sessions[i].hash_next = (i + 1 < n) ? i + 1
                                                : NGX_HTTP_PRESENCE_NIL;
        sh->sessions[i].user = NGX_HTTP_PRESENCE_NIL;
        sh->users[i].hash_next = (i + 1 < n) ? i + 1 : NGX_HTTP_PRESENCE_NIL;
    }

    ngx_memzero(sh->ua_hash, sh->nua * sizeof(uint32_t));

    sh->session_free = 0;
    sh->user_free = 0;
    sh->lru_head = NGX_HTTP_PRESENCE_NIL;
    sh->lru_tail = NGX_HTTP_PRESENCE_NIL;
    sh->q_head = NGX_HTTP_PRESENCE_NIL;
    sh->q_tail = NGX_HTTP_PRESENCE_NIL;
    sh->clock = ngx_time();

    return NGX_OK;
}


/* the counting trees over the seconds of a day */

static ngx_int_t
ngx_http_presence_layout_trees(ngx_http_presence_zone_t *zone,
    ngx_http_presence_shm_t *sh)
{
    size_t  bits;

    bits = (NGX_HTTP_PRESENCE_DAY + 1) * sizeof(int32_t);

    sh->users_bit = ngx_slab_calloc_locked(zone->shpool, bits);
    sh->sessions_bit = ngx_slab_calloc_locked(zone->shpool, bits);

    if (sh->users_bit == NULL || sh->sessions_bit == NULL) {
        return NGX_ERROR;
    }

    if (zone->privacy) {
        sh->visible_bit = ngx_slab_calloc_locked(zone->shpool, bits);
        if (sh->visible_bit == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The change log: 1/256 of the zone, a power of two of events.  Its ids
 * start from the zone's creation time, so that an id given by an earlier
 * zone is never taken for one of this zone's.
 */

static ngx_int_t
ngx_http_presence_layout_log(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh)
{
    size_t  avail;

    avail = shpool->pfree * ngx_pagesize;

    for (sh->nlog = NGX_HTTP_PRESENCE_LOG_MIN;
         sh->nlog < NGX_HTTP_PRESENCE_LOG_MAX
         && 2 * sh->nlog * sizeof(ngx_http_presence_event_t) <= avail / 256;
         sh->nlog *= 2)
    { /* void */ }

    sh->log = ngx_slab_calloc_locked(shpool,
                       sh->nlog * sizeof(ngx_http_presence_event_t));
    if (sh->log == NULL) {
        return NGX_ERROR;
    }

    sh->log_base = (uint64_t) ngx_time() << 20;
    sh->log_head = sh->log_base;

    return NGX_OK;
}


/*
 * The User-Agent table grows with the zone, one bucket for four sessions,
 * so that its chains stay short; out of the strings' reserve, an eighth of
 * it at most.  Without the room the smallest table stays.
 */

static void
ngx_http_presence_layout_ua(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh)
{
    size_t     n;
    uint32_t  *ua;

    n = sh->nsessions / 4;

    if (n <= sh->nua
        || n * sizeof(uint32_t) > shpool->pfree * ngx_pagesize / 8)
    {
        return;
    }

    ua = ngx_slab_calloc_locked(shpool, n * sizeof(uint32_t));
    if (ua == NULL) {
        return;
    }

    ngx_slab_free_locked(shpool, sh->ua_hash);

    sh->ua_hash = ua;
    sh->nua = (uint32_t) n;
}


/*
 * The crowded seconds' indexes: as many as an eighth of what is left for
 * strings allows, up to CROWDS_MAX; none in the smallest zones, where a
 * page in a crowded second steps over its users.
 */

static void
ngx_http_presence_layout_crowds(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh)
{
    size_t      room;
    ngx_uint_t  n;

    room = shpool->pfree * ngx_pagesize / 8;

    for (n = NGX_HTTP_PRESENCE_CROWDS_MAX;
         n >= 16 && n * sizeof(ngx_http_presence_crowd_t) > room;
         n /= 2)
    { /* void */ }

    if (n < 16) {
        return;
    }

    sh->crowds = ngx_slab_calloc_locked(shpool,
                                        n * sizeof(ngx_http_presence_crowd_t));
    if (sh->crowds != NULL) {
        sh->ncrowds = n;
    }
}


/*
 * The users queue's entry points: the first user of each slot of seconds,
 * as fine as a third of what is left for strings allows (one second in a
 * zone of 8m and more), so that a page starts without a walk from the
 * head.  They take nothing from the sessions' share.
 */

static ngx_int_t
ngx_http_presence_layout_slots(ngx_slab_pool_t *shpool,
    ngx_http_presence_shm_t *sh)
{
    size_t      room;
    uint32_t    i;
    ngx_uint_t  k;

    static uint32_t  steps[] = { 1, 10, 60, 300 };

    room = shpool->pfree * ngx_pagesize / 3;

    for (k = 0; k < sizeof(steps) / sizeof(uint32_t) - 1; k++) {
        if (NGX_HTTP_PRESENCE_DAY / steps[k] * sizeof(uint32_t) <= room) {
            break;
        }
    }

    sh->slot_step = steps[k];
    sh->nslots = NGX_HTTP_PRESENCE_DAY / sh->slot_step;

    sh->q_slots = ngx_slab_alloc_locked(shpool,
                                        sh->nslots * sizeof(uint32_t));
    if (sh->q_slots == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < sh->nslots; i++) {
        sh->q_slots[i] = NGX_HTTP_PRESENCE_NIL;
    }

    return NGX_OK;
}


/*
 * The lock.  A pid left in the header means its owner died while changing
 * links (the master released the mutex): the structures cannot be
 * trusted, so the zone starts afresh.
 */

static void
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


static void
ngx_http_presence_unlock(ngx_http_presence_zone_t *zone)
{
    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* Fenwick trees over the seconds of the day, indexed 1..DAY */

static void
ngx_http_presence_bit_add(int32_t *bit, int64_t t, int32_t delta)
{
    ngx_uint_t  i;

    for (i = t % NGX_HTTP_PRESENCE_DAY + 1;
         i <= NGX_HTTP_PRESENCE_DAY;
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

    if (from > sh->clock - NGX_HTTP_PRESENCE_DAY) {
        ngx_http_presence_bit_add(bit, from, -1);
    }

    if (to >= 0) {
        ngx_http_presence_bit_add(bit, to, 1);
    }
}


/*
 * The counting trees the zone has, by NGX_HTTP_PRESENCE_TREE_*: the
 * visible users' only when it was made with a privacy column
 */

static ngx_uint_t
ngx_http_presence_trees(ngx_http_presence_shm_t *sh, int32_t **trees)
{
    trees[NGX_HTTP_PRESENCE_TREE_USERS] = sh->users_bit;
    trees[NGX_HTTP_PRESENCE_TREE_SESSIONS] = sh->sessions_bit;
    trees[NGX_HTTP_PRESENCE_TREE_VISIBLE] = sh->visible_bit;

    return sh->visible_bit ? NGX_HTTP_PRESENCE_TREES
                           : NGX_HTTP_PRESENCE_TREES - 1;
}


/* every count of every tree gone */

static void
ngx_http_presence_trees_zero(ngx_http_presence_shm_t *sh)
{
    int32_t     *trees[NGX_HTTP_PRESENCE_TREES];
    ngx_uint_t   k, n;

    n = ngx_http_presence_trees(sh, trees);

    for (k = 0; k < n; k++) {
        ngx_memzero(trees[k], (NGX_HTTP_PRESENCE_DAY + 1) * sizeof(int32_t));
    }
}


/* the clock moves on: the slots of seconds a day old are emptied */

static void
ngx_http_presence_advance(ngx_http_presence_zone_t *zone, time_t now)
{
    int32_t                  *trees[NGX_HTTP_PRESENCE_TREES];
    int64_t                   t, v;
    ngx_uint_t                i, k, n;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    if (now / NGX_HTTP_PRESENCE_DAY > sh->today.day) {
        ngx_http_presence_day_close(zone);
        sh->today.day = now / NGX_HTTP_PRESENCE_DAY;
    }

    if (now <= sh->clock) {

        /* the wall clock went back: count from it again */

        if (now < sh->clock - NGX_HTTP_PRESENCE_CLOCK_STEP) {
            ngx_http_presence_rebase(zone, now);
        }

        return;
    }

    if (now - sh->clock > NGX_HTTP_PRESENCE_CLOCK_STEP) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "presence zone \"%V\": the clock jumped forward "
                      "%T s", &zone->name, now - sh->clock);
    }

    if (now - sh->clock >= NGX_HTTP_PRESENCE_DAY) {
        ngx_http_presence_trees_zero(sh);
        sh->clock = now;
        return;
    }

    n = ngx_http_presence_trees(sh, trees);

    for (t = sh->clock + 1; t <= now; t++) {
        i = t % NGX_HTTP_PRESENCE_DAY + 1;

        for (k = 0; k < n; k++) {
            v = ngx_http_presence_bit_sum(trees[k], i)
                - ngx_http_presence_bit_sum(trees[k], i - 1);
            if (v) {
                ngx_http_presence_bit_add(trees[k], t, (int32_t) -v);
            }
        }
    }

    sh->clock = now;
}


/*
 * The wall clock went back (an NTP step, a VM restored): what was stamped
 * later than now is now, the counting trees and the queue's entry points
 * are rebuilt from the records, and the clock goes on from now.  Once per
 * step, under the writer's mark.
 */

static void
ngx_http_presence_rebase(ngx_http_presence_zone_t *zone, time_t now)
{
    int64_t                       max_ms, t;
    uint32_t                      i, *slot;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "presence zone \"%V\": the clock went back %T s, "
                  "counting from now", &zone->name, sh->clock - now);

    sh->writer = ngx_pid;

    max_ms = (int64_t) now * 1000;

    ngx_http_presence_trees_zero(sh);

    sh->clock = now;

    for (i = 0; i < sh->nsessions; i++) {
        s = &sh->sessions[i];

        if (s->user == NGX_HTTP_PRESENCE_NIL) {
            continue;
        }

        s->last_ms = ngx_min(s->last_ms, max_ms);
        s->created_ms = ngx_min(s->created_ms, s->last_ms);
        s->flushed_ms = ngx_min(s->flushed_ms, s->last_ms);

        if (s->last_ms / 1000 > now - NGX_HTTP_PRESENCE_DAY) {
            ngx_http_presence_bit_add(sh->sessions_bit, s->last_ms / 1000, 1);
        }
    }

    for (i = 0; i < sh->nusers; i++) {
        user = &sh->users[i];

        if (user->user_id == 0) {
            continue;
        }

        user->last_ms = ngx_min(user->last_ms, max_ms);

        if (user->last_ms / 1000 > now - NGX_HTTP_PRESENCE_DAY) {
            ngx_http_presence_bit_add(sh->users_bit, user->last_ms / 1000, 1);

            if (sh->visible_bit && ngx_http_presence_visible(zone, user)) {
                ngx_http_presence_bit_add(sh->visible_bit,
                                          user->last_ms / 1000, 1);
            }
        }
    }

    /* the queue kept its order: each slot's first user, found again */

    if (sh->crowds) {
        ngx_memzero(sh->crowds,
                    sh->ncrowds * sizeof(ngx_http_presence_crowd_t));
    }

    for (i = 0; i < sh->nslots; i++) {
        sh->q_slots[i] = NGX_HTTP_PRESENCE_NIL;
    }

    for (i = sh->q_head; i != NGX_HTTP_PRESENCE_NIL; i = sh->users[i].q_next) {
        t = ngx_http_presence_second(sh, i);
        slot = &sh->q_slots[ngx_http_presence_slot(sh, t)];

        if (*slot == NGX_HTTP_PRESENCE_NIL
            && t > now - NGX_HTTP_PRESENCE_DAY)
        {
            *slot = i;
        }
    }

    sh->next_sweep = now;
    sh->writer = 0;
}


/* users (or sessions) whose latest activity is within "seconds" of now */

static ngx_uint_t
ngx_http_presence_count(ngx_http_presence_zone_t *zone, time_t seconds,
    ngx_uint_t tree)
{
    int32_t                  *bit, *trees[NGX_HTTP_PRESENCE_TREES];
    int64_t                   from, to, sum;
    ngx_uint_t                a, b;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    /* a zone made without privacy (a reload) counts every user */

    bit = (tree < ngx_http_presence_trees(sh, trees))
          ? trees[tree] : trees[NGX_HTTP_PRESENCE_TREE_USERS];

    if (seconds <= 0) {
        return 0;
    }

    if (seconds > NGX_HTTP_PRESENCE_DAY) {
        seconds = NGX_HTTP_PRESENCE_DAY;
    }

    to = sh->clock;
    from = to - seconds + 1;

    a = from % NGX_HTTP_PRESENCE_DAY + 1;
    b = to % NGX_HTTP_PRESENCE_DAY + 1;

    if (a <= b) {
        sum = ngx_http_presence_bit_sum(bit, b)
              - ngx_http_presence_bit_sum(bit, a - 1);

    } else {
        sum = ngx_http_presence_bit_sum(bit, NGX_HTTP_PRESENCE_DAY)
              - ngx_http_presence_bit_sum(bit, a - 1)
              + ngx_http_presence_bit_sum(bit, b);
    }

    return sum > 0 ? (ngx_uint_t) sum : 0;
}


/* today's hourly peak of online users, sampled now */

static void
ngx_http_presence_sample_peak(ngx_http_presence_zone_t *zone, time_t online)
{
    int64_t                   day;
    ngx_uint_t                n, hour;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    day = sh->clock / NGX_HTTP_PRESENCE_DAY;

    if (day != sh->peak_day) {
        ngx_memzero(sh->peak, sizeof(sh->peak));
        sh->peak_day = day;
    }

    hour = (sh->clock % NGX_HTTP_PRESENCE_DAY) / NGX_HTTP_PRESENCE_HOUR;
    n = ngx_http_presence_count(zone, online, 0);

    if (n > sh->peak[hour]) {
        sh->peak[hour] = (uint32_t) n;
    }
}


/*
 * A session's bucket: a hash of the whole id, not its first bytes, since
 * ids pulled from another writer need not be SHA-256 (zero-padded ones
 * would all share one chain)
 */

static uint32_t
ngx_http_presence_session_bucket(ngx_http_presence_shm_t *sh, u_char *id)
{
    uint32_t  h;

    h = ngx_murmur_hash2(id, NGX_HTTP_PRESENCE_ID_LEN);

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
        if (ngx_memcmp(sh->sessions[i].id, id, NGX_HTTP_PRESENCE_ID_LEN) == 0) {
            return i;
        }

        i = sh->sessions[i].hash_next;
    }

    return NGX_HTTP_PRESENCE_NIL;
}


static ngx_http_presence_user_t *
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


static ngx_int_t
ngx_http_presence_expired(ngx_http_presence_session_t *s, time_t now,
    time_t timeout)
{
    return now - s->last_ms / 1000 > timeout || now - timeout > s->exp;
}


/*
 * Under the lock.  Local activity moves time forward and queues the
 * session for the flusher; activity pulled from PostgreSQL (remote) keeps
 * its own time, is placed in order, and is never written back.  Remote
 * activity older than what it would displace is declined: a user at
 * presence_max_sessions_per_user keeps its newer sessions.
 */

static ngx_int_t
ngx_http_presence_record(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log,
    ngx_uint_t remote)
{
    int64_t                       now_ms;
    uint32_t                      i;
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

        if (now_ms / 1000 <= sh->clock - NGX_HTTP_PRESENCE_DAY) {
            return NGX_DECLINED;
        }

    } else {
        /* time never goes back, whichever worker's clock is behind */
        now_ms = ngx_max(act->now_ms, sh->clock * 1000);
    }

    i = ngx_http_presence_find_session(sh, act->id);

    if (i != NGX_HTTP_PRESENCE_NIL) {
        s = &sh->sessions[i];

        if (remote && s->last_ms >= now_ms) {
            return NGX_OK;      /* ours is newer */
        }

        ngx_http_presence_renew(zone, i, act, now_ms, remote);

    } else {

        if (remote && zone->max_sessions) {
            user = ngx_http_presence_find_user(zone, act->user_id);

            if (user && user->nsessions >= zone->max_sessions
                && sh->sessions[ngx_http_presence_oldest(sh, user)].last_ms
                   >= now_ms)
            {
                return NGX_DECLINED;
            }
        }

        i = ngx_http_presence_insert(zone, act, now_ms, timeout, log,
                                     remote);
        s = &sh->sessions[i];
    }

    user = &sh->users[s->user];

    ngx_http_presence_user_active(zone, user, now_ms);
    ngx_http_presence_set_status(zone, user,
                                 ngx_http_presence_status_of(zone, user));

    if (!remote && s->last_ms > s->flushed_ms
        && !(s->flags & NGX_HTTP_PRESENCE_IN_RING))
    {
        ngx_http_presence_ring_add(sh, i);
    }

    return NGX_OK;
}


/* a known session's new activity */

static void
ngx_http_presence_renew(ngx_http_presence_zone_t *zone, uint32_t i,
    ngx_http_presence_activity_t *act, int64_t now_ms, ngx_uint_t remote)
{
    int64_t                       old_ms;
    ngx_uint_t                    clean;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;
    s = &sh->sessions[i];

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
}


/* a new session, of a known user or a new one */

static uint32_t
ngx_http_presence_insert(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, int64_t now_ms, time_t timeout,
    ngx_log_t *log, ngx_uint_t remote)
{
    uint32_t                      i, u, b;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;

    /* a user at presence_max_sessions_per_user: its oldest goes first */

    if (zone->max_sessions) {
        user = ngx_http_presence_find_user(zone, act->user_id);

        if (user && user->nsessions >= zone->max_sessions) {
            ngx_http_presence_free_session(zone,
                                  ngx_http_presence_oldest(sh, user));
            sh->cap_evictions++;
        }
    }

    i = ngx_http_presence_new_session(zone, timeout, log);

    user = ngx_http_presence_find_user(zone, act->user_id);

    if (user == NULL) {
        u = ngx_http_presence_new_user(zone, act->user_id, log);
        user = &sh->users[u];
        user->last_ms = now_ms;

        ngx_http_presence_user_bits(zone, user, -1, now_ms / 1000);
        ngx_http_presence_q_place(zone, u);

    } else {
        u = user - sh->users;
    }

    s = &sh->sessions[i];

    ngx_memcpy(s->id, act->id, NGX_HTTP_PRESENCE_ID_LEN);
    s->user_id = act->user_id;
    s->created_ms = (remote && act->created_ms)
                    ? ngx_min(act->created_ms, now_ms) : now_ms;
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

    /* remote activity older than all: the warm start, most recent first */

    if (remote && sh->lru_tail != NGX_HTTP_PRESENCE_NIL
        && sh->sessions[sh->lru_tail].last_ms > now_ms)
    {
        ngx_http_presence_lru_tail(sh, i);

    } else {
        ngx_http_presence_lru_head(sh, i);
    }

    ngx_http_presence_bit_move(sh, sh->sessions_bit, -1, now_ms / 1000);

    sh->sessions_used++;

    /* today's numbers: a session started, maybe a user's first */

    if (s->created_ms / 1000 / NGX_HTTP_PRESENCE_DAY == sh->today.day) {
        sh->today.started++;

        if (((user->flags & NGX_HTTP_PRESENCE_DAY_MASK)
             >> NGX_HTTP_PRESENCE_DAY_SHIFT) != (sh->today.day & 0xff))
        {
            user->flags = (user->flags & ~NGX_HTTP_PRESENCE_DAY_MASK)
                          | (uint32_t) ((sh->today.day & 0xff)
                                        << NGX_HTTP_PRESENCE_DAY_SHIFT);
            sh->today.users_new++;
        }
    }

    return i;
}


/* a user's least recently active session; the user has one */

static uint32_t
ngx_http_presence_oldest(ngx_http_presence_shm_t *sh,
    ngx_http_presence_user_t *user)
{
    uint32_t  j, oldest;

    oldest = user->sessions;

    for (j = user->sessions; j != NGX_HTTP_PRESENCE_NIL;
         j = sh->sessions[j].user_next)
    {
        if (sh->sessions[j].last_ms < sh->sessions[oldest].last_ms) {
            oldest = j;
        }
    }

    return oldest;
}


/* a new session "id" would take no one's place */

static ngx_uint_t
ngx_http_presence_room(ngx_http_presence_zone_t *zone, u_char *id,
    time_t timeout)
{
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    return sh->session_free != NGX_HTTP_PRESENCE_NIL
           || ngx_http_presence_find_session(sh, id) != NGX_HTTP_PRESENCE_NIL
           || ngx_http_presence_expired(&sh->sessions[sh->lru_tail],
                                        sh->clock, timeout);
}


/* the user's activity: counted in its new second, moved in the queue */

static void
ngx_http_presence_user_active(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, int64_t now_ms)
{
    int64_t                   hour;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    if (now_ms / 1000 > user->last_ms / 1000) {
        ngx_http_presence_user_bits(zone, user, user->last_ms / 1000,
                                    now_ms / 1000);

        /* out of its old second's slot, into its new one */

        ngx_http_presence_q_unlink(zone, user - sh->users);
        user->last_ms = now_ms;
        ngx_http_presence_q_place(zone, user - sh->users);

    } else if (now_ms > user->last_ms) {
        user->last_ms = now_ms;
    }

    /* today's users of each hour, each counted once an hour */

    hour = now_ms / 1000 / NGX_HTTP_PRESENCE_HOUR;

    if (now_ms / 1000 / NGX_HTTP_PRESENCE_DAY == sh->today.day
        && ((user->flags & NGX_HTTP_PRESENCE_HOUR_MASK)
            >> NGX_HTTP_PRESENCE_HOUR_SHIFT)
           != (uint32_t) (hour & NGX_HTTP_PRESENCE_HOUR_BITS))
    {
        user->flags = (user->flags & ~NGX_HTTP_PRESENCE_HOUR_MASK)
                      | (uint32_t) ((hour & NGX_HTTP_PRESENCE_HOUR_BITS)
                                    << NGX_HTTP_PRESENCE_HOUR_SHIFT);
        sh->hour_users[hour % NGX_HTTP_PRESENCE_HOURS]++;

        ngx_http_presence_hll_add(sh->today_users, user->user_id);
    }
}


/* another node deactivated a session: it goes unless ours is newer */

static void
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


/*
 * A user's status at the zone's clock as others see it: offline while it
 * hides, else from its last activity (in buckets of
 * presence_last_seen_precision)
 */

static ngx_uint_t
ngx_http_presence_status_of(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user)
{
    int64_t  t;

    if (!ngx_http_presence_visible(zone, user)) {
        return NGX_HTTP_PRESENCE_STATUS_OFFLINE;
    }

    t = ngx_http_presence_coarse(zone, user->last_ms) / 1000;

    if (t > zone->sh->clock - zone->online) {
        return NGX_HTTP_PRESENCE_STATUS_ONLINE;
    }

    if (t > zone->sh->clock - zone->recent) {
        return NGX_HTTP_PRESENCE_STATUS_RECENT;
    }

    return NGX_HTTP_PRESENCE_STATUS_OFFLINE;
}


/*
 * A UTC day is over (the first operation of the next one): its numbers
 * wait for the flusher, today's start from zero
 */

static void
ngx_http_presence_day_close(ngx_http_presence_zone_t *zone)
{
    ngx_uint_t                h;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    if (sh->today.day) {
        sh->prev = sh->today;
        sh->prev.active_users = ngx_http_presence_hll_count(sh->today_users);

        if (sh->peak_day == sh->today.day) {
            for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
                sh->prev.peak_online = ngx_max(sh->prev.peak_online,
                                               sh->peak[h]);
            }
        }

        sh->prev_pending = 1;
        sh->history_due = 1;
    }

    ngx_memzero(&sh->today, sizeof(ngx_http_presence_day_t));
    ngx_memzero(sh->hour_users, sizeof(sh->hour_users));
    ngx_memzero(sh->today_users, sizeof(sh->today_users));
    ngx_memzero(sh->durations, sizeof(sh->durations));
}


/* a user in today's sketch: its register keeps the longest run of zeros */

static void
ngx_http_presence_hll_add(uint8_t *reg, int64_t user_id)
{
    uint8_t   rank;
    uint64_t  h;

    h = (uint64_t) user_id * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;

    for (rank = 1;
         rank <= 64 - NGX_HTTP_PRESENCE_HLL_BITS && !(h & 1);
         rank++)
    {
        h >>= 1;
    }

    h = (uint64_t) user_id * 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    h &= NGX_HTTP_PRESENCE_HLL - 1;

    if (reg[h] < rank) {
        reg[h] = rank;
    }
}


static uint64_t
ngx_http_presence_hll_count(uint8_t *reg)
{
    double      sum, m, e;
    ngx_uint_t  i, zeros;

    m = NGX_HTTP_PRESENCE_HLL;
    sum = 0;
    zeros = 0;

    for (i = 0; i < NGX_HTTP_PRESENCE_HLL; i++) {
        sum += 1.0 / (double) ((uint64_t) 1 << reg[i]);
        zeros += (reg[i] == 0);
    }

    e = 0.7213 / (1 + 1.079 / m) * m * m / sum;

    if (e <= 2.5 * m && zeros) {
        e = m * log(m / zeros);         /* linear counting */
    }

    return (uint64_t) (e + 0.5);
}


/* a session expired or was cleaned: its duration is counted */

static void
ngx_http_presence_ended(ngx_http_presence_zone_t *zone,
    ngx_http_presence_session_t *s)
{
    int64_t                   ms;
    ngx_uint_t                b;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    ms = ngx_max(s->last_ms - s->created_ms, 0);

    for (b = 0; b < NGX_HTTP_PRESENCE_DURATIONS - 1
                && ms > (int64_t) ngx_http_presence_duration_bounds[b] * 1000;
         b++)
    { /* void */ }

    sh->today.ended++;
    sh->today.duration_count++;
    sh->today.duration_ms += ms;
    sh->durations[b]++;

    sh->all_durations[b]++;
    sh->all_count++;
    sh->all_ms += ms;
}


/* others may see the user: no privacy column, or its setting says so */

static ngx_uint_t
ngx_http_presence_visible(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user)
{
    return !zone->privacy
           || (user->flags & (NGX_HTTP_PRESENCE_PRIVACY_KNOWN
                              |NGX_HTTP_PRESENCE_INVISIBLE))
              == NGX_HTTP_PRESENCE_PRIVACY_KNOWN;
}


/*
 * What the profile loader read of the privacy column: false hides the
 * user from others (NULL does not); a user without a row stays hidden.
 * Others see the change at once: the counting tree of visible users and
 * the change log follow.
 */

static void
ngx_http_presence_set_privacy(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_int_t visible, ngx_uint_t known)
{
    int64_t                   t;
    ngx_uint_t                was, is;
    ngx_http_presence_shm_t  *sh;

    if (!zone->privacy) {
        return;
    }

    sh = zone->sh;
    was = ngx_http_presence_visible(zone, user);

    user->flags &= ~(NGX_HTTP_PRESENCE_PRIVACY_KNOWN
                     |NGX_HTTP_PRESENCE_INVISIBLE);

    if (known) {
        user->flags |= NGX_HTTP_PRESENCE_PRIVACY_KNOWN;

        if (visible == 0) {
            user->flags |= NGX_HTTP_PRESENCE_INVISIBLE;
        }
    }

    is = ngx_http_presence_visible(zone, user);

    if (was == is) {
        return;
    }

    t = user->last_ms / 1000;

    if (sh->visible_bit && t > sh->clock - NGX_HTTP_PRESENCE_DAY) {
        ngx_http_presence_bit_add(sh->visible_bit, t, is ? 1 : -1);
    }

    ngx_http_presence_crowd_visible(zone, user, is);

    ngx_http_presence_set_status(zone, user,
                                 ngx_http_presence_status_of(zone, user));
}


/* a user's activity moves from second "from" to "to" (-1: none) */

static void
ngx_http_presence_user_bits(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, int64_t from, int64_t to)
{
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    ngx_http_presence_bit_move(sh, sh->users_bit, from, to);

    if (sh->visible_bit && ngx_http_presence_visible(zone, user)) {
        ngx_http_presence_bit_move(sh, sh->visible_bit, from, to);
    }
}


/* a time as others may see it: rounded down to the precision's bucket */

static int64_t
ngx_http_presence_coarse(ngx_http_presence_zone_t *zone, int64_t ms)
{
    int64_t  p;

    if (zone->precision == 0 || ms < 0) {
        return ms;
    }

    p = (int64_t) zone->precision * 1000;

    return ms - ms % p;
}


/* a user's status changed: one event in the change log */

static void
ngx_http_presence_set_status(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t status)
{
    uint64_t                    seq;
    ngx_time_t                 *tp;
    ngx_http_presence_shm_t    *sh;
    ngx_http_presence_event_t  *ev;

    if (ngx_http_presence_user_status(user) == status) {
        return;
    }

    user->flags = (user->flags & ~NGX_HTTP_PRESENCE_STATUS_MASK)
                  | (status << NGX_HTTP_PRESENCE_STATUS_SHIFT);

    sh = zone->sh;
    tp = ngx_timeofday();

    seq = sh->log_head + 1;
    ev = &sh->log[seq & (sh->nlog - 1)];

    ev->seq = seq;
    ev->status = status;
    ev->user_id = user->user_id;
    ev->last_ms = ngx_http_presence_visible(zone, user)
                  ? ngx_http_presence_coarse(zone, user->last_ms) : -1;
    ev->at_ms = ngx_http_presence_coarse(zone,
                              (int64_t) tp->sec * 1000 + (int64_t) tp->msec);

    /* readers without the lock see the head after the event */

    ngx_memory_barrier();

    sh->log_head = seq;
}


/*
 * Ageing: the users who crossed a threshold since the last ageing are the
 * part of the activity queue between the two cut-off seconds, found by a
 * rank lookup and walked toward the tail; the cost is the transitions.
 */

static void
ngx_http_presence_age(ngx_http_presence_zone_t *zone)
{
    int64_t                    clock, from, to;
    uint32_t                   i;
    ngx_uint_t                 k, status;
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    static ngx_uint_t  next[] = { NGX_HTTP_PRESENCE_STATUS_RECENT,
                                  NGX_HTTP_PRESENCE_STATUS_OFFLINE };

    sh = zone->sh;
    clock = sh->clock;

    for (k = 0; k < 2; k++) {

        if (clock == sh->aged[k]) {
            continue;
        }

        if (sh->aged[k] == 0 || clock < sh->aged[k]
            || clock - sh->aged[k] > NGX_HTTP_PRESENCE_DAY)
        {
            sh->aged[k] = clock;    /* a new zone, or the clock stepped */
            continue;
        }

        /*
         * with presence_last_seen_precision a whole bucket crosses at once,
         * when its start does: up to the bucket's last second
         */

        from = ngx_http_presence_coarse(zone,
                      (sh->aged[k] - (k ? zone->recent : zone->online)) * 1000)
               / 1000 + ngx_max(zone->precision, 1) - 1;
        to = ngx_http_presence_coarse(zone,
                      (clock - (k ? zone->recent : zone->online)) * 1000)
             / 1000 + ngx_max(zone->precision, 1) - 1;
        to = ngx_min(to, clock);

        sh->aged[k] = clock;

        if (to <= from) {
            continue;
        }

        for (i = ngx_http_presence_q_find(zone, to, 0);
             i != NGX_HTTP_PRESENCE_NIL;
             i = user->q_next)
        {
            user = &sh->users[i];

            if (user->last_ms / 1000 <= from) {
                break;
            }

            status = ngx_http_presence_user_status(user);

            if (status > next[k]) {
                ngx_http_presence_set_status(zone, user, next[k]);
            }
        }
    }
}


/* the caller's record, made when missing (NULL: no room at all) */

static ngx_http_presence_lookup_t *
ngx_http_presence_lookup_find(ngx_http_presence_zone_t *zone, int64_t caller)
{
    size_t                       size;
    ngx_uint_t                   tries;
    ngx_queue_t                 *q;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_presence_shm_t     *sh;
    ngx_http_presence_lookup_t  *lk;

    sh = zone->sh;
    node = sh->lookups.root;
    sentinel = sh->lookups.sentinel;

    while (node != sentinel) {
        if ((ngx_rbtree_key_t) caller != node->key) {
            node = ((ngx_rbtree_key_t) caller < node->key) ? node->left
                                                           : node->right;
            continue;
        }

        lk = (ngx_http_presence_lookup_t *) node;

        ngx_queue_remove(&lk->queue);
        ngx_queue_insert_head(&sh->lookup_lru, &lk->queue);

        return lk;
    }

    size = offsetof(ngx_http_presence_lookup_t, ids)
           + zone->lookup_limit * sizeof(int64_t);

    for (tries = 0; /* void */; tries++) {
        lk = ngx_slab_alloc_locked(zone->shpool, size);

        if (lk || tries == 8 || ngx_queue_empty(&sh->lookup_lru)) {
            break;
        }

        /* the least recently active caller's record goes */

        q = ngx_queue_last(&sh->lookup_lru);
        ngx_queue_remove(q);

        lk = ngx_queue_data(q, ngx_http_presence_lookup_t, queue);
        ngx_rbtree_delete(&sh->lookups, &lk->node);
        ngx_slab_free_locked(zone->shpool, lk);

        sh->lookup_callers--;
        sh->lookup_evictions++;
    }

    if (lk == NULL) {
        return NULL;
    }

    lk->node.key = (ngx_rbtree_key_t) caller;
    lk->period = ngx_time();
    lk->n = 0;

    ngx_rbtree_insert(&sh->lookups, &lk->node);
    ngx_queue_insert_head(&sh->lookup_lru, &lk->queue);
    sh->lookup_callers++;

    return lk;
}


/* NGX_OK when "id" is in the record's sorted ids */

static ngx_int_t
ngx_http_presence_lookup_pos(ngx_http_presence_lookup_t *lk, int64_t id)
{
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = lk->n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (lk->ids[mid] == id) {
            return NGX_OK;
        }

        if (lk->ids[mid] < id) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    lk->pos = lo;

    return NGX_DECLINED;
}


static void
ngx_http_presence_lookup_add(ngx_http_presence_lookup_t *lk, int64_t id)
{
    if (ngx_http_presence_lookup_pos(lk, id) == NGX_OK) {
        return;
    }

    ngx_memmove(&lk->ids[lk->pos + 1], &lk->ids[lk->pos],
                (lk->n - lk->pos) * sizeof(int64_t));

    lk->ids[lk->pos] = id;
    lk->n++;
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
    s->flags = (s->flags & ~NGX_HTTP_PRESENCE_DEVICE_MASK)
               | (act->device << NGX_HTTP_PRESENCE_DEVICE_SHIFT);

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


static void
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

    if (s->last_ms / 1000 > sh->clock - NGX_HTTP_PRESENCE_DAY) {
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

    /* its last session went: expired, cleaned, forgotten or evicted */

    ngx_http_presence_set_status(zone, user,
                                 NGX_HTTP_PRESENCE_STATUS_OFFLINE);

    ngx_http_presence_q_unlink(zone, i);

    ngx_http_presence_user_bits(zone, user, user->last_ms / 1000, -1);

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

static ngx_uint_t
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

        ngx_http_presence_ended(zone, &sh->sessions[i]);
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


/* the list is not empty */

static void
ngx_http_presence_lru_tail(ngx_http_presence_shm_t *sh, uint32_t i)
{
    ngx_http_presence_session_t  *s;

    s = &sh->sessions[i];

    s->lru_next = NGX_HTTP_PRESENCE_NIL;
    s->lru_prev = sh->lru_tail;
    sh->sessions[sh->lru_tail].lru_next = i;
    sh->lru_tail = i;
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


/* the first user of the slot of second t, or NIL */

static uint32_t
ngx_http_presence_slot_first(ngx_http_presence_shm_t *sh, int64_t t)
{
    int64_t   u;
    uint32_t  i;

    i = sh->q_slots[ngx_http_presence_slot(sh, t)];

    if (i == NGX_HTTP_PRESENCE_NIL || i >= sh->nusers
        || sh->users[i].user_id == 0)
    {
        return NGX_HTTP_PRESENCE_NIL;
    }

    /* a slot a day old is empty */

    u = ngx_http_presence_second(sh, i);

    if (u / sh->slot_step != t / sh->slot_step
        || u <= sh->clock - NGX_HTTP_PRESENCE_DAY)
    {
        return NGX_HTTP_PRESENCE_NIL;
    }

    return i;
}


/*
 * Into the users queue at its place, most recent first: before the first
 * user whose latest second is not later.  Local activity goes to the head
 * at once; activity pulled with its own time starts from its slot.
 */

static void
ngx_http_presence_q_place(ngx_http_presence_zone_t *zone, uint32_t i)
{
    int64_t                   t;
    uint32_t                  next, prev, first;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    t = ngx_http_presence_second(sh, i);
    next = sh->q_head;

    if (next != NGX_HTTP_PRESENCE_NIL) {

        if (sh->users[sh->q_tail].last_ms > sh->users[i].last_ms
            || (zone->descending
                && sh->users[sh->q_tail].last_ms == sh->users[i].last_ms))
        {
            /*
             * older than all (or as old, when merging most recent first):
             * the warm start places users so
             */

            next = NGX_HTTP_PRESENCE_NIL;

        } else if (ngx_http_presence_second(sh, next) > t) {
            next = ngx_http_presence_q_find(zone, t, 1);
        }
    }

    prev = (next == NGX_HTTP_PRESENCE_NIL) ? sh->q_tail
                                           : sh->users[next].q_prev;

    sh->users[i].q_prev = prev;
    sh->users[i].q_next = next;

    if (prev == NGX_HTTP_PRESENCE_NIL) {
        sh->q_head = i;

    } else {
        sh->users[prev].q_next = i;
    }

    if (next == NGX_HTTP_PRESENCE_NIL) {
        sh->q_tail = i;

    } else {
        sh->users[next].q_prev = i;
    }

    ngx_http_presence_crowd_place(zone, i, t, prev, next);

    /* the first of its slot when nothing in the slot is later */

    first = ngx_http_presence_slot_first(sh, t);

    if (first == NGX_HTTP_PRESENCE_NIL || first == next) {
        sh->q_slots[ngx_http_presence_slot(sh, t)] = i;
    }
}


/*
 * The latest second s in [lo, hi] with more than n users active in
 * [s, clock]: a binary search through the counting tree (the count is
 * more than n at lo, as the callers know)
 */

static int64_t
ngx_http_presence_latest(ngx_http_presence_zone_t *zone, int64_t lo,
    int64_t hi, ngx_uint_t n, ngx_uint_t tree)
{
    int64_t  mid;

    while (lo < hi) {
        mid = hi - (hi - lo) / 2;

        if (ngx_http_presence_count(zone, zone->sh->clock - mid + 1, tree)
            > n)
        {
            lo = mid;

        } else {
            hi = mid - 1;
        }
    }

    return lo;
}


/*
 * The first user whose latest second is not later than t: the latest
 * second at or before t that has users, found by a binary search through
 * the counting tree, then its slot's first user and a walk within the
 * slot; without one in the window, among the users a day old at the
 * tail.  Every walk checks for the end of the queue.  The user being
 * placed is in the counting tree already (at t), not yet in the queue.
 */

static uint32_t
ngx_http_presence_q_find(ngx_http_presence_zone_t *zone, int64_t t,
    ngx_uint_t placed)
{
    int64_t                   lo;
    uint32_t                  j;
    ngx_uint_t                later;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    /*
     * users in (t, clock]; t is before the head's second, so before now;
     * a user being placed is counted already, at t: one more
     */

    later = ngx_http_presence_count(zone, sh->clock - t, 0) + placed;

    if (ngx_http_presence_count(zone, NGX_HTTP_PRESENCE_DAY, 0) > later) {

        lo = ngx_http_presence_latest(zone,
                                      sh->clock - NGX_HTTP_PRESENCE_DAY + 1,
                                      t, later, NGX_HTTP_PRESENCE_TREE_USERS);

        j = ngx_http_presence_slot_first(sh, lo);

        while (j != NGX_HTTP_PRESENCE_NIL
               && ngx_http_presence_second(sh, j) > t)
        {
            j = sh->users[j].q_next;
        }

        return j;
    }

    /* only users a day old (or none) are left: they are at the tail */

    j = sh->q_tail;

    while (j != NGX_HTTP_PRESENCE_NIL && sh->users[j].q_prev
           != NGX_HTTP_PRESENCE_NIL
           && ngx_http_presence_second(sh, sh->users[j].q_prev) <= t)
    {
        j = sh->users[j].q_prev;
    }

    if (j != NGX_HTTP_PRESENCE_NIL && ngx_http_presence_second(sh, j) > t) {
        return NGX_HTTP_PRESENCE_NIL;
    }

    return j;
}


static void
ngx_http_presence_q_unlink(ngx_http_presence_zone_t *zone, uint32_t i)
{
    int64_t                    t;
    uint32_t                  *slot, next;
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    sh = zone->sh;
    user = &sh->users[i];
    next = user->q_next;

    /* the slot's first user goes: the next one, if it is of the slot */

    t = ngx_http_presence_second(sh, i);
    slot = &sh->q_slots[ngx_http_presence_slot(sh, t)];

    ngx_http_presence_crowd_unlink(zone, i, t, next);

    if (*slot == i) {
        *slot = (next != NGX_HTTP_PRESENCE_NIL
                 && ngx_http_presence_second(sh, next) / sh->slot_step
                    == t / sh->slot_step)
                ? next : NGX_HTTP_PRESENCE_NIL;
    }

    if (user->q_prev != NGX_HTTP_PRESENCE_NIL) {
        sh->users[user->q_prev].q_next = next;

    } else {
        sh->q_head = next;
    }

    if (next != NGX_HTTP_PRESENCE_NIL) {
        sh->users[next].q_prev = user->q_prev;

    } else {
        sh->q_tail = user->q_prev;
    }
}


/*
 * Where the user at "rank" (0: the most recent) among those within the
 * last "seconds" is: the latest second with more than "rank" users from
 * it to now; the first user of that second's slot; and how many users to
 * step over from there (those of the slot later than that second, then
 * the rank within it).  In a crowded second, the first user of the run
 * the rank is in, and the rank within the run.
 */

static uint32_t
ngx_http_presence_q_rank(ngx_http_presence_zone_t *zone, ngx_uint_t rank,
    time_t seconds, ngx_uint_t tree, ngx_uint_t *skip)
{
    int64_t                   t, end;
    uint32_t                  j;
    ngx_uint_t                later, slot_later, at;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    t = ngx_http_presence_latest(zone, sh->clock - seconds + 1, sh->clock,
                                 rank, tree);
    later = (t < sh->clock)
            ? ngx_http_presence_count(zone, sh->clock - t, tree) : 0;

    if (sh->ncrowds) {
        at = ngx_http_presence_count(zone, sh->clock - t + 1, tree) - later;
        j = ngx_http_presence_crowd_rank(zone, t, tree, at, rank - later,
                                         skip);

        if (j != NGX_HTTP_PRESENCE_NIL) {
            return j;
        }
    }

    /* the users of t's slot later than t come first in the slot */

    end = ngx_min((t / sh->slot_step + 1) * sh->slot_step - 1, sh->clock);
    slot_later = (end > t)
                 ? later - (end < sh->clock
                            ? ngx_http_presence_count(zone, sh->clock - end,
                                                      tree)
                            : 0)
                 : 0;

    *skip = slot_later + (rank - later);

    return ngx_http_presence_slot_first(sh, t);
}


/* the users of second t (within the day) in a counting tree */

static ngx_uint_t
ngx_http_presence_at(ngx_http_presence_zone_t *zone, int64_t t,
    ngx_uint_t tree)
{
    int64_t  clock;

    clock = zone->sh->clock;

    return ngx_http_presence_count(zone, clock - t + 1, tree)
           - ((t < clock) ? ngx_http_presence_count(zone, clock - t, tree)
                          : 0);
}


/* the index of second t, if it has one */

static ngx_http_presence_crowd_t *
ngx_http_presence_crowd_find(ngx_http_presence_shm_t *sh, int64_t t)
{
    ngx_http_presence_crowd_t  *c;

    if (sh->ncrowds == 0) {
        return NULL;
    }

    c = &sh->crowds[(uint64_t) t & (sh->ncrowds - 1)];

    return (c->built && c->second == t) ? c : NULL;
}


/*
 * A user comes into an indexed second: into the run of the user it is
 * placed before, else of the one it follows (at the end of the second),
 * else into the first run (the second was empty).
 */

static void
ngx_http_presence_crowd_place(ngx_http_presence_zone_t *zone, uint32_t i,
    int64_t t, uint32_t prev, uint32_t next)
{
    ngx_uint_t                  r;
    ngx_http_presence_shm_t    *sh;
    ngx_http_presence_user_t   *user;
    ngx_http_presence_crowd_t  *c;

    sh = zone->sh;
    c = ngx_http_presence_crowd_find(sh, t);

    if (c == NULL) {
        return;
    }

    if (next != NGX_HTTP_PRESENCE_NIL
        && ngx_http_presence_second(sh, next) == t)
    {
        r = ngx_http_presence_user_run(&sh->users[next]);

        if (c->first[r] == next) {
            c->first[r] = i;
        }

    } else if (prev != NGX_HTTP_PRESENCE_NIL
               && ngx_http_presence_second(sh, prev) == t)
    {
        r = ngx_http_presence_user_run(&sh->users[prev]);

    } else {
        r = 0;
        c->first[0] = i;
    }

    user = &sh->users[i];
    user->flags = (user->flags & ~NGX_HTTP_PRESENCE_RUN_MASK)
                  | (uint32_t) (r << NGX_HTTP_PRESENCE_RUN_SHIFT);

    c->n[r]++;
    c->visible[r] += ngx_http_presence_visible(zone, user);
}


/* a user leaves an indexed second: out of its run */

static void
ngx_http_presence_crowd_unlink(ngx_http_presence_zone_t *zone, uint32_t i,
    int64_t t, uint32_t next)
{
    ngx_uint_t                  r, v;
    ngx_http_presence_shm_t    *sh;
    ngx_http_presence_crowd_t  *c;

    sh = zone->sh;
    c = ngx_http_presence_crowd_find(sh, t);

    if (c == NULL) {
        return;
    }

    r = ngx_http_presence_user_run(&sh->users[i]);
    v = ngx_http_presence_visible(zone, &sh->users[i]);

    if (c->n[r] == 0 || c->visible[r] < v) {
        /* cannot be: the index is not to be trusted, built again */
        c->built = 0;
        return;
    }

    c->n[r]--;
    c->visible[r] -= v;

    if (c->first[r] == i) {
        c->first[r] = (c->n[r] && next != NGX_HTTP_PRESENCE_NIL
                       && ngx_http_presence_second(sh, next) == t
                       && ngx_http_presence_user_run(&sh->users[next]) == r)
                      ? next : NGX_HTTP_PRESENCE_NIL;
    }
}


/*
 * a user of an indexed second was hidden from others, or shown ("is"); it
 * is in the queue (its profile is read after its activity)
 */

static void
ngx_http_presence_crowd_visible(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_uint_t is)
{
    ngx_uint_t                  r;
    ngx_http_presence_crowd_t  *c;

    c = ngx_http_presence_crowd_find(zone->sh, user->last_ms / 1000);

    if (c == NULL) {
        return;
    }

    r = ngx_http_presence_user_run(user);

    if (is) {
        c->visible[r]++;

    } else if (c->visible[r]) {
        c->visible[r]--;

    } else {
        c->built = 0;
    }
}


/*
 * The user at "rank" (counted in "tree", which holds "at" users of second
 * t) within second t: in a crowded
 * second, the first user of the run the rank is in, and the rank within
 * the run.  The index is built again when it does not add up to the
 * counting trees' numbers, or when a run has grown to twice its share
 * (users placed at the start of the second go into its first run).  NIL:
 * the second is not crowded, or has no index; the caller steps over it.
 */

static uint32_t
ngx_http_presence_crowd_rank(ngx_http_presence_zone_t *zone, int64_t t,
    ngx_uint_t tree, ngx_uint_t at, ngx_uint_t rank, ngx_uint_t *skip)
{
    uint32_t                   *by;
    ngx_uint_t                  r, n, visible, sum, sum_visible, share;
    ngx_http_presence_crowd_t  *c;

    if (tree == NGX_HTTP_PRESENCE_TREE_VISIBLE) {
        visible = at;
        n = ngx_http_presence_at(zone, t, NGX_HTTP_PRESENCE_TREE_USERS);

    } else {
        visible = 0;
        n = at;
    }

    if (n < NGX_HTTP_PRESENCE_CROWD_MIN) {
        return NGX_HTTP_PRESENCE_NIL;
    }

    c = ngx_http_presence_crowd_find(zone->sh, t);

    if (c != NULL) {
        sum = 0;
        sum_visible = 0;
        share = 2 * ((n + NGX_HTTP_PRESENCE_RUNS - 1)
                     / NGX_HTTP_PRESENCE_RUNS);

        for (r = 0; r < NGX_HTTP_PRESENCE_RUNS; r++) {
            if (c->n[r] > share
                || (c->n[r] == 0) != (c->first[r] == NGX_HTTP_PRESENCE_NIL))
            {
                break;
            }

            sum += c->n[r];
            sum_visible += c->visible[r];
        }

        if (r < NGX_HTTP_PRESENCE_RUNS || sum != n
            || (tree == NGX_HTTP_PRESENCE_TREE_VISIBLE
                && sum_visible != visible))
        {
            c = NULL;
        }
    }

    if (c == NULL) {
        if (n > NGX_HTTP_PRESENCE_CROWD_MAX) {
            return NGX_HTTP_PRESENCE_NIL;
        }

        c = ngx_http_presence_crowd_build(zone, t, n);

        if (c == NULL) {
            return NGX_HTTP_PRESENCE_NIL;
        }
    }

    by = (tree == NGX_HTTP_PRESENCE_TREE_VISIBLE) ? c->visible : c->n;

    for (r = 0; r < NGX_HTTP_PRESENCE_RUNS; r++) {
        if (rank < by[r]) {
            *skip = rank;
            return c->first[r];
        }

        rank -= by[r];
    }

    return NGX_HTTP_PRESENCE_NIL;
}


/*
 * The index of second t: its "n" users, from the first, in runs of equal
 * length; it takes the place of the index of another second.  NULL when
 * the queue does not hold the "n" users the counting tree has (the caller
 * steps over the second).
 */

static ngx_http_presence_crowd_t *
ngx_http_presence_crowd_build(ngx_http_presence_zone_t *zone, int64_t t,
    ngx_uint_t n)
{
    uint32_t                    j, first[NGX_HTTP_PRESENCE_RUNS];
    uint32_t                    len[NGX_HTTP_PRESENCE_RUNS];
    uint32_t                    visible[NGX_HTTP_PRESENCE_RUNS];
    ngx_uint_t                  k, r, per;
    ngx_http_presence_shm_t    *sh;
    ngx_http_presence_user_t   *user;
    ngx_http_presence_crowd_t  *c;

    sh = zone->sh;
    c = &sh->crowds[(uint64_t) t & (sh->ncrowds - 1)];
    c->built = 0;

    /* the users of the slot later than t come first */

    j = ngx_http_presence_slot_first(sh, t);

    while (j != NGX_HTTP_PRESENCE_NIL
           && ngx_http_presence_second(sh, j) > t)
    {
        j = sh->users[j].q_next;
    }

    per = (n + NGX_HTTP_PRESENCE_RUNS - 1) / NGX_HTTP_PRESENCE_RUNS;

    for (r = 0; r < NGX_HTTP_PRESENCE_RUNS; r++) {
        first[r] = NGX_HTTP_PRESENCE_NIL;
        len[r] = 0;
        visible[r] = 0;
    }

    for (k = 0;
         k < n && j != NGX_HTTP_PRESENCE_NIL
         && ngx_http_presence_second(sh, j) == t;
         k++, j = user->q_next)
    {
        user = &sh->users[j];
        r = k / per;

        if (len[r]++ == 0) {
            first[r] = j;
        }

        visible[r] += ngx_http_presence_visible(zone, user);

        user->flags = (user->flags & ~NGX_HTTP_PRESENCE_RUN_MASK)
                      | (uint32_t) (r << NGX_HTTP_PRESENCE_RUN_SHIFT);
    }

    sh->page_steps += k;

    if (k != n
        || (j != NGX_HTTP_PRESENCE_NIL && ngx_http_presence_second(sh, j) == t))
    {
        return NULL;
    }

    ngx_memcpy(c->first, first, sizeof(first));
    ngx_memcpy(c->n, len, sizeof(len));
    ngx_memcpy(c->visible, visible, sizeof(visible));
    c->second = t;
    c->built = 1;

    sh->crowd_builds++;

    return c;
}


/*
 * The start of a page: at most NGX_HTTP_PRESENCE_WALK users are stepped
 * over in one hold of the lock; between two, the request path gets in.
 * The walk goes on from where it was if that user has not moved, else it
 * starts again (twice at most, then it finishes holding the lock).
 */

static uint32_t
ngx_http_presence_q_seek(ngx_http_presence_zone_t *zone,
    ngx_http_presence_page_t *page, ngx_log_t *log)
{
    int64_t                   ms, id;
    uint32_t                  j;
    ngx_uint_t                skip, k, again, tree;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;
    again = 0;
    tree = page->visible_only ? NGX_HTTP_PRESENCE_TREE_VISIBLE
                              : NGX_HTTP_PRESENCE_TREE_USERS;

    j = ngx_http_presence_q_rank(zone, page->offset, page->threshold, tree,
                                 &skip);

    while (j != NGX_HTTP_PRESENCE_NIL && skip) {

        /* users others may not see are not counted in a visible page */

        for (k = 0;
             k < NGX_HTTP_PRESENCE_WALK && skip && j != NGX_HTTP_PRESENCE_NIL;
             k++)
        {
            if (!page->visible_only
                || ngx_http_presence_visible(zone, &sh->users[j]))
            {
                skip--;
            }

            j = sh->users[j].q_next;
        }

        sh->page_steps += k;

        if (skip == 0 || j == NGX_HTTP_PRESENCE_NIL || again == 2) {
            continue;
        }

        id = sh->users[j].user_id;
        ms = sh->users[j].last_ms;

        ngx_http_presence_unlock(zone);
        sh = ngx_http_presence_store_lock(zone, log);

        if (sh->users[j].user_id != id || sh->users[j].last_ms != ms) {
            again++;
            page->total = ngx_http_presence_count(zone, page->threshold,
                                                  tree);

            if (page->offset >= page->total) {
                return NGX_HTTP_PRESENCE_NIL;
            }

            j = ngx_http_presence_q_rank(zone, page->offset, page->threshold,
                                         tree, &skip);
        }
    }

    return j;
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
    b = &sh->ua_hash[act->ua_hash % sh->nua];

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

    p = &sh->ua_hash[ua->hash % sh->nua];

    while (*p != off) {
        prev = ngx_http_presence_ptr(zone->shpool, *p);
        p = &prev->hash_next;
    }

    *p = ua->hash_next;

    ngx_slab_free_locked(zone->shpool, ua);
}


static u_char *
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

static u_char *
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


static void
ngx_http_presence_set_profile(ngx_http_presence_zone_t *zone,
    ngx_http_presence_user_t *user, ngx_http_presence_profile_in_t *in,
    time_t now)
{
    u_char                       *p;
    size_t                        size;
    ngx_str_t                    *fields;
    ngx_uint_t                    i;
    ngx_http_presence_profile_t  *profile;

    if (user->profile) {
        ngx_slab_free_locked(zone->shpool,
                             ngx_http_presence_ptr(zone->shpool,
                                                   user->profile));
        user->profile = 0;
    }

    /*
     * after POST cleanup's second even when read within it: profiles read
     * in that second before the request must be read again, these not
     */

    user->profile_at = (uint32_t) ngx_max(now, zone->sh->profiles_since + 1);
    user->flags &= ~(NGX_HTTP_PRESENCE_PROFILE_MISSING
                     |NGX_HTTP_PRESENCE_PROFILE_INACTIVE);

    ngx_http_presence_set_privacy(zone, user, in ? in->visible : 0, in != NULL);

    if (in == NULL) {
        user->flags |= NGX_HTTP_PRESENCE_PROFILE_MISSING;
        return;
    }

    if (in->active == 0) {
        user->flags |= NGX_HTTP_PRESENCE_PROFILE_INACTIVE;
    }

    fields = in->fields;

    size = offsetof(ngx_http_presence_profile_t, data);

    for (i = 0; i < NGX_HTTP_PRESENCE_PROFILE_FIELDS; i++) {
        size += (fields[i].data ? fields[i].len : 0);
    }

    profile = ngx_slab_alloc_locked(zone->shpool, size);
    if (profile == NULL) {
        zone->sh->profile_failures++;
        return;
    }

    p = profile->data;

    for (i = 0; i < NGX_HTTP_PRESENCE_PROFILE_FIELDS; i++) {
        if (fields[i].data == NULL) {
            profile->len[i] = -1;
            continue;
        }

        profile->len[i] = (int16_t) fields[i].len;
        p = ngx_cpymem(p, fields[i].data, fields[i].len);
    }

    user->profile = ngx_http_presence_off(zone->shpool, profile);
}


/* the operations: each takes the lock and moves the clock to now */

static ngx_http_presence_shm_t *
ngx_http_presence_store_lock(ngx_http_presence_zone_t *zone, ngx_log_t *log)
{
    ngx_http_presence_lock(zone, log);
    ngx_http_presence_advance(zone, ngx_time());

    return zone->sh;
}


ngx_str_t *
ngx_http_presence_store_name(ngx_http_presence_zone_t *zone)
{
    return &zone->name;
}


/*
 * what the store applies on its own: the per-user session cap, and the
 * thresholds of the statuses in the change log
 */

void
ngx_http_presence_store_configure(ngx_http_presence_zone_t *zone,
    ngx_http_presence_store_conf_t *conf)
{
    zone->max_sessions = conf->max_sessions;
    zone->online = conf->online;
    zone->recent = conf->recent;
    zone->privacy = conf->privacy;
    zone->hide_counts = conf->privacy && !conf->privacy_counts;
    zone->precision = conf->precision;
    zone->lookup_limit = conf->lookup_limit;
    zone->lookup_period = conf->lookup_period;
}


/* records activity: the only thing the request path does under the lock */

void
ngx_http_presence_store_touch(ngx_http_presence_zone_t *zone,
    ngx_http_presence_activity_t *act, time_t timeout, ngx_log_t *log)
{
    ngx_http_presence_lock(zone, log);

    ngx_http_presence_advance(zone, act->now_ms / 1000);

    zone->sh->writer = ngx_pid;
    ngx_http_presence_record(zone, act, timeout, log, 0);
    zone->sh->writer = 0;

    ngx_http_presence_unlock(zone);
}


/* the request path's counters: each worker its own cache line, no lock */

#define ngx_http_presence_counter(sh)                                         \
    (&(sh)->counters[(ngx_worker == NGX_INVALID_ARRAY_INDEX ? 0 : ngx_worker) \
                     % NGX_HTTP_PRESENCE_SLOTS])


void
ngx_http_presence_store_count_request(ngx_http_presence_zone_t *zone,
    ngx_uint_t status)
{
    ngx_http_presence_counters_t  *counter;

    if (status > NGX_HTTP_PRESENCE_JWT_STATUSES) {
        return;
    }

    counter = ngx_http_presence_counter(zone->sh);
    (void) ngx_atomic_fetch_add(&counter->requests[status], 1);
}


void
ngx_http_presence_store_count_cache(ngx_http_presence_zone_t *zone,
    ngx_uint_t hit)
{
    ngx_http_presence_counters_t  *counter;

    counter = ngx_http_presence_counter(zone->sh);

    if (hit) {
        (void) ngx_atomic_fetch_add(&counter->cache_hits, 1);

    } else {
        (void) ngx_atomic_fetch_add(&counter->cache_misses, 1);
    }
}


/*
 * Every second, in every worker: the clock moves on (so counts age with
 * no traffic), the hour's peak is sampled and, once per cleanup interval
 * across workers, expired sessions are freed from the least recently
 * active end, a slice at a time.  Returns whether a slice is left.
 */

ngx_uint_t
ngx_http_presence_store_tick(ngx_http_presence_zone_t *zone, time_t online,
    time_t timeout, ngx_msec_t cleanup_interval, ngx_log_t *log)
{
    time_t                    now;
    ngx_uint_t                more;
    ngx_http_presence_shm_t  *sh;

    now = ngx_time();
    more = 0;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_sample_peak(zone, online);
    ngx_http_presence_age(zone);

    if (now >= sh->next_sweep) {
        (void) ngx_http_presence_expire(zone, timeout,
                                        NGX_HTTP_PRESENCE_EXPIRE_SLICE,
                                        &more);
        if (!more) {
            sh->next_sweep = now + ngx_max(cleanup_interval / 1000, 1);
        }
    }

    ngx_http_presence_unlock(zone);

    return more;
}


ngx_uint_t
ngx_http_presence_store_online(ngx_http_presence_zone_t *zone,
    time_t seconds, ngx_log_t *log)
{
    ngx_uint_t  n;

    (void) ngx_http_presence_store_lock(zone, log);
    n = ngx_http_presence_count(zone, seconds,
                                zone->hide_counts
                                ? NGX_HTTP_PRESENCE_TREE_VISIBLE
                                : NGX_HTTP_PRESENCE_TREE_USERS);
    ngx_http_presence_unlock(zone);

    return n;
}


/* under the lock: the three thresholds, sessions and today's peak */

static void
ngx_http_presence_counts(ngx_http_presence_zone_t *zone, time_t *thresholds,
    ngx_http_presence_counts_t *counts)
{
    ngx_uint_t                h;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    ngx_http_presence_sample_peak(zone,
                                  thresholds[NGX_HTTP_PRESENCE_ONLINE]);

    for (h = 0; h < NGX_HTTP_PRESENCE_THRESHOLDS; h++) {
        counts->users[h] = ngx_http_presence_count(zone, thresholds[h],
                                               zone->hide_counts
                                               ? NGX_HTTP_PRESENCE_TREE_VISIBLE
                                               : NGX_HTTP_PRESENCE_TREE_USERS);
    }

    counts->sessions = ngx_http_presence_count(zone,
                                      thresholds[NGX_HTTP_PRESENCE_ONLINE], 1);

    counts->peak = 0;
    counts->peak_hour = -1;

    for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
        if (sh->peak[h] > counts->peak) {
            counts->peak = sh->peak[h];
            counts->peak_hour = h;
        }
    }
}


void
ngx_http_presence_store_counts(ngx_http_presence_zone_t *zone,
    time_t *thresholds, ngx_http_presence_counts_t *counts, ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_counts(zone, thresholds, counts);

    counts->warm_done = (sh->warm == NGX_HTTP_PRESENCE_WARM_DONE);
    counts->warm_loaded = sh->warm_loaded;

    ngx_http_presence_unlock(zone);
}


/*
 * A page of the users queue, most recent first: the first "total" users
 * of the queue are exactly those within the threshold.  Profiles are
 * copied into the caller's area.
 */

void
ngx_http_presence_store_page(ngx_http_presence_zone_t *zone,
    ngx_http_presence_page_t *page, ngx_log_t *log)
{
    u_char                         *p, *area;
    time_t                          cutoff;
    uint32_t                        i, j;
    ngx_uint_t                      k, f;
    ngx_http_presence_shm_t        *sh;
    ngx_http_presence_user_t       *user;
    ngx_http_presence_session_t    *s;
    ngx_http_presence_user_info_t  *row;

    area = page->area;
    page->nusers = 0;
    page->needed = 0;

    (void) ngx_http_presence_store_lock(zone, log);

    page->visible_only = page->visible_only && zone->privacy;
    page->total = ngx_http_presence_count(zone, page->threshold,
                                          page->visible_only
                                          ? NGX_HTTP_PRESENCE_TREE_VISIBLE
                                          : NGX_HTTP_PRESENCE_TREE_USERS);

    i = (page->offset < page->total)
        ? ngx_http_presence_q_seek(zone, page, log)
        : NGX_HTTP_PRESENCE_NIL;

    /* the seek may have let the lock go: the zone as it is now */

    sh = zone->sh;
    page->now = sh->clock;
    cutoff = page->now - page->threshold;

    for (k = page->offset;
         k < page->total && page->nusers < page->limit
         && i != NGX_HTTP_PRESENCE_NIL;
         i = user->q_next)
    {
        user = &sh->users[i];

        if (page->visible_only && !ngx_http_presence_visible(zone, user)) {
            continue;
        }

        k++;
        row = &page->users[page->nusers];

        row->user_id = user->user_id;
        row->last_ms = user->last_ms;
        row->order = page->nusers;
        row->sessions = 0;

        for (f = 0; f < NGX_HTTP_PRESENCE_PROFILE_FIELDS; f++) {
            p = ngx_http_presence_profile(zone, user, f, &row->len[f]);
            row->profile[f] = area;

            if (row->len[f] > 0) {
                page->needed += row->len[f];

                if (row->len[f] > page->area_end - area) {
                    row->len[f] = -1;       /* the caller asks again */
                    continue;
                }

                area = ngx_cpymem(area, p, row->len[f]);
            }
        }

        for (j = user->sessions; j != NGX_HTTP_PRESENCE_NIL;
             j = s->user_next)
        {
            s = &sh->sessions[j];

            if (s->last_ms / 1000 > cutoff
                && !ngx_http_presence_expired(s, page->now, page->timeout))
            {
                row->sessions++;
            }
        }

        page->nusers++;
    }

    ngx_http_presence_unlock(zone);

    page->area = area;
}


/* how many sessions a user has: the room sessions() needs */

ngx_uint_t
ngx_http_presence_store_nsessions(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log)
{
    ngx_uint_t                 n;
    ngx_http_presence_user_t  *user;

    ngx_http_presence_lock(zone, log);
    user = ngx_http_presence_find_user(zone, user_id);
    n = user ? user->nsessions : 0;
    ngx_http_presence_unlock(zone);

    return n;
}


/* a user's sessions that have not expired, at most "max" */

ngx_uint_t
ngx_http_presence_store_sessions(ngx_http_presence_zone_t *zone,
    int64_t user_id, time_t timeout, ngx_http_presence_session_info_t *rows,
    ngx_uint_t max, ngx_log_t *log)
{
    uint32_t                      j;
    ngx_uint_t                    n;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_user_t     *user;
    ngx_http_presence_session_t  *s;

    n = 0;

    sh = ngx_http_presence_store_lock(zone, log);

    user = ngx_http_presence_find_user(zone, user_id);

    for (j = user ? user->sessions : NGX_HTTP_PRESENCE_NIL;
         j != NGX_HTTP_PRESENCE_NIL && n < max;
         j = s->user_next)
    {
        s = &sh->sessions[j];

        if (ngx_http_presence_expired(s, sh->clock, timeout)) {
            continue;
        }

        ngx_http_presence_copy_session(zone, j, &rows[n++]);
    }

    ngx_http_presence_unlock(zone);

    return n;
}


static void
ngx_http_presence_copy_session(ngx_http_presence_zone_t *zone, uint32_t i,
    ngx_http_presence_session_info_t *row)
{
    size_t                        len;
    u_char                       *ua;
    ngx_http_presence_session_t  *s;

    s = &zone->sh->sessions[i];

    row->index = i;
    ngx_memcpy(row->id, s->id, NGX_HTTP_PRESENCE_ID_LEN);
    row->user_id = s->user_id;
    row->created_ms = s->created_ms;
    row->last_ms = s->last_ms;
    row->exp = s->exp;
    ngx_memcpy(row->addr, s->addr, sizeof(row->addr));
    row->family = s->family;
    row->device = ngx_http_presence_session_device(s);

    ua = ngx_http_presence_ua(zone, s->ua, &len);
    row->ua_len = (uint16_t) len;

    if (len) {
        ngx_memcpy(row->ua, ua, len);
    }
}


/*
 * the latest activity of each id, -1 when unknown, and whether others may
 * see it; returns the clock
 */

time_t
ngx_http_presence_store_last_seen(ngx_http_presence_zone_t *zone,
    int64_t *ids, ngx_uint_t n, int64_t *last, u_char *hidden,
    uint64_t *head, ngx_log_t *log)
{
    time_t                     now;
    ngx_uint_t                 i;
    ngx_http_presence_user_t  *user;

    now = ngx_http_presence_store_lock(zone, log)->clock;

    /* the stream's snapshot: current with the change log's head */

    if (head) {
        ngx_http_presence_age(zone);
        *head = zone->sh->log_head;
    }

    for (i = 0; i < n; i++) {
        user = ngx_http_presence_find_user(zone, ids[i]);
        last[i] = user ? user->last_ms : -1;
        hidden[i] = user ? !ngx_http_presence_visible(zone, user)
                         : (zone->privacy != 0);
    }

    ngx_http_presence_unlock(zone);

    return now;
}


/*
 * Expires now, a slice at a time so that requests are not held up, and
 * asks the flusher to apply the same rule to the table.
 */

ngx_uint_t
ngx_http_presence_store_cleanup(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_log_t *log)
{
    ngx_uint_t                n, more;
    ngx_http_presence_shm_t  *sh;

    n = 0;

    do {
        sh = ngx_http_presence_store_lock(zone, log);

        n += ngx_http_presence_expire(zone, timeout,
                                      NGX_HTTP_PRESENCE_EXPIRE_SLICE, &more);
        sh->cleanup_requested++;

        /* profiles (and privacy settings) are read again at once */

        sh->profiles_since = ngx_time();

        ngx_http_presence_unlock(zone);

    } while (more);

    return n;
}


void
ngx_http_presence_store_stats(ngx_http_presence_zone_t *zone,
    time_t *thresholds, ngx_http_presence_store_stats_t *st, ngx_log_t *log)
{
    ngx_uint_t                  h, i;
    ngx_slab_pool_t            *shpool;
    ngx_http_presence_shm_t    *sh;
    ngx_http_presence_counts_t  counts;

    ngx_memzero(st, sizeof(ngx_http_presence_store_stats_t));

    shpool = zone->shpool;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_counts(zone, thresholds, &counts);

    for (i = 0; i < NGX_HTTP_PRESENCE_THRESHOLDS; i++) {
        st->online[i] = counts.users[i];
    }

    st->active_sessions = counts.sessions;
    st->peak = counts.peak;

    for (h = 0; h < NGX_HTTP_PRESENCE_SLOTS; h++) {
        for (i = 0; i < NGX_HTTP_PRESENCE_JWT_STATUSES; i++) {
            st->requests[i] += sh->counters[h].requests[i + 1];
        }

        st->cache_hits += sh->counters[h].cache_hits;
        st->cache_misses += sh->counters[h].cache_misses;
    }

    st->zone_bytes = shpool->end - (u_char *) shpool;
    st->zone_free = shpool->pfree * ngx_pagesize;
    st->sessions = sh->sessions_used;
    st->sessions_capacity = sh->nsessions;
    st->users = sh->users_used;
    st->users_capacity = sh->nusers;
    st->evictions = sh->evictions;
    st->cap_evictions = sh->cap_evictions;
    st->expired = sh->expired;
    st->ring_depth = sh->ring_tail - sh->ring_head;
    st->ring_size = sh->nring;
    st->ua_buckets = sh->nua;
    st->ring_overflows = sh->ring_overflows;
    st->string_failures = sh->ua_failures + sh->profile_failures;
    st->resets = sh->resets;
    st->page_steps = sh->page_steps;
    st->crowd_builds = sh->crowd_builds;
    st->batches = sh->flush_batches;
    st->statements = sh->flush_statements;
    st->rows = sh->flush_rows;
    st->errors = sh->flush_errors;
    st->missing = sh->flush_missing_users;
    st->deactivated = sh->flush_deactivated;
    st->last_ok = sh->flush_last_ok;
    st->connected = sh->db_connected;
    st->flusher_pid = sh->lease_pid;
    st->pulled = sh->pulled_rows;
    st->pull_skipped = sh->pull_skipped;
    st->warm_done = (sh->warm == NGX_HTTP_PRESENCE_WARM_DONE);
    st->warm_total = sh->warm_total;
    st->warm_loaded = sh->warm_loaded;
    st->warm_seconds = sh->warm_msec / 1000;
    st->subscribers = sh->stream[NGX_HTTP_PRESENCE_STREAM_SUBSCRIBERS];
    st->subscriber_bytes = sh->stream[NGX_HTTP_PRESENCE_STREAM_BYTES];
    st->events_sent = sh->stream[NGX_HTTP_PRESENCE_STREAM_EVENTS];
    st->slow_drops = sh->stream[NGX_HTTP_PRESENCE_STREAM_DROPS];
    st->events_logged = sh->log_head - sh->log_base;
    ngx_http_presence_devices(zone, thresholds[NGX_HTTP_PRESENCE_ONLINE],
                              st->devices);

    for (i = 0; i < NGX_HTTP_PRESENCE_DURATIONS; i++) {
        st->durations[i] = sh->all_durations[i];
    }

    st->duration_count = sh->all_count;
    st->duration_ms = sh->all_ms;
    st->lookup_callers = sh->lookup_callers;
    st->lookup_limited = sh->lookup_limited;
    st->lookup_evictions = sh->lookup_evictions;

    ngx_http_presence_unlock(zone);
}


/*
 * The flusher's lease: renewed by its holder (NGX_OK), taken when free,
 * when its heartbeat is older than "stale", or when its holder is gone
 * (NGX_DONE, lease->previous says who had it), else NGX_DECLINED.
 */

ngx_int_t
ngx_http_presence_store_lease(ngx_http_presence_zone_t *zone,
    ngx_http_presence_lease_t *lease, ngx_log_t *log)
{
    ngx_int_t                 rc;
    ngx_pid_t                 pid;
    ngx_msec_t                now;
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    now = ngx_current_msec;
    pid = sh->lease_pid;
    rc = NGX_DECLINED;

    if (pid == ngx_pid && sh->lease_gen == lease->gen && lease->owner) {
        sh->lease_beat = now;
        sh->db_connected = lease->connected;
        rc = NGX_OK;

    } else if (pid == 0
               || (ngx_msec_int_t) (now - sh->lease_beat)
                  > (ngx_msec_int_t) lease->stale
               || (pid != ngx_pid && kill(pid, 0) == -1 && errno == ESRCH))
    {
        sh->lease_pid = ngx_pid;
        sh->lease_gen++;
        sh->lease_beat = now;
        sh->db_connected = 0;

        lease->gen = sh->lease_gen;
        lease->owner = 1;
        lease->previous = pid;
        rc = NGX_DONE;
    }

    ngx_http_presence_unlock(zone);

    return rc;
}


void
ngx_http_presence_store_release(ngx_http_presence_zone_t *zone,
    ngx_http_presence_lease_t *lease, ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    if (sh->lease_pid == ngx_pid && sh->lease_gen == lease->gen) {
        sh->lease_pid = 0;
        sh->db_connected = 0;
    }

    ngx_http_presence_unlock(zone);

    lease->owner = 0;
}


void
ngx_http_presence_store_connected(ngx_http_presence_zone_t *zone,
    ngx_uint_t connected, ngx_log_t *log)
{
    ngx_http_presence_store_lock(zone, log)->db_connected = connected;
    ngx_http_presence_unlock(zone);
}


/*
 * The changed sessions, copied out: from the ring and, after an overflow,
 * from a slice of the session array; whether cleanup was asked for, and
 * this hour's peak.  Ring entries stay until the batch is written.
 */

void
ngx_http_presence_store_drain(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, time_t online, ngx_log_t *log)
{
    uint32_t                  i;
    uint64_t                  head;
    ngx_http_presence_shm_t  *sh;

    ngx_memset(batch->seen, 0xff, 2 * batch->max * sizeof(uint32_t));
    batch->nrows = 0;

    sh = ngx_http_presence_store_lock(zone, log);

    batch->resets = sh->resets;

    head = sh->ring_head;

    while (head < sh->ring_tail && batch->nrows < batch->max) {
        i = sh->ring[head++ % sh->nring];

        if (!(sh->sessions[i].flags & NGX_HTTP_PRESENCE_IN_RING)) {
            continue;
        }

        if (!ngx_http_presence_take(zone, batch, i)) {
            sh->sessions[i].flags &= ~NGX_HTTP_PRESENCE_IN_RING;
        }
    }

    batch->ring_head = head;

    if (sh->ring_overflow && batch->nrows < batch->max) {
        ngx_http_presence_sweep(zone, batch);
    }

    batch->cleanup_requested = sh->cleanup_requested;

    ngx_http_presence_sample_peak(zone, online);

    batch->peak_day = sh->peak_day;
    batch->peak_hour = (sh->clock % NGX_HTTP_PRESENCE_DAY)
                       / NGX_HTTP_PRESENCE_HOUR;
    batch->peak = sh->peak[batch->peak_hour];

    ngx_http_presence_unlock(zone);
}


/* after an overflow, the changed sessions not in the ring, a slice a time */

static void
ngx_http_presence_sweep(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch)
{
    uint32_t                  i, end;
    ngx_uint_t                scanned;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    if (sh->sweep_cursor == 0) {
        sh->sweep_mark = sh->ring_overflows;
    }

    i = sh->sweep_cursor;
    end = sh->nsessions;

    for (scanned = 0;
         i < end && scanned < NGX_HTTP_PRESENCE_SWEEP_STEP
         && batch->nrows < batch->max;
         i++, scanned++)
    {
        if (sh->sessions[i].user != NGX_HTTP_PRESENCE_NIL
            && !(sh->sessions[i].flags & NGX_HTTP_PRESENCE_IN_RING))
        {
            (void) ngx_http_presence_take(zone, batch, i);
        }
    }

    if (i == end) {
        i = 0;

        if (sh->sweep_mark == sh->ring_overflows) {
            sh->ring_overflow = 0;
        }
    }

    sh->sweep_cursor = i;
}


/* a changed session into the batch, once */

static ngx_uint_t
ngx_http_presence_take(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, uint32_t i)
{
    ngx_uint_t                    h, size;
    ngx_http_presence_session_t  *s;

    s = &zone->sh->sessions[i];

    if (s->user == NGX_HTTP_PRESENCE_NIL || s->last_ms <= s->flushed_ms) {
        return 0;
    }

    size = 2 * batch->max;

    for (h = i % size;
         batch->seen[h] != NGX_HTTP_PRESENCE_NIL;
         h = (h + 1) % size)
    {
        if (batch->seen[h] == i) {
            return 1;
        }
    }

    batch->seen[h] = i;

    ngx_http_presence_copy_session(zone, i, &batch->rows[batch->nrows++]);

    return 1;
}


/*
 * The batch's statement is over.  When it succeeded its sessions are
 * marked written now (those that moved on meanwhile go back into the
 * ring), else they stay in the ring for the next try.  Returns NGX_ERROR
 * (it failed), NGX_DECLINED (the zone started afresh meanwhile), NGX_AGAIN
 * (written, and the ring holds more than one batch took) or NGX_OK.
 */

ngx_int_t
ngx_http_presence_store_written(ngx_http_presence_zone_t *zone,
    ngx_http_presence_batch_t *batch, ngx_http_presence_written_t *w,
    ngx_log_t *log)
{
    ngx_int_t                          rc;
    ngx_uint_t                         k;
    ngx_http_presence_shm_t           *sh;
    ngx_http_presence_session_t       *s;
    ngx_http_presence_session_info_t  *row;

    sh = ngx_http_presence_store_lock(zone, log);

    if (!w->ok) {
        sh->flush_errors++;
        rc = NGX_ERROR;
        goto done;
    }

    sh->flush_statements++;

    if (sh->resets != batch->resets) {
        rc = NGX_DECLINED;
        goto done;
    }

    for (k = 0; k < batch->nrows; k++) {
        row = &batch->rows[k];
        s = &sh->sessions[row->index];

        if (s->user == NGX_HTTP_PRESENCE_NIL
            || ngx_memcmp(s->id, row->id, NGX_HTTP_PRESENCE_ID_LEN) != 0)
        {
            continue;
        }

        s->flushed_ms = ngx_max(s->flushed_ms, row->last_ms);
        s->flags &= ~NGX_HTTP_PRESENCE_IN_RING;

        if (s->last_ms > s->flushed_ms) {
            ngx_http_presence_ring_add(sh, row->index);
        }
    }

    if (batch->ring_head > sh->ring_head) {
        sh->ring_head = batch->ring_head;
    }

    if (batch->nrows) {
        sh->flush_batches++;
    }

    sh->flush_rows += w->rows;
    sh->flush_missing_users += w->missing;
    sh->flush_deactivated += w->deactivated;
    sh->flush_last_ok = ngx_time();

    if (w->cleanup && sh->cleanup_requested == batch->cleanup_requested) {
        sh->cleanup_requested = 0;
    }

    rc = ((sh->ring_tail > sh->ring_head || sh->ring_overflow)
          && batch->nrows == batch->max) ? NGX_AGAIN : NGX_OK;

done:

    ngx_http_presence_unlock(zone);

    return rc;
}


uint64_t
ngx_http_presence_store_ring_depth(ngx_http_presence_zone_t *zone,
    ngx_log_t *log)
{
    uint64_t                  depth;
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);
    depth = sh->ring_tail - sh->ring_head;
    ngx_http_presence_unlock(zone);

    return depth;
}


/* today's peaks from PostgreSQL (0: none): the highest of each hour wins */

void
ngx_http_presence_store_merge_peaks(ngx_http_presence_zone_t *zone,
    time_t online, uint32_t *peaks, ngx_log_t *log)
{
    ngx_uint_t                h;
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_sample_peak(zone, online);

    for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
        if (peaks[h] > sh->peak[h]) {
            sh->peak[h] = peaks[h];
        }
    }

    ngx_http_presence_unlock(zone);
}


void
ngx_http_presence_store_watermark(ngx_http_presence_zone_t *zone,
    ngx_http_presence_mark_t *mark, ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);
    mark->us = sh->pull_watermark;
    mark->id = sh->pull_watermark_id;
    ngx_http_presence_unlock(zone);
}


/*
 * Rows of other nodes, merged in one hold of the lock: each is recorded
 * as remote activity (never written back) or forgotten, as "row" says;
 * the pull's watermark moves to "mark" when that is later.
 */

void
ngx_http_presence_store_merge(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_http_presence_row_pt row, void *data, ngx_uint_t n,
    ngx_http_presence_mark_t *mark, ngx_log_t *log)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    ngx_http_presence_shm_t       *sh;
    ngx_http_presence_activity_t   act;

    sh = ngx_http_presence_store_lock(zone, log);

    sh->writer = ngx_pid;

    for (i = 0; i < n; i++) {
        rc = row(data, i, &act);

        if (rc == NGX_OK) {
            ngx_http_presence_record(zone, &act, timeout, log, 1);

        } else if (rc == NGX_DONE) {
            ngx_http_presence_forget(zone, act.id, act.now_ms);

        } else {
            sh->pull_skipped++;
        }
    }

    sh->writer = 0;

    if (mark->us > sh->pull_watermark
        || (mark->us == sh->pull_watermark && mark->id > sh->pull_watermark_id))
    {
        sh->pull_watermark = mark->us;
        sh->pull_watermark_id = mark->id;
    }

    sh->pulled_rows += n;

    ngx_http_presence_unlock(zone);
}


/*
 * The warm start: where it is.  A pending one begins now (the first call
 * of the flusher that will load it).
 */

void
ngx_http_presence_store_warm(ngx_http_presence_zone_t *zone,
    ngx_http_presence_warm_t *warm, ngx_uint_t begin, ngx_log_t *log)
{
    ngx_time_t               *tp;
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    if (begin && sh->warm == NGX_HTTP_PRESENCE_WARM_PENDING) {
        tp = ngx_timeofday();

        sh->warm = NGX_HTTP_PRESENCE_WARM_LOADING;
        sh->warm_start = (int64_t) tp->sec * 1000 + (int64_t) tp->msec;
    }

    warm->state = sh->warm;
    warm->mark.us = sh->warm_us;
    warm->mark.id = sh->warm_id;
    warm->total = sh->warm_total;
    warm->loaded = sh->warm_loaded;
    warm->msec = sh->warm_msec;

    ngx_http_presence_unlock(zone);
}


/*
 * A page of the warm start, most recent first, merged as remote activity
 * in slices (the lock is let go between them): a row is loaded while the
 * zone has room for it without evicting anyone.  "total" is the number of
 * rows the load began with (0: not known from this page); "last" says
 * that no rows follow.  NGX_DONE: the warm start is over, warm says how it
 * went.
 */

ngx_int_t
ngx_http_presence_store_warm_merge(ngx_http_presence_zone_t *zone,
    time_t timeout, ngx_http_presence_row_pt row,
    ngx_http_presence_profile_pt profile, void *data, ngx_uint_t n,
    ngx_http_presence_warm_t *warm, ngx_uint_t last, ngx_log_t *log)
{
    ngx_int_t                        rc;
    ngx_uint_t                       i, full, end;
    ngx_time_t                      *tp;
    ngx_http_presence_shm_t         *sh;
    ngx_http_presence_user_t        *user;
    ngx_http_presence_activity_t     act;
    ngx_http_presence_profile_in_t   in;

    full = 0;

    for (i = 0; i < n && !full; /* void */) {
        sh = ngx_http_presence_store_lock(zone, log);

        if (sh->warm != NGX_HTTP_PRESENCE_WARM_LOADING) {
            ngx_http_presence_unlock(zone);
            return NGX_ERROR;       /* the zone was reset meanwhile */
        }

        sh->writer = ngx_pid;
        zone->descending = 1;

        for (end = ngx_min(n, i + NGX_HTTP_PRESENCE_WARM_SLICE);
             i < end;
             i++)
        {
            rc = row(data, i, &act);

            if (rc != NGX_OK) {
                continue;
            }

            if (!ngx_http_presence_room(zone, act.id, timeout)) {
                full = 1;
                break;
            }

            if (ngx_http_presence_record(zone, &act, timeout, log, 1)
                != NGX_OK)
            {
                continue;
            }

            sh->warm_loaded++;

            /* its profile and settings now, not some flushes later */

            user = ngx_http_presence_find_user(zone, act.user_id);

            if (user && user->profile_at == 0) {
                ngx_http_presence_set_profile(zone, user,
                                      (profile(data, i, &in) == NGX_OK)
                                      ? &in : NULL, ngx_time());
            }
        }

        zone->descending = 0;
        sh->writer = 0;

        ngx_http_presence_unlock(zone);
    }

    sh = ngx_http_presence_store_lock(zone, log);

    if (warm->total) {
        sh->warm_total = warm->total;
    }

    sh->warm_us = warm->mark.us;
    sh->warm_id = warm->mark.id;

    rc = NGX_OK;

    if (full || last) {
        tp = ngx_timeofday();

        sh->warm = NGX_HTTP_PRESENCE_WARM_DONE;
        sh->warm_msec = ngx_max((int64_t) tp->sec * 1000 + (int64_t) tp->msec
                                - sh->warm_start, 0);
        rc = NGX_DONE;
    }

    warm->state = sh->warm;
    warm->total = sh->warm_total;
    warm->loaded = sh->warm_loaded;
    warm->msec = sh->warm_msec;

    ngx_http_presence_unlock(zone);

    return rc;
}


/*
 * The users whose profile is missing or stale: first among the "scan" most
 * recently active (the first pages), then from a sweep of the users array
 * that goes on where the last one stopped, so that every user's profile
 * (and privacy setting) is read again within presence_profile_ttl plus
 * one sweep of the array (a 64th of it a call, CHUNK users a hold of the
 * lock).  At most "max"; a user may be in both parts (read once).
 */

ngx_uint_t
ngx_http_presence_store_stale_profiles(ngx_http_presence_zone_t *zone,
    time_t ttl, int64_t *ids, ngx_uint_t max, ngx_uint_t scan,
    ngx_log_t *log)
{
    time_t                     now;
    uint32_t                   i, end;
    ngx_uint_t                 k, n, sweep;
    ngx_http_presence_shm_t   *sh;
    ngx_http_presence_user_t  *user;

    n = 0;
    now = ngx_time();

    sh = ngx_http_presence_store_lock(zone, log);

    for (k = 0, i = sh->q_head;
         k < scan && i != NGX_HTTP_PRESENCE_NIL && n < max;
         k++, i = user->q_next)
    {
        user = &sh->users[i];

        if (ngx_http_presence_profile_stale(sh, user, now, ttl)) {
            ids[n++] = user->user_id;
        }
    }

    sweep = ngx_min(ngx_max(sh->nusers / 64, NGX_HTTP_PRESENCE_PROFILE_CHUNK),
                    sh->nusers);

    while (n < max && sweep) {
        i = sh->profiles_cursor % sh->nusers;
        end = i + (uint32_t) ngx_min(ngx_min(sweep,
                                             NGX_HTTP_PRESENCE_PROFILE_CHUNK),
                                     sh->nusers - i);
        sweep -= end - i;

        for ( /* void */ ; i < end && n < max; i++) {
            user = &sh->users[i];

            if (user->user_id != 0
                && ngx_http_presence_profile_stale(sh, user, now, ttl))
            {
                ids[n++] = user->user_id;
            }
        }

        sh->profiles_cursor = i % sh->nusers;

        if (n < max && sweep) {
            ngx_http_presence_unlock(zone);
            sh = ngx_http_presence_store_lock(zone, log);
        }
    }

    ngx_http_presence_unlock(zone);

    return n;
}


/*
 * never read, read before presence_profile_ttl ago, or before POST
 * cleanup; a profile read but not stored (the zone full, counted) waits
 * like the others
 */

static ngx_uint_t
ngx_http_presence_profile_stale(ngx_http_presence_shm_t *sh,
    ngx_http_presence_user_t *user, time_t now, time_t ttl)
{
    return user->profile_at == 0
           || now - (time_t) user->profile_at >= ttl
           || (time_t) user->profile_at <= sh->profiles_since;
}


/* the change log's head, without the lock: has anything happened? */

uint64_t
ngx_http_presence_store_log_head(ngx_http_presence_zone_t *zone)
{
    return ((ngx_http_presence_shm_t *) zone->shpool->data)->log_head;
}


/*
 * Up to "max" events after *cursor, oldest first, after ageing to now;
 * *cursor moves past them.  NGX_DECLINED: events after *cursor are gone
 * from the log (it moved on to the oldest still held), or *cursor is not
 * an event of this zone.
 */

ngx_int_t
ngx_http_presence_store_events(ngx_http_presence_zone_t *zone,
    uint64_t *cursor, ngx_http_presence_event_t *events, ngx_uint_t max,
    ngx_uint_t *n, ngx_log_t *log)
{
    uint64_t                   seq, head;
    ngx_int_t                  rc;
    ngx_http_presence_shm_t   *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_age(zone);

    head = sh->log_head;
    rc = NGX_OK;

    if (*cursor > head || *cursor < sh->log_base) {
        *cursor = head;
        rc = NGX_DECLINED;

    } else if (head - *cursor > sh->nlog) {
        *cursor = head - sh->nlog;
        rc = NGX_DECLINED;
    }

    for (*n = 0, seq = *cursor + 1; seq <= head && *n < max; seq++) {
        events[(*n)++] = sh->log[seq & (sh->nlog - 1)];
    }

    *cursor = seq - 1;

    ngx_http_presence_unlock(zone);

    return rc;
}


/* the stream's numbers: subscribers, their bytes, events, drops */

void
ngx_http_presence_store_stream_stat(ngx_http_presence_zone_t *zone,
    ngx_uint_t stat, ngx_atomic_int_t delta)
{
    ngx_http_presence_shm_t  *sh;

    sh = zone->shpool->data;

    (void) ngx_atomic_fetch_add(&sh->stream[stat], delta);
}


/* the user is known to hide from others (presence_privacy_column false) */

ngx_uint_t
ngx_http_presence_store_hides(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log)
{
    ngx_uint_t                 hides;
    ngx_http_presence_user_t  *user;

    (void) ngx_http_presence_store_lock(zone, log);

    user = ngx_http_presence_find_user(zone, user_id);
    hides = zone->privacy && user
            && (user->flags & NGX_HTTP_PRESENCE_INVISIBLE);

    ngx_http_presence_unlock(zone);

    return hides;
}


/*
 * presence_lookup_limit: the distinct ids "caller" asked about in this
 * period, a sorted array in a record of the zone (a red-black tree by
 * caller, least recently used evicted when the zone has no room).
 * NGX_OK records "ids"; NGX_BUSY when they would take the caller past the
 * limit (nothing recorded), *retry says for how long.
 */

ngx_int_t
ngx_http_presence_store_lookup(ngx_http_presence_zone_t *zone,
    int64_t caller, int64_t *ids, ngx_uint_t n, time_t *retry,
    ngx_log_t *log)
{
    time_t                       now;
    ngx_int_t                    rc;
    ngx_uint_t                   i, fresh;
    ngx_http_presence_shm_t     *sh;
    ngx_http_presence_lookup_t  *lk;

    if (zone->lookup_limit == 0) {
        return NGX_OK;
    }

    now = ngx_time();

    sh = ngx_http_presence_store_lock(zone, log);

    lk = ngx_http_presence_lookup_find(zone, caller);

    if (lk == NULL) {
        ngx_http_presence_unlock(zone);
        return NGX_OK;              /* no room even after evicting */
    }

    if (now >= lk->period + zone->lookup_period) {
        lk->period = now;
        lk->n = 0;
    }

    fresh = 0;

    for (i = 0; i < n; i++) {
        if (ids[i] != caller
            && ngx_http_presence_lookup_pos(lk, ids[i]) == NGX_DECLINED)
        {
            fresh++;
        }
    }

    rc = NGX_OK;

    if (lk->n + fresh > zone->lookup_limit) {
        *retry = lk->period + zone->lookup_period - now;
        sh->lookup_limited++;
        rc = NGX_BUSY;

    } else {
        for (i = 0; i < n; i++) {
            if (ids[i] != caller) {
                ngx_http_presence_lookup_add(lk, ids[i]);
            }
        }
    }

    ngx_http_presence_unlock(zone);

    return rc;
}


/*
 * Under the lock: the device classes of the sessions active within
 * "online", a walk from the most recent (at most
 * NGX_HTTP_PRESENCE_DEVICE_SCAN of them)
 */

static void
ngx_http_presence_devices(ngx_http_presence_zone_t *zone, time_t online,
    uint64_t *devices)
{
    uint32_t                      i;
    ngx_uint_t                    k;
    ngx_http_presence_shm_t      *sh;
    ngx_http_presence_session_t  *s;

    sh = zone->sh;

    for (k = 0, i = sh->lru_head;
         i != NGX_HTTP_PRESENCE_NIL && k < NGX_HTTP_PRESENCE_DEVICE_SCAN;
         k++, i = s->lru_next)
    {
        s = &sh->sessions[i];

        if (s->last_ms / 1000 <= sh->clock - online) {
            break;
        }

        devices[ngx_http_presence_session_device(s)
                % NGX_HTTP_PRESENCE_DEVICES]++;
    }
}


/* under the lock: today's numbers as of now */

static void
ngx_http_presence_today(ngx_http_presence_zone_t *zone, time_t online,
    ngx_http_presence_day_t *today)
{
    ngx_uint_t                h;
    ngx_http_presence_shm_t  *sh;

    sh = zone->sh;

    ngx_http_presence_sample_peak(zone, online);

    *today = sh->today;
    today->day = sh->clock / NGX_HTTP_PRESENCE_DAY;
    today->active_users = ngx_http_presence_hll_count(sh->today_users);

    for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
        today->peak_online = ngx_max(today->peak_online, sh->peak[h]);
    }
}


/*
 * GET analytics: today's numbers, and the device classes of the sessions
 * active within "online" (a walk from the most recent, at most
 * NGX_HTTP_PRESENCE_DEVICE_SCAN of them)
 */

void
ngx_http_presence_store_analytics(ngx_http_presence_zone_t *zone,
    time_t online, ngx_http_presence_analytics_t *a, ngx_log_t *log)
{
    ngx_uint_t                    h, k;
    ngx_http_presence_shm_t      *sh;

    ngx_memzero(a, sizeof(ngx_http_presence_analytics_t));

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_devices(zone, online, a->devices);
    a->active = ngx_http_presence_count(zone, online,
                                        NGX_HTTP_PRESENCE_TREE_SESSIONS);

    ngx_http_presence_today(zone, online, &a->today);

    for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
        a->hour_peak[h] = sh->peak[h];
        a->hour_users[h] = sh->hour_users[h];
    }

    for (k = 0; k < NGX_HTTP_PRESENCE_DURATIONS; k++) {
        a->durations[k] = sh->durations[k];
        a->all_durations[k] = sh->all_durations[k];
    }

    a->all_count = sh->all_count;
    a->all_ms = sh->all_ms;

    ngx_http_presence_unlock(zone);
}


/*
 * The flusher's daily row: today's, and the day before when it closed and
 * is not written yet (returns 1); *history: presence_daily is to be read
 */

ngx_uint_t
ngx_http_presence_store_day(ngx_http_presence_zone_t *zone, time_t online,
    ngx_http_presence_day_t *today, ngx_http_presence_day_t *prev,
    ngx_uint_t *history, ngx_log_t *log)
{
    ngx_uint_t                pending;
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    ngx_http_presence_today(zone, online, today);

    *prev = sh->prev;
    pending = sh->prev_pending;
    *history = sh->history_due || !sh->history_read;

    ngx_http_presence_unlock(zone);

    return pending;
}


void
ngx_http_presence_store_day_written(ngx_http_presence_zone_t *zone,
    int64_t day, ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    if (sh->prev_pending && sh->prev.day == day) {
        sh->prev_pending = 0;
    }

    ngx_http_presence_unlock(zone);
}


/* presence_daily's rows before today, oldest first */

void
ngx_http_presence_store_set_history(ngx_http_presence_zone_t *zone,
    ngx_http_presence_day_t *days, ngx_uint_t n, ngx_log_t *log)
{
    ngx_http_presence_shm_t  *sh;

    sh = ngx_http_presence_store_lock(zone, log);

    if (n > NGX_HTTP_PRESENCE_HISTORY) {
        days += n - NGX_HTTP_PRESENCE_HISTORY;
        n = NGX_HTTP_PRESENCE_HISTORY;
    }

    /* only with presence_postgres: allocated the first time it is read */

    if (sh->history == NULL) {
        sh->history = ngx_slab_alloc_locked(zone->shpool,
                             (NGX_HTTP_PRESENCE_HISTORY + 1)
                             * sizeof(ngx_http_presence_day_t));
    }

    if (sh->history == NULL) {
        sh->profile_failures++;
        n = 0;

    } else {
        ngx_memcpy(sh->history, days, n * sizeof(ngx_http_presence_day_t));
    }

    sh->nhistory = n;
    sh->history_due = 0;
    sh->history_read = 1;

    ngx_http_presence_unlock(zone);
}


/*
 * The days from "from" on: the history, the closed day not yet written,
 * and today as it is now (the caller merges them by day)
 */

ngx_uint_t
ngx_http_presence_store_history(ngx_http_presence_zone_t *zone,
    int64_t from, ngx_http_presence_day_t *days, ngx_uint_t max,
    ngx_log_t *log)
{
    ngx_uint_t                i, n;
    ngx_http_presence_shm_t  *sh;

    n = 0;

    sh = ngx_http_presence_store_lock(zone, log);

    for (i = 0; i < sh->nhistory && n + 2 < max; i++) {
        if (sh->history[i].day >= from) {
            days[n++] = sh->history[i];
        }
    }

    if (sh->prev_pending && sh->prev.day >= from) {
        days[n++] = sh->prev;
    }

    ngx_http_presence_today(zone, zone->online, &days[n++]);

    ngx_http_presence_unlock(zone);

    return n;
}


/*
 * What the profile loader knows of a user: NGX_HTTP_PRESENCE_USER_UNKNOWN
 * until its row was read.
 */

ngx_uint_t
ngx_http_presence_store_user(ngx_http_presence_zone_t *zone,
    int64_t user_id, ngx_log_t *log)
{
    ngx_uint_t                 rc;
    ngx_http_presence_user_t  *user;

    (void) ngx_http_presence_store_lock(zone, log);

    user = ngx_http_presence_find_user(zone, user_id);

    if (user == NULL || user->profile_at == 0) {
        rc = NGX_HTTP_PRESENCE_USER_UNKNOWN;

    } else if (user->flags & NGX_HTTP_PRESENCE_PROFILE_MISSING) {
        rc = NGX_HTTP_PRESENCE_USER_MISSING;

    } else if (user->flags & NGX_HTTP_PRESENCE_PROFILE_INACTIVE) {
        rc = NGX_HTTP_PRESENCE_USER_INACTIVE;

    } else {
        rc = NGX_HTTP_PRESENCE_USER_ACTIVE;
    }

    ngx_http_presence_unlock(zone);

    return rc;
}


/*
 * The profiles PostgreSQL returned for "ids": those it did not return have
 * no row in "users".  A user with a row goes straight from its old profile
 * to its new one (never through "no row": its privacy setting would flap,
 * and its watchers would see it go offline and come back).  The rows are
 * sorted by user id.
 */

void
ngx_http_presence_store_set_profiles(ngx_http_presence_zone_t *zone,
    int64_t *ids, ngx_uint_t nids, ngx_http_presence_profile_in_t *profiles,
    ngx_uint_t n, ngx_log_t *log)
{
    time_t                     now;
    ngx_uint_t                 k, lo, hi, mid;
    ngx_http_presence_user_t  *user;

    now = ngx_time();

    ngx_qsort(profiles, n, sizeof(ngx_http_presence_profile_in_t),
              ngx_http_presence_profile_cmp);

    ngx_http_presence_lock(zone, log);

    for (k = 0; k < n; k++) {
        user = ngx_http_presence_find_user(zone, profiles[k].user_id);

        if (user) {
            ngx_http_presence_set_profile(zone, user, &profiles[k], now);
        }
    }

    for (k = 0; k < nids; k++) {

        /* a binary search through the rows */

        lo = 0;
        hi = n;

        while (lo < hi) {
            mid = lo + (hi - lo) / 2;

            if (profiles[mid].user_id < ids[k]) {
                lo = mid + 1;

            } else {
                hi = mid;
            }
        }

        if (lo < n && profiles[lo].user_id == ids[k]) {
            continue;
        }

        user = ngx_http_presence_find_user(zone, ids[k]);

        if (user) {
            ngx_http_presence_set_profile(zone, user, NULL, now);
        }
    }

    ngx_http_presence_unlock(zone);
}


static int ngx_libc_cdecl
ngx_http_presence_profile_cmp(const void *one, const void *two)
{
    const ngx_http_presence_profile_in_t  *a = one;
    const ngx_http_presence_profile_in_t  *b = two;

    return (a->user_id > b->user_id) - (a->user_id < b->user_id);
}
