# Counts across reloads (HUP): the same zone size keeps them, another size
# starts empty.  The blocks run in order against one nginx.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();
use_hup();
no_shuffle();
master_on();
workers(2);

run_tests();

__DATA__

=== three users before the reload
--- raw_request eval
[Presence::Test::hit(1), Presence::Test::hit(2), Presence::Test::hit(3),
 Presence::Test::api('count')]
--- response_body_like eval
["backend", "backend", "backend", '"online_count":3,']



=== a reload keeps them, and the new workers keep counting
--- config
    location = /reloaded {
        return 200 "yes\n";
    }
--- raw_request eval
[Presence::Test::api('count'), Presence::Test::hit(4),
 Presence::Test::api('users'), Presence::Test::api('stats')]
--- response_body_like eval
['"online_count":3,', "backend", '"count":4,"total":4,',
 '"online_users":4,.*"peak_users_today":4,']
--- error_log
presence zone "presence" kept, 4194304 bytes, 3 of



=== another zone size starts empty
--- http_config
    presence_zone zone=presence:8m;
--- raw_request eval
[Presence::Test::api('count'), Presence::Test::hit(5),
 Presence::Test::api('count')]
--- response_body_like eval
['"online_count":0,', "backend", '"online_count":1,']
--- error_log
presence zone "presence" created, 8388608 bytes
