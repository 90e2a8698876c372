# A cached verdict ends at the token's exp.  Tokens are minted when the
# file is read, so this block must run first and alone: its exp is three
# seconds after that.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::JWT;

$ENV{TEST_NGINX_SECRET} = $Presence::JWT::SECRET;

no_shuffle();
run_tests();

__DATA__

=== a cached token stops being accepted at its exp
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
--- config
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id\n";
    }
--- raw_request eval
my $t = Presence::JWT::token(sub => 6, exp => time + 3);
my $r = "GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      . "Authorization: Bearer $t\r\n\r\n";
[$r, $r, [{ value => $r, delay_before => 4.5 }]]
--- response_body eval
["valid 6\n", "valid 6\n", "expired \n"]
--- grep_error_log eval
qr/presence jwt: (?:verified|cache hit), (?:valid, )?user \d+|expired token/
--- grep_error_log_out
presence jwt: verified, user 6
presence jwt: cache hit, valid, user 6
expired token
