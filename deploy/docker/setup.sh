#!/bin/sh
# setup.sh DIR: make what docker-compose.yml mounts from LIFEBOAT_DIR=DIR:
#
#   DIR/ca/                       the cluster CA (keep it offline in production)
#   DIR/dc1-n1/ dc2-n1/ dc3-w1/   node certificates, gossip and dedup keys
#   DIR/web1/                     the agent's certificate, scoped to service web
#   DIR/operator/                 an operator certificate with role admin, for
#                                 the cluster commands run in the node
#                                 containers (LIFEBOAT_TLS_DIR there)
#   DIR/web.img                   the protected volume (32 MiB of random data
#                                 unless the file exists already)
#   DIR/cluster.toml              the cluster policy: sites dc1, dc2, dc3,
#                                 service web at dc1 with a hot copy at dc2
#
# Existing files are kept, so running it again is harmless. Run it as root:
# the containers run as uid 65532, which must own the certificates' keys
# (mode 0600). LIFEBOAT_BIN names the lifeboat binary (default: the static
# one beside this script, built for the image).
set -eu

dir=${1:?usage: setup.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
bin=${LIFEBOAT_BIN:-$here/lifeboat}
uid=65532

if [ ! -x "$bin" ]; then
	echo "setup.sh: no lifeboat binary at $bin" >&2
	echo "Try: CGO_ENABLED=0 go build -o deploy/docker/lifeboat ./cmd/lifeboat (or set LIFEBOAT_BIN)" >&2
	exit 1
fi
if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (sudo $0 $dir): the keys must belong to uid $uid, the containers' user" >&2
	exit 1
fi

mkdir -p "$dir"
[ -e "$dir/ca/ca.crt" ] || "$bin" ca init --dir "$dir/ca"
issue() { # issue NAME SITE [FLAGS...]
	name=$1 site=$2
	shift 2
	[ -e "$dir/$name/cert.crt" ] || "$bin" ca issue --dir "$dir/ca" --name "$name" --site "$site" --out "$dir/$name" "$@"
	chown -R "$uid:$uid" "$dir/$name"
}
issue dc1-n1 dc1
issue dc2-n1 dc2
issue dc3-w1 dc3
issue web1 dc1 --agent --service web
# The admin API asks every caller for a certificate, loopback included:
# `docker-compose exec NODE /lifeboat status` presents this one.
[ -e "$dir/operator/cert.crt" ] || "$bin" ca issue --dir "$dir/ca" --operator compose-admin --role admin --out "$dir/operator" >/dev/null
chown -R "$uid:$uid" "$dir/operator"

if [ ! -e "$dir/web.img" ]; then
	head -c 33554432 /dev/urandom >"$dir/web.img"
fi
chmod 0644 "$dir/web.img"
size=$(wc -c <"$dir/web.img" | tr -d ' ')
if [ $((size % 65536)) != 0 ] || [ "$size" = 0 ]; then
	echo "setup.sh: $dir/web.img is $size bytes: want a positive multiple of 64 KiB (the volume's block size)" >&2
	exit 1
fi

if [ ! -e "$dir/cluster.toml" ]; then
	cat >"$dir/cluster.toml" <<EOF
# The cluster policy of the compose example. Apply it once, on any node:
#   docker-compose exec dc1-n1 /lifeboat policy apply /etc/lifeboat/cluster.toml
[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3" # the witness: votes in raft, holds no data

[[link]]
between = ["dc1", "dc2"]
rate = "200Mbit"

[[service]]
name = "web"
primary = "dc1"
rpo = "1m"
# No hooks: the image has no shell to run them with (see README.md).
  [[service.server]]
  name = "web1"
    [[service.server.volume]]
    name = "disk"
    path = "/srv/web.img" # where the agent container sees it
    size = "${size}B"
  [[service.copy]]
  site = "dc2"
  tier = "hot"
EOF
	chmod 0644 "$dir/cluster.toml"
fi
"$bin" config check "$dir/cluster.toml" >/dev/null
echo "setup.sh: ready; now: LIFEBOAT_DIR=$dir docker-compose -f $here/docker-compose.yml up -d"
