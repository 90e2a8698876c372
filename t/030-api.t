# The online API: shapes, values, ordering, errors and boundaries as
# SPEC section 4 has them.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();

our $TS = '"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}"';

sub api { Presence::Test::api(@_) }

run_tests();

__DATA__

=== count: shape and headers
--- raw_request eval
[Presence::Test::hit(1), main::api('count'),
 main::api('count?threshold_minutes=1440')]
--- response_body_like eval
["backend",
 '^\{"online_count":1,"threshold_minutes":15,"timestamp":' . $main::TS . '\}$',
 '^\{"online_count":1,"threshold_minutes":1440,"timestamp":' . $main::TS . '\}$']
--- response_headers eval
["", "Content-Type: application/json\nCache-Control: no-store", ""]



=== users: most recent first, count and total, pagination
--- raw_request eval
[Presence::Test::hit(3),
 [{ value => Presence::Test::hit(2), delay_before => 1.1 }],
 Presence::Test::hit(2, sid => 'second'),
 [{ value => Presence::Test::hit(1), delay_before => 1.1 }],
 main::api('users'),
 main::api('users?limit=2'),
 main::api('users?limit=2&offset=2'),
 main::api('users?offset=3'),
 main::api('users?offset=99999999999999999999')]
--- response_body_like eval
["backend", "backend", "backend", "backend",
 '^\{"online_users":\[\{"user_id":1,"username":null,"display_name":null,"avatar_url":null,"last_seen":' . $main::TS . ',"session_count":1,"status":"online"\},\{"user_id":2,"username":null,"display_name":null,"avatar_url":null,"last_seen":' . $main::TS . ',"session_count":2,"status":"online"\},\{"user_id":3,[^{}]+\}\],"count":3,"total":3,"threshold_minutes":15,"timestamp":' . $main::TS . '\}$',
 '^\{"online_users":\[\{"user_id":1,[^{}]+\},\{"user_id":2,[^{}]+\}\],"count":2,"total":3,',
 '^\{"online_users":\[\{"user_id":3,[^{}]+\}\],"count":1,"total":3,',
 '^\{"online_users":\[\],"count":0,"total":3,',
 '^\{"online_users":\[\],"count":0,"total":3,']



=== within one second, a page is in millisecond order
--- raw_request eval
[Presence::Test::hit(4),
 map({ [{ value => $_, delay_before => 0.02 }] }
     Presence::Test::hit(5), Presence::Test::hit(6),
     Presence::Test::hit(5, sid => 'again')),
 main::api('users')]
--- response_body_like eval
["backend", "backend", "backend", "backend",
 '^\{"online_users":\[\{"user_id":5,[^{}]+\},\{"user_id":6,[^{}]+\},\{"user_id":4,[^{}]+\}\],"count":3,']



=== stats: shape, peak after any activity
--- raw_request eval
[main::api('stats'), Presence::Test::hit(1), Presence::Test::hit(1, sid => 'x'),
 main::api('stats')]
--- response_body_like eval
['^\{"timestamp":' . $main::TS . ',"very_active_users":0,"online_users":0,"recently_active_users":0,"total_active_sessions":0,"peak_hour_today":null,"peak_users_today":0,"status":"success"\}$',
 "backend", "backend",
 '^\{"timestamp":' . $main::TS . ',"very_active_users":1,"online_users":1,"recently_active_users":1,"total_active_sessions":2,"peak_hour_today":(\d|1\d|2[0-3]),"peak_users_today":1,"status":"success"\}$']



=== status: online, recently_active, offline, unknown
--- http_config
    presence_thresholds very_active=1s online=2s recent=5s;
--- raw_request eval
[Presence::Test::hit(1), Presence::Test::hit(2),
 [{ value => Presence::Test::hit(2), delay_before => 2.6 }],
 main::api('status?user_ids=1,2,3'),
 [{ value => main::api('status?user_ids=2,1,2'), delay_before => 3.6 }]]
