# Two workers share one zone.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();
master_on();
workers(2);

run_tests();

__DATA__

=== activity through either worker is counted once, seen by both
--- raw_request eval
[(map { Presence::Test::hit($_ % 5 + 1) } 1 .. 30),
 (map { Presence::Test::api('count') } 1 .. 6),
 Presence::Test::api('stats')]
--- response_body_like eval
[("backend") x 30, ('"online_count":5,') x 6,
 '"very_active_users":5,"online_users":5,"recently_active_users":5,"total_active_sessions":5,']
--- no_error_log
[alert]
[error]
