# A full zone evicts the least recently active sessions, keeps serving,
# and says so once.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();

our $N = 15000;

run_tests();

__DATA__

=== 15000 users through a 1m zone (about 1100 sessions)
--- http_config
    presence_zone zone=presence:1m;
    keepalive_requests 100000;
--- raw_request eval
my $bulk = CORE::join '', map {
    my $r = Presence::Test::hit($_);
    $r =~ s/Connection: close/Connection: keep-alive/ if $_ < $main::N;
    $r
} 1 .. $main::N;
[$bulk, Presence::Test::api('count'),
 Presence::Test::api("status?user_ids=1,2,$main::N"),
 Presence::Test::api('users?limit=1')]
--- response_body_like eval
["backend /app/u1\n", '"online_count":1\d\d\d,',
 '"1":\{"status":"offline","last_seen":null\},"2":\{"status":"offline","last_seen":null\},"15000":\{"status":"online"',
 '"user_id":15000,']
--- timeout: 30
--- grep_error_log eval
qr/presence zone "presence" is full \(\d+ sessions\): evicting the least recently active/
--- grep_error_log_out eval
qr/^presence zone "presence" is full \(1\d\d\d sessions\): evicting the least recently active\n$/
--- no_error_log
[crit]
[alert]
