# Two workers share one zone.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();
master_on();
workers(2);

run_tests();

# which worker served what: each answer names its worker (X-Worker), the
# connections spread over both (reuseport); every user's activity, recorded
# by one worker, is answered as online by the other

use Presence::Nginx;
use Presence::JWT;
use Test::More;

my $port = Presence::Nginx::free_port();
my $n = Presence::Nginx->new(name => 'workers', workers => 2, http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    add_header X-Worker \$pid always;
    server {
        listen 127.0.0.1:$port reuseport;
        location /app/ { presence on; proxy_pass http://127.0.0.1:BACKEND; }
        location /api/v1/online/ { presence_api; }
    }
EOC
$n->{http} =~ s/BACKEND/$n->{backend}/;
$n->start;
$n->{port} = $port;

sub worker { my $head = shift; return $head =~ /^X-Worker: (\d+)/mi ? $1 : 0 }

my (%tracked_by, %seen, @missing);
for my $u (1 .. 20) {
    my (undef, undef, $head) = $n->get('/app/x', Presence::JWT::token(sub => $u));
    $tracked_by{$u} = worker($head);
    $seen{ $tracked_by{$u} }++;
}
is(scalar(keys %seen), 2, 'both workers recorded activity');

for my $u (1 .. 20) {
    my $answered;
    for (1 .. 60) {
        my (undef, $body, $head) = $n->get("/api/v1/online/status?user_ids=$u",
                                           Presence::JWT::token(sub => 99));
        next if worker($head) == $tracked_by{$u};
        $answered = $body =~ /"$u":\{"status":"online"/;
        last;
    }
    push @missing, $u unless $answered;
}
is("@missing", '', 'the other worker answers each user as online');

$n->stop;

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
