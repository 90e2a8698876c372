#!/usr/bin/perl
# make chaos: faults under continuous load, each followed by checks, then
# a table of what was done and what was seen.  Exits non-zero when a check
# fails.  Needs NGINX_BIN, SO and TEST_NGINX_PG_DSN (t/bin/chaos sets
# them up).

use strict;
use warnings;

use lib 't/lib';
use Cwd qw(cwd);
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path remove_tree);
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value pg_rows);
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN} or die "TEST_NGINX_PG_DSN is not set\n";
my $pgname = $ENV{CHAOS_PG} // 'chaos';
my $out = cwd() . '/build/chaos';
my $users = 1000;
my $failed = 0;
my @report;

remove_tree($out);
make_path($out);

sub note { print STDERR "chaos: @_\n" }

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(qq{INSERT INTO users (id, username) SELECT g, 'u' || g
              FROM generate_series(1, 100000) g});

my %token;
open my $fh, '>', "$out/tokens.txt" or die $!;
for my $u (1 .. $users) {
    $token{$u} = Presence::JWT::token(sub => $u, exp => time + 86400);
    print $fh "$token{$u}\n";
}
close $fh;

# the stand-in backend runs apart, so that reloading the front does not
# reload the backend (its own failures are not the module's)

my $backend_port = Presence::Nginx::free_port();
make_path("$out/backend/logs");
open $fh, '>', "$out/backend/nginx.conf" or die $!;
print $fh <<EOC;
worker_processes 1;
daemon on;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$backend_port;
        location / { return 200 "backend\n"; }
    }
}
EOC
close $fh;
system($ENV{TEST_NGINX_BINARY}, '-p', "$out/backend/", '-c', 'nginx.conf',
       '-e', "$out/backend/logs/error.log") == 0 or die "backend";
END { system("kill -QUIT \$(cat $out/backend/logs/nginx.pid 2>/dev/null) 2>/dev/null") if $out }

my $n = Presence::Nginx->new(name => 'chaos', workers => 2,
                             backend => $backend_port,
                             external_backend => 1,
                             root => "$out/nginx", log_level => 'notice',
                             server => "        location = /metrics "
                                       . "{ presence_metrics; }\n",
                             http => <<EOC);
    presence_zone zone=presence:2m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 300ms;
    proxy_http_version 1.1;
EOC
$n->start;
my $port = $n->port;

# continuous load: wrk in the background for one phase

sub load_start {
    my ($tokens, $secs, $close) = @_;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', "$out/wrk.txt";
        open STDERR, '>&', \*STDOUT;
        $ENV{TOKENS} = $tokens // "$out/tokens.txt";
        $ENV{CLOSE} = 1 if $close;
        exec 'wrk', '-t1', '-c8', "-d${secs}s", '-s', 't/bench/tokens.lua',
             "http://127.0.0.1:$port/app/";
        exit 127;
    }
    return $pid;
}

