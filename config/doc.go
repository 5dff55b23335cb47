// Package config parses and validates lifeboat's TOML files: node files
// (one per `lifeboat node` daemon) and the cluster policy (sites, links and
// services, stored in the raft catalog). It imports nothing of ours, and
// parsing has no side effects: it reads the given bytes (Load* read one
// file of at most MaxFileSize) and nothing else but the time zone database.
//
// # Errors
//
// Parsing is strict. An unknown key, a wrong type, a key defined twice, a
// missing required key, a bad value, a duplicate name or a reference to an
// undefined site is an error, and every problem in a file is reported,
// joined with errors.Join, each an *Error that prints as
//
//	cluster.toml:14: link.dc1-dc2.rate: "fast": want a rate like "200Mbit", "25MiB/s" or "unlimited"
//
// FILE:LINE, then the dotted key, where elements of arrays of tables are
// named by their name (service.erp.server.erp-db.volume.data.size), their
// site (service.erp.copy.dc2.tier), their two sites (link.dc1-dc2.rate) or,
// failing that, their index (link.dc1-dc2.schedule[0].rate), then the bad
// value and what is allowed. A key that fails to decode is not checked
// further, so one mistake gives one message. Errors walks the joined list.
// Validate, used after the cmd package sets fields from flags, names keys
// without a file or line.
//
// # Units
//
// Size: an integer number of bytes, or a string with a unit: "512",
// "64KiB", "2GiB" (K, KiB, M, MiB, G, GiB, T, TiB, P, PiB are powers of
// 1024), "100MB" (kB, MB, GB, TB, PB are powers of 1000). Whole numbers only.
//
// Rate: bits per second ("50Mbit", "200Mbps", "1Gbit", "64kbit", decimal;
// "mbit" as tc writes it is "Mbit"), bytes per second ("6MiB/s", "25MB/s",
// "1500B/s"), a plain number of bytes per second, or 0 or "unlimited" for no
// limit. Stored as bytes per second.
//
// Duration: Go syntax ("15s", "1h30m", "250ms") or whole days or weeks
// ("30d", "2w"). An integer is not a duration: write "60s".
//
// Days: "mon-fri", "sat,sun", "fri-mon" (a range may wrap over the week's
// end) or an array of those (["mon", "wed-thu"]). Names are mon..sun or
// monday..sunday, any case. Unset means every day.
//
// Hours: a wall clock window "HH:MM-HH:MM", start inclusive, end exclusive,
// "24:00" allowed as the end. A window whose end is not after its start
// wraps midnight ("22:00-06:00") and belongs to the day it starts on: with
// days = "fri" it covers Friday 23:00 and Saturday 03:00, not Friday 03:00.
//
// Time zone: an IANA name ("Europe/Berlin", "America/New_York", "UTC");
// "Local" is refused because nodes in different places read it differently.
// The binary embeds the zone database (time/tzdata) for hosts without one.
//
// Names (node, site, service, server, volume) match
// ^[a-z0-9][a-z0-9_.-]{0,62}$. Addresses are host:port, port 0 to 65535,
// the host an IP address, a DNS name or empty (all interfaces).
//
// # Node file
//
// One per node daemon (`lifeboat node run --config FILE`). Every key can be
// overridden by a flag; the cmd package then calls SetDefaults and Validate.
//
//	key                type      default              meaning
//	name               string    required             this node's name, unique in the cluster
//	site               string    required             the site the node is in
//	data_dir           string    required             block store, raft state and spool
//	join               [string]  []                   gossip addresses (host:port) of peers to join at start
//	role               string    "node"               "node" holds data; "witness" only votes in raft
//	bootstrap_expect   integer   1, or 3 with join    raft voters to wait for before the first election, 1 to 9
//	dead_node_timeout  duration  "24h"                how long a dead node stays in the raft configuration; at least 1s
//	holder_timeout     duration  "1m"                 how long a holder may be gone before another node of its site takes its services; at least 1s
//	log_level          string    "info"               debug, info, warn or error
//	gossip_profile     string    "wan"                failure detection timings: wan (between sites), lan (one site) or test (one host)
//	[listen]
//	gossip             host:port "0.0.0.0:7946"       memberlist, TCP and UDP
//	quic               host:port "0.0.0.0:7947"       data, raft and agents, UDP; not the gossip address
//	admin              host:port "127.0.0.1:7948"     admin API
//	advertise          host      ""                   the address peers use when listening on 0.0.0.0; no port
//	hooks_user         string    ""                   local user the policy's hooks run as
//	encryption.kek_file / kek_command                 key-encryption key of an encrypted store
//	[lifecycle]
//	thin_every         duration  "30s"                how often points are thinned by retention; at least 1s
//	gc_every           duration  "15m"                least time between garbage collections (one runs only after points were deleted); at least 1s
//	gc_rate            rate      unlimited            bytes/s of pack rewriting by garbage collection
//	[tls]
//	dir                string    "<data_dir>/tls"     what `lifeboat ca issue --out` wrote
//
// Example (examples/node-dc1-n1.toml has comments):
//
//	name = "dc1-n1"
//	site = "dc1"
//	data_dir = "/var/lib/lifeboat"
//	join = ["10.0.1.12:7946", "10.0.2.11:7946", "10.0.3.11:7946"]
//	[listen]
//	advertise = "10.0.1.11"
//	[tls]
//	dir = "/etc/lifeboat/tls"
//
// # Agent file
//
// One per agent (`lifeboat agent run --config FILE`); every key is also a
// flag of `agent run`, and flags win. examples/agent.toml has comments.
//
//	key                type      default              meaning
//	name               string    required             the agent's name, as in its certificate
//	service            string    required             the service it protects (the certificate is scoped to it)
//	node               host:port required             QUIC address of a node at the agent's site
//	tls_dir            string    required             what `lifeboat ca issue --agent --out` wrote
//	spool              string    required             state directory: spool, dirty bitmaps, status.json
//	mode               string    "scan"               scan (re-read every interval) or intercept (every write, in order)
//	interval           duration  "30s"                scan: time between scans; intercept: longest time without a point; at least 1s
//	read_rate          rate      "200MiB/s"           scan: read limit
//	mount              string    required, intercept  where the volumes appear as files
//	ack                string    "async"              intercept: a write returns when the spool (async) or the node (sync) has it
//	spool_max          size      "1GiB"               intercept: spool bound; past it, a dirty bitmap; at least 1MiB
//	log_level          string    "info"               debug, info, warn or error
//	pre_hook           string    ""                   command (sh -c) before each point, e.g. a database flush: application-consistent points
//	post_hook          string    ""                   command after each point (e.g. thaw); in intercept mode hooks wrap a point every interval
//	hook_timeout       duration  "60s"                a hook running longer is killed; the point is then crash-consistent only
//	[[volume]]                                        at least one
//	  name             string    required             the volume's name in the service (the policy's)
//	  path             string    required             image file or block device
//
// # Cluster policy
//
// One per cluster (`lifeboat policy apply FILE`). Arrays of tables may also
// be written inline (copy = [{ site = "dc2", tier = "hot" }]) and tables as
// inline tables (hooks = { start = "...", timeout = "60s" }).
//
//	key                    type      default            meaning
//	[[site]]                                            at least one
//	  name                 string    required           unique site name
//	  timezone             zone      "UTC"              wall clock for link schedules and cold copy schedules
//	  archive_dir          string    ""                 absolute directory where cold copies at this site export images
//	[[link]]                                            the WAN path between two sites
//	  between              [2]string required           two different defined sites; each pair at most once, in either order
//	  rate                 rate      "unlimited"        bandwidth for replication over the link
//	  coalesce             duration  "0s" (off)         within this window only a block's last version is sent
//	  timezone             zone      the first site's   wall clock of the schedules
//	  [[link.schedule]]                                 rate overrides; the last one that matches wins
//	    days               days      every day          days the window starts on
//	    hours              hours     the whole day      time of day window, may wrap midnight
//	    rate               rate      required           the link's rate while the schedule matches
//	[[service]]                                         a protected service
//	  name                 string    required           unique service name
//	  primary              string    required           the defined site where the service runs
//	  rpo                  duration  "0s" (no target)   RPO target; checked against cold schedules and coalesce windows
//	  priority             integer   0                  when a node's disk runs short, the lowest stop taking points first
//	  hooks                table                        commands run to start, stop and check the servers
//	    start, stop, health string   ""                 commands (run by the node at that site)
//	    timeout            duration  "60s"              how long one hook run may take; positive
//	  retention            table     see below          points kept at the primary
//	  suspect              table                        the ransomware signal: a point whose volume jumps far above its baseline is marked suspect
//	    changed            number    0.3                least share of the volume's blocks the point changed, in (0, 1]
//	    incompressible     number    0.8                least share of the changed blocks that do not compress, in (0, 1]
//	    window             duration  "5m"               the span of points judged together, and of each baseline sample
//	    off                bool      false              no signal for this service
//	  verify               table                        verified points
//	    require_verified   bool      false              failover and drill take by default only points verified ok
//	  [[service.server]]                                at least one per service
//	    name               string    required           unique in the service
//	    [[service.server.volume]]                       at least one per server
//	      name             string    required           unique in the service, across its servers
//	      path             string    required           absolute path of the device or image file on the server
//	      size             size      required           positive multiple of block_size
//	      block_size       size      "64KiB"            power of two from 4KiB to 1MiB
//	  [[service.copy]]                                  a copy at a recovery site
//	    site               string    required           a defined site other than primary; one copy per site
//	    tier               string    required           "cold", "warm" or "hot"
//	    schedule           cadence   required for cold  when a cold copy takes a point; refused for warm and hot
//	    export             string    "none" for cold    cold only: "none", "raw", "qcow2" or "vhdx" into the site's archive_dir
//	    retention          table     the service's      points kept at this site
//	  verify               table                        verified points: how often, which checks
//	    every              duration  required w/ checks time between verifications of the newest point; positive
//	    checks             []string  []                 "fsck", "boot", "hook"
//	    boot_volume        string    the first volume   the volume the boot check starts in qemu
//	    serial_ok          string    required w/ boot   the serial console line that means booted
//	    timeout            duration  "5m"               per check
//	    memory             size      "256MiB"           the boot check's guest memory
//	    hook               string    ""                 command run against the restored images (required w/ hook)
//	    require_verified   bool      false              failover and drill take only verified points by default
//
// A cadence is "hourly", "hourly :15", "daily 02:00", "weekly sun 03:00" or
// "every 6h" (whole minutes from 1m to 24h, restarting at each midnight),
// wall clock in the copy site's time zone.
//
// A retention table has keep_last (integer: the newest N points), all,
// hourly, daily, weekly, monthly and yearly (durations: every point, the
// newest of each hour, day, ISO week, month, year younger than this, in the
// site's time zone) and lock (duration: a point recorded at the site is
// locked for this long from its recording; the lock-until time is fixed
// then, so shortening lock later affects only new points). The node that
// holds a service's points at a site thins them by that site's table,
// continuously; it never deletes the newest point, a point another site
// still needs as its incremental base, the standby image's point, a point
// of a running failover, drill or divergent branch, or a locked point.
// Keys left out keep nothing by their rule; the table must keep something.
// Without a table the default is keep_last = 1, all = "24h", hourly = "7d",
// daily = "30d".
//
// Warnings (allowed, probably a mistake; Cluster.Warnings): a copy at a
// site with no link to the primary (no bandwidth policy applies), a service
// without copies, a cold schedule longer than the RPO target, a link
// coalescing window longer than the RPO target of a warm or hot copy.
//
// Example (examples/cluster.toml has comments and more services):
//
//	[[site]]
//	name = "dc1"
//	timezone = "Europe/Berlin"
//	archive_dir = "/srv/lifeboat/archive"
//
//	[[site]]
//	name = "dc2"
//	timezone = "Europe/Berlin"
//
//	[[site]]
//	name = "dc3"            # witness site: no services
//
//	[[link]]
//	between = ["dc1", "dc2"]
//	rate = "400Mbit"
//	coalesce = "10s"
//	  [[link.schedule]]     # in Europe/Berlin, dc1's zone
//	  days = "mon-fri"
//	  hours = "08:00-18:00"
//	  rate = "100Mbit"
//
//	[[service]]
//	name = "erp"
//	primary = "dc1"
//	rpo = "30s"
//	hooks = { start = "/usr/local/bin/erp-start", stop = "/usr/local/bin/erp-stop", timeout = "120s" }
//	retention = { keep_last = 10, all = "24h", hourly = "7d", daily = "90d", lock = "7d" }
//	  [[service.server]]
//	  name = "erp-db"
//	    [[service.server.volume]]
//	    name = "data"
//	    path = "/dev/vg0/erp-data"
//	    size = "100GiB"
//	  [[service.copy]]
//	  site = "dc2"
//	  tier = "hot"
//
//	[[service]]
//	name = "files"
//	primary = "dc2"
//	rpo = "24h"
//	  [[service.server]]
//	  name = "fs1"
//	    [[service.server.volume]]
//	    name = "share"
//	    path = "/dev/sdb"
//	    size = "2TiB"
//	    block_size = "1MiB"
//	  [[service.copy]]
//	  site = "dc1"
//	  tier = "cold"
//	  schedule = "daily 02:00"
//	  export = "qcow2"
//
// A Cluster marshals to JSON (for the catalog) with units as strings
// ("400Mbit", "100GiB", "daily 02:00") and unmarshals back equal.
// Link.RateAt evaluates a link's schedules at an instant; Cluster.Site,
// Service and Link, and Service.Copy and Volume look things up.
//
// Load, Parse and Detect tell the two kinds apart: a cluster policy has
// [[site]], [[link]] or [[service]] tables; a node file has a name or a
// site string. An empty file, or one with keys of both kinds, is an error.
package config