--- response_body_like eval
["backend", "backend", "backend",
 '^\{"statuses":\{"1":\{"status":"recently_active","last_seen":' . $main::TS . '\},"2":\{"status":"online","last_seen":' . $main::TS . '\},"3":\{"status":"offline","last_seen":null\}\},"timestamp":' . $main::TS . '\}$',
 '^\{"statuses":\{"2":\{"status":"recently_active","last_seen":' . $main::TS . '\},"1":\{"status":"offline","last_seen":' . $main::TS . '\}\},"timestamp":']



=== sessions: the caller's own, is_current
--- raw_request eval
[Presence::Test::hit(5, sid => 'a', ua => 'phone'),
 Presence::Test::hit(5, sid => 'b', ua => 'laptop'),
 Presence::Test::hit(6), main::api('sessions', Presence::Test::tok(5, sid => 'b')),
 main::api('sessions', Presence::Test::tok(7))]
--- response_body_like eval
["backend", "backend", "backend",
 '^\{"user_id":5,"sessions":\[\{"session_id":"[0-9a-f]{64}","ip_address":"127.0.0.1","user_agent":"laptop","created_at":' . $main::TS . ',"last_activity":' . $main::TS . ',"is_current":true\},\{"session_id":"[0-9a-f]{64}","ip_address":"127.0.0.1","user_agent":"phone","created_at":' . $main::TS . ',"last_activity":' . $main::TS . ',"is_current":false\}\],"count":2,"timestamp":' . $main::TS . '\}$',
 '^\{"user_id":7,"sessions":\[\],"count":0,"timestamp":']



=== 401: missing, another scheme, invalid, expired
--- raw_request eval
[Presence::Test::req('/api/v1/online/count', undef),
 Presence::Test::req('/api/v1/online/count', undef, 'Authorization: Basic dTpw'),
 Presence::Test::req('/api/v1/online/count', 'not.a.token'),
 Presence::Test::req('/api/v1/online/count',
                     Presence::JWT::token(sub => 1, exp => time - 60))]
--- error_code eval
[401, 401, 401, 401]
--- response_body eval
['{"detail":"Not authenticated"}', '{"detail":"Not authenticated"}',
 '{"detail":"Could not validate credentials"}',
 '{"detail":"Could not validate credentials"}']
--- response_headers eval
[("WWW-Authenticate: Bearer\nContent-Type: application/json") x 4]



=== 404 and 405 come before 401, 401 before 422
--- raw_request eval
[Presence::Test::req('/api/v1/online/nope', undef),
 Presence::Test::req('POST /api/v1/online/count', undef),
 Presence::Test::req('GET /api/v1/online/cleanup', undef),
 Presence::Test::req('/api/v1/online/users?limit=abc', undef),
 Presence::Test::req('DELETE /api/v1/online/status', undef)]
--- error_code eval
[404, 405, 405, 401, 405]
--- response_body eval
['{"detail":"Not Found"}', '{"detail":"Method Not Allowed"}',
 '{"detail":"Method Not Allowed"}', '{"detail":"Not authenticated"}',
 '{"detail":"Method Not Allowed"}']
--- response_headers eval
["!Allow", "Allow: GET, HEAD", "Allow: POST", "!Allow", "Allow: GET, HEAD"]



=== 422 for limit
--- raw_request eval
[map { main::api("users?limit=$_") }
 '0', '1', '100', '101', '-1', 'abc', '99999999999999999999', '', '1.5']
