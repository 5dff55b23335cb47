#!/bin/sh
# Compare Pebble and bbolt as the block index (docs/index-choice.md).
# About 6-10 minutes on 2 cores; results in ${OUT:-/tmp/idxres}/*.txt.
# This is its own Go module so that bbolt stays out of lifeboat's go.mod.
set -e
cd "$(dirname "$0")"
go build -o /tmp/idxbench .
OUT=${OUT:-/tmp/idxres}
mkdir -p "$OUT"
run() { name=$1; shift; echo "### $name: $*"; /usr/bin/time -f "wall=%es maxrss=%MKB" /tmp/idxbench "$@" 2>&1 | grep -vE '^ |^-|^level|Found 0 WALs' | tee "$OUT/$name.txt"; }
run pebble-default  -engine pebble -rounds 1000000,1000000,5000000 -lookup-after 1,3
run pebble-bloom-l6 -engine pebble -rounds 1000000,1000000,5000000 -lookup-after 1,3 -bloom 10 -l6filter
run bbolt-default   -engine bbolt  -rounds 1000000,1000000,2000000 -lookup-after 1,3
