# The dashboard (presence_dashboard) in a real headless browser: the page
# shows the API's numbers, the online count changes within 2 s of a new
# user's activity without a reload, 24 hourly bars, no console errors; a
# screenshot for the README.  And what it reads: analytics, daily, zone,
# the aggregate stream, without a token, never a member's presence.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Test::More;

my $json = JSON::PP->new;

sub tok { Presence::JWT::token(sub => shift, @_) }

my $n = Presence::Nginx->new(name => 'dashboard', workers => 2,
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
EOC
        location /presence/ {
            presence_dashboard;
            allow 127.0.0.1;
            deny all;
        }
EOS
$n->start;

my @agents = (
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1',
    'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36',
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
    'Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1',
);
$n->get('/app/x', tok($_), ua => $agents[$_ % @agents]) for 1 .. 12;

# what the page reads, served without a token

my ($status, $body, $head) = $n->get('/presence/');
is($status, 200, 'the page');
like($head, qr{^Content-Type: text/html}mi, 'is HTML');
unlike($body, qr{https?://(?!www\.w3\.org/2000/svg)}, 'and loads nothing from elsewhere');
($status, $body) = $n->get('/presence/analytics');
is($status, 200, 'analytics for the page, no token asked');
is($json->decode($body)->{sessions}{active}, 12, 'with the zone\'s numbers');
($status, $body) = $n->get('/presence/zone');
is($json->decode($body)->{sessions}, 12, 'the zone\'s fill');
($status, $body) = $n->get('/presence/daily?days=30');
is(scalar @{ $json->decode($body)->{days} }, 30, 'thirty days');
$body = `curl -sN -m 2 'http://127.0.0.1:@{[ $n->port ]}/presence/stream?user_ids=1,2'`;
unlike($body, qr/"statuses"/, 'the page\'s stream is counts only, whatever '
                              . 'the query says');
like($body, qr/"online_users":12/, 'the counts');

SKIP: {
    skip 'no browser: chromium, chromium-driver and python3-selenium are '
         . 'not installed (make deps installs them)', 9
        unless -x '/usr/bin/chromium' && -x '/usr/bin/chromedriver'
               && system('/usr/bin/python3 -c "import selenium" 2>/dev/null')
                  == 0;

    my $shot = $n->root . '/dashboard.png';
    my $out = `/usr/bin/python3 t/bin/dashboard-check http://127.0.0.1:@{[ $n->port ]}/presence/ http://127.0.0.1:@{[ $n->port ]}/api/v1/online @{[ tok(500) ]} http://127.0.0.1:@{[ $n->port ]}/app/new @{[ tok(13) ]} $shot 2>&1`;
    my $r = eval { $json->decode((grep { /^\{/ } split /\n/, $out)[-1]) };
    ok($r, 'the browser ran') or diag($out);
    $r //= {};
    is($r->{page_online}, $r->{api_online}, "the page's online count is the "
                                            . "API's ($r->{api_online})");
    is($r->{page_recent}, $r->{api_recent}, 'so is recently active');
    is($r->{page_started}, $r->{api_started}, 'and sessions started today');
    is($r->{live}, 'live', 'the stream is live');
    ok($r->{changed}, 'a new user active: the online count changes '
                      . 'without a reload');
    ok(($r->{change_seconds} // 99) <= 2,
       "within 2 s ($r->{change_seconds} s)");
    is($r->{hourly_bars}, 24, '24 hourly bars');
    is_deeply($r->{console_errors}, [], 'no console errors');

    if (-s $shot && $ENV{PRESENCE_SCREENSHOT}) {
        system('cp', $shot, $ENV{PRESENCE_SCREENSHOT});
    }
}

$n->stop;

done_testing();
