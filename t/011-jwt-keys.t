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

# RFC 7515 appendix A.4: the P-521 key (ES512); its payload is "Payload"
Presence::JWT::write_jwks('rfc7515-a4.json',
    { kty => 'EC', crv => 'P-521',
      x => 'AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLF'
           . 'V1jSfS9tsz4qUxcWceqwQGk',
      y => 'ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kk'
           . 'd0AZMaZmh9ubmf63e3kyMj2' });

our $RfcA4 = 'eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFV'
           . 'JbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8G'
           . 'aSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxY'
           . 'bSW9ERBXukOXolLzeO_Jn';

# RFC 7515 appendix A.2: the RSA public key (its JWK as published)
Presence::JWT::write_jwks('rfc7515-a2.json',
    { kty => 'RSA', e => 'AQAB',
      n => 'ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHm'
           . 'fHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_'
           . 'YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5'
           . 'z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uD'
           . 'Zlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9ia'
           . 'GNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ' });

our $RfcA2 = 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTk'
             . 'zODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4h'
             . 'iUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7'
             . 'AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKB'
             . 'YNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb'
             . '1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZES'
             . 'c6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5A'
             . 'XLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw';

our $RfcPayload = 'eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6'
                . 'Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ';

# signature malleability: ECDSA's (r, n - s) verifies as (r, s) does;
# the module takes one session id for both, that of the low-s spelling

use Digest::SHA qw(sha256_hex);
use Math::BigInt;

our $P256 = 'FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551';

sub ecdsa_twin {
    my ($token) = @_;
    my ($signed, $sig) = $token =~ /^(.*)\.([^.]+)$/;
    my $raw = Presence::JWT::b64url_decode($sig);
    my $half = length($raw) / 2;
    my $n = Math::BigInt->from_hex($P256);
    my $s = Math::BigInt->from_hex(unpack 'H*', substr($raw, $half));
    (my $hex = ($n - $s)->as_hex) =~ s/^0x//;
    $hex = ('0' x (2 * $half - length $hex)) . $hex;
    my $low = $s <= $n / 2;
    return ("$signed." . Presence::JWT::b64url(substr($raw, 0, $half)
                                                . pack('H*', $hex)), $low);
}

our $EsToken = Presence::JWT::token(alg => 'ES256', sub => 5);
our ($EsTwin, $EsLow) = ecdsa_twin($EsToken);
our $EsId = sha256_hex($EsLow ? $EsToken : $EsTwin);

# an RSA signature without its leading zero byte: another spelling, refused

our ($RsToken, $RsShort);
for my $i (1 .. 3000) {
    my $t = Presence::JWT::token(alg => 'RS256', sub => 6, jti => "j$i");
    my ($signed, $sig) = $t =~ /^(.*)\.([^.]+)$/;
    my $raw = Presence::JWT::b64url_decode($sig);
    next unless substr($raw, 0, 1) eq "\0";
    ($RsToken, $RsShort) = ($t, "$signed." . Presence::JWT::b64url(substr($raw, 1)));
    last;
}

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



=== RFC 7515 A.2 (RS256): the published signature verifies
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a2.json;
    presence_jwt_leeway 30y;
    presence_jwt_claim exp;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer($main::RfcA2),
 Presence::JWT::bearer(Presence::JWT::tamper($main::RfcA2, 2))]
--- response_body eval
["valid 1300819380\n", "invalid \n"]



=== ECDSA: (r, s) and (r, n - s) are one token, one session
--- config
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id $presence_session_id\n";
    }
--- http_config
    presence_jwt_algorithms ES256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec256.pub;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer($main::EsToken), Presence::JWT::bearer($main::EsTwin)]
--- response_body eval
["valid 5 $main::EsId\n", "valid 5 $main::EsId\n"]



=== RSA: a signature shorter than the modulus is refused
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer($main::RsToken), Presence::JWT::bearer($main::RsShort)]
--- response_body eval
["valid 6\n", "invalid \n"]



=== RFC 7515 A.4 (ES512): the published signature verifies
# A.4 signs the bytes "Payload", not a JSON object: the token is refused
# after its signature has held, and a tampered copy before
--- http_config
    presence_jwt_algorithms ES512;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rfc7515-a4.json;
--- request eval
["GET /t", "GET /t"]
--- more_headers eval
[Presence::JWT::bearer($main::RfcA4),
 Presence::JWT::bearer(Presence::JWT::tamper($main::RfcA4, 2))]
--- response_body eval
["invalid \n", "invalid \n"]
--- error_log eval
[qr/presence: invalid token: payload is not a JSON object/,
 qr/presence: invalid token: signature does not verify/]
