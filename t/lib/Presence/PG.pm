package Presence::PG;

# Database helpers for the suite: run SQL through psql against the private
# PostgreSQL that t/bin/run-suite starts ($TEST_NGINX_PG_DSN).

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(pg_dsn pg_query pg_rows pg_file pg_value pg_lock);

sub pg_dsn {
    my $dsn = $ENV{TEST_NGINX_PG_DSN};
    die "TEST_NGINX_PG_DSN is not set: run the suite with \"make test\"\n"
        unless defined $dsn;
    return $dsn;
}

sub run_psql {
    my @args = @_;

    my $pid = open my $fh, '-|';
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec 'psql', '-XqAt', '-v', 'ON_ERROR_STOP=1', '-F', "\t",
             '-d', pg_dsn(), @args;
        exit 127;
    }

    local $/;
    my $out = <$fh>;
    close $fh;
    die "psql @args failed: $out" if $?;
    return $out // '';
}

# the output, one line per row, columns separated by tabs
sub pg_query { run_psql('-c', shift) }

# rows as arrays of columns
sub pg_rows {
    return map { [split /\t/, $_, -1] } split /\n/, pg_query(shift);
}

# the first column of the first row
sub pg_value {
    my @rows = pg_rows(shift);
    return @rows ? $rows[0][0] : undef;
}

sub pg_file { run_psql('-f', shift) }

# a psql in the background holding TABLE in ACCESS EXCLUSIVE mode for
# SECONDS; its pid, to waitpid for
sub pg_lock {
    my ($table, $seconds) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        exec 'psql', '-XqAt', '-d', pg_dsn(), '-c',
             "BEGIN; LOCK TABLE $table IN ACCESS EXCLUSIVE MODE; "
             . "SELECT pg_sleep($seconds); COMMIT;";
        exit 127;
    }
    return $pid;
}

1;
