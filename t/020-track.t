# Tracking in "presence on" locations, observed through the API.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();

run_tests();

__DATA__

=== N users x M sessions, counted per threshold
--- raw_request eval
[(map { my $u = $_; map { Presence::Test::hit($u, sid => "s$_") } 1 .. $u }
  1 .. 4),
 Presence::Test::api('count'),
 Presence::Test::api('stats'),
 Presence::Test::api('users'),
 Presence::Test::api('sessions', Presence::Test::tok(3, sid => 's1'))]
--- response_body_like eval
[("backend /app/u\\d\n") x 10,
 '^\{"online_count":4,"threshold_minutes":15,"timestamp":"[-0-9T:.]{26}"\}$',
 '"very_active_users":4,"online_users":4,"recently_active_users":4,"total_active_sessions":10,',
 '"count":4,"total":4,',
 '^\{"user_id":3,"sessions":\[(\{[^{}]+\},){2}\{[^{}]+\}\],"count":3,']
--- no_error_log
[error]



=== the same session, the same user in several seconds: counted once
--- raw_request eval
my $h = Presence::Test::hit(7);
[$h, [{ value => $h, delay_before => 1.1 }],
 [{ value => $h, delay_before => 1.1 }],
 Presence::Test::api('count', Presence::Test::tok(7)),
 Presence::Test::api('stats', Presence::Test::tok(7)),
 Presence::Test::api('sessions', Presence::Test::tok(7))]
--- response_body_like eval
["backend", "backend", "backend", '"online_count":1,',
 '"online_users":1,"recently_active_users":1,"total_active_sessions":1,',
 '"count":1,']



=== counts age with short thresholds, no traffic needed
--- http_config
    presence_thresholds very_active=2s online=3s recent=1h;
--- raw_request eval
[Presence::Test::hit(1), Presence::Test::hit(2),
 Presence::Test::api('stats'),
 [{ value => Presence::Test::api('stats'), delay_before => 4.2 }],
 Presence::Test::api('count?threshold_minutes=1'),
 Presence::Test::api('users'),
 Presence::Test::api('status?user_ids=1,2,3')]
--- response_body_like eval
["backend", "backend",
 '"very_active_users":2,"online_users":2,"recently_active_users":2,"total_active_sessions":2,',
 '"very_active_users":0,"online_users":0,"recently_active_users":2,"total_active_sessions":0,',
 '"online_count":2,',
 '"status":"recently_active"\}.*"status":"recently_active"\}\],"count":2,',
 '"1":\{"status":"recently_active","last_seen":"[^"]+"\},"2":\{"status":"recently_active","last_seen":"[^"]+"\},"3":\{"status":"offline","last_seen":null\}']



=== invalid, expired and missing tokens are not recorded
--- raw_request eval
[Presence::Test::req('/app/x', Presence::JWT::token(sub => 5, key => 'bad')),
 Presence::Test::req('/app/x', Presence::JWT::token(sub => 6, exp => time - 5)),
 Presence::Test::req('/app/x', undef),
 Presence::Test::req('/app/x', 'garbage'),
 Presence::Test::api('count'),
 Presence::Test::api('status?user_ids=5,6')]
--- response_body_like eval
["backend", "backend", "backend", "backend", '"online_count":0,',
 '"5":\{"status":"offline","last_seen":null\},"6":\{"status":"offline","last_seen":null\}']



=== requests outside presence locations are not recorded
--- config
    location /untracked/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
--- raw_request eval
[Presence::Test::req('/untracked/', Presence::Test::tok(9)),
 Presence::Test::api('count')]
--- response_body_like eval
["backend", '"online_count":0,']



