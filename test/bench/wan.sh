#!/usr/bin/env bash
# wan.sh: measure lifeboat's replication between two sites against rsync, in
# one run, on the shared diskgen workload: the bytes an initial copy and a 1%
# "day" put on the wire from dc1 to dc2, next to rsync's delta transfer (with
# and without zstd) and zstd -3 of the image, and the replication throughput
# and CPU cost for new unique data.
#
#   test/bench/wan.sh                        # 2 GiB image, 1 round (takes a few minutes)
#   SIZE=256MiB test/bench/wan.sh            # quick check
#   ROUNDS=3 THROUGHPUT=0 test/bench/wan.sh  # bytes only, medians of 3
#
# Needs root (iptables byte counters; without them the sender's frame counter
# is used and the column says so), and installs rsync, zstd and iptables with
# apt-get when missing.
#
# Environment:
#   SIZE            image size for diskgen (default 2GiB)
#   ROUNDS          rounds; each round is a fresh three-node cluster and the
#                   table shows medians (default 1, since a round is long)
#   LINK_RATE       rate of the dc1-dc2 link for the initial copy and the day
#                   (default 10Gbit; with a rate the sender compresses at
#                   zstd's default level)
#   BLOCK_SIZE      block_size of the web/disk volume (default 4KiB)
#   THROUGHPUT=0    skip the throughput part (default 1: on)
#   TP_SIZE         size of the throughput volume of random bytes (default 1GiB)
#   TP_BLOCK_SIZE   its block_size (default 64KiB, lifeboat's default)
#   INTERVAL        agent scan interval (default 2s)
#   READ_RATE       agent --read-rate (default 1GiB/s; the agent's own default
#                   is 200MiB/s, which only makes the run longer)
#   VERIFY=0        skip restoring the day's point from dc2 and comparing it
#                   with the mutated image (default 1: on)
#   TIMEOUT         seconds any one wait may take before the run is declared
#                   stalled (default 900)
#   IDLE_SECS       seconds of idle control traffic measured before the
#                   initial copy (default 10)
#   GOSSIP_PROFILE  node --gossip-profile (default lan: on this shared, noisy
#                   machine "test" declared live nodes dead and forced raft
#                   elections while the nodes were busy; failure detection is
#                   not what is measured here; with lan, forming sometimes
#                   takes 35-45 s instead of 3 s, when a gossip metadata
#                   update times out: see the "while forming" lines)
#   QUIC_GSO=0      start the nodes with QUIC_GO_DISABLE_GSO=true, so that
#                   iptables sees (and counts the header of) every datagram;
#                   costs CPU, so throughput figures are then not comparable
#   SHARED          path to the shared dir (default <repo root>/../shared)
#   WORKDIR         work dir; must be absent or empty (default: mktemp -d under /var/tmp)
#   KEEP=1          keep the work dir (node logs) at exit
#   KEEP_ON_FAIL=0  remove the work dir also when the run fails (default: kept)
#
# What one round does:
#   1. CA, certificates for dc1-n1 (dc1), dc2-n1 (dc2), dc3-w1 (dc3, witness)
#      and agents web1 (service web) and bulk1 (service bulk); three
#      `lifeboat node run` processes on 127.0.0.1 (--gossip-profile lan,
#      same join list, bootstrap_expect 3: dc1-n1, the smallest name,
#      bootstraps); waits for a leader and three alive voters.
#   2. Idle: IDLE_SECS of control traffic only (raft heartbeats), for scale.
#   3. Initial copy: policy with sites dc1..dc3, link dc1-dc2 at LINK_RATE,
#      service web (primary dc1, server web1, volume disk = a sparse copy of
#      the image, BLOCK_SIZE) with a warm copy at dc2. A scan agent
#      (--interval INTERVAL) ships the image to dc1-n1; as soon as dc1 holds
#      its first point the agent is stopped (SIGTERM), so the newest point at
#      dc1 stays put; then we wait until dc2 holds that point.
#   4. Day: with the agent stopped, diskgen mutate -seed 2 -pct 1 -hot 0.8
#      changes the image in place; the agent is restarted, its first scan
#      after the mutation becomes a new point at dc1, the agent is stopped
#      again, and we wait until dc2 holds dc1's newest point. (Stopping the
#      agent keeps the day one point: a scan overlapping mutate could split
#      it in two and send hot blocks twice. A scan under way when the agent
#      is stopped may still commit an unchanged point; the per-round line
#      says how many points were replicated.) With VERIFY=1 the point is restored
#      from dc2 and compared byte for byte with the mutated image.
#   5. rsync: an rsync daemon on 127.0.0.1 holds a sparse copy of the
#      original image; the mutated image is sent with `rsync --inplace
#      --no-whole-file -I --stats`, once with --compress
#      --compress-choice=zstd and once without (the copy is reset between
#      them); its "Total bytes sent" and the TCP bytes to its port are read.
#   6. Throughput (THROUGHPUT=1): the policy's link becomes "unlimited"
#      (sender compresses at zstd's fastest level) and gains service bulk
#      (server bulk1, volume data = TP_SIZE random bytes) WITHOUT a copy; a
#      scan agent ships it to dc1 and is stopped once dc1 holds the point.
#      Then the policy gains bulk's warm copy at dc2 and we time from that
#      `policy apply` to dc2 holding the point (polling every 100 ms), and
#      read utime+stime of the two node processes (/proc/PID/stat) around it.
#      The sender's "replicating" log line gives the session start, so the
#      time is also shown without the start-up (replicator tick, session
#      setup).
#
# Wire bytes: iptables counting rules (no target, nothing is dropped) in a
# chain of our own hooked into OUTPUT: UDP from dc1-n1's QUIC port to
# dc2-n1's QUIC port (-o lo), and the reverse; TCP to and from the rsync
# daemon's port. Bytes are whole IP packets as netfilter sees them. QUIC
# uses UDP GSO, so netfilter may see one IP+UDP header per batch of
# datagrams rather than one per datagram (the packet/segment counts are in
# the per-round lines; a real WAN carries 28 bytes of IPv4+UDP header per
# datagram on top: with QUIC_GSO=0 the 2 GiB initial copy counted 914.5 MB
# in 648,549 datagrams against 897.7 MB with GSO, +1.9%). The QUIC port also carries raft between the two nodes;
# its idle rate is measured in step 2 and shown. Without working iptables
# the sender's lifeboat_replication_sent_bytes_total (frame bytes before
# QUIC) stands in and is labelled so. The sender's counters
# lifeboat_replication_{sent,changed,dedup_saved,compression_saved}_bytes_total
# are read from dc1-n1's /metrics around each step.
#
# Per-round lines go to stderr; machine info, a Markdown table of medians and
# the ratios go to stdout. All processes (nodes, agents, rsync daemon) and
# the iptables rules are removed at exit, also on Ctrl-C.
set -euo pipefail

