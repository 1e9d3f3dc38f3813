#!/usr/bin/perl
# The GPU emulation's launch rewriter (make test-emu): prints a kernels/*.cu
# file with every launch `k<<<config>>>(args)` written as
# `emu_launch("k", S, k, emu_config(config), args)` (tests/emu/cuda_emu.h),
# S = 1 when the kernel's body calls __syncthreads (its threads then run as
# fibers), else 0 (one plain call a thread). Usage: launches.pl FILE.cu
use strict;
use warnings;

local $/;
my $file = $ARGV[0] or die "usage: launches.pl FILE.cu\n";
open(my $in, '<', $file) or die "$file: $!\n";
my $src = <$in>;
close $in;

my $parens = qr/(\((?:[^()]++|(?-1))*\))/;
my $braces = qr/(\{(?:[^{}]++|(?-1))*\})/;

# Kernels whose body calls __syncthreads.
my %sync;
while ($src =~ /__global__[^;{]*?\b(\w+)\s*$parens\s*$braces/gs) {
    my ($name, $body) = ($1, $3);
    $sync{$name} = 1 if $body =~ /__syncthreads/;
}

my $n = 0;
$src =~ s{\b(\w+)\s*<<<(.*?)>>>\s*$parens}{
    my ($k, $cfg, $args) = ($1, $2, $3);
    $args =~ s/^\(\s*//s;
    $args =~ s/\s*\)$//s;
    $n++;
    sprintf('emu_launch("%s", %d, %s, emu_config(%s)%s)', $k, $sync{$k} ? 1 : 0, $k, $cfg,
            length($args) ? ", $args" : "");
}gse;
die "$file: a launch the rewriter did not understand\n" if $src =~ /<<<|>>>/;
print "#line 1 \"$file\"\n";
print $src;
