# A second crowded with users (a burst of logins, a warm start): a page
# that starts inside it steps over one run of the second's index, not over
# the users before it in the second.  The index follows users leaving the
# second and users placed into it, and is built again when a run has
# grown to twice its share; every page agrees with every other.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use List::Util qw(shuffle);
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_rows pg_value);
use Test::More;

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

my $json = JSON::PP->new->utf8;

sub tok { Presence::JWT::token(sub => shift) }

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username)
           SELECT g, 'user' || g FROM generate_series(1, 3000) g
           UNION ALL
           SELECT g, 'user' || g FROM generate_series(20001, 20500) g});

# 3 000 users within one second, 20 s ago, a quarter of a millisecond
# apart: the warm start places them in PostgreSQL's order

# users 1 .. 3000 in one second 20 s ago, sessions from "tokens" + user:
# that second
sub crowd {
    my $tokens = shift;
    my $t = pg_value(q{SELECT date_trunc('second', now() AT TIME ZONE 'UTC')
                              - interval '20 seconds'});
    pg_query(qq{INSERT INTO user_sessions (user_id, session_token,
                    created_at, last_activity, is_active, node, updated_at)
                SELECT g, lpad(to_hex($tokens + g), 64, '0'),
                       now() AT TIME ZONE 'UTC' - interval '1 minute',
                       timestamp '$t' + make_interval(secs => g / 4000.0),
                       true, 'other', now() AT TIME ZONE 'UTC'
                  FROM generate_series(1, 3000) g});
    return $t;
}

my $second = crowd(7000000);

my @db = map { $_->[0] } pg_rows(q{SELECT user_id FROM user_sessions
                                    ORDER BY last_activity DESC, id DESC});

# a node of two workers, with more of the http block
sub node {
    my $extra = shift;
    my $node = Presence::Nginx->new(name => 'crowd', workers => 2,
                                    server => <<'EOS', http => <<EOC);
        location = /metrics {
            presence_metrics;
        }
EOS
    presence_zone zone=presence:16m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
$extra
EOC
    $node->start;
    return $node;
}

my $n = node("    presence_cluster on;\n    presence_node crowd;");

sub metric {
    my $name = shift;
    my (undef, $b) = $n->get('/metrics');
    return $b =~ /^nginx_presence_\Q$name\E\{zone="presence"\} (\d+)$/m
           ? $1 : undef;
}

sub page {
    my ($offset, $limit) = @_;
    my (undef, $b) = $n->get('/api/v1/online/users?threshold_minutes=60'
                             . "&limit=$limit&offset=$offset", tok(1));
    my $j = eval { $json->decode($b) } or return ();
    return map { $_->{user_id} } @{ $j->{online_users} };
}

# every user by pages of 100, and spot checks by pages of other sizes
# starting elsewhere: all must agree
sub listing {
    my ($total, $what) = @_;
    my @all;
    for (my $offset = 0; $offset < $total; $offset += 100) {
        push @all, page($offset, 100);
    }
    my %seen;
    my @twice = grep { $seen{$_}++ } @all;
    is(scalar @all, $total, "$what: $total users listed");
    is("@twice", '', "$what: each once");

    my @bad;
    srand 84;
    for (1 .. 60) {
        my $offset = int rand $total;
        my $limit = 1 + int rand 60;
        my @got = page($offset, $limit);
        my $last = $offset + $limit - 1;
        $last = $total - 1 if $last > $total - 1;
        # the same users; a page lists its own by last_seen, and users
        # of another node come first in their second whatever their
        # millisecond, so the order within a page may differ at its ends
        my @want = sort { $a <=> $b } @all[$offset .. $last];
        push @bad, "offset $offset limit $limit"
            unless join(' ', sort { $a <=> $b } @got) eq "@want";
    }
    is("@bad", '', "$what: pages of any size at any offset agree");
    return @all;
}

ok(wait_until(sub {
       my (undef, $b) = $n->get('/api/v1/online/count?threshold_minutes=60',
                                tok(1));
       $b =~ /"online_count":3000\b/ }, 15),
   '3 000 users of one second loaded');

is(metric('page_crowd_indexes_total'), 0, 'no index before a page needs one');

is(join(' ', page(1500, 10)), "@db[1500 .. 1509]",
   'a page in the middle of the second');
is(metric('page_crowd_indexes_total'), 1, 'the second is indexed');

my $steps = metric('page_steps_total');
is(join(' ', page(1709, 10)), "@db[1709 .. 1718]", 'another page in it');
my $stepped = metric('page_steps_total') - $steps;
cmp_ok($stepped, '<=', 188,
       "it stepped over $stepped users, at most one run (3000 / 16)");
is(metric('page_crowd_indexes_total'), 1, 'with the same index');

my @all = listing(3000, 'as loaded');
is("@all", "@db", 'in PostgreSQL\'s order');

# 300 of them active again: out of the second, to the head, most recent
# first

