
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * presence_dashboard: one self-contained page (HTML, CSS and JavaScript
 * below; no CDN, works offline) and what it reads, under the same
 * location:
 *
 *     <location>            the page
 *     <location>stream      the aggregate stream (counts events)
 *     <location>analytics   GET analytics
 *     <location>daily       GET analytics/daily
 *     <location>zone        the zone's fill and the flusher's health
 *
 * No token is asked for: the operator protects the location (allow/deny,
 * auth_basic, a cookie token).  Only aggregate numbers are served, never
 * a member's presence.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_dashboard.h"
#include "ngx_http_presence_api.h"
#include "ngx_http_presence_stream.h"
#include "ngx_http_presence_shm.h"


static ngx_int_t ngx_http_presence_dashboard_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_presence_dashboard_page(ngx_http_request_t *r);
static ngx_int_t ngx_http_presence_dashboard_zone(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);


static const char  ngx_http_presence_dashboard_html[] =
    "<!DOCTYPE html>\n"
    "<html lang='en'>\n"
    "<head>\n"
    "<meta charset='utf-8'>\n"
    "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
    "<link rel='icon' href='data:,'>\n"
    "<title>nginx presence</title>\n"
    "<style>\n"
    "body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f5f"
    "6f8; color: #1d2330; }\n"
    "header { background: #1d2330; color: #fff; padding: 12px 20px; display: "
    "flex; justify-content: space-between; align-items: center; }\n"
    "header h1 { font-size: 18px; margin: 0; font-weight: 600; }\n"
    "#live { font-size: 12px; padding: 2px 8px; border-radius: 10px; backgrou"
    "nd: #7a8194; }\n"
    "#live.on { background: #1f9d55; }\n"
    "main { display: grid; grid-template-columns: repeat(auto-fit, minmax(330"
    "px, 1fr)); gap: 16px; padding: 16px 20px; }\n"
    "section { background: #fff; border-radius: 8px; padding: 14px 16px; box-"
    "shadow: 0 1px 2px rgba(0,0,0,.08); }\n"
    "section.wide { grid-column: 1 / -1; }\n"
    "h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; "
    "color: #6b7280; margin: 0 0 10px; font-weight: 600; }\n"
    ".nums { display: flex; gap: 18px; flex-wrap: wrap; }\n"
    ".num b { display: block; font-size: 30px; font-weight: 650; }\n"
    ".num span { color: #6b7280; font-size: 12px; }\n"
    "table { border-collapse: collapse; width: 100%; }\n"
    "td { padding: 3px 0; }\n"
    "td.v { text-align: right; font-variant-numeric: tabular-nums; font-weigh"
    "t: 600; }\n"
    "svg { width: 100%; height: auto; display: block; }\n"
    "svg text { font-size: 10px; fill: #6b7280; }\n"
    ".bar { fill: #3b6fd8; }\n"
    ".bar2 { fill: #9bb5ec; }\n"
    ".line { fill: none; stroke: #e8743b; stroke-width: 2; }\n"
    ".hbar { fill: #3b6fd8; }\n"
    ".warn { color: #b45309; }\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<header><h1>nginx presence</h1><span id='live'>connecting</span></header"
    ">\n"
    "<main>\n"
    "<section class='wide'>\n"
    "<h2>Online now</h2>\n"
    "<div class='nums'>\n"
    "<div class='num'><b id='very_active'>-</b><span>very active</span></div>"
    "\n"
    "<div class='num'><b id='online'>-</b><span>online</span></div>\n"
    "<div class='num'><b id='recent'>-</b><span>recently active</span></div>"
    "\n"
    "<div class='num'><b id='sessions'>-</b><span>active sessions</span></div"
    ">\n"
    "</div>\n"
    "</section>\n"
    "<section class='wide'>\n"
    "<h2>Today by hour (UTC): peak online, distinct active users</h2>\n"
    "<svg id='hourly' viewBox='0 0 720 180'></svg>\n"
    "</section>\n"
    "<section>\n"
    "<h2>Devices of online sessions</h2>\n"
    "<svg id='devices' viewBox='0 0 330 130'></svg>\n"
    "</section>\n"
    "<section>\n"
    "<h2>Sessions today</h2>\n"
    "<table id='sessions_today'>\n"
    "<tr><td>active now</td><td class='v' id='s_active'>-</td></tr>\n"
    "<tr><td>started today</td><td class='v' id='s_started'>-</td></tr>\n"
    "<tr><td>ended today</td><td class='v' id='s_ended'>-</td></tr>\n"
    "<tr><td>duration: average / median / p90</td><td class='v' id='s_duratio"
    "n'>-</td></tr>\n"
    "<tr><td>distinct users today</td><td class='v' id='u_today'>-</td></tr>"
    "\n"
    "</table>\n"
    "</section>\n"
    "<section>\n"
    "<h2>Zone and flusher</h2>\n"
    "<table id='zone'>\n"
    "<tr><td>sessions held</td><td class='v' id='z_fill'>-</td></tr>\n"
    "<tr><td>evicted (zone full)</td><td class='v' id='z_evictions'>-</td></t"
    "r>\n"
    "<tr><td>PostgreSQL</td><td class='v' id='z_db'>-</td></tr>\n"
    "<tr><td>last successful write</td><td class='v' id='z_flush'>-</td></tr>"
    "\n"
    "<tr><td>write errors</td><td class='v' id='z_errors'>-</td></tr>\n"
    "</table>\n"
    "</section>\n"
    "<section class='wide'>\n"
    "<h2>Last 30 days: distinct active users, peak online</h2>\n"
    "<svg id='daily' viewBox='0 0 720 180'></svg>\n"
    "</section>\n"
    "</main>\n"
    "<script>\n"
    "'use strict';\n"
    "var NS = 'http://www.w3.org/2000/svg';\n"
    "function $(id) { return document.getElementById(id); }\n"
    "function el(name, attrs, text) {\n"
    "  var e = document.createElementNS(NS, name);\n"
    "  for (var k in attrs) { e.setAttribute(k, attrs[k]); }\n"
    "  if (text !== undefined) { e.textContent = text; }\n"
    "  return e;\n"
    "}\n"
    "function clear(svg) { while (svg.firstChild) { svg.removeChild(svg.first"
    "Child); } }\n"
    "function fmt(n) { return Number(n).toLocaleString('en'); }\n"
    "function secs(s) {\n"
    "  if (s < 60) { return s + ' s'; }\n"
    "  if (s < 3600) { return Math.round(s / 60) + ' min'; }\n"
    "  return (s / 3600).toFixed(1) + ' h';\n"
    "}\n"
    "function bars(svg, labels, a, b, cls) {\n"
    "  clear(svg);\n"
    "  var w = 720, h = 180, top = 10, bottom = 24, left = 34;\n"
    "  var max = 1;\n"
    "  a.concat(b || []).forEach(function (v) { if (v > max) { max = v; } });"
    "\n"
    "  var step = (w - left) / labels.length;\n"
    "  svg.appendChild(el('text', { x: 0, y: top + 8 }, fmt(max)));\n"
    "  svg.appendChild(el('text', { x: 0, y: h - bottom }, '0'));\n"
    "  labels.forEach(function (l, i) {\n"
    "    var x = left + i * step, bh = (h - top - bottom) * a[i] / max;\n"
    "    svg.appendChild(el('rect', { 'class': cls || 'bar', x: x + 2, y: h -"
    " bottom - bh,\n"
    "                                 width: Math.max(step - 4, 1), height: b"
    "h,\n"
    "                                 'data-value': a[i] }));\n"
    "    if (labels.length <= 24 || i % 5 === 0) {\n"
    "      svg.appendChild(el('text', { x: x + 2, y: h - 8 }, l));\n"
    "    }\n"
    "  });\n"
    "  if (b) {\n"
    "    var d = b.map(function (v, i) {\n"
    "      return (i ? 'L' : 'M') + (left + i * step + step / 2) + ' '\n"
    "             + (h - bottom - (h - top - bottom) * v / max);\n"
    "    }).join(' ');\n"
    "    svg.appendChild(el('path', { 'class': 'line', d: d }));\n"
    "  }\n"
    "}\n"
    "function devices(d) {\n"
    "  var svg = $('devices'), names = ['mobile', 'tablet', 'desktop', 'bot',"
    " 'other'];\n"
    "  clear(svg);\n"
    "  var total = 0;\n"
    "  names.forEach(function (n) { total += d[n]; });\n"
    "  names.forEach(function (n, i) {\n"
    "    var y = 4 + i * 25, w = total ? 200 * d[n] / total : 0;\n"
    "    svg.appendChild(el('text', { x: 0, y: y + 13 }, n));\n"
    "    svg.appendChild(el('rect', { 'class': 'hbar', x: 60, y: y, width: w,"
    " height: 16 }));\n"
    "    svg.appendChild(el('text', { x: 66 + w, y: y + 13 }, fmt(d[n])));\n"
    "  });\n"
    "}\n"
    "function counts(c) {\n"
    "  $('very_active').textContent = fmt(c.very_active_users);\n"
    "  $('online').textContent = fmt(c.online_users);\n"
    "  $('recent').textContent = fmt(c.recently_active_users);\n"
    "  $('sessions').textContent = fmt(c.total_active_sessions);\n"
    "}\n"
    "function get(path) {\n"
    "  return fetch(path, { cache: 'no-store' }).then(function (r) {\n"
    "    if (!r.ok) { throw new Error(path + ': ' + r.status); }\n"
    "    return r.json();\n"
    "  });\n"
    "}\n"
    "function refresh() {\n"
    "  get('analytics').then(function (a) {\n"
    "    bars($('hourly'), a.hourly.map(function (h) { return h.hour; }),\n"
    "         a.hourly.map(function (h) { return h.peak_online; }),\n"
    "         a.hourly.map(function (h) { return h.active_users; }));\n"
    "    devices(a.devices);\n"
    "    $('s_active').textContent = fmt(a.sessions.active);\n"
    "    $('s_started').textContent = fmt(a.sessions.started_today);\n"
    "    $('s_ended').textContent = fmt(a.sessions.ended_today);\n"
    "    var d = a.sessions.duration_seconds;\n"
    "    $('s_duration').textContent = d.count ? secs(d.average) + ' / ' + se"
    "cs(d.median) + ' / ' + secs(d.p90) : '-';\n"
    "    $('u_today').textContent = fmt(a.users.active_today);\n"
    "  }).catch(function () { $('live').textContent = 'analytics unavailable'"
    "; });\n"
    "  get('zone').then(function (z) {\n"
    "    $('z_fill').textContent = fmt(z.sessions) + ' of ' + fmt(z.capacity)"
    "\n"
    "      + ' (' + (100 * z.sessions / z.capacity).toFixed(1) + ' %)';\n"
    "    $('z_evictions').textContent = fmt(z.evictions);\n"
    "    $('z_db').textContent = z.postgres ? (z.connected ? 'connected' : 'n"
    "ot connected') : 'not used';\n"
    "    $('z_flush').textContent = z.last_write ? secs(Math.max(0, Math.roun"
    "d(Date.now() / 1000 - z.last_write))) + ' ago' : '-';\n"
    "    $('z_errors').textContent = fmt(z.errors);\n"
    "    $('z_errors').className = z.errors ? 'v warn' : 'v';\n"
    "  }).catch(function () {});\n"
    "  get('daily?days=30').then(function (d) {\n"
    "    bars($('daily'), d.days.map(function (r) { return r.date.slice(5); }"
    "),\n"
    "         d.days.map(function (r) { return r.active_users; }),\n"
    "         d.days.map(function (r) { return r.peak_online; }), 'bar2');\n"
    "  }).catch(function () {});\n"
    "}\n"
    "var es = new EventSource('stream');\n"
    "es.addEventListener('snapshot', function (e) { counts(JSON.parse(e.data)"
    "); });\n"
    "es.addEventListener('counts', function (e) { counts(JSON.parse(e.data));"
    " });\n"
    "es.onopen = function () { $('live').textContent = 'live'; $('live').clas"
    "sName = 'on'; };\n"
    "es.onerror = function () { $('live').textContent = 'reconnecting'; $('li"
    "ve').className = ''; };\n"
    "refresh();\n"
    "setInterval(refresh, 5000);\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";


