# RS*, PS*, ES* and EdDSA with PEM keys and JWKS; key confusion; the
# published RFC 7515 examples.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::JWT;

my $dir = Presence::JWT::keys_dir();

Presence::JWT::write_jwks('jwks.json',
    Presence::JWT::jwk('rsa', kid => 'rsa-1'),
    Presence::JWT::jwk('rsa2', kid => 'rsa-2'),
    Presence::JWT::jwk('ec256', kid => 'ec-1'),
    Presence::JWT::jwk('ed25519', kid => 'ed-1'),
    { kty => 'RSA', use => 'enc', n => 'AQAB', e => 'AQAB' });

Presence::JWT::write_jwks('jwks-nokid.json',
    Presence::JWT::jwk('rsa2'), Presence::JWT::jwk('rsa'));

Presence::JWT::write_jwks('jwks-alg.json',
    Presence::JWT::jwk('rsa', alg => 'PS256'));

# RFC 7515 appendix A.1: the HMAC key, as a JWK
Presence::JWT::write_jwks('rfc7515-a1.json',
    { kty => 'oct', k => 'AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-'
                         . '1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow' });

# RFC 7515 appendix A.3: the P-256 key
Presence::JWT::write_jwks('rfc7515-a3.json',
    { kty => 'EC', crv => 'P-256',
      x => 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
      y => 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' });

our $RfcPayload = 'eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6'
                . 'Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ';

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', <<'EOC') unless defined $block->config;
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id\n";
    }
EOC

    $block->set_value('request', "GET /t\n") unless defined $block->request;
});

run_tests();

__DATA__

=== every RSA, RSA-PSS, ECDSA and EdDSA algorithm with PEM keys
--- http_config
    presence_jwt_algorithms RS256 RS384 RS512 PS256 PS384 PS512
                            ES256 ES384 ES512 EdDSA;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec256.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec384.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec512.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ed25519.pub;
--- request eval
[map { "GET /t" } 1 .. 10]
--- more_headers eval
my $i = 0;
[map { Presence::JWT::bearer(Presence::JWT::token(alg => $_, sub => ++$i)) }
 qw(RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA)]
--- response_body eval
[map { "valid $_\n" } 1 .. 10]



=== tampered, truncated or foreign-key tokens of every algorithm
--- http_config
    presence_jwt_algorithms RS256 RS384 RS512 PS256 PS384 PS512
                            ES256 ES384 ES512 EdDSA;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec256.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec384.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec512.pub;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ed25519.pub;
--- request eval
[map { "GET /t" } 1 .. 30]
--- more_headers eval
my $d = $ENV{TEST_NGINX_KEYS_DIR};
my %other = (RS => "$d/rsa2.key", PS => "$d/rsa2.key",
             ES => "$d/ec256b.key", Ed => "$d/ec256b.key");
my @h;
for my $alg (qw(RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512
                EdDSA))
{
    my $t = Presence::JWT::token(alg => $alg);
    my $key = $alg eq 'EdDSA' ? undef : $other{substr $alg, 0, 2};
    my $foreign = $alg eq 'EdDSA'
        ? Presence::JWT::raw('{"alg":"EdDSA"}',
                             '{"sub":"1","exp":4102444800}', alg => 'ES256',
                             key => "$d/ec256.key")
        : Presence::JWT::token(alg => $alg, key => $key);
    push @h, map { Presence::JWT::bearer($_) }
             Presence::JWT::tamper($t, 1), substr($t, 0, -3), $foreign;
}
\@h
--- response_body eval
[("invalid \n") x 30]



=== RS256 is not allowed unless listed
--- http_config
    presence_jwt_secret "s3cret";
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
    presence_jwt_algorithms HS256;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(alg => 'RS256'))
--- response_body
invalid 



=== key confusion: an HS256 token signed with the public key PEM
--- http_config
    presence_jwt_algorithms RS256 HS256;
    presence_jwt_secret "a different secret";
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $pem = do { local (@ARGV, $/) = "$ENV{TEST_NGINX_KEYS_DIR}/rsa.pub"; <> };
[Presence::JWT::bearer(Presence::JWT::token(alg => 'HS256', key => $pem)),
 Presence::JWT::bearer(Presence::JWT::token(alg => 'RS256'))]
--- response_body eval
["invalid \n", "valid 42\n"]



=== key confusion: RS256 allowed only, HS256 token over the PEM
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
--- more_headers eval
my $pem = do { local (@ARGV, $/) = "$ENV{TEST_NGINX_KEYS_DIR}/rsa.pub"; <> };
Presence::JWT::bearer(Presence::JWT::token(alg => 'HS256', key => $pem))
--- response_body
invalid 