=== an internal redirect is tracked once
--- config
    location /app/ {
        presence on;
        try_files /nonexistent @backend;
    }
    location @backend {
        presence on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
    location /err/ {
        presence on;
        error_page 404 = /app/from-error;
        return 404;
    }
    location /static/ {
        presence on;
        root html;
        error_page 404 = @backend;
    }
--- raw_request eval
[Presence::Test::req('/app/a', Presence::Test::tok(11)),
 Presence::Test::req('/static/none', Presence::Test::tok(12)),
 Presence::Test::api('count')]
--- response_body_like eval
["backend /app/a", "backend /static/none", '"online_count":2,']
--- grep_error_log eval
qr/presence: tracking user \d+/
--- grep_error_log_out
presence: tracking user 11
presence: tracking user 12



=== subrequests are not tracked again
--- config
    location /app/ {
        presence on;
        ssi on;
        ssi_types *;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
    location /sub/ {
        presence on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
    location = /page {
        presence on;
        ssi on;
        ssi_types *;
        root html;
    }
--- user_files
>>> page
[<!--# include virtual="/sub/x" -->]
--- raw_request eval
[Presence::Test::req('/page', Presence::Test::tok(13))]
--- response_body
[backend /sub/x
]
--- grep_error_log eval
qr/presence: tracking user \d+/
--- grep_error_log_out
presence: tracking user 13



=== satisfy any with allow does not skip tracking
--- config
    location /app/ {
        satisfy any;
        allow 127.0.0.1;
        deny all;
        presence on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
--- raw_request eval
[Presence::Test::hit(14), Presence::Test::api('count')]
--- response_body_like eval
["backend", '"online_count":1,']



=== presence is inherited and can be turned off below
--- config
    presence on;
    location /app/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
    location /docs {
        presence off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
--- raw_request eval
[Presence::Test::hit(15),
 Presence::Test::req('/docs', Presence::Test::tok(16)),
 Presence::Test::api('status?user_ids=15,16')]
--- response_body_like eval
["backend", "backend",
 '"15":\{"status":"online","last_seen":"[^"]+"\},"16":\{"status":"offline","last_seen":null\}']



=== User-Agent, address, and a hostile User-Agent stored sanitised
--- raw_request eval
my $long = "x" x 600;
[Presence::Test::hit(17, sid => 'a', ua => "Mozilla/5.0 \"q\" \\ 'x'"),
 Presence::Test::hit(17, sid => 'b', ua => "bad\x01\x7f\xff\xfe caf\xc3\xa9 \xe2\x82"),
 Presence::Test::hit(17, sid => 'c', ua => ("\xc3\xa9" x 300)),
 Presence::Test::hit(17, sid => 'd', ua => $long),
 Presence::Test::api('sessions', Presence::Test::tok(17, sid => 'a'))]
--- response_body_like eval
["backend", "backend", "backend", "backend",
 '"ip_address":"127.0.0.1","user_agent":"x{512}",.*'
 . '"user_agent":"(?:\x{e9}|\xc3\xa9){256}",.*'
 . '"user_agent":"bad\?\?\?\? caf(?:\x{e9}|\xc3\xa9) \?\?",.*'
 . '"user_agent":"Mozilla/5.0 \\\\"q\\\\" \\\\\\\\ \'x\'",.*"is_current":true']



=== expired sessions are swept
--- http_config
    presence_session_timeout 2s;
    presence_cleanup_interval 1s;
--- raw_request eval
[Presence::Test::hit(21, sid => 'a'), Presence::Test::hit(22),
 Presence::Test::api('sessions', Presence::Test::tok(21, sid => 'a')),
 [{ value => Presence::Test::api('status?user_ids=21,22'),
    delay_before => 4 }],
 Presence::Test::api('stats')]
--- response_body_like eval
["backend", "backend", '"count":1,',
 '"21":\{"status":"offline","last_seen":null\},"22":\{"status":"offline","last_seen":null\}',
 '"total_active_sessions":[01],']



=== POST cleanup expires idle sessions at once
--- http_config
    presence_session_timeout 1s;
    presence_cleanup_interval 1h;
--- raw_request eval
[Presence::Test::hit(31, sid => 'a'), Presence::Test::hit(31, sid => 'b'),
 Presence::Test::hit(32),
 [{ value => Presence::Test::api('POST cleanup', Presence::Test::tok(33)),
    delay_before => 2.5 }],
 Presence::Test::api('POST cleanup', Presence::Test::tok(33)),
 Presence::Test::api('status?user_ids=31,32,33', Presence::Test::tok(33))]
--- response_body_like eval
["backend", "backend", "backend",
 '^\{"cleaned_sessions":3,"timestamp":"[^"]+","status":"success"\}$',
 '^\{"cleaned_sessions":0,',
 '"31":\{"status":"offline","last_seen":null\}']



=== $presence_session_id and $presence_online_count
--- config
    location /app/ {
        presence on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
    location = /vars {
        return 200 "$presence_session_id $presence_online_count\n";
    }
--- raw_request eval
my $t = Presence::Test::tok(41);
use Digest::SHA;
[Presence::Test::req('/app/x', $t), Presence::Test::req('/vars', $t),
 Presence::Test::req('/vars', Presence::Test::tok(41, sid => 'abc')),
 Presence::Test::req('/vars', undef)]
--- response_body eval
my $t = Presence::Test::tok(41);
["backend /app/x\n", Digest::SHA::sha256_hex($t) . " 1\n",
 Digest::SHA::sha256_hex("41:abc") . " 1\n", " 1\n"]



=== presence_max_sessions_per_user: a user's oldest session goes first
--- http_config
    presence_max_sessions_per_user 3;
--- config
    location = /metrics {
        presence_metrics;
    }
--- raw_request eval
[Presence::Test::hit(2),
 map({ [{ value => Presence::Test::hit(1, sid => "s$_"), delay_before => 0.02 }] } 1 .. 5),
 Presence::Test::api('stats'),
 Presence::Test::api('sessions', Presence::Test::tok(1, sid => 's5')),
 Presence::Test::api('sessions', Presence::Test::tok(1, sid => 's1')),
 Presence::Test::req('/metrics')]
--- response_body_like eval
[("backend /app/u\\d\n") x 6,
 '"total_active_sessions":4,',
 '^\{"user_id":1,"sessions":\[\{[^{}]+"is_current":true\},\{[^{}]+\},\{[^{}]+\}\],"count":3,',
 '^\{"user_id":1,"sessions":\[(\{[^{}]+"is_current":false\},){2}\{[^{}]+"is_current":false\}\],"count":3,',
 'nginx_presence_session_cap_evictions_total\{zone="presence"\} 2\n']
--- no_error_log
[error]



=== presence_max_sessions_per_user 0: no cap
--- http_config
    presence_max_sessions_per_user 0;
--- raw_request eval
[map({ Presence::Test::hit(1, sid => "s$_") } 1 .. 40),
 Presence::Test::api('sessions', Presence::Test::tok(1, sid => 's1'))]
--- response_body_like eval
[("backend /app/u1\n") x 40, '"count":40,']
