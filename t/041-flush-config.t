# presence_postgres at configuration time, and a PostgreSQL that is not
# there: requests are unaffected, errors come once per backoff step.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;

Presence::Test::setup();

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('suppress_stderr', 1) if defined $block->must_die;
});

run_tests();

__DATA__

=== a host name that does not resolve fails nginx -t
--- http_config
    presence_postgres "host=no-such-host.invalid dbname=x";
--- must_die
--- error_log
presence_postgres: cannot resolve host "no-such-host.invalid"



=== an invalid connection string
--- http_config
    presence_postgres "host=localhost nonsense=1";
--- must_die
--- error_log
presence_postgres: invalid connection string: invalid connection option "nonsense"



=== presence_postgres twice
--- http_config
    presence_postgres "host=/tmp";
    presence_postgres "host=/tmp";
--- must_die
--- error_log
"presence_postgres" directive is duplicate






=== a flush interval below 10ms
--- http_config
    presence_postgres "host=/tmp";
    presence_flush_interval 1ms;
--- must_die
--- error_log
presence_flush_interval must be at least 10ms



=== a host name is resolved at start; nobody listens: requests go on, errors back off
--- http_config
    presence_postgres "host=localhost port=$TEST_NGINX_RAND_PORT_2 dbname=x connect_timeout=1";
    presence_flush_interval 100ms;
--- raw_request eval
[Presence::Test::hit(1),
 [{ value => Presence::Test::hit(2), delay_before => 3.5 }],
 Presence::Test::api('count')]
--- response_body_like eval
["backend", "backend", '"online_count":2,']
--- grep_error_log eval
qr/PostgreSQL connection failed: .*retrying in \d+ ms/
--- grep_error_log_out eval
qr/\A(?:PostgreSQL connection failed: [^\n]*retrying in \d+ ms\n){2,4}\z/
--- no_error_log
[crit]
[alert]
