package Presence::JWT;

# Mints JWTs at test time, so no test carries a token that expires: HS* in
# Perl (core Digest::SHA), RS*/PS*/ES*/EdDSA with the openssl command on
# keys generated once per test file into $ENV{TEST_NGINX_KEYS_DIR}.
#
# Section values are evaluated in another package: call these fully
# qualified, e.g.  Presence::JWT::token(sub => 42).

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256 hmac_sha384 hmac_sha512);
use File::Temp qw(tempdir);
use IPC::Open2;
use JSON::PP;

our $SECRET = 'test-secret-0123456789-abcdefghij';

my $KeysDir;
my $Json = JSON::PP->new->canonical;

sub b64url {
    my $b = shift;
    require MIME::Base64;
    my $s = MIME::Base64::encode_base64($b, '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub b64url_decode {
    my $s = shift;
    require MIME::Base64;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    return MIME::Base64::decode_base64($s);
}

sub json { $Json->encode(shift) }

# the claims every test token gets unless told otherwise
sub claims {
    my %c = (sub => '42', exp => time + 3600, @_);
    delete $c{$_} for grep { !defined $c{$_} } keys %c;
    return \%c;
}

# a token from raw header and payload strings (JSON text, not encoded)
sub raw {
    my ($header, $payload, %o) = @_;
    my $alg = $o{alg} // 'HS256';
    my $input = b64url($header) . '.' . b64url($payload);
    return $input . '.' . b64url(sign($alg, $input, $o{key}));
}

# token(claims..., alg => ..., key => ..., header => {...})
sub token {
    my %args = @_;
    my $alg = delete $args{alg} // 'HS256';
    my $key = delete $args{key};
    my $hdr = delete $args{header} // {};
    my %header = (alg => $alg, typ => 'JWT', %$hdr);
    delete $header{$_} for grep { !defined $header{$_} } keys %header;
    return raw(json(\%header), json(claims(%args)), alg => $alg,
               key => $key);
}

sub sign {
    my ($alg, $input, $key) = @_;

    if ($alg =~ /^HS(\d+)$/) {
        my $secret = $key // $SECRET;
        return hmac_sha256($input, $secret) if $1 == 256;
        return hmac_sha384($input, $secret) if $1 == 384;
        return hmac_sha512($input, $secret) if $1 == 512;
    }

    my $dir = keys_dir();

    if ($alg =~ /^(RS|PS)(\d+)$/) {
        my @pss = $1 eq 'PS' ? ('-sigopt', 'rsa_padding_mode:pss',
                                '-sigopt', 'rsa_pss_saltlen:digest',
                                '-sigopt', "rsa_mgf1_md:sha$2") : ();
        return openssl($input, 'dgst', "-sha$2", '-sign',
                       $key // "$dir/rsa.key", @pss);
    }

    if ($alg =~ /^ES(\d+)$/) {
        my $bits = $1;
        my $size = { 256 => 32, 384 => 48, 512 => 66 }->{$bits};
        my $der = openssl($input, 'dgst', "-sha$bits", '-sign',
                          $key // "$dir/ec$bits.key");
        return der_to_raw($der, $size);
    }

    if ($alg eq 'EdDSA') {
        my $tmp = "$dir/msg.$$";
        open my $fh, '>', $tmp or die $!;
        print $fh $input;
        close $fh;
        my $sig = openssl('', 'pkeyutl', '-sign', '-rawin', '-inkey',
                          $key // "$dir/ed25519.key", '-in', $tmp);
        unlink $tmp;
        return $sig;
    }

    die "cannot sign $alg";
}

sub openssl {
    my ($in, @args) = @_;
    my $pid = open2(my $out, my $inp, 'openssl', @args);
    binmode $out;
    binmode $inp;
    print $inp $in;
    close $inp;
    local $/;
    my $res = <$out>;
    waitpid $pid, 0;
    die "openssl @args failed" if $?;
    return $res;
}

# ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } to R || S
sub der_to_raw {
    my ($der, $size) = @_;
    my @b = unpack 'C*', $der;
    my $i = 1;
    $i += ($b[$i] & 0x80) ? 1 + ($b[$i] & 0x7f) : 1;
    my @parts;
    for (1 .. 2) {
        $i++;
        my $len = $b[$i++];
        my $v = pack 'C*', @b[$i .. $i + $len - 1];
        $i += $len;
        $v =~ s/^\x00+//;
        push @parts, ("\x00" x ($size - length $v)) . $v;
    }
    return join '', @parts;
}

sub keys_dir {
    return $KeysDir if $KeysDir;

    $KeysDir = tempdir(CLEANUP => 1);
    chmod 0755, $KeysDir;

    my @gen = (
        [rsa => 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
        [rsa2 => 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
        [ec256 => 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
        [ec384 => 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
        [ec512 => 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
        [ec256b => 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
        [k256 => 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
        [ed25519 => 'ED25519'],
    );

    for my $g (@gen) {
        my ($name, $type, @opts) = @$g;
        system('openssl', 'genpkey', '-quiet', '-algorithm', $type, @opts,
               '-out', "$KeysDir/$name.key") == 0
            or die "openssl genpkey $name failed";
        system('openssl', 'pkey', '-in', "$KeysDir/$name.key", '-pubout',
               '-out', "$KeysDir/$name.pub") == 0
            or die "openssl pkey $name failed";
    }

    chmod 0644, glob "$KeysDir/*";

    $ENV{TEST_NGINX_KEYS_DIR} = $KeysDir;

    return $KeysDir;
}

# the public key of a generated key as a JWK (hash)
sub jwk {
    my ($name, %extra) = @_;
    my $dir = keys_dir();
    my $text = `openssl pkey -pubin -in $dir/$name.pub -text -noout`;

    my $hex = sub {
        my $label = shift;
        $text =~ /^\Q$label\E:?\s*\n((?:\s+[0-9a-f:]+\n)+)/m
            or die "no $label in $name";
        (my $h = $1) =~ s/[\s:]//g;
        return pack 'H*', $h;
    };

    my %k;

    if ($name =~ /^rsa/) {
        my $n = $hex->('Modulus');
        $n =~ s/^\x00+//;
        $text =~ /Exponent: (\d+)/ or die;
        my $e = pack 'N', $1;
        $e =~ s/^\x00+//;
        %k = (kty => 'RSA', n => b64url($n), e => b64url($e));

    } elsif ($name =~ /^ec(\d+)/) {
        my $size = { 256 => 32, 384 => 48, 512 => 66 }->{$1};
        my $pub = $hex->('pub');
        %k = (kty => 'EC', crv => { 256 => 'P-256', 384 => 'P-384',
                                    512 => 'P-521' }->{$1},
              x => b64url(substr $pub, 1, $size),
              y => b64url(substr $pub, 1 + $size, $size));

    } elsif ($name eq 'ed25519') {
        %k = (kty => 'OKP', crv => 'Ed25519', x => b64url($hex->('pub')));
    }

    return { %k, %extra };
}

sub write_jwks {
    my ($file, @keys) = @_;
    my $path = keys_dir() . "/$file";
    open my $fh, '>', $path or die $!;
    print $fh json({ keys => \@keys });
    close $fh;
    chmod 0644, $path;
    return $path;
}

# flips one character of the given segment (0 header, 1 payload, 2 sig)
sub tamper {
    my ($tok, $seg) = @_;
    my @p = split /\./, $tok, -1;
    my $c = substr $p[$seg], 5, 1;
    substr($p[$seg], 5, 1) = $c eq 'A' ? 'B' : 'A';
    return join '.', @p;
}

sub bearer { "Authorization: Bearer " . shift }

1;