--- error_code eval
[422, 200, 200, 422, 422, 422, 422, 422, 422]
--- response_body_like eval
['^\{"detail":\[\{"type":"greater_than_equal","loc":\["query","limit"\],"msg":"Input should be greater than or equal to 1","input":"0","ctx":\{"ge":1\}\}\]\}$',
 '"count":0,', '"count":0,',
 '^\{"detail":\[\{"type":"less_than_equal","loc":\["query","limit"\],"msg":"Input should be less than or equal to 100","input":"101","ctx":\{"le":100\}\}\]\}$',
 '"type":"greater_than_equal","loc":\["query","limit"\],.*"input":"-1"',
 '^\{"detail":\[\{"type":"int_parsing","loc":\["query","limit"\],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"\}\]\}$',
 '"type":"less_than_equal","loc":\["query","limit"\],.*"input":"99999999999999999999"',
 '"type":"int_parsing","loc":\["query","limit"\],.*"input":""',
 '"type":"int_parsing".*"input":"1.5"']
--- response_headers eval
[("Content-Type: application/json") x 9]



=== 422 for threshold_minutes, offset, all errors at once
--- raw_request eval
[main::api('count?threshold_minutes=0'), main::api('count?threshold_minutes=1'),
 main::api('count?threshold_minutes=1440'),
 main::api('count?threshold_minutes=1441'),
 main::api('users?offset=-1'),
 main::api('users?limit=0&offset=x&threshold_minutes=1441')]
--- error_code eval
[422, 200, 200, 422, 422, 422]
--- response_body_like eval
['"loc":\["query","threshold_minutes"\],"msg":"Input should be greater than or equal to 1"',
 '"threshold_minutes":1,', '"threshold_minutes":1440,',
 '"loc":\["query","threshold_minutes"\],"msg":"Input should be less than or equal to 1440"',
 '"loc":\["query","offset"\],"msg":"Input should be greater than or equal to 0"',
 '^\{"detail":\[\{[^{}]+"limit"[^{}]+\{"ge":1\}\},\{[^{}]+"offset"[^{}]+\},\{[^{}]+"threshold_minutes"[^{}]+\{"le":1440\}\}\]\}$']



=== repeated parameters: the last wins; unknown ones are ignored; %-encoding
--- raw_request eval
[main::api('count?threshold_minutes=5&threshold_minutes=7&foo=bar'),
 main::api('count?threshold_minutes=%31%30'),
 main::api('count?%74hreshold_minutes=12'),
 main::api('count?threshold_minutes=%00')]
--- error_code eval
[200, 200, 200, 422]
--- response_body_like eval
['"threshold_minutes":7,', '"threshold_minutes":10,',
 '"threshold_minutes":12,', '"type":"int_parsing"']



=== 422 for user_ids
--- raw_request eval
[main::api('status'), main::api('status?user_ids='),
 main::api('status?user_ids=' . CORE::join(',', 1 .. 101)),
 main::api('status?user_ids=' . CORE::join(',', 1 .. 100)),
 main::api('status?user_ids=1,abc'), main::api('status?user_ids=1,,2'),
 main::api('status?user_ids=0'), main::api('status?user_ids=-1'),
 main::api('status?user_ids=99999999999999999999'),
 main::api('status?user_ids=%201%20,2'),
 main::api('status?user_ids=3,3,3')]
--- error_code eval
[422, 422, 422, 200, 422, 422, 422, 422, 422, 200, 200]
--- response_body_like eval
['^\{"detail":\[\{"type":"missing","loc":\["query","user_ids"\],"msg":"Field required","input":null\}\]\}$',
 '"type":"value_error","loc":\["query","user_ids"\],"msg":"Value error, user_ids must not be empty","input":""',
 '"msg":"Value error, at most 100 user ids"',
 '^\{"statuses":\{"1":.*"100":\{"status":"offline","last_seen":null\}\},',
 '"msg":"Value error, user ids must be positive integers","input":"1,abc"',
 '"msg":"Value error, user ids must be positive integers"',
 '"msg":"Value error, user ids must be positive integers"',
 '"msg":"Value error, user ids must be positive integers"',
 '"msg":"Value error, user ids must be positive integers"',
 '^\{"statuses":\{"1":\{[^{}]+\},"2":\{[^{}]+\}\},',
 '^\{"statuses":\{"3":\{"status":"offline","last_seen":null\}\},"timestamp":']