my @moved = (shuffle(@db))[0 .. 299];
$n->get('/app/x', tok($_)) for @moved;
my %moved = map { $_ => 1 } @moved;
my @rest = grep { !$moved{$_} } @db;

@all = listing(3000, 'after 300 moved');
is(join(' ', sort { $a <=> $b } @all[0 .. 299]),
   join(' ', sort { $a <=> $b } @moved), 'the 300 active again come first');
is("@all[300 .. 2999]", "@rest", 'the others keep their order');

$steps = metric('page_steps_total');
page(300 + 1333, 5);
cmp_ok(metric('page_steps_total') - $steps, '<=', 2 * 188,
       'a page in what is left of the second steps over one run at most');

# 500 users of another node, active within the same second: placed at its
# start, more than a run's share: the index is built again

my $builds = metric('page_crowd_indexes_total');
pg_query(qq{INSERT INTO user_sessions (user_id, session_token, created_at,
               last_activity, is_active, node, updated_at)
           SELECT g, lpad(to_hex(8000000 + g), 64, '0'),
                  now() AT TIME ZONE 'UTC' - interval '1 minute',
                  timestamp '$second'
                  + make_interval(secs => (g - 20000) / 1000.0 - 0.0005),
                  true, 'other', now() AT TIME ZONE 'UTC'
             FROM generate_series(20001, 20500) g});

ok(wait_until(sub {
       my (undef, $b) = $n->get('/api/v1/online/count?threshold_minutes=60',
                                tok(1));
       $b =~ /"online_count":3500\b/ }, 15),
   '500 more pulled into the second');

my @pulled = map { $_->[0] } pg_rows(q{SELECT user_id FROM user_sessions
                                        WHERE user_id > 20000
                                        ORDER BY last_activity DESC});

@all = listing(3500, 'after 500 placed');
is(join(' ', sort { $a <=> $b } @all[0 .. 299]),
   join(' ', sort { $a <=> $b } @moved), 'the 300 active again first');
is("@all[300 .. 799]", "@pulled", 'then the 500 placed, most recent first');
is("@all[800 .. 3499]", "@rest", 'then the others, in their order');
cmp_ok(metric('page_crowd_indexes_total'), '>', $builds,
       'the grown index was built again');

$steps = metric('page_steps_total');
page(800 + 2000, 5);
cmp_ok(metric('page_steps_total') - $steps, '<=', 2 * 200,
       'and a page deep in the second steps over one run at most');

is(($n->log =~ /\[(?:alert|crit|emerg)\]/) ? 'yes' : 'no', 'no',
   'no alert in the error log');

$n->stop;

# with presence_privacy_column, pages list the users others may see: the
# index counts them by run, and follows their settings as they change

pg_query('TRUNCATE user_sessions');
pg_query(q{ALTER TABLE users ADD COLUMN IF NOT EXISTS show_online_status
           boolean NOT NULL DEFAULT true});
END { local $?; eval { pg_query(q{ALTER TABLE users
                                  DROP COLUMN IF EXISTS show_online_status}) } }
pg_query('UPDATE users SET show_online_status = (id % 3 <> 0)');

crowd(9000000);

sub visible_order {
    return map { $_->[0] }
           pg_rows(q{SELECT s.user_id FROM user_sessions s
                       JOIN users u ON u.id = s.user_id
                      WHERE u.show_online_status
                      ORDER BY s.last_activity DESC, s.id DESC});
}

$n = node('    presence_privacy_column show_online_status;');

sub total {
    my (undef, $b) = $n->get('/api/v1/online/users?threshold_minutes=60'
                             . '&limit=1', tok(1));
    return $b =~ /"total":(\d+)/ ? $1 : -1;
}

ok(wait_until(sub { total() == 2000 }, 15),
   '3 000 users of one second loaded, 2 000 of them visible');

my @visible = visible_order();
@all = listing(2000, 'visible');
is("@all", "@visible", 'the visible ones, in PostgreSQL\'s order');
is(metric('page_crowd_indexes_total'), 1, 'one index');

$steps = metric('page_steps_total');
page(1111, 5);
cmp_ok(metric('page_steps_total') - $steps, '<=', 188,
       'a page deep in the second steps over one run at most');

# 400 hidden, 200 shown (of the most recent, whose settings the profile
# loader reads again)

pg_query(q{UPDATE users SET show_online_status = NOT show_online_status
            WHERE id > 2400});
$n->request('POST /api/v1/online/cleanup', tok(1));
ok(wait_until(sub { total() == 1800 }, 10), 'the settings read again: 1 800');

@visible = visible_order();
@all = listing(1800, 'after 600 settings changed');
is("@all", "@visible", 'the users now visible, in their order');
is(metric('page_crowd_indexes_total'), 1,
   'the same index, its counts following the settings');

is(($n->log =~ /\[(?:alert|crit|emerg)\]/) ? 'yes' : 'no', 'no',
   'no alert in the error log');

$n->stop;

done_testing;
