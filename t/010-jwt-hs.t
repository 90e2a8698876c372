# JWT verification with HMAC secrets: $presence_jwt_status and
# $presence_user_id for good tokens and every refusal class.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::JWT;

$ENV{TEST_NGINX_SECRET} = $Presence::JWT::SECRET;

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('http_config', <<'EOC') unless defined $block->http_config;
    presence_jwt_secret "$TEST_NGINX_SECRET";
EOC

    $block->set_value('config', <<'EOC') unless defined $block->config;
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id\n";
    }
EOC

    $block->set_value('request', "GET /t\n") unless defined $block->request
        || defined $block->raw_request;
});

run_tests();

__DATA__

=== a valid HS256 token
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => '42'))
--- response_body
valid 42
--- no_error_log
[error]



=== no Authorization header
--- response_body
missing 



=== the user id as a JSON integer
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 7))
--- response_body
valid 7



=== the largest int64 user id as a string
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => '9223372036854775807'))
--- response_body
valid 9223372036854775807



=== user ids that are not positive integers are invalid
--- request eval
[map { "GET /t" } 1 .. 9]
--- more_headers eval
[map { Presence::JWT::bearer(Presence::JWT::raw('{"alg":"HS256"}',
    '{"exp":' . (time + 3600) . ',"sub":' . $_ . '}')) }
 '0', '-5', '1.5', '"12a"', '""', '"9223372036854775808"', 'true',
 '"-3"', '" 42"']
--- response_body eval
[("invalid \n") x 9]



=== no user claim
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => undef))
--- response_body
invalid 



=== another user claim
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_claim user_id;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 'alice', user_id => 99))
--- response_body
valid 99



=== HS384 and HS512 when allowed
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_algorithms HS256 HS384 HS512;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(alg => 'HS384', sub => 3)),
 Presence::JWT::bearer(Presence::JWT::token(alg => 'HS512', sub => 5))]
--- response_body eval
["valid 3\n", "valid 5\n"]



=== HS384 when only HS256 is allowed
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(alg => 'HS384'))
--- response_body
invalid 
--- error_log
presence: invalid token: "alg" not in presence_jwt_algorithms



=== a flipped payload byte, a truncated signature, another secret
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t"]
--- more_headers eval
my $t = Presence::JWT::token(sub => 42);
[Presence::JWT::bearer(Presence::JWT::tamper($t, 1)),
 Presence::JWT::bearer(Presence::JWT::tamper($t, 0)),
 Presence::JWT::bearer(substr($t, 0, length($t) - 4)),
 Presence::JWT::bearer(Presence::JWT::token(sub => 42, key => 'other'))]
--- response_body eval
[("invalid \n") x 4]



=== two secrets for rotation: either verifies
--- http_config
    presence_jwt_secret "old-secret" "$TEST_NGINX_SECRET";
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(sub => 1, key => 'old-secret')),
 Presence::JWT::bearer(Presence::JWT::token(sub => 2)),
 Presence::JWT::bearer(Presence::JWT::token(sub => 3, key => 'third'))]
--- response_body eval
["valid 1\n", "valid 2\n", "invalid \n"]



=== alg none in any case, and an empty signature
--- request eval
[map { "GET /t" } 1 .. 5]
--- more_headers eval
my $p = Presence::JWT::b64url('{"sub":"42","exp":' . (time + 3600) . '}');
[map { Presence::JWT::bearer($_) }
 Presence::JWT::b64url('{"alg":"none"}') . ".$p.",
 Presence::JWT::b64url('{"alg":"None"}') . ".$p.",
 Presence::JWT::b64url('{"alg":"NONE"}') . ".$p.x",
 Presence::JWT::b64url('{"alg":"none"}') . ".$p",
 Presence::JWT::b64url('{"alg":"HS256"}') . ".$p."]
--- response_body eval
[("invalid \n") x 5]



=== two or five segments
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
my $t = Presence::JWT::token();
my @p = split /\./, $t;
[Presence::JWT::bearer("$p[0].$p[1]"),
 Presence::JWT::bearer("$t.$p[2].$p[2]"),
 Presence::JWT::bearer("$t.")]
--- response_body eval
[("invalid \n") x 3]



=== non-canonical base64url of a real token is refused
--- request eval
[map { "GET /t" } 1 .. 7]
--- more_headers eval
# a token whose signature has a "-" or "_", so "+/" makes a difference
my ($t, $n);
do { $t = Presence::JWT::token(sub => 42, n => ++$n) }
    until (split /\./, $t)[2] =~ /[-_]/;
my ($h, $p, $s) = split /\./, $t;
(my $plus = $s) =~ tr{-_}{+/};
# the last character of a 32-byte signature carries 2 unused bits: set one
my $abc = CORE::join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_';
my $v = index $abc, substr($s, -1);
my $bits = substr($s, 0, -1) . substr($abc, $v | 1, 1);
[map { Presence::JWT::bearer($_) }
 "$h.$p.$s=",
 "$h.$p.$s=junk",
 "$h.$p.${s}A",
 "$h.$p." . substr($s, 0, 5) . " " . substr($s, 5),
 "$h.$p.$plus",
 "$h.$p.$bits",
 "$h=.$p.$s"]
