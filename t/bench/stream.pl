#!/usr/bin/perl
# make bench, GET stream: 10 000 concurrent streams of our own client
# (t/bench/stream_client.c), each watching 50 ids out of 100 000 users,
# while users come online at 1 000/s (limit_req) and, 10 s later, age past
# the online threshold.  Delivery delays (p50, p99), nginx memory per
# subscriber, and tracked throughput with the streams open vs none.
# Prints a Markdown section.
#
# Needs: NGINX_BIN, SO; wrk.

use strict;
use warnings;

use lib 't/lib';
use Cwd qw(cwd);
use File::Path qw(make_path);
use Presence::JWT;
use Presence::Nginx;
use Time::HiRes qw(sleep time);

my $streams = $ENV{BENCH_STREAMS} || 10000;
my $secs = $ENV{BENCH_SECONDS} || 4;
my $reps = $ENV{BENCH_REPEATS} || 3;
my $out = cwd() . '/build/bench/stream';
my $users = 100000;

make_path($out);

sub note { print STDERR "bench: @_\n" }

system('cc', '-O2', '-o', "$out/stream_client", 't/bench/stream_client.c')
    == 0 or die "bench: cannot build the stream client\n";

note('minting tokens for the stream bench');
open my $fh, '>', "$out/users.txt" or die $!;
print $fh Presence::JWT::token(sub => $_, exp => time + 86400), "\n"
    for 1 .. $users;
close $fh;
open $fh, '>', "$out/1k.txt" or die $!;
print $fh Presence::JWT::token(sub => $_, exp => time + 86400), "\n"
    for 1 .. 1000;
close $fh;

my $n = Presence::Nginx->new(name => 'bench_stream', workers => 2,
                             root => "$out/nginx", log_level => 'warn',
                             main => "worker_rlimit_nofile 65536;",
                             connections => 16384,
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:64m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_thresholds very_active=5s online=10s recent=1h;
    limit_req_zone \$server_port zone=arrivals:1m rate=1000r/s;
    upstream backend {
        server 127.0.0.1:BACKEND;
        keepalive 64;
    }
EOC
        location /on/ {
            presence on;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /arrive/ {
            limit_req zone=arrivals burst=2000;
            presence on;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /metrics {
            presence_metrics;
        }
EOS
$n->{http} =~ s/BACKEND/$n->{backend}/;
$n->start;

my $port = $n->port;
my $viewer = Presence::JWT::token(sub => $users + 1, exp => time + 86400);

sub rss {
    my $kb = 0;
    for my $w ($n->workers) {
        open my $s, '<', "/proc/$w/status" or next;
        while (<$s>) { $kb += $1 if /^VmRSS:\s+(\d+)/ }
    }
    return $kb * 1024;
}

sub metric {
    my ($name) = @_;
    my (undef, $body) = $n->get('/metrics');
    return $body =~ /^nginx_presence_\Q$name\E\{[^}]*\} (\d+)/m ? $1 : 0;
}

# holds $streams streams for $hold seconds; returns its pid and output file
sub client {
    my ($hold, $tag) = @_;
    my $ready = "$out/ready.$tag";
    unlink $ready;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', "$out/client.$tag" or die;
        exec "$out/stream_client", '127.0.0.1', $port, $streams, 50, $users,
             $hold, 10, $viewer, $ready;
    }
    my $deadline = time + 60;
    sleep 0.2 until -e $ready || time > $deadline;
    die "bench: the streams did not all open\n" unless -e $ready;
    return $pid;
}

sub wrk {
    my ($path, $tokens, %o) = @_;
    local $ENV{TOKENS} = $tokens;
    local $ENV{START} = 1;          # the users in order, from the first
    my $c = $o{c} // 32;
    my $d = $o{d} // $secs;
    my $res = `wrk -t2 -c$c -d${d}s -s t/bench/tokens.lua http://127.0.0.1:$port$path 2>&1`;
    my ($rps) = $res =~ /Requests\/sec:\s+([\d.]+)/;
    die "bench: wrk failed:\n$res" unless $rps;
    return $rps;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return $s[$#s / 2];
}

# ---------------------------------------------------------------------
# delivery: users arrive at 1 000/s for 25 s while 10 000 streams watch

wrk('/on/', "$out/1k.txt", d => 1);        # warm the worker up
my $before = rss();
note("opening $streams streams");
my $pid = client(40, 'delivery');
sleep 2;
my $after = rss();
my $subs = metric('stream_subscribers');
my $accounted = metric('stream_subscriber_bytes');
note("streams open: $subs; worker RSS +" . int(($after - $before) / 1024)
     . ' KiB');

my $arrivals = wrk('/arrive/', "$out/users.txt", c => 8, d => 25);
note(sprintf 'arrivals: %.0f users/s', $arrivals);
waitpid $pid, 0;
my ($line) = do { local @ARGV = ("$out/client.delivery"); <> };
my ($connected, $on_n, $on50, $on99, $age_n, $age50, $age99) =
    $line =~ /connected (\d+) online (\d+) (\S+) (\S+) ageing (\d+) (\S+) (\S+)/
    or die "bench: the client said: $line\n";
note("delivery: $line");

# ---------------------------------------------------------------------
# tracked throughput with the streams open vs none

my (@with, @without);
for (1 .. $reps) {
    my $hold = client($secs + 8, 'hold');
    push @with, wrk('/on/', "$out/1k.txt");
    kill 'TERM', $hold;
    waitpid $hold, 0;
    sleep 1;
    push @without, wrk('/on/', "$out/1k.txt");
}
my ($w, $wo) = (median(@with), median(@without));
note(sprintf 'tracked with streams %.0f, without %.0f, ratio %.3f',
     $w, $wo, $w / $wo);

$n->stop;

my $per = ($after - $before) / $streams;

printf <<'EOT', $streams, $arrivals, $connected, $on_n, $on50, $on99, $age_n, $age50, $age99, $per / 1024, $per <= 8192 ? 'met' : '**not met**', $accounted / $subs, $w, $wo, $w / $wo, $w / $wo >= 0.95 ? 'met' : '**not met**';
GET stream (t/bench/stream.pl, our own epoll client): %d concurrent
streams, each watching 50 random ids of 100 000 users; users arrive at
%.0f/s (a tracked location behind limit_req) for 25 s, and age past a 10 s
online threshold 10 s later.

| measurement | value | bar |
| --- | ---: | --- |
| streams with their snapshot | %d | |
| online events measured | %d | |
| delay, tracked request to event, p50 / p99 | %.1f / %.1f ms | p99 ≤ 1 000 ms |
| recently_active events measured | %d | |
| delay, threshold crossed to event, p50 / p99 | %.1f / %.1f ms | p99 ≤ 1 000 ms |
| nginx memory per subscriber (workers' RSS growth) | %.1f KiB | ≤ 8 KiB: %s |
| of which the module's accounting (watch list, cursor) | %.0f B | |
| tracked req/s with the streams open / without / ratio | %.0f / %.0f / %.3f | ≥ 0.95: %s |
EOT