sub load_end {
    my $pid = shift;
    waitpid $pid, 0;
    open my $f, '<', "$out/wrk.txt" or die $!;
    local $/;
    my $w = <$f>;
    my ($req) = $w =~ /(\d+) requests in/;
    my ($non2xx) = $w =~ /Non-2xx or 3xx responses: (\d+)/;
    my ($sock) = $w =~ /Socket errors: (.*)/;
    my $errors = 0;
    $errors += $1 while ($sock // '') =~ /(\d+)/g;
    return { requests => $req // 0, failed => ($non2xx // 0) + $errors,
             socket => $sock // 'none' };
}

# the API answers within a second (the worst of a few calls)
sub api_latency {
    my $worst = 0;
    for (1 .. 5) {
        my $t = time;
        my ($status) = $n->get('/api/v1/online/count', $token{1},
                               timeout => 5);
        my $d = time - $t;
        $d = 99 if $status != 200;
        $worst = $d if $d > $worst;
        sleep 0.05;
    }
    return $worst;
}

sub metric {
    my $name = shift;
    my (undef, $m) = $n->get('/metrics');
    my ($v) = $m =~ /^nginx_presence_\Q$name\E\{zone="presence"\} (\d+)/m;
    return $v // 0;
}

sub check {
    my ($ok, $what) = @_;
    $failed++ unless $ok;
    note(($ok ? 'ok: ' : 'FAILED: ') . $what);
    return $ok ? 'yes' : 'NO';
}

sub row {
    my ($scenario, $did, $load, $lat, $result) = @_;
    push @report, sprintf "| %s | %s | %d | %d | %.3f s | %s |",
        $scenario, $did, $load->{requests}, $load->{failed}, $lat, $result;
}

sub workers_ok {
    my $want = shift // 2;
    my $deadline = time + 15;
    while (time < $deadline) {
        my @w = $n->workers;
        my @stuck = grep {
            (`cat /proc/$_/cmdline 2>/dev/null` // '') =~ /shutting down/
        } @w;
        return 1 if @w == $want && !@stuck;
        sleep 0.2;
    }
    return 0;
}

# (a) PostgreSQL stopped for 30 s

note('(a) PostgreSQL stopped for 30 s');
my $w = load_start(undef, 40);
sleep 3;
system("t/bin/pg halt $pgname") == 0 or die;
sleep 15;
my $lat = api_latency();
sleep 15;
system("t/bin/pg resume $pgname") == 0 or die;
my $load = load_end($w);
row('(a) PostgreSQL stopped', 'pg_ctl stop, 30 s, start', $load, $lat,
    check($load->{failed} == 0 && $lat < 1,
          "PostgreSQL down: $load->{failed} failed, API $lat s"));

# (b) ten reloads

# a keep-alive connection an old worker closes while a request is on its
# way is nginx's reload, not the module's: one request a connection here

note('(b) nginx -s reload ten times');
$w = load_start(undef, 12, 1);
sleep 1;
for (1 .. 10) {
    $n->reload;
    sleep 0.8;
}
$lat = api_latency();
$load = load_end($w);
my $workers = workers_ok(2);
note("reloads: wrk saw $load->{socket}");
row('(b) reloads', '10 x HUP (Connection: close)', $load, $lat,
    check($load->{failed} == 0 && $lat < 1 && $workers,
          "reloads: $load->{failed} failed, API $lat s, workers ok "
          . ($workers ? 'yes' : 'no')));

# (c) ten SIGKILLs of a worker, the flusher among them

note('(c) SIGKILL of a worker ten times');
$w = load_start(undef, 15);
sleep 1;
my ($killed_flusher, $max_lat) = (0, 0);
for my $i (1 .. 10) {
    my $victim = metric('flusher_pid');
    if ($i % 2 || !$victim) {
        ($victim) = $n->workers;
    } else {
        $killed_flusher++;
    }
    kill 'KILL', $victim if $victim;
    sleep 0.3;
    my $l = api_latency();
    $max_lat = $l if $l > $max_lat;
    sleep 0.5;
}
$load = load_end($w);
$workers = workers_ok(2);
my $flusher = 0;
for (1 .. 30) {
    last if ($flusher = metric('flusher_pid')) && metric('database_connected');
    sleep 0.2;
}
row('(c) SIGKILL workers', "10 x kill -9 ($killed_flusher flushers)",
    $load, $max_lat,
    check($max_lat < 1 && $workers && $flusher,
          "kills: API $max_lat s, workers ok, flusher $flusher; "
          . "$load->{failed} requests died with the killed workers' "
          . "connections ($load->{socket})"));

# (d) the zone filled ten times over

note('(d) the zone filled ten times over');
my $cap = metric('sessions_capacity');
open $fh, '>', "$out/many.txt" or die $!;
for my $u (2001 .. 2000 + 10 * $cap) {
    print $fh Presence::JWT::token(sub => $u, exp => time + 86400), "\n";
}
close $fh;
my $ev0 = metric('evictions_total');
$w = load_start("$out/many.txt", 15);
$lat = api_latency();
$load = load_end($w);
my $evicted = metric('evictions_total') - $ev0;
row('(d) zone full', "10 x $cap sessions", $load, $lat,
    check($load->{failed} == 0 && $lat < 1 && $evicted > 5 * $cap,
          "full zone: $load->{failed} failed, $evicted evictions, "
          . "API $lat s"));

# (e) the flusher's backend terminated

note('(e) pg_terminate_backend on the flusher');
$w = load_start(undef, 8);
sleep 2;
my $terminated = pg_value(q{SELECT count(pg_terminate_backend(pid))
                              FROM pg_stat_activity
                             WHERE application_name = 'ngx_http_presence_module'});
sleep 2;
$lat = api_latency();
$load = load_end($w);
row('(e) backend terminated', "pg_terminate_backend ($terminated)", $load,
    $lat, check($load->{failed} == 0 && $lat < 1,
                "terminated backend: $load->{failed} failed"));

# afterwards: PostgreSQL holds every session the zone holds, each with its
# latest activity

note('recovery: comparing the zone with PostgreSQL');
for (1 .. 150) {
    last if metric('ring_depth') == 0 && metric('database_connected');
    sleep 0.2;
}
sleep 1;

my %db = map { $_->[0] => $_->[1] }
         pg_rows(q{SELECT session_token,
                          (extract(epoch FROM last_activity) * 1000)::bigint
                     FROM user_sessions});
my ($held, $same, @diff) = (0, 0);
for my $u (1 .. $users) {
    my (undef, $body) = $n->get('/api/v1/online/sessions', $token{$u});
    while ($body =~ /"session_id":"([0-9a-f]{64})".*?"last_activity":"([^"]+)"/g) {
        my ($sid, $ts) = ($1, $2);
        $held++;
        my ($y, $mo, $d, $h, $mi, $s, $ms) =
            $ts =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d{3})/;
        require Time::Local;
        my $zone_ms = Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000
                      + $ms;
        if (defined $db{$sid} && abs($db{$sid} - $zone_ms) <= 1) {
            $same++;
        } else {
            push @diff, $sid;
        }
    }
}
my $dups = pg_value(q{SELECT count(*) - count(DISTINCT session_token)
                        FROM user_sessions});
row('recovery', "zone vs table, $held sessions", { requests => 0,
                                                    failed => scalar @diff },
    api_latency(),
    check($held > 0 && $same == $held && $dups == 0,
          "$same of $held sessions in PostgreSQL with their latest "
          . "activity, $dups duplicates"));

my $log = $n->log;
my $alerts = () = $log =~ /\[alert\]/g;
my $stuck = () = $log =~ /open socket|worker process \d+ exited on signal (?!9)/g;
$n->stop;

my $table = "| scenario | done | requests | failed | API, worst | met |\n"
          . "| --- | --- | ---: | ---: | ---: | --- |\n"
          . join("\n", @report) . "\n"
          . "\nLog: $alerts alert lines (the master's \"worker process "
          . "exited on signal 9\" and \"was locked by\" for the kills), "
          . "$stuck unexpected (open sockets, other signals).\n";

open $fh, '>', "$out/results.md" or die $!;
print $fh $table;
close $fh;
print $table;

exit($failed ? 1 : 0);
