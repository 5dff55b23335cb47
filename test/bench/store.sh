#!/usr/bin/env bash
# store.sh: benchmark lifeboat's block store against restic, borg and a plain
# cp+sync baseline on the shared diskgen workload, in one run.
#
#   test/bench/store.sh                      # 2 GiB image, 3 rounds, all tools
#   SIZE=256MiB ROUNDS=1 TOOLS="restic borg cp" test/bench/store.sh
#
# Environment:
#   SIZE         image size for diskgen (default 2GiB)
#   ROUNDS       rounds per tool; the table shows medians (default 3)
#   TOOLS        subset/order of "lifeboat lifeboatenc restic borg cp" (default:
#                lifeboat restic borg cp); lifeboatenc is lifeboat with a store
#                encrypted at rest (store init --kek-file), as restic's always is
#   LIFEBOAT_BS  lifeboat --block-size (default 4KiB)
#   SHARED       path to the shared dir (default <repo root>/../shared)
#   WORKDIR      work dir; must be absent or empty (default: mktemp -d under /var/tmp)
#   KEEP=1       keep the work dir at exit
#
# Workload: diskgen image -seed 1 -> disk.img ("initial"); a sparse copy
# mutated with diskgen mutate -seed 2 -pct 1 -> day1.img ("incremental").
# Each tool ingests both (as the same path, $W/src/vol.img), is measured for
# time and repository bytes (du -sb), then restores the day1 point (timed,
# including a final sync) and the initial point; both restores are checked
# byte-exact with cmp. Every timed step is preceded and ended by `sync`, so
# dirty data neither bleeds in from the previous step nor escapes the timing.
# The page cache is not dropped: source images are warm for every tool alike.
#
# Per-round lines go to stderr; machine info, a Markdown table of medians and
# the ratios go to stdout.
set -euo pipefail

SIZE=${SIZE:-2GiB}
ROUNDS=${ROUNDS:-3}
TOOLS=${TOOLS:-"lifeboat restic borg cp"}
LIFEBOAT_BS=${LIFEBOAT_BS:-4KiB}
KEEP=${KEEP:-0}

log() { printf '%s\n' "$*" >&2; }
die() { printf 'store.sh: FATAL: %s\n' "$*" >&2; exit 1; }

has_tool() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

for t in $TOOLS; do
	case $t in lifeboat | lifeboatenc | restic | borg | cp) ;; *) die "unknown tool '$t' in TOOLS (want lifeboat lifeboatenc restic borg cp)" ;; esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"

# --- locations ---------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$SCRIPT_DIR/../.." && pwd))
SHARED=${SHARED:-$ROOT/../shared}
DISKGEN_SRC=$SHARED/bench/diskgen/main.go
[[ -f $DISKGEN_SRC ]] || die "diskgen not found at $DISKGEN_SRC (set SHARED=path/to/shared)"

if [[ -n ${WORKDIR:-} ]]; then
	if [[ -e $WORKDIR ]] && [[ -n $(ls -A "$WORKDIR") ]]; then
		die "WORKDIR=$WORKDIR exists and is not empty"
	fi
	mkdir -p "$WORKDIR"
	W=$(cd "$WORKDIR" && pwd)
else
	W=$(mktemp -d /var/tmp/lifeboat-store-bench.XXXXXX)
fi
cleanup() {
	if [[ $KEEP == 1 ]]; then
		log "keeping work dir $W"
	else
		rm -rf -- "$W"
	fi
}
trap cleanup EXIT

RES=$W/results.tsv # tool round metric value
: >"$RES"

# --- helpers -----------------------------------------------------------------
now() { date +%s.%N; }

# timed LOGFILE CMD...: sync, run CMD (output to LOGFILE), sync; prints seconds.
timed() {
	local logf=$1 t0 t1
	shift
	sync
	t0=$(now)
	if ! "$@" >"$logf" 2>&1; then
		log "command failed: $*"
		tail -n 30 "$logf" >&2 || true
		exit 1
	fi
	sync
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# quiet LOGFILE CMD...: untimed, output to LOGFILE, loud on failure.
quiet() {
	local logf=$1
	shift
	if ! "$@" >"$logf" 2>&1; then
		log "command failed: $*"
		tail -n 30 "$logf" >&2 || true
		exit 1
	fi
}

du_bytes() { du -sb "$1" | awk '{ print $1 }'; }       # apparent bytes (repos)
alloc_bytes() { du --block-size=1 -s "$1" | awk '{ print $1 }'; } # allocated bytes

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }

check_same() { # check_same EXPECTED GOT WHAT
	if ! cmp -s "$1" "$2"; then
		cmp "$1" "$2" >&2 || true
		die "$3: restored image $2 is NOT byte-identical to $1"
	fi
}

# Set the stable source path to an image's contents (untimed).
stage() {
	rm -f "$W/src/vol.img"
	cp --reflink=auto --sparse=always "$1" "$W/src/vol.img"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# --- tools -------------------------------------------------------------------
if has_tool restic || has_tool borg; then
	missing=()
	has_tool restic && ! command -v restic >/dev/null && missing+=(restic)
	has_tool borg && ! command -v borg >/dev/null && missing+=(borgbackup)
	if ((${#missing[@]})); then
		SUDO=
		[[ $(id -u) == 0 ]] || SUDO=sudo
		log "installing ${missing[*]} with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		$SUDO apt-get install -y restic borgbackup >&2 ||
			{ $SUDO apt-get update >&2 && $SUDO apt-get install -y restic borgbackup >&2; } ||
			die "could not install restic/borgbackup"
	fi
fi

export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$W/cache/restic RESTIC_PROGRESS_FPS=0.0001
export BORG_BASE_DIR=$W/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
	BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_PASSPHRASE=x
RESTIC_SPARSE=()
if has_tool restic && restic restore --help 2>/dev/null | grep -q -- '--sparse'; then
	RESTIC_SPARSE=(--sparse)
fi

log "work dir $W; building diskgen$(has_tool lifeboat && echo " and lifeboat" || true)"
mkdir -p "$W/bin" "$W/src" "$W/logs"
(cd "$SHARED/bench/diskgen" && go build -o "$W/bin/diskgen" ./main.go) || die "go build diskgen failed"
LB=$W/lifeboat
if has_tool lifeboat || has_tool lifeboatenc; then
	(cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat) || die "go build ./cmd/lifeboat failed"
fi

# --- machine info ------------------------------------------------------------
echo "# lifeboat store benchmark"
echo
echo '```'
echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:        $(uname -srm)"
echo "cpu:         $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?')"
echo "memory:      $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo '?')"
echo "workdir fs:  $(df -PT "$W" | awk 'NR == 2 { print $2 " on " $1 }')"
echo "go:          $(go version)"
has_tool lifeboat && echo "lifeboat:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)'), --block-size $LIFEBOAT_BS"
has_tool restic && echo "restic:      $(restic version | head -n 1); repo v2, --compression auto (zstd), restore ${RESTIC_SPARSE[*]:-without --sparse (unsupported)}"
has_tool borg && echo "borg:        $(borg --version); -e none, --compression zstd,3 (borg default is lz4), extract --sparse"
has_tool cp && echo "cp:          $(cp --version | head -n 1); cp --sparse=always + sync"
echo "workload:    diskgen image -size $SIZE -seed 1; day1 = mutate -seed 2 -pct 1"
echo "rounds:      $ROUNDS (medians shown); tools: $TOOLS"
echo '```'
echo

# --- workload ----------------------------------------------------------------
log "generating workload: $SIZE"
"$W/bin/diskgen" image -size "$SIZE" -seed 1 -out "$W/disk.img" >&2
cp --sparse=always "$W/disk.img" "$W/day1.img"
"$W/bin/diskgen" mutate -seed 2 -pct 1 "$W/day1.img" >&2
IMG_BYTES=$(stat -c %s "$W/disk.img")
log "image: $IMG_BYTES bytes, $(alloc_bytes "$W/disk.img") allocated"
# Settle before the first timed step: the generator leaves gigabytes of dirty
# pages, and whichever tool ran first paid for their writeback. Write them
# out, wait for the disk to go quiet, and read both images once so that every
# tool starts with them in the page cache.
sync
sleep 10
cat "$W/disk.img" "$W/day1.img" >/dev/null

# --- one round per tool --------------------------------------------------------
# Each run_<tool> sets: T_INIT S_INIT T_INCR S_INCR T_REST.
run_lifeboat() {
	local r=$1 S=$W/store-lifeboat RT=$W/restore L=$W/logs/lifeboat.$1 p_init p_day1
	rm -rf "$S" "$RT"
	mkdir -p "$RT"
	quiet "$L.init" "$LB" store init --store "$S"
	stage "$W/disk.img"
	T_INIT=$(timed "$L.snap0" "$LB" snapshot --store "$S" --volume vol --block-size "$LIFEBOAT_BS" "$W/src/vol.img")
	p_init=$(awk 'NF { l = $0 } END { print l }' "$L.snap0" | tr -d '[:space:]')
	S_INIT=$(du_bytes "$S")
	stage "$W/day1.img"
	T_INCR=$(timed "$L.snap1" "$LB" snapshot --store "$S" --volume vol --block-size "$LIFEBOAT_BS" "$W/src/vol.img")
	p_day1=$(awk 'NF { l = $0 } END { print l }' "$L.snap1" | tr -d '[:space:]')
	S_INCR=$(du_bytes "$S")
	[[ -n $p_init && -n $p_day1 ]] || die "lifeboat snapshot printed no point ID (see $L.snap*)"
	T_REST=$(timed "$L.rest1" "$LB" restore --store "$S" --volume vol --at "$p_day1" --out "$RT/vol.img")
	check_same "$W/day1.img" "$RT/vol.img" "lifeboat day1 point $p_day1"
	rm -f "$RT/vol.img"
	quiet "$L.rest0" "$LB" restore --store "$S" --volume vol --at "$p_init" --out "$RT/vol.img"
	check_same "$W/disk.img" "$RT/vol.img" "lifeboat initial point $p_init"
	rm -rf "$RT"
	if ((r == ROUNDS)); then
		quiet "$L.verify" "$LB" verify --store "$S" || die "lifeboat verify failed"
		log "[lifeboat] verify --store: ok"
		if "$LB" stats --store "$S" --json >"$L.stats" 2>&1; then
			log "[lifeboat] stats --json: $(tr -d '\n' <"$L.stats")"
		else
			log "[lifeboat] WARNING: stats --json failed: $(tail -n 3 "$L.stats")"
		fi
	fi
	rm -rf "$S"
}

# lifeboat with its store encrypted at rest: the same run under a KEK.
run_lifeboatenc() {
	local kek=$W/kek.hex
	[[ -f $kek ]] || { od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$kek"; echo >>"$kek"; chmod 600 "$kek"; }
	LIFEBOAT_KEK_FILE=$kek run_lifeboat "$@"
}

run_restic() {
	local R=$W/repo-restic RT=$W/restore L=$W/logs/restic.$1 id0
	rm -rf "$R" "$RT" "$RESTIC_CACHE_DIR"
	quiet "$L.init" restic init --repo "$R" --repository-version 2
	stage "$W/disk.img"
	T_INIT=$(timed "$L.backup0" restic backup --repo "$R" "$W/src/vol.img")
	id0=$(sed -n 's/^snapshot \([0-9a-f]*\) saved.*/\1/p' "$L.backup0" | tail -n 1)
	[[ -n $id0 ]] || die "restic: no snapshot ID in $L.backup0"
	S_INIT=$(du_bytes "$R")
	stage "$W/day1.img"
	T_INCR=$(timed "$L.backup1" restic backup --repo "$R" "$W/src/vol.img")
	S_INCR=$(du_bytes "$R")
	T_REST=$(timed "$L.rest1" restic restore latest --repo "$R" --target "$RT" "${RESTIC_SPARSE[@]}")
	check_same "$W/day1.img" "$RT$W/src/vol.img" "restic latest"
	rm -rf "$RT"
	quiet "$L.rest0" restic restore "$id0" --repo "$R" --target "$RT" "${RESTIC_SPARSE[@]}"
	check_same "$W/disk.img" "$RT$W/src/vol.img" "restic initial snapshot $id0"
	rm -rf "$R" "$RT" "$RESTIC_CACHE_DIR"
}

run_borg() {
	local R=$W/repo-borg RT=$W/restore L=$W/logs/borg.$1
	rm -rf "$R" "$RT" "$BORG_BASE_DIR"
	mkdir -p "$RT"
	quiet "$L.init" borg init -e none "$R"
	stage "$W/disk.img"
	T_INIT=$(cd "$W/src" && timed "$L.create0" borg create --compression zstd,3 "$R::initial" vol.img)
	S_INIT=$(du_bytes "$R")
	stage "$W/day1.img"
	T_INCR=$(cd "$W/src" && timed "$L.create1" borg create --compression zstd,3 "$R::day1" vol.img)
	S_INCR=$(du_bytes "$R")
	T_REST=$(cd "$RT" && timed "$L.extract1" borg extract --sparse "$R::day1" vol.img)
	check_same "$W/day1.img" "$RT/vol.img" "borg ::day1"
	rm -f "$RT/vol.img"
	(cd "$RT" && quiet "$L.extract0" borg extract --sparse "$R::initial" vol.img)
	check_same "$W/disk.img" "$RT/vol.img" "borg ::initial"
	rm -rf "$R" "$RT" "$BORG_BASE_DIR"
}

# The baseline keeps only the latest copy: there is no initial point to restore.
run_cp() {
	local D=$W/repo-cp RT=$W/restore L=$W/logs/cp.$1
	rm -rf "$D" "$RT"
	mkdir -p "$D" "$RT"
	stage "$W/disk.img"
	T_INIT=$(timed "$L.cp0" cp --sparse=always "$W/src/vol.img" "$D/vol.img")
	S_INIT=$(alloc_bytes "$D/vol.img") # a sparse file: allocated, not apparent, bytes
	stage "$W/day1.img"
	T_INCR=$(timed "$L.cp1" cp --sparse=always "$W/src/vol.img" "$D/vol.img")
	S_INCR=$(alloc_bytes "$D/vol.img")
	T_REST=$(timed "$L.cp2" cp --sparse=always "$D/vol.img" "$RT/vol.img")
	check_same "$W/day1.img" "$RT/vol.img" "cp copy"
	rm -rf "$D" "$RT"
}

for ((r = 1; r <= ROUNDS; r++)); do
	for t in $TOOLS; do
		T_INIT= S_INIT= T_INCR= S_INCR= T_REST=
		"run_$t" "$r"
		record "$t" "$r" init_s "$T_INIT"
		record "$t" "$r" init_bytes "$S_INIT"
		record "$t" "$r" incr_s "$T_INCR"
		record "$t" "$r" incr_bytes "$S_INCR"
		record "$t" "$r" rest_s "$T_REST"
		mbps=$(awk -v b="$IMG_BYTES" -v s="$T_REST" 'BEGIN { printf "%.1f", b / 1e6 / s }')
		record "$t" "$r" rest_mbps "$mbps"
		log "[$t round $r/$ROUNDS] initial ${T_INIT}s stored $(mb "$S_INIT") MB | incremental ${T_INCR}s stored $(mb "$S_INCR") MB | restore ${T_REST}s ${mbps} MB/s | cmp ok"
	done
done

# --- report --------------------------------------------------------------------
median() { # median TOOL METRIC -> value or empty
	awk -F'\t' -v t="$1" -v m="$2" '$1 == t && $3 == m { print $4 }' "$RES" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A M
for t in $TOOLS; do
	for m in init_s incr_s init_bytes incr_bytes rest_s rest_mbps; do
		M[$t.$m]=$(median "$t" "$m")
	done
done

echo "## Medians of $ROUNDS round(s), $(mb "$IMG_BYTES") MB image ($SIZE)"
echo
echo "| tool | initial s | incremental s | stored MB after initial | stored MB after incr | restore s | restore MB/s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in $TOOLS; do
	name=$t
	[[ $t == cp ]] && name="cp+sync"
	[[ $t == lifeboat ]] && name="lifeboat ($LIFEBOAT_BS)"
	[[ $t == lifeboatenc ]] && name="lifeboat encrypted ($LIFEBOAT_BS)"
	printf '| %s | %.2f | %.2f | %s | %s | %.2f | %.1f |\n' "$name" "${M[$t.init_s]}" "${M[$t.incr_s]}" \
		"$(mb "${M[$t.init_bytes]}")" "$(mb "${M[$t.incr_bytes]}")" "${M[$t.rest_s]}" "${M[$t.rest_mbps]}"
done
echo
echo "MB = 10^6 bytes. Stored = \`du -sb\` of the repository (cp+sync: allocated bytes of its single sparse copy, which holds only the latest image)."
echo "Every timed step is bracketed by \`sync\`; restore MB/s = image size / restore s."
echo

# ratio NUM DEN: NUM/DEN formatted, or n/a
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a + 0 == 0 || b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'; }
# faster/smaller peer among restic, borg for a metric (minimum) -> "tool value"
best_peer() {
	local m=$1 bt= bv= t v
	for t in restic borg; do
		v=${M[$t.$m]:-}
		[[ -n $v ]] || continue
		if [[ -z $bv ]] || awk -v a="$v" -v b="$bv" 'BEGIN { exit !(a < b) }'; then
			bt=$t bv=$v
		fi
	done
	echo "$bt $bv"
}

echo "## Ratios"
echo
if has_tool lifeboat; then
	read -r pt pv < <(best_peer init_s) || true
	echo "- initial ingest speedup vs faster of restic/borg (${pt:-none}): $(ratio "${pv:-}" "${M[lifeboat.init_s]}")"
	read -r pt pv < <(best_peer incr_s) || true
	echo "- incremental ingest speedup vs faster of restic/borg (${pt:-none}): $(ratio "${pv:-}" "${M[lifeboat.incr_s]}")"
	read -r pt pv < <(best_peer init_bytes) || true
	echo "- stored bytes after initial vs smaller of restic/borg (${pt:-none}): $(ratio "${M[lifeboat.init_bytes]}" "${pv:-}") (below 1 = lifeboat smaller)"
	read -r pt pv < <(best_peer incr_bytes) || true
	echo "- stored bytes after incremental vs smaller of restic/borg (${pt:-none}): $(ratio "${M[lifeboat.incr_bytes]}" "${pv:-}") (below 1 = lifeboat smaller)"
	echo "- restore throughput vs cp+sync: $(ratio "${M[lifeboat.rest_mbps]}" "${M[cp.rest_mbps]:-}")"
	echo "- restore throughput vs restic: $(ratio "${M[lifeboat.rest_mbps]}" "${M[restic.rest_mbps]:-}")"
	if has_tool lifeboatenc; then
		echo "- encrypted vs plain lifeboat: initial ingest $(ratio "${M[lifeboat.init_s]}" "${M[lifeboatenc.init_s]}") of the speed, incremental $(ratio "${M[lifeboat.incr_s]}" "${M[lifeboatenc.incr_s]}"), restore $(ratio "${M[lifeboatenc.rest_mbps]}" "${M[lifeboat.rest_mbps]}"), stored bytes $(ratio "${M[lifeboatenc.incr_bytes]}" "${M[lifeboat.incr_bytes]}")"
		echo "- encrypted lifeboat vs restic (both encrypt): initial ingest speedup $(ratio "${M[restic.init_s]:-}" "${M[lifeboatenc.init_s]}"), restore throughput $(ratio "${M[lifeboatenc.rest_mbps]}" "${M[restic.rest_mbps]:-}")"
	fi
else
	echo "- lifeboat not in TOOLS; peer ratios only:"
	if has_tool restic && has_tool borg; then
		echo "  - borg vs restic: initial $(ratio "${M[restic.init_s]}" "${M[borg.init_s]}") faster, incremental $(ratio "${M[restic.incr_s]}" "${M[borg.incr_s]}") faster, stored $(ratio "${M[borg.incr_bytes]}" "${M[restic.incr_bytes]}") of restic's, restore $(ratio "${M[borg.rest_mbps]}" "${M[restic.rest_mbps]}") of restic's throughput"
	fi
	if has_tool cp; then
		for t in restic borg; do
			if has_tool $t; then
				echo "  - $t restore throughput vs cp+sync: $(ratio "${M[$t.rest_mbps]}" "${M[cp.rest_mbps]}")"
			fi
		done
	fi
fi