SIZE=${SIZE:-2GiB}
ROUNDS=${ROUNDS:-1}
LINK_RATE=${LINK_RATE:-10Gbit}
BLOCK_SIZE=${BLOCK_SIZE:-4KiB}
THROUGHPUT=${THROUGHPUT:-1}
TP_SIZE=${TP_SIZE:-1GiB}
TP_BLOCK_SIZE=${TP_BLOCK_SIZE:-64KiB}
INTERVAL=${INTERVAL:-2s}
READ_RATE=${READ_RATE:-1GiB/s}
VERIFY=${VERIFY:-1}
TIMEOUT=${TIMEOUT:-900}
IDLE_SECS=${IDLE_SECS:-10}
GOSSIP_PROFILE=${GOSSIP_PROFILE:-lan}
QUIC_GSO=${QUIC_GSO:-1}
KEEP=${KEEP:-0}
KEEP_ON_FAIL=${KEEP_ON_FAIL:-1}

log() { printf '%s\n' "$*" >&2; }
die() {
	printf 'wan.sh: FATAL: %s\n' "$*" >&2
	exit 1
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got '$ROUNDS'"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive integer (seconds), got '$TIMEOUT'"
[[ $IDLE_SECS =~ ^[0-9]+$ ]] || die "IDLE_SECS must be a non-negative integer, got '$IDLE_SECS'"

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
	W=$(mktemp -d /var/tmp/lifeboat-wan-bench.XXXXXX)
fi

# --- processes and cleanup ---------------------------------------------------
PIDS=() # every long-running process we started (nodes, agents, rsync daemon)
CHAIN="LBWAN$$"
IPT_CHAIN_UP=0

stop_pid() { # stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "process $pid did not stop within 15 s of SIGTERM; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do
		stop_pid "$pid"
	done
	PIDS=()
}

ipt_teardown() {
	if ((IPT_CHAIN_UP)); then
		iptables -w -D OUTPUT -j "$CHAIN" 2>/dev/null || true
		iptables -w -F "$CHAIN" 2>/dev/null || true
		iptables -w -X "$CHAIN" 2>/dev/null || true
		IPT_CHAIN_UP=0
	fi
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_all
	ipt_teardown
	if [[ $KEEP == 1 ]] || { ((rc != 0 && rc != 130)) && [[ $KEEP_ON_FAIL == 1 ]]; }; then
		log "keeping work dir $W (node logs under $W/r*/logs)"
	else
		rm -rf -- "$W"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

RES=$W/results.tsv # round metric value
: >"$RES"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }

# --- helpers -----------------------------------------------------------------
now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }

quiet() { # quiet LOGFILE CMD...: output to LOGFILE, loud on failure
	local logf=$1
	shift
	if ! "$@" >"$logf" 2>&1; then
		log "command failed: $*"
		tail -n 30 "$logf" >&2 || true
		exit 1
	fi
}

# Ports: random, not listening (TCP or UDP) now, not handed out before.
USED_PORTS=" "
free_port() { # free_port VAR
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if ss -Hlntu "( sport = :$p )" 2>/dev/null | grep -q .; then continue; fi
		USED_PORTS+="$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
}

# size_bytes SIZE: 2GiB, 256MiB, 100MB, 512 -> bytes
size_bytes() {
	awk -v s="$1" 'BEGIN {
		if (match(s, /^[0-9]+/) == 0) exit 1
		n = substr(s, 1, RLENGTH); u = substr(s, RLENGTH + 1)
		m["" ] = 1; m["B"] = 1
		m["KiB"] = 1024; m["MiB"] = 1024 ^ 2; m["GiB"] = 1024 ^ 3; m["TiB"] = 1024 ^ 4
		m["KB"] = 1e3; m["MB"] = 1e6; m["GB"] = 1e9; m["TB"] = 1e12
		m["K"] = 1024; m["M"] = 1024 ^ 2; m["G"] = 1024 ^ 3
		if (!(u in m)) exit 1
		printf "%.0f\n", n * m[u]
	}' || die "cannot parse size '$1'"
}

# Every node log line at WARN or ERROR after the cluster formed (the
# election noise of bootstrap is left out), for the report.
declare -A LOG_FROM
node_problems() {
	local n
	for n in dc1-n1 dc2-n1 dc3-w1; do
		tail -n +"$((${LOG_FROM[$n]:-0} + 1))" "$R/logs/node-$n.log" 2>/dev/null |
			grep -E 'level=(WARN|ERROR)|panic|fatal error' || true
	done
}

