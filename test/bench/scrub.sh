#!/bin/sh
# scrub.sh: what the background scrub costs ingest. Put+Flush of 4 MiB
# batches into a real store holding 256 MiB, alone and while a scrub reads
# the store back at the default rate cap (16 MiB/s), alternated COUNT times
# (default 5) so that the shared machine's noise hits both alike; the last
# line is the ratio of the medians.
# Usage: test/bench/scrub.sh   (from the repository root)
set -eu
COUNT=${COUNT:-5}
go test -c -o /tmp/scrub.bench.$$ ./node/internal/scrub
trap 'rm -f /tmp/scrub.bench.$$' EXIT
out=$(for i in $(seq "$COUNT"); do /tmp/scrub.bench.$$ -test.run '^$' -test.bench '^BenchmarkIngestUnderScrub$' -test.benchtime 40x; done)
echo "$out" | grep Benchmark
echo "$out" | awk '
	/alone/     { a[na++] = $(NF-1) }
	/scrubbing/ { s[ns++] = $(NF-1) }
	function med(v, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }; return v[int(n / 2)] }
	END { printf "ingest under scrub: %.0f MiB/s vs %.0f alone (median of %d): %.2fx\n", med(s, ns), med(a, na), na, med(s, ns) / med(a, na) }'
