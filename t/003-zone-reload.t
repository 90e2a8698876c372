# presence_zone across reloads (HUP): same size keeps the zone, another
# size starts a new one.  Blocks depend on each other: no shuffling.

use Test::Nginx::Socket 'no_plan';

use_hup();
no_shuffle();
master_on();
workers(2);

run_tests();

__DATA__

=== first start creates the zone
--- http_config
    presence_zone zone=presence:1m;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- error_log
presence zone "presence" created, 1048576 bytes



=== reload with the same size keeps it
--- http_config
    presence_zone zone=presence:1m;
--- config
    location = /t {
        return 200 "reloaded\n";
    }
--- request
GET /t
--- response_body
reloaded
--- error_log
presence zone "presence" kept, 1048576 bytes
--- no_error_log
presence zone "presence" created



=== reload with another size starts afresh
--- http_config
    presence_zone zone=presence:2m;
--- config
    location = /t {
        return 200 "resized\n";
    }
--- request
GET /t
--- response_body
resized
--- error_log
presence zone "presence" created, 2097152 bytes
--- no_error_log
kept