=== JWKS: kid picks the key, an unknown kid is refused, enc keys skipped
--- http_config
    presence_jwt_algorithms RS256 ES256 EdDSA;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/jwks.json;
--- request eval
[map { "GET /t" } 1 .. 6]
--- more_headers eval
my $d = $ENV{TEST_NGINX_KEYS_DIR};
[map { Presence::JWT::bearer($_) }
 Presence::JWT::token(alg => 'RS256', sub => 1, header => { kid => 'rsa-1' }),
 Presence::JWT::token(alg => 'RS256', sub => 2, header => { kid => 'rsa-2' },
                      key => "$d/rsa2.key"),
 Presence::JWT::token(alg => 'RS256', sub => 3, header => { kid => 'rsa-2' }),
 Presence::JWT::token(alg => 'RS256', sub => 4, header => { kid => 'nope' }),
 Presence::JWT::token(alg => 'ES256', sub => 5, header => { kid => 'ec-1' }),
 Presence::JWT::token(alg => 'EdDSA', sub => 6, header => { kid => 'ed-1' })]
--- response_body eval
["valid 1\n", "valid 2\n", "invalid \n", "invalid \n", "valid 5\n",
 "valid 6\n"]



=== JWKS without kids: the keys of the right type are tried
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/jwks-nokid.json;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $d = $ENV{TEST_NGINX_KEYS_DIR};
[Presence::JWT::bearer(Presence::JWT::token(alg => 'RS256', sub => 1)),
 Presence::JWT::bearer(Presence::JWT::token(alg => 'RS256', sub => 2,
                                            key => "$d/rsa2.key"))]
--- response_body eval
["valid 1\n", "valid 2\n"]



=== a JWK's alg restricts the key
--- http_config
    presence_jwt_algorithms PS256 RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/jwks-alg.json;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa2.pub;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer(Presence::JWT::token(alg => 'PS256', sub => 1)),
 Presence::JWT::bearer(Presence::JWT::token(alg => 'RS256', sub => 2))]
--- response_body eval
["valid 1\n", "invalid \n"]



=== RFC 7515 A.1 (HS256): the signature verifies; exp is in 2011
# A.1's payload is {"iss":"joe","exp":1300819380,"http://example.com/
# is_root":true}: no "sub", so with the default user claim it is invalid
# even with a leeway that makes it current.  Taking "exp" as the user
# claim shows the signature itself holds.
--- http_config
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a1.json;
    presence_jwt_leeway 30y;
    presence_jwt_claim exp;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $t = 'eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.' . $main::RfcPayload
      . '.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
[Presence::JWT::bearer($t), Presence::JWT::bearer(Presence::JWT::tamper($t, 2))]
--- response_body eval
["valid 1300819380\n", "invalid \n"]



=== RFC 7515 A.1 without leeway is expired, with the default claim invalid
--- http_config
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a1.json;
--- request eval
["GET /t"]
--- more_headers eval
['Authorization: Bearer eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.'
 . $main::RfcPayload . '.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk']
--- response_body
invalid 
--- error_log
the user claim is not a positive integer



=== RFC 7515 A.3 (ES256): the published signature verifies
--- http_config
    presence_jwt_algorithms ES256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a3.json;
    presence_jwt_leeway 30y;
    presence_jwt_claim exp;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
my $t = 'eyJhbGciOiJFUzI1NiJ9.' . $main::RfcPayload
      . '.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8IS'
      . 'lSApmWQxfKTUJqPP3-Kg6NU1Q';
[Presence::JWT::bearer($t), Presence::JWT::bearer(Presence::JWT::tamper($t, 1))]
--- response_body eval
["valid 1300819380\n", "invalid \n"]



=== RFC 7515 A.3 is expired without a leeway
--- http_config
    presence_jwt_algorithms ES256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a3.json;
    presence_jwt_claim exp;
--- more_headers eval
'Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.' . $main::RfcPayload
. '.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8IS'
. 'lSApmWQxfKTUJqPP3-Kg6NU1Q'
--- response_body
expired 



=== a PEM certificate works as a key file
--- init
my $d = $ENV{TEST_NGINX_KEYS_DIR};
system("openssl req -new -x509 -key $d/ec256.key -subj /CN=t -days 2 "
       . "-out $d/ec256.crt 2>/dev/null") == 0 or die;
--- http_config
    presence_jwt_algorithms ES256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec256.crt;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(alg => 'ES256', sub => 3))
--- response_body
valid 3
