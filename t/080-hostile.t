# Hostile input: huge and many headers, bytes that are not UTF-8 in the
# User-Agent, odd query strings and methods.  Correct status codes, no
# crash, valid JSON out, nothing secret in the log.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::Test;
use JSON::PP ();

Presence::Test::setup();

our $Token = Presence::Test::tok(1, sid => 'hostile');

run_tests();

__DATA__

=== 1 000 headers: Debian's nginx refuses them itself, upstream's passes them
# (Debian's 1.22.1 answers "client sent too many header lines", 400)
--- http_config
    large_client_header_buffers 16 64k;
--- raw_request eval
[Presence::Test::req('/app/x', $main::Token, map { "X-H$_: v$_" } 1 .. 1000),
 Presence::Test::req('/app/x', $main::Token, map { "X-H$_: v$_" } 1 .. 300),
 Presence::Test::req('/app/x', $main::Token, 'X-Big: ' . ('b' x 16384)),
 Presence::Test::api('count', $main::Token)]
--- error_code_like eval
['^(?:200|400)$', '^200$', '^200$', '^200$']
--- response_body_like eval
["Bad Request|backend", "backend", "backend", '"online_count":1,']
--- no_error_log
[crit]
[alert]



=== control bytes and invalid UTF-8 in the User-Agent come out as valid JSON
--- raw_request eval
[Presence::Test::req('/app/x', $main::Token,
                     "User-Agent: a\x01b\x7f\xff\xc3\x28 \xe2\x82\xac \xf0\x90\x80 \\\\ \" end"),
 Presence::Test::api('sessions', $main::Token)]
--- response_body_like eval
["backend", '"user_agent":"a\?b\?\?\?\( (?:\x{20ac}|\xe2\x82\xac) \?\?\? \x5c{4} \x5c" end"']



=== escapes, overlong forms and surrogates in the User-Agent; NUL refused
--- raw_request eval
[Presence::Test::req('/app/x', $main::Token,
                     "User-Agent: \x01\x02\x1b[31m\xc0\xaf\xed\xa0\x80"),
 Presence::Test::req('/app/x', Presence::Test::tok(2), "User-Agent: a\x00b"),
 Presence::Test::api('sessions', $main::Token),
 Presence::Test::api('status?user_ids=2', $main::Token)]
--- error_code eval
[200, 400, 200, 200]
--- response_body_like eval
["backend", "Bad Request", '"user_agent":"\?\?\?\[31m\?\?\?\?\?"',
 '"2":\{"status":"offline","last_seen":null\}']



=== query strings: %00, overlong numbers, repeats, junk
--- http_config
    large_client_header_buffers 4 64k;
--- raw_request eval
[map { Presence::Test::api($_, $main::Token) }
 'count?threshold_minutes=%00', 'count?threshold_minutes=1%00',
 'count?threshold_minutes=' . ('9' x 5000),
 'users?limit=5&limit=7&limit=abc',
 'users?limit==5', 'users?&&&limit=5&&',
 'status?user_ids=' . ('1,' x 5000) . '1',
 'status?user_ids=%31,%32&user_ids=3',
 'count?' . ('x=y&' x 2000) . 'threshold_minutes=3']
--- error_code eval
[422, 422, 422, 422, 422, 200, 422, 200, 200]
--- response_body_like eval
['"type":"int_parsing"', '"type":"int_parsing"',
 '"type":"less_than_equal"', '"loc":\["query","limit"\].*"input":"abc"',
 '"input":"=5"', '"count":0,',
 '"msg":"Value error, at most 100 user ids"',
 '^\{"statuses":\{"3":\{"status":"offline","last_seen":null\}\},',
 '"threshold_minutes":3,']



=== methods other than GET, HEAD and POST
--- raw_request eval
[map { Presence::Test::api("$_ count", $main::Token) }
 qw(PUT DELETE PATCH OPTIONS PROPFIND)]
--- error_code eval
[405, 405, 405, 405, 405]
--- response_headers eval
[("Allow: GET, HEAD") x 5]



=== other methods pass tracked locations untouched
--- raw_request eval
[map({ Presence::Test::req("$_ /app/m", $main::Token) } qw(PUT DELETE PATCH)),
 Presence::Test::api('sessions', $main::Token)]
--- response_body_like eval
["backend", "backend", "backend", '"user_agent":null,.*"is_current":true']



=== nothing secret in the log, even at debug, after hostile requests
--- raw_request eval
[Presence::Test::req('/app/x', 'x.y.z'),
 Presence::Test::req('/app/x', $main::Token . 'tampered'),
 Presence::Test::api('count', Presence::JWT::token(sub => 2, exp => 1))]
--- error_code eval
[200, 200, 401]
--- no_error_log eval
# nginx's own debug lines print request headers; the module's never do
[qr/presence.*\Q$Presence::JWT::SECRET\E/, qr/presence.*eyJ/]
