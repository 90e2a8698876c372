# The per-worker verdict cache with tokens whose hashes collide: three
# tokens of one murmur2 hash (built by inverting its block step) are each
# found again, wherever the tree's rotations put them.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Test::More;

my $M = 0x5bd1e995;

# nginx's ngx_murmur_hash2(), and the inverse of its block step

sub mul { use integer; return ($_[0] * $_[1]) & 0xffffffff }

sub mix {
    my $k = mul(shift, $M);
    $k ^= $k >> 24;
    return mul($k, $M);
}

my $MINV = do {                       # $M's inverse modulo 2^32
    my $x = 1;
    $x = mul($x, (2 - mul($M, $x)) & 0xffffffff) for 1 .. 5;
    $x;
};

sub unmix {
    my $k = mul(shift, $MINV);
    $k ^= $k >> 24;
    return mul($k, $MINV);
}

sub murmur2 {
    my $data = shift;
    my $h = length($data) & 0xffffffff;
    my $i = 0;
    for (; $i + 4 <= length $data; $i += 4) {
        $h = mul($h, $M) ^ mix(unpack 'V', substr($data, $i, 4));
    }
    my @t = unpack 'C*', substr($data, $i);
    if (@t) {
        $h ^= $t[2] << 16 if @t > 2;
        $h ^= $t[1] << 8 if @t > 1;
        $h ^= $t[0];
        $h = mul($h, $M);
    }
    $h ^= $h >> 13;
    $h = mul($h, $M);
    $h ^= $h >> 15;
    return $h;
}

# the state after the first $n bytes (a multiple of 4)
sub state {
    my ($data, $n) = @_;
    my $h = length($data) & 0xffffffff;
    $h = mul($h, $M) ^ mix(unpack 'V', substr($data, $_ * 4, 4))
        for 0 .. $n / 4 - 1;
    return $h;
}

# another token of the same length and hash: blocks 2 and 3 replaced
sub collide {
    my ($base, $seed) = @_;
    my $want = state($base, 12);
    my $h1 = state($base, 4);
    srand($seed);
    for (1 .. 100000) {
        my $b2 = join '', map { chr(0x41 + int rand 26) } 1 .. 4;
        my $h2 = mul($h1, $M) ^ mix(unpack 'V', $b2);
        my $b3 = pack 'V', unmix($want ^ mul($h2, $M));
        next if $b3 =~ /[^\x21-\x7e]/;
        my $t = substr($base, 0, 4) . $b2 . $b3 . substr($base, 12);
        return $t if $t ne $base;
    }
    die "no collision found";
}

my $a = 'zzzz' . ('Q' x 60);
my $b = collide($a, 1);
my $c = collide($a, 2);

is(murmur2($b), murmur2($a), 'two tokens with one hash');
is(murmur2($c), murmur2($a), 'three');
isnt($b, $c, 'three different tokens');

my $n = Presence::Nginx->new(name => 'collide', workers => 1,
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:1m;
    presence_jwt_secret "$Presence::JWT::SECRET";
EOC
        location = /metrics { presence_metrics; }
EOS
$n->start;

# each is refused (not a JWS) and its verdict cached for a second: the
# second round finds all three

$n->get('/app/x', $_) for $a, $b, $c, $a, $b, $c;

my (undef, $m) = $n->get('/metrics');
my ($hits) = $m =~ /^nginx_presence_jwt_cache_hits_total\{zone="presence"\} (\d+)/m;
my ($misses) = $m =~ /^nginx_presence_jwt_cache_misses_total\{zone="presence"\} (\d+)/m;

is($misses, 3, 'three verifications');
is($hits, 3, 'then three hits: none lost among equal keys');

$n->stop;

done_testing;