tail_logs() { # tail_logs ROUND_DIR
	local f
	for f in "$1"/logs/*.log; do
		[[ -f $f ]] || continue
		log "=== $(basename "$f") (last 25 lines) ==="
		tail -n 25 "$f" >&2 || true
	done
}

# wait_for DESC TIMEOUT_S POLL_S CMD...: until CMD succeeds; dies with the
# node logs' tails when it does not within TIMEOUT_S.
wait_for() {
	local desc=$1 to=$2 poll=$3 t0
	shift 3
	t0=$(now)
	until "$@"; do
		if awk -v a="$t0" -v b="$(now)" -v t="$to" 'BEGIN { exit !(b - a > t) }'; then
			log "STALLED: $desc: not within ${to}s"
			tail_logs "$R"
			die "$desc: timed out after ${to}s (logs above; work dir kept)"
		fi
		sleep "$poll"
	done
}

# --- tools -------------------------------------------------------------------
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v zstd >/dev/null || missing+=(zstd)
command -v iptables >/dev/null || missing+=(iptables)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
	SUDO=
	[[ $(id -u) == 0 ]] || SUDO=sudo
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get install -y "${missing[@]}" >&2 ||
		{ $SUDO apt-get update >&2 && $SUDO apt-get install -y "${missing[@]}" >&2; } ||
		die "could not install ${missing[*]}"
fi
for t in rsync zstd jq curl ss; do
	command -v $t >/dev/null || die "$t is required"
done

# iptables byte counters: a chain of our own, hooked into OUTPUT.
WIRE=iptables
if [[ $(id -u) == 0 ]] && command -v iptables >/dev/null &&
	iptables -w -N "$CHAIN" 2>/dev/null; then
	IPT_CHAIN_UP=1
	if ! iptables -w -I OUTPUT 1 -j "$CHAIN" 2>/dev/null; then
		ipt_teardown
		WIRE=metrics
	fi
else
	WIRE=metrics
fi
[[ $WIRE == iptables ]] || log "WARNING: iptables unusable (not root, or no netfilter): wire bytes fall back to lifeboat_replication_sent_bytes_total"

# ipt_rules ROUND: (re)set the counting rules for this round's ports.
ipt_rules() {
	[[ $WIRE == iptables ]] || return 0
	iptables -w -F "$CHAIN"
	iptables -w -A "$CHAIN" -o lo -p udp --sport "$Q1" --dport "$Q2" -m comment --comment lb12
	iptables -w -A "$CHAIN" -o lo -p udp --sport "$Q2" --dport "$Q1" -m comment --comment lb21
	iptables -w -A "$CHAIN" -o lo -p tcp --dport "$RSYNC_PORT" -m comment --comment rsc2d
	iptables -w -A "$CHAIN" -o lo -p tcp --sport "$RSYNC_PORT" -m comment --comment rsd2c
}

# ipt_snap: "lb12_pkts lb12_bytes lb21_pkts lb21_bytes rsc2d_pkts ... " in one read.
ipt_snap() {
	if [[ $WIRE != iptables ]]; then
		echo "0 0 0 0 0 0 0 0"
		return
	fi
	iptables -w -L "$CHAIN" -v -x -n 2>/dev/null | awk '
		/\/\* lb12 \*\// { a = $1 " " $2 } /\/\* lb21 \*\// { b = $1 " " $2 }
		/\/\* rsc2d \*\// { c = $1 " " $2 } /\/\* rsd2c \*\// { d = $1 " " $2 }
		END { print a, b, c, d }'
}

# admin_get URL: GET from a node's admin API, which is HTTPS with client
# certificates on loopback too: as the round's viewer, checking the node's
# certificate (issued with --host 127.0.0.1) against the round's CA.
admin_get() {
	curl -fsS --cacert "$R/viewer-tls/ca.crt" --cert "$R/viewer-tls/cert.crt" --key "$R/viewer-tls/cert.key" "$1"
}

# metric_sum NAME: the sum over all label sets of a counter on dc1-n1.
metric_sum() {
	admin_get "https://$A1/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}
METRICS="lifeboat_replication_sent_bytes_total lifeboat_replication_changed_bytes_total lifeboat_replication_dedup_saved_bytes_total lifeboat_replication_compression_saved_bytes_total lifeboat_replication_points_total"
metrics_snap() { # prints the counters in METRICS order
	local m out=()
	for m in $METRICS; do out+=("$(metric_sum "$m")"); done
	echo "${out[*]}"
}

# Points a node holds for a service: the newest one's "id name".
newest_point() { # newest_point ADMIN SERVICE
	admin_get "https://$1/v1/points?service=$2" 2>/dev/null | jq -r 'if length > 0 then (last | "\(.id) \(.name // "")") else empty end' 2>/dev/null || true
}
holds_point() { # holds_point ADMIN SERVICE ID: cheap, for 100 ms polling
	admin_get "https://$1/v1/points?service=$2" 2>/dev/null | grep -Eq "\"id\": *\"$3\""
}
point_count() { # point_count ADMIN SERVICE
	admin_get "https://$1/v1/points?service=$2" 2>/dev/null | jq 'length' 2>/dev/null || echo 0
}

cpu_ticks() { # cpu_ticks PID: utime + stime in clock ticks
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)

log "work dir $W; building diskgen and lifeboat"
mkdir -p "$W/bin"
(cd "$SHARED/bench/diskgen" && go build -o "$W/bin/diskgen" ./main.go) || die "go build diskgen failed"
LB=$W/lifeboat
(cd "$ROOT" && go build -o "$LB" ./cmd/lifeboat) || die "go build ./cmd/lifeboat failed"

IMG_BYTES=$(size_bytes "$SIZE")
TP_BYTES=$(size_bytes "$TP_SIZE")

# --- machine info ------------------------------------------------------------
echo "# lifeboat WAN replication benchmark"
echo
echo '```'
echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:        $(uname -srm)"
echo "cpu:         $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?')"
echo "memory:      $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || echo '?')"
echo "workdir fs:  $(df -PT "$W" | awk 'NR == 2 { print $2 " on " $1 }')"
echo "go:          $(go version)"
echo "lifeboat:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty)'); 3 nodes on 127.0.0.1 (dc1-n1, dc2-n1, dc3-w1 witness), --gossip-profile $GOSSIP_PROFILE"
echo "volume:      web/disk, block_size $BLOCK_SIZE; scan agent --interval $INTERVAL --read-rate $READ_RATE"
echo "link:        dc1-dc2 rate \"$LINK_RATE\" for initial copy and day (a rate makes the sender compress at zstd's default level)"
echo "rsync:       $(rsync --version | head -n 1 | sed 's/  */ /g'); daemon on 127.0.0.1; --inplace --no-whole-file -I, with and without --compress --compress-choice=zstd"
echo "zstd:        $(zstd --version)"
echo "wire bytes:  $([[ $WIRE == iptables ]] && echo "iptables OUTPUT counters on lo (IP packet bytes); QUIC UDP GSO $([[ $QUIC_GSO == 1 ]] && echo "on (quic-go default)" || echo "OFF (QUIC_GO_DISABLE_GSO=true)")" || echo "NOT on the wire: lifeboat_replication_sent_bytes_total (frame bytes before QUIC); rsync: its own 'Total bytes sent'")"
[[ $THROUGHPUT == 1 ]] && echo "throughput:  bulk/data, $TP_SIZE of /dev/urandom, block_size $TP_BLOCK_SIZE, link \"unlimited\" (zstd fastest)"
echo "workload:    diskgen image -size $SIZE -seed 1; day = mutate -seed 2 -pct 1 -hot 0.8 (in place)"
echo "rounds:      $ROUNDS (medians shown)"
echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) at start (the machine is shared)"
echo '```'
echo

