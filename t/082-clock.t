# A wall clock that steps (NTP, a restored VM), under libfaketime: ageing
# goes on after a step back, activity is never stamped or written in the
# future, and each step is logged once at warn.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value);
use Test::More;
use Time::HiRes qw(sleep time);
use Cwd ();
use POSIX ();

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

my $faketime = Presence::Nginx::faketime()
    or plan skip_all => 'libfaketime is not installed';

*wait_until = \&Presence::Nginx::wait_until;

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username)
           SELECT g, 'user' || g FROM generate_series(1, 10) g});

my $root = Cwd::cwd() . '/t/servroot_clock';
my $clock = "$root.faketime";

sub step {
    open my $fh, '>', $clock or die $!;
    print $fh shift, "\n";
    close $fh;
}

step('+0');

# a wall-clock step, as NTP makes it: the monotonic clock (nginx's timers)
# goes on; nginx clears its workers' environment, so libfaketime's settings
# are passed on with "env"
my $n = Presence::Nginx->new(name => 'clock', workers => 1,
    env => { LD_PRELOAD => $faketime, FAKETIME_TIMESTAMP_FILE => $clock,
             FAKETIME_NO_CACHE => 1, FAKETIME_DONT_RESET => 1,
             FAKETIME_DONT_FAKE_MONOTONIC => 1 },
    main => "env LD_PRELOAD; env FAKETIME_TIMESTAMP_FILE; "
            . "env FAKETIME_NO_CACHE; env FAKETIME_DONT_RESET; "
            . "env FAKETIME_DONT_FAKE_MONOTONIC;",
    http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_thresholds very_active=2s online=3s recent=6s;
EOC
$n->start;

sub tok { Presence::JWT::token(sub => shift, exp => time + 86400 * 2) }

sub status {
    my (undef, $b) = $n->get('/api/v1/online/status?user_ids=' . shift,
                             tok(9));
    return eval { JSON::PP->new->utf8->decode($b)->{statuses} } // {};
}

# forward: two hours on, what was online has aged at once

$n->get('/app/x', tok(1));
is(status(1)->{1}{status}, 'online', 'user 1 online');

step('+2h');
ok(wait_until(sub { (status(1)->{1}{status} // '') eq 'offline' }, 5),
   'two hours later user 1 is offline');
ok(wait_until(sub { $n->log =~ /the clock jumped forward \d+ s/ }, 5),
   'the step forward is logged');

$n->get('/app/x', tok(2));
is(status(2)->{2}{status}, 'online', 'user 2 online, two hours on');

# back: the clock counts from the wall again

step('+0');
ok(wait_until(sub { $n->log =~ /the clock went back \d+ s, counting from now/ }, 5),
   'the step back is logged');

$n->get('/app/x', tok(3));
my $st = status('2,3');
is($st->{3}{status}, 'online', 'user 3 online');

my $now = time;
for my $u (2, 3) {
    my ($y, $mo, $d, $h, $mi, $s) = ($st->{$u}{last_seen} // '')
        =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)/;
    my $t = $y ? POSIX::mktime($s, $mi, $h, $d, $mo - 1, $y - 1900) : 0;
    $t -= POSIX::mktime(gmtime 0) if $y;    # as UTC
    cmp_ok($t, '<=', $now + 1, "user $u: last_seen is not in the future");
}

ok(wait_until(sub { (status(3)->{3}{status} // '') eq 'recently_active' }, 6),
   'user 3 ages past online (3 s) with no traffic');
ok(wait_until(sub { (status(3)->{3}{status} // '') eq 'offline' }, 6),
   'and past recent (6 s)');

# no row was written in the future

ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id = 3}) == 1 }),
   'user 3 written');
is(pg_value(q{SELECT count(*) FROM user_sessions
              WHERE user_id = 3
                AND last_activity > (now() AT TIME ZONE 'UTC')
                                    + interval '5 seconds'}),
   0, 'with no last_activity in the future');

my @warns = $n->log =~ /\[warn\].*(the clock (?:went back|jumped forward))/g;
is(scalar @warns, 2, 'each step logged once');

$n->stop;
unlink $clock;

done_testing;