--- response_body eval
[("invalid \n") x 7]



=== an unknown crit header
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(header => { crit => ['exp'] }))
--- response_body
invalid 



=== duplicate keys, deep nesting, invalid UTF-8, a NUL escape
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_max_size 64k;
    large_client_header_buffers 4 64k;
--- request eval
[map { "GET /t" } 1 .. 5]
--- more_headers eval
my $e = time + 3600;
[map { Presence::JWT::bearer(Presence::JWT::raw('{"alg":"HS256"}', $_)) }
 qq({"sub":"1","sub":"2","exp":$e}),
 qq({"sub":"1","exp":$e,"x":) . ('[' x 10000) . (']' x 10000) . '}',
 qq({"sub":"1","exp":$e,"x":"\xff\xfe"}),
 qq({"sub":"1","exp":$e,"x":"a\\u0000b"}),
 qq(["sub","1"])]
--- response_body eval
[("invalid \n") x 5]



=== expired, distinct from invalid
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(exp => time - 10))
--- response_body
expired 
--- error_log
presence: expired token: expired



=== leeway accepts a recently expired token
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_leeway 1m;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(exp => time - 30)),
 Presence::JWT::bearer(Presence::JWT::token(exp => time - 90))]
--- response_body eval
["valid 42\n", "expired \n"]



=== exp is required by default
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(exp => undef))
--- response_body
invalid 



=== presence_jwt_require_exp off
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_require_exp off;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(exp => undef))
--- response_body
valid 42



=== exp, nbf and iat must be numbers; far-future values never wrap
--- request eval
[map { "GET /t" } 1 .. 7]
--- more_headers eval
[map { Presence::JWT::bearer(Presence::JWT::raw('{"alg":"HS256"}', $_)) }
 '{"sub":"1","exp":"2000000000"}',
 '{"sub":"1","exp":4102444800,"nbf":"0"}',
 '{"sub":"1","exp":4102444800,"iat":null}',
 '{"sub":"1","exp":99999999999999999999999}',
 '{"sub":"1","exp":1e300}',
 '{"sub":"1","exp":9223372036854775807}',
 '{"sub":2,"exp":18446744073709551616}']
--- response_body eval
["invalid \n", "invalid \n", "invalid \n", "valid 1\n", "valid 1\n",
 "valid 1\n", "valid 2\n"]



=== nbf in the future is invalid, within the leeway valid; iat is not checked
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_leeway 10s;
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(nbf => time + 60)),
 Presence::JWT::bearer(Presence::JWT::token(nbf => time + 5)),
 Presence::JWT::bearer(Presence::JWT::token(iat => time + 600))]
--- response_body eval
["invalid \n", "valid 42\n", "valid 42\n"]



=== issuer
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_issuer https://api.example.com;
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(iss => 'https://api.example.com')),
 Presence::JWT::bearer(Presence::JWT::token(iss => 'https://evil.example')),
 Presence::JWT::bearer(Presence::JWT::token())]
--- response_body eval
["valid 42\n", "invalid \n", "invalid \n"]



=== audience: a string or an array naming one of ours
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_audience dating-app admin-app;
--- request eval
[map { "GET /t" } 1 .. 5]
--- more_headers eval
[map { Presence::JWT::bearer(Presence::JWT::token(aud => $_)) }
 'dating-app', ['other', 'admin-app'], 'other', ['other'], undef]
--- response_body eval
["valid 42\n", "valid 42\n", "invalid \n", "invalid \n", "invalid \n"]



=== a token with aud when no audience is configured is refused
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(aud => 'dating-app'))
--- response_body
invalid 



=== longer than presence_jwt_max_size
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_max_size 256;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(pad => 'x' x 300)),
 Presence::JWT::bearer(Presence::JWT::token())]
--- response_body eval
["invalid \n", "valid 42\n"]
--- error_log
token longer than presence_jwt_max_size



=== Authorization edge cases
--- request eval
[map { "GET /t" } 1 .. 9]
--- more_headers eval
my $t = Presence::JWT::token(sub => 42);
["Authorization: X", "Authorization: Bearer", "Authorization: Bearer   ",
 "Authorization: bearer $t", "Authorization: BEARER    $t",
 "Authorization: Bearer\t$t", "Authorization: Basic $t",
 "Authorization: Bearer $t junk", "Authorization: Bearer \xff\xfe\x80"]
--- response_body eval
["missing \n", "missing \n", "missing \n", "valid 42\n", "valid 42\n",
 "missing \n", "missing \n", "invalid \n", "invalid \n"]
--- no_error_log
[error]
[crit]