# --- workload ----------------------------------------------------------------
log "generating workload: $SIZE"
"$W/bin/diskgen" image -size "$SIZE" -seed 1 -out "$W/disk.img" >&2
IMG_BYTES=$(stat -c %s "$W/disk.img")
IMG_ALLOC=$(du --block-size=1 -s "$W/disk.img" | awk '{ print $1 }')
log "image: $IMG_BYTES bytes, $IMG_ALLOC allocated; zstd -3 -T1 of it (reference)"
ZSTD3=$(zstd -3 -T1 -q -c "$W/disk.img" | wc -c)
log "zstd -3 -T1: $ZSTD3 bytes"
if [[ $THROUGHPUT == 1 ]]; then
	log "throughput volume: $TP_BYTES random bytes"
	head -c "$TP_BYTES" /dev/urandom >"$W/bulk.img"
fi
sync

# --- cluster -------------------------------------------------------------------
# Per round: R (round dir), ports G1..G3 (gossip), Q1..Q3 (QUIC), A1..A3
# (admin host:port), NODE_PIDS, RSYNC_PORT.
declare -A NODE_PID

write_node() { # write_node NAME SITE ROLE GOSSIP QUIC ADMIN
	cat >"$R/$1.toml" <<EOF
name = "$1"
site = "$2"
role = "$3"
data_dir = "$R/$1/data"
join = ["127.0.0.1:$G1", "127.0.0.1:$G2", "127.0.0.1:$G3"]
bootstrap_expect = 3
dead_node_timeout = "1h"

[listen]
gossip = "127.0.0.1:$4"
quic = "127.0.0.1:$5"
admin = "127.0.0.1:$6"

[tls]
dir = "$R/$1/tls"
EOF
}

start_node() { # start_node NAME
	local env=()
	[[ $QUIC_GSO == 1 ]] || env=(QUIC_GO_DISABLE_GSO=true)
	env "${env[@]}" "$LB" node run --config "$R/$1.toml" --gossip-profile "$GOSSIP_PROFILE" >>"$R/logs/node-$1.log" 2>&1 &
	NODE_PID[$1]=$!
	PIDS+=("$!")
}

cluster_formed() { # all three see one leader and three alive voters
	local a st
	for a in "$A1" "$A2" "$A3"; do
		st=$("$LB" status --admin "$a" --json 2>/dev/null) || return 1
		jq -e '(.leader // "") != "" and (.voters | length) == 3 and
			([.nodes[] | select(.state == "alive")] | length) == 3' <<<"$st" >/dev/null || return 1
	done
}

# The leader has placed SERVICE's holder at dc1 (an agent is refused before).
has_holder() { # has_holder SERVICE
	admin_get "https://$A1/v1/status" 2>/dev/null | jq -e --arg s "$1" 'any(.services[]?; .name == $s and (.holders.dc1 // "") != "")' >/dev/null
}

AGENT_PID=
start_agent() { # start_agent NAME SERVICE VOLUME=PATH
	"$LB" agent run --name "$1" --service "$2" --volume "$3" --node "127.0.0.1:$Q1" \
		--tls-dir "$R/agent-$1/tls" --mode scan --interval "$INTERVAL" --read-rate "$READ_RATE" \
		--spool "$R/agent-$1/spool" >>"$R/logs/agent-$1.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}
stop_agent() {
	[[ -n $AGENT_PID ]] || return 0
	stop_pid "$AGENT_PID"
	local p keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$AGENT_PID" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
	AGENT_PID=
}

# dc1 holds a point newer than the one given (ID or empty).
dc1_has_new() { # dc1_has_new SERVICE OLD_ID
	local p
	p=$(newest_point "$A1" "$1")
	[[ -n $p && ${p%% *} != "$2" ]]
}

# policy SERVICE_WEB_COPY(0/1) LINK_RATE BULK(0/1/2: none, no copy, copy)
write_policy() {
	local f=$1 rate=$2 bulk=$3
	{
		cat <<EOF
# written by test/bench/wan.sh
[[site]]
name = "dc1"

[[site]]
name = "dc2"

[[site]]
name = "dc3"

[[link]]
between = ["dc1", "dc2"]
rate = "$rate"

[[service]]
name = "web"
primary = "dc1"

  [[service.server]]
  name = "web1"

    [[service.server.volume]]
    name = "disk"
    path = "$R/disk.img"
    size = $IMG_BYTES
    block_size = "$BLOCK_SIZE"

  [[service.copy]]
  site = "dc2"
  tier = "warm"
EOF
		if ((bulk >= 1)); then
			cat <<EOF

[[service]]
name = "bulk"
primary = "dc1"

  [[service.server]]
  name = "bulk1"

    [[service.server.volume]]
    name = "data"
    path = "$W/bulk.img"
    size = $TP_BYTES
    block_size = "$TP_BLOCK_SIZE"
EOF
		fi
		if ((bulk == 2)); then
			cat <<EOF

  [[service.copy]]
  site = "dc2"
  tier = "warm"
EOF
		fi
	} >"$f"
}

apply_policy() { # apply_policy FILE
	quiet "$R/logs/policy-apply.$(basename "$1").log" "$LB" policy apply --admin "$A1" "$1"
}

# delta A B: per-field B - A of two space-separated snapshots
delta() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? " " : ""), y[i] - x[i]; print "" }'; }

# The timestamp (epoch seconds) of dc1-n1's first "replicating" log line for
# SERVICE after log line number FROM, or empty.
session_start() { # session_start SERVICE FROM_LINE
	tail -n +"$(($2 + 1))" "$R/logs/node-dc1-n1.log" | grep -m1 -E "msg=\"?replicating\"? .*service=$1( |$)" |
		sed -n -E 's/^time=([^ ]+) .*/\1/p; s/^.*"time":"([^"]+)".*/\1/p' | head -n 1 |
		{ read -r ts && [[ -n $ts ]] && date -d "$ts" +%s.%N; } || true
}

# net_of_idle BYTES T0: BYTES minus the idle dc1->dc2 rate over now - T0.
net_of_idle() {
	awk -v b="$1" -v r="$IDLE12" -v a="$2" -v n="$(now)" 'BEGIN { x = b - r * (n - a); printf "%.0f", x < 0 ? 0 : x }'
}

