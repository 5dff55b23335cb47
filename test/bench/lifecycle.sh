#!/bin/sh
# lifecycle.sh: the long lifecycle runs that the default test run keeps short.
#   1. the soak: one service through SOAK_DAYS simulated days (default 400)
#      at two sites on the injected clock (node/internal/lifecycle TestSoak),
#      with its wall time;
#   2. the GC benchmark at GC_BLOCKS blocks (default 10000000; 50000000 is
#      the goal, about an hour to build here): peak RSS, blocks/s,
#      the longest writer pause (blockstore BenchmarkGC, see blockstore/GC.md).
# Usage: test/bench/lifecycle.sh   (from the repository root)
set -eu
SOAK_DAYS=${SOAK_DAYS:-400}
GC_BLOCKS=${GC_BLOCKS:-10000000}
start=$(date +%s)
LIFEBOAT_SOAK_DAYS=$SOAK_DAYS go test -count=1 -timeout 2h -run '^TestSoak$' -v ./node/internal/lifecycle 2>&1 |
	grep -E '^(soak:|--- |ok|FAIL|    soak_test)' || true
echo "soak wall time: $(( $(date +%s) - start )) s"
LIFEBOAT_GC_BLOCKS=$GC_BLOCKS go test -count=1 -timeout 3h -run '^$' -bench '^BenchmarkGC$' -benchtime 1x ./blockstore