char *
ngx_http_presence_dashboard(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_presence_main_conf_t  *pmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_presence_dashboard_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_presence_dashboard_handler;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_presence_module);
    pmcf->used = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_presence_dashboard_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_str_t                       name;
    ngx_http_presence_ctx_t        *ctx;
    ngx_http_presence_zone_t       *zone;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_presence_main_conf_t  *pmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);

    if (pmcf->shm_zone == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    zone = pmcf->shm_zone->data;

    /* the location itself is the page; below it, the API's rule */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->exact_match || r->uri.len <= clcf->name.len) {
        return ngx_http_presence_dashboard_page(r);
    }

    ngx_http_presence_api_path(r, &name);

    if (name.len == 0
        || (name.len == 10 && ngx_strncmp(name.data, "index.html", 10) == 0))
    {
        return ngx_http_presence_dashboard_page(r);
    }

    if (name.len == 9 && ngx_strncmp(name.data, "analytics", 9) == 0) {
        return ngx_http_presence_api_analytics(r, zone, pmcf);
    }

    if (name.len == 5 && ngx_strncmp(name.data, "daily", 5) == 0) {
        return ngx_http_presence_api_daily(r, zone, pmcf);
    }

    if (name.len == 4 && ngx_strncmp(name.data, "zone", 4) == 0) {
        return ngx_http_presence_dashboard_zone(r, zone, pmcf);
    }

    if (name.len == 6 && ngx_strncmp(name.data, "stream", 6) == 0) {

        /* the aggregate stream: no caller, nothing but counts */

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_presence_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_presence_module);

        return ngx_http_presence_stream_counts_only(r, zone, pmcf, ctx);
    }

    return NGX_HTTP_NOT_FOUND;
}