=== HEAD: headers, no body
--- raw_request eval
[Presence::Test::hit(1), main::api('HEAD count'), main::api('HEAD users')]
--- response_body eval
["backend /app/u1\n", "", ""]
--- response_headers_like eval
["", "Content-Length: \\d+\nContent-Type: application/json",
 "Content-Length: \\d+"]



=== a trailing slash is tolerated, deeper paths are not found
--- raw_request eval
[main::api('count/'), main::api('stats/'), main::api('x/count'),
 main::api(''), main::api('count/x')]
--- error_code eval
[200, 200, 404, 404, 404]



=== keep-alive: pipelined API calls on one connection
--- pipelined_requests eval
["GET /api/v1/online/count", "GET /api/v1/online/stats",
 "HEAD /api/v1/online/count", "GET /api/v1/online/users?limit=1",
 "GET /api/v1/online/nope"]
--- more_headers eval
[(Presence::JWT::bearer(Presence::Test::tok(1))) x 5]
--- error_code eval
[200, 200, 200, 200, 404]
--- response_body_like eval
['"online_count":0', '"status":"success"', '^$', '"online_users":\[\]',
 '"Not Found"']



=== an exact location and a regex location route on the last segment
--- config
    location = /online/count {
        presence_api;
    }
    location ~ ^/v2/online/(count|stats)$ {
        presence_api;
    }
--- raw_request eval
[Presence::Test::req('/online/count', Presence::Test::tok(1)),
 Presence::Test::req('/v2/online/stats', Presence::Test::tok(1))]
--- response_body_like eval
['"online_count":0,', '"status":"success"']



=== cleanup without an admin claim configured: any caller
--- raw_request eval
[main::api('POST cleanup')]
--- response_body_like: ^\{"cleaned_sessions":0,"timestamp":"[^"]+","status":"success"\}$



=== cleanup with presence_api_admin_claim
--- config
    location /api/v1/online/ {
        presence_api;
        presence_api_admin_claim role admin;
    }
--- raw_request eval
[main::api('POST cleanup', Presence::Test::tok(1, role => 'admin')),
 main::api('POST cleanup', Presence::Test::tok(1, role => ['user', 'admin'])),
 main::api('POST cleanup', Presence::Test::tok(1, role => 'user')),
 main::api('POST cleanup', Presence::Test::tok(1)),
 Presence::Test::req('POST /api/v1/online/cleanup', undef),
 main::api('count', Presence::Test::tok(1))]
--- error_code eval
[200, 200, 403, 403, 401, 200]
--- response_body_like eval
['"status":"success"', '"status":"success"',
 '^\{"detail":"Not enough permissions"\}$',
 '^\{"detail":"Not enough permissions"\}$',
 '^\{"detail":"Not authenticated"\}$', '"online_count"']



=== cleanup reads and discards a request body
--- raw_request eval
["POST /api/v1/online/cleanup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
 . Presence::Test::tok(1) . "\r\nContent-Length: 11\r\n\r\nhello world"
 . "GET /api/v1/online/count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
 . "Authorization: Bearer " . Presence::Test::tok(1) . "\r\n\r\n"]
--- response_body_like: "cleaned_sessions":0



=== 422 bodies echo what FastAPI decodes: invalid UTF-8 becomes U+FFFD
--- raw_request eval
[map { main::api("count?threshold_minutes=$_") }
 '%ff%c0', '%e2%82', '%c3%a9', 'a%80b', '%ed%a0%80', '%f0%9f%98%80x']
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- response_body_like eval
[map { '^\{"detail":\[\{"type":"int_parsing","loc":\["query","threshold_minutes"\],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"' . $_ . '"\}\]\}$' }
 "\xef\xbf\xbd\xef\xbf\xbd", "\xef\xbf\xbd", "\xc3\xa9", "a\xef\xbf\xbdb",
 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", "\xf0\x9f\x98\x80x"]