# ------------------------------------------------------------------------------
run_round() {
	local r=$1 t0 s0 s1 m0 m1 p1 p2
	R=$W/r$r
	mkdir -p "$R/logs"
	log "[round $r/$ROUNDS] cluster in $R"

	free_port G1 && free_port G2 && free_port G3
	free_port Q1 && free_port Q2 && free_port Q3
	free_port P1 && free_port P2 && free_port P3
	free_port RSYNC_PORT
	A1=127.0.0.1:$P1 A2=127.0.0.1:$P2 A3=127.0.0.1:$P3
	ipt_rules

	quiet "$R/logs/ca.log" "$LB" ca init --dir "$R/ca"
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --name dc1-n1 --site dc1 --host 127.0.0.1 --out "$R/dc1-n1/tls"
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --name dc2-n1 --site dc2 --host 127.0.0.1 --out "$R/dc2-n1/tls"
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --name dc3-w1 --site dc3 --host 127.0.0.1 --out "$R/dc3-w1/tls"
	# The admin API wants an operator certificate: an admin for the CLI
	# (policy apply, restore), a viewer for the polling with curl.
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --operator wan-admin --role admin --out "$R/admin-tls"
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --operator wan-viewer --role viewer --out "$R/viewer-tls"
	export LIFEBOAT_TLS_DIR=$R/admin-tls
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --agent --name web1 --site dc1 --service web --out "$R/agent-web1/tls"
	quiet "$R/logs/ca.log" "$LB" ca issue --dir "$R/ca" --agent --name bulk1 --site dc1 --service bulk --out "$R/agent-bulk1/tls"
	write_node dc1-n1 dc1 node "$G1" "$Q1" "$P1"
	write_node dc2-n1 dc2 node "$G2" "$Q2" "$P2"
	write_node dc3-w1 dc3 witness "$G3" "$Q3" "$P3"
	for n in dc1-n1 dc2-n1 dc3-w1; do
		quiet "$R/logs/config-check.log" "$LB" config check "$R/$n.toml"
	done
	start_node dc1-n1
	start_node dc2-n1
	start_node dc3-w1
	t0=$(now)
	wait_for "three nodes form a cluster with a leader" 120 0.5 cluster_formed
	log "[round $r] cluster formed in $(secs_since "$t0")s; leader $("$LB" status --admin "$A1" --json | jq -r .leader)"
	for n in dc1-n1 dc2-n1 dc3-w1; do
		LOG_FROM[$n]=$(wc -l <"$R/logs/node-$n.log")
		# Bootstrap elections are expected; anything else that warned is shown.
		grep -E 'level=(WARN|ERROR)' "$R/logs/node-$n.log" | grep -v 'component=raft' | sed "s/^/[round $r] while forming: /" >&2 || true
	done

	# The volume: a sparse copy of the original image (the agent reads it).
	cp --sparse=always "$W/disk.img" "$R/disk.img"
	write_policy "$R/policy-web.toml" "$LINK_RATE" 0
	apply_policy "$R/policy-web.toml"
	wait_for "the leader places web's holder at dc1" 60 0.2 has_holder web

	# -- idle control traffic
	s0=$(ipt_snap)
	sleep "$IDLE_SECS"
	s1=$(ipt_snap)
	read -r _ d12 _ d21 _ _ _ _ <<<"$(delta "$s0" "$s1")"
	IDLE12=$(awk -v b="$d12" -v s="$IDLE_SECS" 'BEGIN { printf "%.0f", s ? b / s : 0 }')
	record "$r" idle12_Bps "$IDLE12"
	record "$r" idle21_Bps "$(awk -v b="$d21" -v s="$IDLE_SECS" 'BEGIN { printf "%.0f", s ? b / s : 0 }')"
	log "[round $r] idle control traffic over ${IDLE_SECS}s: dc1->dc2 $d12 B, dc2->dc1 $d21 B"

	# -- initial copy
	s0=$(ipt_snap)
	m0=$(metrics_snap)
	t0=$(now)
	start_agent web1 web "disk=$R/disk.img"
	wait_for "dc1 holds the first point of web" "$TIMEOUT" 0.1 dc1_has_new web ""
	local t_dc1 t1 c1a c2a
	t_dc1=$(secs_since "$t0")
	t1=$(now)
	c1a=$(cpu_ticks "${NODE_PID[dc1-n1]}")
	c2a=$(cpu_ticks "${NODE_PID[dc2-n1]}")
	stop_agent
	p1=$(newest_point "$A1" web)
	log "[round $r] initial: dc1 holds ${p1#* } after ${t_dc1}s (agent stopped); waiting for dc2"
	wait_for "dc2 holds web point ${p1%% *} (initial copy)" "$TIMEOUT" 0.1 holds_point "$A2" web "${p1%% *}"
	local t_repl
	t_repl=$(secs_since "$t1")
	record "$r" init_cpu1 "$(awk -v a="$c1a" -v b="$(cpu_ticks "${NODE_PID[dc1-n1]}")" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')"
	record "$r" init_cpu2 "$(awk -v a="$c2a" -v b="$(cpu_ticks "${NODE_PID[dc2-n1]}")" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')"
	s1=$(ipt_snap)
	m1=$(metrics_snap)
	read -r pk12 b12 _ b21 _ _ _ _ <<<"$(delta "$s0" "$s1")"
	read -r msent mchanged mdedup mcomp mpoints <<<"$(delta "$m0" "$m1")"
	record "$r" init_wire12 "$b12"
	record "$r" init_net12 "$(net_of_idle "$b12" "$t0")"
	record "$r" init_pkts12 "$pk12"
	record "$r" init_wire21 "$b21"
	record "$r" init_sent "$msent"
	record "$r" init_changed "$mchanged"
	record "$r" init_dedup "$mdedup"
	record "$r" init_comp "$mcomp"
	record "$r" init_points "$mpoints"
	record "$r" init_s "$(awk -v a="$t_dc1" -v b="$t_repl" 'BEGIN { printf "%.3f", a + b }')"
	record "$r" init_repl_s "$t_repl"
	log "[round $r] initial copy: wire dc1->dc2 $b12 B in $pk12 IP packets ($(awk -v b="$b12" -v p="$pk12" 'BEGIN { printf "%.0f", p ? b / p : 0 }') B each), dc2->dc1 $b21 B; frames sent $msent B, changed $mchanged B, dedup saved $mdedup B, compression saved $mcomp B, $mpoints point(s) replicated; dc2 had it ${t_repl}s after dc1"

	# -- the day
	local mut
	mut=$("$W/bin/diskgen" mutate -seed 2 -pct 1 -hot 0.8 "$R/disk.img")
	log "[round $r] $mut"
	local cblocks wbytes
	cblocks=$(sed -n -E 's/.* changed_blocks=([0-9]+).*/\1/p' <<<"$mut")
	wbytes=$(sed -n -E 's/.* written=([0-9]+) .*/\1/p' <<<"$mut")
	[[ -n $cblocks && -n $wbytes ]] || die "cannot parse diskgen mutate summary: $mut"
	record "$r" day_changed_logical "$((cblocks * 4096))"
	record "$r" day_written "$wbytes"
	sync
	s0=$(ipt_snap)
	m0=$(metrics_snap)
	t0=$(now)
	start_agent web1 web "disk=$R/disk.img"
	wait_for "dc1 holds a new point of web after the mutation" "$TIMEOUT" 0.1 dc1_has_new web "${p1%% *}"
	t1=$(now)
	stop_agent
	p2=$(newest_point "$A1" web)
	log "[round $r] day: dc1 holds ${p2#* } (agent stopped); waiting for dc2"
	wait_for "dc2 holds web point ${p2%% *} (day)" "$TIMEOUT" 0.1 holds_point "$A2" web "${p2%% *}"
	t_repl=$(secs_since "$t1")
	s1=$(ipt_snap)
	m1=$(metrics_snap)
	read -r pk12 b12 _ b21 _ _ _ _ <<<"$(delta "$s0" "$s1")"
	read -r msent mchanged mdedup mcomp mpoints <<<"$(delta "$m0" "$m1")"
	record "$r" day_wire12 "$b12"
	record "$r" day_net12 "$(net_of_idle "$b12" "$t0")"
	record "$r" day_pkts12 "$pk12"
	record "$r" day_wire21 "$b21"
	record "$r" day_sent "$msent"
	record "$r" day_changed "$mchanged"
	record "$r" day_dedup "$mdedup"
	record "$r" day_comp "$mcomp"
	record "$r" day_points "$mpoints"
	log "[round $r] day: wire dc1->dc2 $b12 B in $pk12 IP packets, dc2->dc1 $b21 B; frames sent $msent B, changed $mchanged B, dedup saved $mdedup B, compression saved $mcomp B, $mpoints point(s) replicated; dc2 had it ${t_repl}s after dc1"

	if [[ $VERIFY == 1 ]]; then
		rm -f "$R/restored.img"
		quiet "$R/logs/restore-dc2.log" "$LB" restore --admin "$A2" --volume web/disk --at "${p2%% *}" --out "$R/restored.img"
		if ! cmp -s "$R/disk.img" "$R/restored.img"; then
			cmp "$R/disk.img" "$R/restored.img" >&2 || true
			die "the day's point restored from dc2 is NOT byte-identical to the mutated image"
		fi
		rm -f "$R/restored.img"
		log "[round $r] day point restored from dc2: byte-identical to the mutated image"
	fi

	# -- rsync
	mkdir -p "$R/rsync/mod"
	cat >"$R/rsync/rsyncd.conf" <<EOF
pid file = $R/rsync/rsyncd.pid
log file = $R/logs/rsyncd.log
use chroot = no
[mod]
	path = $R/rsync/mod
	read only = no
	uid = root
	gid = root
EOF
	rsync --daemon --no-detach --address 127.0.0.1 --port "$RSYNC_PORT" --config "$R/rsync/rsyncd.conf" >>"$R/logs/rsyncd.out" 2>&1 &
	local rsync_pid=$!
	PIDS+=("$rsync_pid")
	wait_for "rsync daemon listens on $RSYNC_PORT" 30 0.1 bash -c "ss -Hlnt '( sport = :$RSYNC_PORT )' | grep -q ."
	local mode
	for mode in zstd plain; do
		cp --sparse=always "$W/disk.img" "$R/rsync/mod/disk.img"
		sync
		local args=(--inplace --no-whole-file -I --stats)
		[[ $mode == zstd ]] && args+=(--compress --compress-choice=zstd)
		s0=$(ipt_snap)
		t0=$(now)
		quiet "$R/logs/rsync-$mode.log" rsync "${args[@]}" "$R/disk.img" "rsync://127.0.0.1:$RSYNC_PORT/mod/disk.img"
		local ts
		ts=$(secs_since "$t0")
		s1=$(ipt_snap)
		read -r _ _ _ _ pkc bc _ bd <<<"$(delta "$s0" "$s1")"
		local sent recv
		sent=$(sed -n -E 's/^Total bytes sent: ([0-9,]+).*/\1/p' "$R/logs/rsync-$mode.log" | tr -d ,)
		recv=$(sed -n -E 's/^Total bytes received: ([0-9,]+).*/\1/p' "$R/logs/rsync-$mode.log" | tr -d ,)
		[[ -n $sent ]] || die "no 'Total bytes sent' in $R/logs/rsync-$mode.log"
		cmp -s "$R/disk.img" "$R/rsync/mod/disk.img" || die "rsync ($mode) did not produce the mutated image"
		record "$r" "rsync_${mode}_sent" "$sent"
		record "$r" "rsync_${mode}_recv" "$recv"
		record "$r" "rsync_${mode}_wire" "$bc"
		record "$r" "rsync_${mode}_wire_back" "$bd"
		record "$r" "rsync_${mode}_s" "$ts"
		log "[round $r] rsync $mode: Total bytes sent $sent, received $recv; wire client->daemon $bc B ($pkc packets), daemon->client $bd B; ${ts}s"
	done
	stop_pid "$rsync_pid"
	local keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$rsync_pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
	rm -rf "$R/rsync/mod"

	# -- throughput
	if [[ $THROUGHPUT == 1 ]]; then
		write_policy "$R/policy-bulk-nocopy.toml" unlimited 1
		write_policy "$R/policy-bulk-copy.toml" unlimited 2
		apply_policy "$R/policy-bulk-nocopy.toml"
		wait_for "the leader places bulk's holder at dc1" 60 0.2 has_holder bulk
		t0=$(now)
		start_agent bulk1 bulk "data=$W/bulk.img"
		wait_for "dc1 holds the point of bulk" "$TIMEOUT" 0.1 dc1_has_new bulk ""
		stop_agent
		local pb
		pb=$(newest_point "$A1" bulk)
		log "[round $r] throughput: dc1 holds bulk ${pb#* } after $(secs_since "$t0")s (ingest, agent stopped); applying the copy at dc2"
		sync
		sleep 2
		local c1b c2b logline
		logline=$(wc -l <"$R/logs/node-dc1-n1.log")
		s0=$(ipt_snap)
		c1a=$(cpu_ticks "${NODE_PID[dc1-n1]}")
		c2a=$(cpu_ticks "${NODE_PID[dc2-n1]}")
		t0=$(now)
		apply_policy "$R/policy-bulk-copy.toml"
		wait_for "dc2 holds bulk point ${pb%% *}" "$TIMEOUT" 0.1 holds_point "$A2" bulk "${pb%% *}"
		local t_end tp_s
		t_end=$(now)
		c1b=$(cpu_ticks "${NODE_PID[dc1-n1]}")
		c2b=$(cpu_ticks "${NODE_PID[dc2-n1]}")
		s1=$(ipt_snap)
		tp_s=$(awk -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.3f", b - a }')
		read -r pk12 b12 _ b21 _ _ _ _ <<<"$(delta "$s0" "$s1")"
		local ss tp_sess_s=""
		ss=$(session_start bulk "$logline")
		if [[ -n $ss ]]; then
			tp_sess_s=$(awk -v a="$ss" -v b="$t_end" 'BEGIN { printf "%.3f", b - a }')
			record "$r" tp_sess_s "$tp_sess_s"
			record "$r" tp_sess_mbps "$(awk -v n="$TP_BYTES" -v s="$tp_sess_s" 'BEGIN { printf "%.1f", n / 1e6 / s }')"
		fi
		local cpu1 cpu2
		cpu1=$(awk -v a="$c1a" -v b="$c1b" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')
		cpu2=$(awk -v a="$c2a" -v b="$c2b" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / h }')
		record "$r" tp_s "$tp_s"
		record "$r" tp_mbps "$(awk -v n="$TP_BYTES" -v s="$tp_s" 'BEGIN { printf "%.1f", n / 1e6 / s }')"
		record "$r" tp_cpu1 "$cpu1"
		record "$r" tp_cpu2 "$cpu2"
		record "$r" tp_cpu_per_gb "$(awk -v a="$cpu1" -v b="$cpu2" -v n="$TP_BYTES" 'BEGIN { printf "%.2f", (a + b) / (n / 1e9) }')"
		record "$r" tp_wire12 "$b12"
		log "[round $r] throughput: $TP_BYTES B new unique data at dc2 ${tp_s}s after policy apply ($(awk -v n="$TP_BYTES" -v s="$tp_s" 'BEGIN { printf "%.1f", n / 1e6 / s }') MB/s)${tp_sess_s:+, ${tp_sess_s}s after the sender session start}; CPU dc1-n1 ${cpu1}s, dc2-n1 ${cpu2}s; wire dc1->dc2 $b12 B ($pk12 packets), dc2->dc1 $b21 B; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
	fi

	# -- problems the nodes logged
	local probs
	probs=$(node_problems)
	if [[ -n $probs ]]; then
		log "[round $r] node logs have $(wc -l <<<"$probs") WARN/ERROR line(s):"
		head -n 20 <<<"$probs" >&2
	fi
	record "$r" node_problems "$(grep -c . <<<"$probs" || true)"
	stop_all
	# Keep logs, drop the stores and the volume copy.
	rm -rf "$R"/dc?-*/data "$R/disk.img" "$R"/agent-*/spool
}

for ((round = 1; round <= ROUNDS; round++)); do
	run_round "$round"
done

# --- report --------------------------------------------------------------------
median() { # median METRIC -> value or empty
	awk -F'\t' -v m="$1" '$2 == m && $3 != "" { print $3 }' "$RES" | sort -g |
		awk '{ v[NR] = $1 } END {
			if (NR == 0) exit
			if (NR % 2) { print v[(NR + 1) / 2]; exit }
			x = sprintf("%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2); sub(/\.?0+$/, "", x); print x
		}'
}
declare -A M
for m in $(awk -F'\t' '{ print $2 }' "$RES" | sort -u); do
	M[$m]=$(median "$m")
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a + 0 == 0 || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
v() { echo "${M[$1]:-}"; }
mbv() { [[ -n ${M[$1]:-} ]] && mb "${M[$1]}" || echo "n/a"; }

if [[ $WIRE == iptables ]]; then
	INIT_L=init_wire12 DAY_L=day_wire12 WIRE_NAME="wire bytes dc1→dc2 (UDP, iptables)"
else
	INIT_L=init_sent DAY_L=day_sent WIRE_NAME="frame bytes sent (lifeboat_replication_sent_bytes_total; NOT wire bytes, iptables unusable)"
fi

echo "## Medians of $ROUNDS round(s), $(mb "$IMG_BYTES") MB image ($SIZE)"
echo
echo "| part | measure | MB | notes |"
echo "|---|---|---:|---|"
echo "| initial | image, logical | $(mb "$IMG_BYTES") | $(mb "$IMG_ALLOC") MB allocated (non-hole) |"
echo "| initial | \`zstd -3 -T1\` of the image (reference) | $(mb "$ZSTD3") | whole file, no dedup |"
echo "| initial | **lifeboat $WIRE_NAME** | **$(mbv "$INIT_L")** | link rate \"$LINK_RATE\": sender compresses at zstd's default level |"
[[ $WIRE == iptables ]] && echo "| initial | lifeboat wire dc1→dc2 minus idle raft traffic (estimate) | $(mbv init_net12) | idle rate × time of the step |"
echo "| initial | seconds from dc1 holding the point to dc2 holding it | $(v init_repl_s) s | CPU meanwhile: dc1-n1 $(v init_cpu1) s, dc2-n1 $(v init_cpu2) s (replication starts when dc1 commits the point, a moment earlier) |"
echo "| initial | lifeboat wire bytes dc2→dc1 (acks, wants) | $(mbv init_wire21) | |"
echo "| initial | lifeboat frame bytes sent (metric) | $(mbv init_sent) | lifeboat_replication_sent_bytes_total, before QUIC |"
echo "| initial | lifeboat changed bytes (metric) | $(mbv init_changed) | lifeboat_replication_changed_bytes_total |"
echo "| initial | lifeboat dedup saved (metric) | $(mbv init_dedup) | lifeboat_replication_dedup_saved_bytes_total |"
echo "| initial | lifeboat compression saved (metric) | $(mbv init_comp) | lifeboat_replication_compression_saved_bytes_total |"
echo "| day | diskgen written | $(mbv day_written) | mutate -seed 2 -pct 1 -hot 0.8 |"
echo "| day | changed logical bytes (4 KiB blocks that differ) | $(mbv day_changed_logical) | diskgen changed_blocks × 4096 |"
echo "| day | **lifeboat $WIRE_NAME** | **$(mbv "$DAY_L")** | |"
[[ $WIRE == iptables ]] && echo "| day | lifeboat wire dc1→dc2 minus idle raft traffic (estimate) | $(mbv day_net12) | idle rate × time of the step |"
echo "| day | lifeboat wire bytes dc2→dc1 | $(mbv day_wire21) | |"
echo "| day | lifeboat frame bytes sent (metric) | $(mbv day_sent) | |"
echo "| day | lifeboat changed / dedup saved / compression saved (metrics) | $(mbv day_changed) / $(mbv day_dedup) / $(mbv day_comp) | |"
echo "| day | **rsync + zstd, Total bytes sent** | **$(mbv rsync_zstd_sent)** | --compress --compress-choice=zstd; TCP on the wire: $(mbv rsync_zstd_wire) MB client→daemon, $(mbv rsync_zstd_wire_back) MB back |"
echo "| day | rsync plain, Total bytes sent | $(mbv rsync_plain_sent) | TCP on the wire: $(mbv rsync_plain_wire) MB client→daemon, $(mbv rsync_plain_wire_back) MB back |"
echo "| idle | raft/control traffic dc1→dc2 / dc2→dc1 | $(awk -v a="$(v idle12_Bps)" -v b="$(v idle21_Bps)" 'BEGIN { printf "%.4f / %.4f", a / 1e6, b / 1e6 }') per s | included in the wire bytes above |"
if [[ $THROUGHPUT == 1 ]]; then
	echo "| throughput | new unique data (random), replicated dc1→dc2 | $(mb "$TP_BYTES") | block_size $TP_BLOCK_SIZE, link unlimited (zstd fastest) |"
	echo "| throughput | **MB/s**, policy apply → dc2 holds the point | **$(v tp_mbps)** | $(v tp_s) s |"
	echo "| throughput | MB/s, sender session start → dc2 holds the point | $(v tp_sess_mbps) | $(v tp_sess_s) s (from dc1-n1's \"replicating\" log line) |"
	echo "| throughput | CPU s, dc1-n1 + dc2-n1 | $(awk -v a="$(v tp_cpu1)" -v b="$(v tp_cpu2)" 'BEGIN { printf "%.2f", a + b }') | dc1-n1 $(v tp_cpu1) s, dc2-n1 $(v tp_cpu2) s (utime+stime) |"
	echo "| throughput | CPU s per GB of new data | $(v tp_cpu_per_gb) | both nodes, per 10^9 bytes |"
fi
echo
echo "MB = 10^6 bytes. Wire bytes: $([[ $WIRE == iptables ]] && echo "IP packet bytes counted by iptables in OUTPUT on lo between the two nodes' QUIC ports $([[ $QUIC_GSO == 1 ]] && echo "(with UDP GSO netfilter sees one IP+UDP header per batch of datagrams; a WAN carries 28 bytes more per ~1.4 KB datagram, about 2%: QUIC_GSO=0 counts every datagram)" || echo "(GSO off: one IP+UDP header per datagram, as on a WAN)"), including the raft traffic between them (idle rate above)" || echo "not measured (iptables unusable); lifeboat's figure is its frame counter, rsync's its own 'Total bytes sent'")."
[[ $WIRE == iptables ]] && echo "rsync's TCP bytes are counted on lo, whose 64 KiB MTU makes headers rare; on a 1500-byte WAN TCP/IP headers add about 3.6%."
echo "The day's lifeboat figure covers the points made after mutate (median $(v day_points) replicated): the agent was stopped during mutate; its first scan after it holds the day, and a scan that was under way when it was stopped again may add an unchanged point."
echo

echo "## Ratios"
echo
echo "- initial: lifeboat wire / zstd -3 of the image: $(ratio "$(v "$INIT_L")" "$ZSTD3")"
echo "- day: lifeboat wire / rsync+zstd Total bytes sent: $(ratio "$(v "$DAY_L")" "$(v rsync_zstd_sent)") (below 1 = lifeboat sends less)"
[[ $WIRE == iptables ]] && echo "- day: lifeboat wire / rsync+zstd TCP wire bytes client→daemon: $(ratio "$(v day_wire12)" "$(v rsync_zstd_wire)")"
[[ $WIRE == iptables ]] && echo "- day: lifeboat wire minus idle raft traffic / rsync+zstd Total bytes sent: $(ratio "$(v day_net12)" "$(v rsync_zstd_sent)")"
echo "- day, payload against payload: lifeboat frame bytes (metric) / rsync+zstd Total bytes sent: $(ratio "$(v day_sent)" "$(v rsync_zstd_sent)")"
echo "- day: lifeboat wire / rsync plain Total bytes sent: $(ratio "$(v "$DAY_L")" "$(v rsync_plain_sent)")"
echo "- day: lifeboat wire bytes per changed logical byte: $(ratio "$(v "$DAY_L")" "$(v day_changed_logical)") (4 KiB + zstd -3 floor on the standard 2 GiB day: 0.49)"
echo "- day: rsync+zstd bytes sent per changed logical byte: $(ratio "$(v rsync_zstd_sent)" "$(v day_changed_logical)")"
np=$(v node_problems)
echo
if [[ ${np:-0} != 0 ]]; then
	echo "Node log WARN/ERROR lines after the cluster formed (median per round): $np (printed on stderr)"
else
	echo "Node log WARN/ERROR lines after the cluster formed: none"
fi