=== two Authorization headers: nginx refuses the request itself
--- more_headers eval
my $t = Presence::JWT::token(sub => 42);
"Authorization: Bearer $t\nAuthorization: Bearer $t"
--- error_code: 400



=== a NUL byte in the header: nginx refuses it, no crash
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\0b\r\n"
. "Connection: close\r\n\r\n"
--- error_code: 400



=== a 16 KiB Authorization value
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    large_client_header_buffers 4 32k;
--- more_headers eval
"Authorization: Bearer " . ('A' x 16384)
--- response_body
invalid 
--- no_error_log
[error]



=== presence_jwt_token takes a cookie, the header stays the fallback
--- config
    presence_jwt_token $cookie_access_token;
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id\n";
    }
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
["Cookie: a=b; access_token=" . Presence::JWT::token(sub => 11),
 Presence::JWT::bearer(Presence::JWT::token(sub => 12)),
 "Cookie: access_token=" . Presence::JWT::token(sub => 13) . "\n"
 . Presence::JWT::bearer(Presence::JWT::token(sub => 14))]
--- response_body eval
["valid 11\n", "valid 12\n", "valid 13\n"]



=== the variables in a log format and a proxied header
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    log_format presence "user=$presence_user_id jwt=$presence_jwt_status";
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "backend saw user $http_x_user_id\n";
        }
    }
--- config
    location = /t {
        access_log logs/presence.log presence;
        proxy_set_header X-User-Id $presence_user_id;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 77))
--- response_body
backend saw user 77



=== a repeated token is a cache hit, not a second verification
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $t = Presence::JWT::token(sub => 5, exp => 4102444800);
[Presence::JWT::bearer($t), Presence::JWT::bearer($t)]
--- response_body eval
["valid 5\n", "valid 5\n"]
--- grep_error_log eval
qr/presence jwt: (?:verified|cache hit), (?:valid, )?user \d+/
--- grep_error_log_out
presence jwt: verified, user 5
presence jwt: cache hit, valid, user 5



=== presence_jwt_cache 0 verifies every time
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
    presence_jwt_cache 0;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $t = Presence::JWT::token(sub => 8, exp => 4102444800);
[Presence::JWT::bearer($t), Presence::JWT::bearer($t)]
--- response_body eval
["valid 8\n", "valid 8\n"]
--- grep_error_log eval
qr/presence jwt: (?:verified|cache hit)/
--- grep_error_log_out
presence jwt: verified
presence jwt: verified



=== no token or secret in the error log, even at debug
--- http_config
    presence_jwt_secret "$TEST_NGINX_SECRET";
--- request eval
["GET /t", "GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(sub => 9, exp => 4102444800)),
 Presence::JWT::bearer(Presence::JWT::token(sub => 9, exp => 4102444801,
                                            key => 'wrong')),
 Presence::JWT::bearer(Presence::JWT::token(sub => 9, exp => 1000))]
--- response_body eval
["valid 9\n", "invalid \n", "expired \n"]
--- no_error_log eval
my @s = map { (split /\./, $_)[2] }
        Presence::JWT::token(sub => 9, exp => 4102444800),
        Presence::JWT::token(sub => 9, exp => 4102444801, key => 'wrong'),
        Presence::JWT::token(sub => 9, exp => 1000);
# nginx's own debug lines print request headers ("http header: ..."): only
# the module's lines are ours to keep clean
[map { qr/^(?!.*http header: ).*\Q$_\E/ } @s, $Presence::JWT::SECRET, 'eyJ']



=== one user id is never read as another, whatever other claims hold
--- request eval
[map { "GET /t" } 1 .. 8]
--- more_headers eval
[map { Presence::JWT::bearer(Presence::JWT::raw('{"alg":"HS256"}', $_)) }
 '{"sub":9007199254740993,"exp":4102444800,"big":99999999999999999999}',
 '{"sub":9007199254740993,"exp":99999999999999999999999}',
 '{"big":-99999999999999999999,"sub":9223372036854775807,"exp":4102444800}',
 '{"sub":9007199254740993,"exp":4102444800,"n":[1,2e400,18446744073709551616]}',
 '{"sub":"9007199254740993","exp":4102444800,"big":1e30}',
 '{"sub":9223372036854775808,"exp":4102444800}',
 '{"sub":5.0,"exp":4102444800}',
 '{"sub":00012,"exp":4102444800}']
--- response_body eval
["valid 9007199254740993\n", "valid 9007199254740993\n",
 "valid 9223372036854775807\n", "invalid \n", "valid 9007199254740993\n",
 "invalid \n", "invalid \n", "invalid \n"]



=== claims nested 40 deep are accepted (python-jose does), 70 deep are not
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[map { Presence::JWT::bearer(Presence::JWT::raw('{"alg":"HS256"}',
    '{"sub":"3","exp":4102444800,"x":' . ('[' x $_) . (']' x $_) . '}')) }
 40, 70]
--- response_body eval
["valid 3\n", "invalid \n"]
