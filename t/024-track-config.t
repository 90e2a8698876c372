# nginx -t: presence_thresholds, presence and presence_api without what
# they need.

use Test::Nginx::Socket 'no_plan';

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('must_die', '') unless defined $block->request;
    $block->set_value('suppress_stderr', 1);
});

run_tests();

__DATA__

=== presence without a zone
--- http_config
    presence_jwt_secret "x";
--- config
    location /x/ {
        presence on;
    }
--- error_log
"presence" and "presence_api" need a "presence_zone" in the http block



=== presence_api without a key
--- http_config
    presence_zone zone=presence:1m;
--- config
    location /api/ {
        presence_api;
    }
--- error_log
"presence" and "presence_api" need "presence_jwt_secret" or "presence_jwt_key_file"



=== the module loaded and unused needs nothing
--- config
    location = /t {
        return 200 "$presence_jwt_status\n";
    }
--- request
GET /t
--- response_body
missing



=== thresholds out of order
--- http_config
    presence_thresholds very_active=10m online=5m;
--- error_log
presence_thresholds: very_active (600 s) <= online (300 s) <= recent (3600 s) must hold



=== a threshold beyond a day
--- http_config
    presence_thresholds recent=2d;
--- error_log
presence_thresholds: invalid time "recent=2d", from 1s to 24h



=== an unknown threshold
--- http_config
    presence_thresholds busy=5m;
--- error_log
presence_thresholds: invalid parameter "busy=5m", expected very_active=, online= or recent=



=== a threshold twice
--- http_config
    presence_thresholds online=5m online=6m;
--- error_log
presence_thresholds: "online" is given twice



=== a bad ring
--- http_config
    presence_zone zone=presence:1m ring=10;
--- error_log
invalid ring size "ring=10": a number from 64



=== an unknown zone parameter
--- http_config
    presence_zone zone=presence:1m size=10;
--- error_log
invalid parameter "size=10"



=== a ring too large for the zone
--- http_config
    presence_zone zone=presence:1m ring=100000000;
--- error_log
presence zone "presence" is too small for 16 sessions and its ring



=== presence_api twice
--- http_config
    presence_zone zone=presence:1m;
    presence_jwt_secret "x";
--- config
    location /api/ {
        presence_api;
        presence_api;
    }
--- error_log
"presence_api" directive is duplicate



=== presence_api_admin_claim needs two arguments
--- config
    location /api/ {
        presence_api_admin_claim role;
    }
--- error_log
invalid number of arguments in "presence_api_admin_claim" directive



=== presence_max_sessions_per_user beyond its bounds
--- http_config
    presence_zone zone=presence:1m;
    presence_jwt_secret "x";
    presence_max_sessions_per_user 70000;
--- error_log
value must be between 0 and 65535
