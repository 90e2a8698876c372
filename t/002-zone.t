# presence_zone: the shared zone is created, and nginx -t refuses a bad
# one with a message naming the directive and the problem.

use Test::Nginx::Socket 'no_plan';

run_tests();

__DATA__

=== a zone is created and announced
--- http_config
    presence_zone zone=presence:1m;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- error_log
presence zone "presence" created, 1048576 bytes
--- no_error_log
[emerg]
[alert]



=== the smallest zone, 1m
--- http_config
    presence_zone zone=small:1m;
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- error_log
presence zone "small" created, 1048576 bytes



=== too small
--- http_config
    presence_zone zone=presence:1000k;
--- must_die
--- suppress_stderr
--- error_log
zone "presence" is too small: 1024000 bytes, the minimum is 1m



=== no zone= prefix
--- http_config
    presence_zone presence:1m;
--- must_die
--- suppress_stderr
--- error_log
invalid parameter "presence:1m", expected "zone=NAME:SIZE" in



=== no size
--- http_config
    presence_zone zone=presence;
--- must_die
--- suppress_stderr
--- error_log
invalid zone "zone=presence", expected "zone=NAME:SIZE" in



=== no name
--- http_config
    presence_zone zone=:1m;
--- must_die
--- suppress_stderr
--- error_log
invalid zone "zone=:1m", expected "zone=NAME:SIZE" in



=== bad size
--- http_config
    presence_zone zone=presence:lots;
--- must_die
--- suppress_stderr
--- error_log
invalid zone size "lots" in



=== two presence zones
--- http_config
    presence_zone zone=one:1m;
    presence_zone zone=two:1m;
--- must_die
--- suppress_stderr
--- error_log
"presence_zone" directive is duplicate in



=== a name another module already uses
--- http_config
    limit_req_zone $binary_remote_addr zone=shared:1m rate=1r/s;
    presence_zone zone=shared:1m;
--- must_die
--- suppress_stderr
--- error_log
the shared memory zone "shared" is already declared for a different use



=== not allowed in a server
--- config
    presence_zone zone=presence:1m;
--- must_die
--- suppress_stderr
--- error_log
"presence_zone" directive is not allowed here in



=== no arguments
--- http_config
    presence_zone;
--- must_die
--- suppress_stderr
--- error_log
invalid number of arguments in "presence_zone" directive
