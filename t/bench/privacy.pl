#!/usr/bin/perl
# make bench, privacy: GET status?user_ids= with 100 ids, with every
# privacy directive on (column, coarse last seen, reciprocity, lookup
# limit) vs none, side by side.  Prints a Markdown row.
#
# Needs: NGINX_BIN, SO, TEST_NGINX_PG_DSN; wrk.

use strict;
use warnings;

use lib 't/lib';
use Cwd qw(cwd);
use File::Path qw(make_path);
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query);
use Time::HiRes qw(sleep time);

my $secs = $ENV{BENCH_SECONDS} || 4;
my $reps = $ENV{BENCH_REPEATS} || 5;
my $dsn = $ENV{TEST_NGINX_PG_DSN} or die "TEST_NGINX_PG_DSN is not set\n";
my $out = cwd() . '/build/bench/privacy';

make_path($out);

pg_query(q{ALTER TABLE users ADD COLUMN IF NOT EXISTS show_online_status
           boolean NOT NULL DEFAULT true});
pg_query(q{UPDATE users SET show_online_status = (id % 10 <> 0)
            WHERE id <= 200});

sub node {
    my ($name, $privacy) = @_;
    my $n = Presence::Nginx->new(name => "bench_$name", workers => 2,
                                 root => "$out/$name", log_level => 'warn',
                                 http => <<EOC . $privacy);
    presence_zone zone=presence:16m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 1s;
EOC
    $n->start;
    $n->get('/app/x', Presence::JWT::token(sub => $_)) for 1 .. 200;
    return $n;
}

my $on = node('privacy_on', <<'EOC');
    presence_privacy_column show_online_status;
    presence_last_seen_precision 5m;
    presence_privacy_reciprocal on;
    presence_lookup_limit 1000 per=1h;
EOC
my $off = node('privacy_off', '');
sleep 3;                    # profiles, and so the settings, are read

my $bearer = Presence::JWT::token(sub => 1, exp => time + 86400);
my $ids = join ',', 1 .. 100;

sub wrk {
    my $n = shift;
    my $url = 'http://127.0.0.1:' . $n->port
              . "/api/v1/online/status?user_ids=$ids";
    my $res = `wrk -t2 -c32 -d${secs}s -H 'Authorization: Bearer $bearer' '$url' 2>&1`;
    my ($rps) = $res =~ /Requests\/sec:\s+([\d.]+)/;
    my ($non2xx) = $res =~ /Non-2xx or 3xx responses: (\d+)/;
    die "bench: wrk failed:\n$res" unless $rps && !$non2xx;
    return $rps;
}

my (@a, @b);
for (1 .. $reps) {
    push @a, wrk($on);
    push @b, wrk($off);
}

my @sa = sort { $a <=> $b } @a;
my @sb = sort { $a <=> $b } @b;
my ($ma, $mb) = ($sa[$#sa / 2], $sb[$#sb / 2]);

$on->stop;
$off->stop;

printf STDERR "bench: status, 100 ids, privacy on vs off: %.0f vs %.0f, "
              . "ratio %.3f\n", $ma, $mb, $ma / $mb;
printf "| GET status?user_ids= (100 ids), every privacy directive on vs "
     . "none | %.0f | %.0f | %.3f | | | ≥ 0.9 | %s |\n", $ma, $mb, $ma / $mb,
       $ma / $mb >= 0.9 ? 'yes' : '**no**';