static ngx_int_t
ngx_http_presence_dashboard_page(ngx_http_request_t *r)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = sizeof(ngx_http_presence_dashboard_html)
                                      - 1;
    ngx_str_set(&r->headers_out.content_type, "text/html; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = (u_char *) ngx_http_presence_dashboard_html;
    b->last = b->pos + sizeof(ngx_http_presence_dashboard_html) - 1;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the zone's fill and the flusher's health, as the page shows them */

static ngx_int_t
ngx_http_presence_dashboard_zone(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_json_t         w;
    ngx_http_presence_store_stats_t  st;

    ngx_http_presence_store_stats(zone, pmcf->thresholds, &st,
                                  r->connection->log);

    ngx_http_presence_json_init(&w, r->pool, 512);

    ngx_http_presence_json_lit(&w, "{\"zone\":");
    ngx_http_presence_json_str(&w, ngx_http_presence_store_name(zone)->data,
                               ngx_http_presence_store_name(zone)->len);
    ngx_http_presence_json_lit(&w, ",\"sessions\":");
    ngx_http_presence_json_int(&w, st.sessions);
    ngx_http_presence_json_lit(&w, ",\"capacity\":");
    ngx_http_presence_json_int(&w, st.sessions_capacity);
    ngx_http_presence_json_lit(&w, ",\"evictions\":");
    ngx_http_presence_json_int(&w, st.evictions);
    ngx_http_presence_json_lit(&w, ",\"ring_depth\":");
    ngx_http_presence_json_int(&w, st.ring_depth);
    ngx_http_presence_json_lit(&w, ",\"postgres\":");

    if (pmcf->pg_conninfo.data) {
        ngx_http_presence_json_lit(&w, "true");

    } else {
        ngx_http_presence_json_lit(&w, "false");
    }

    ngx_http_presence_json_lit(&w, ",\"connected\":");
    ngx_http_presence_json_int(&w, st.connected);
    ngx_http_presence_json_lit(&w, ",\"last_write\":");
    ngx_http_presence_json_int(&w, st.last_ok);
    ngx_http_presence_json_lit(&w, ",\"errors\":");
    ngx_http_presence_json_int(&w, st.errors);
    ngx_http_presence_json_lit(&w, ",\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, "}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}
