package config

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// baseCluster is a valid policy; line numbers in the tests below count
// from its first line.
const baseCluster = `[[site]]
name = "dc1"
timezone = "Europe/Berlin"

[[site]]
name = "dc2"

[[link]]
between = ["dc1", "dc2"]
rate = "200Mbit"

[[service]]
name = "erp"
primary = "dc1"
rpo = "30s"

  [[service.server]]
  name = "erp-db"

    [[service.server.volume]]
    name = "data"
    path = "/dev/vg0/erp-data"
    size = "100GiB"

  [[service.copy]]
  site = "dc2"
  tier = "hot"
`

// edit replaces old with new in baseCluster, once, and fails if old is
// not there.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := baseCluster
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("edit: %q not in the base cluster", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func TestParseClusterBase(t *testing.T) {
	t.Parallel()
	c, err := ParseCluster("cluster.toml", []byte(baseCluster))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Warnings(); len(got) != 0 {
		t.Fatalf("warnings: %q", got)
	}
	if c.Sites[1].Timezone != "UTC" {
		t.Errorf("default timezone = %q, want UTC", c.Sites[1].Timezone)
	}
	if c.Links[0].Timezone != "Europe/Berlin" {
		t.Errorf("link timezone = %q, want the first site's, Europe/Berlin", c.Links[0].Timezone)
	}
	v := c.Services[0].Servers[0].Volumes[0]
	if v.BlockSize != 64<<10 || v.Size != 100<<30 {
		t.Errorf("volume = %+v, want 100GiB in 64KiB blocks", v)
	}
	if got := c.Services[0].Hooks.Timeout; got != DefaultHookTimeout {
		t.Errorf("hook timeout = %s, want %s", got, DefaultHookTimeout)
	}
	if got := c.Services[0].Suspect; got != (Suspect{Changed: DefaultSuspectChanged, Incompressible: DefaultSuspectIncompressible, Window: DefaultSuspectWindow}) {
		t.Errorf("suspect = %+v, want the defaults", got)
	}
	if got := c.Services[0].Copies[0].Retention; got != DefaultRetention {
		t.Errorf("copy retention = %+v, want the default %+v", got, DefaultRetention)
	}
	if c.Link("dc2", "dc1") != &c.Links[0] || c.Link("dc1", "dc2") != &c.Links[0] || c.Link("dc1", "dc3") != nil {
		t.Error("Link does not find dc1-dc2 in both orders, or finds dc1-dc3")
	}
	if c.Site("dc2") != &c.Sites[1] || c.Site("nope") != nil {
		t.Error("Site lookup is wrong")
	}
	s := c.Service("erp")
	if s != &c.Services[0] || c.Service("nope") != nil {
		t.Fatal("Service lookup is wrong")
	}
	if s.Copy("dc2") != &s.Copies[0] || s.Copy("dc1") != nil {
		t.Error("Copy lookup is wrong")
	}
	if sv, vol := s.Volume("data"); sv != &s.Servers[0] || vol != &s.Servers[0].Volumes[0] {
		t.Error("Volume lookup is wrong")
	}
	if sv, vol := s.Volume("nope"); sv != nil || vol != nil {
		t.Error("Volume finds a missing volume")
	}
}

func TestParseClusterErrors(t *testing.T) {
	t.Parallel()
	const f = "cluster.toml"
	for _, tc := range []struct {
		name string
		toml string
		want []string
	}{
		{"unknown top-level key", baseCluster + "[[sites]]\nname = \"x\"\n",
			[]string{f + ":28: sites: unknown key: want one of approvals, audit, link, service, site"}},
		{"unknown key in link", edit(t, `rate = "200Mbit"`, "rate = \"200Mbit\"\nburst = 5"),
			[]string{f + ":11: link.dc1-dc2.burst: unknown key: want one of between, coalesce, rate, schedule, timezone"}},
		{"unknown key in volume", edit(t, `size = "100GiB"`, "size = \"100GiB\"\n    sise = 1"),
			[]string{f + ":24: service.erp.server.erp-db.volume.data.sise: unknown key: want one of block_size, name, path, size"}},
		{"bad rate", edit(t, `"200Mbit"`, `"fast"`),
			[]string{f + `:10: link.dc1-dc2.rate: "fast": want a rate like "200Mbit", "25MiB/s" or "unlimited"`}},
		{"wrong type", edit(t, `rpo = "30s"`, `rpo = true`),
			[]string{f + `:15: service.erp.rpo: "true": want a duration like "15s", "1h30m" or "30d"`}},
		{"wrong type array", edit(t, `name = "erp-db"`, `name = ["erp-db"]`),
			[]string{f + `:18: service.erp.server[0].name: ["erp-db"]: want a string, not an array`}},
		{"duplicate key", edit(t, `tier = "hot"`, "tier = \"hot\"\n  tier = \"warm\""),
			[]string{f + `:28: tier: invalid TOML: key tier is already defined`}},
		{"duplicate site", edit(t, `name = "dc2"`, `name = "dc1"`),
			[]string{
				f + `:6: site.dc1.name: "dc1": site defined twice (first at line 2)`,
				f + `:9: link.dc1-dc2.between[1]: "dc2": no such site: want a site defined by [[site]]: dc1`,
				f + `:26: service.erp.copy.dc2.site: "dc2": no such site: want a site defined by [[site]]: dc1`,
			}},
		{"duplicate service", baseCluster + "[[service]]\nname = \"erp\"\nprimary = \"dc2\"\n[[service.server]]\nname = \"s\"\n[[service.server.volume]]\nname = \"v\"\npath = \"/v\"\nsize = \"1GiB\"\n",
			[]string{f + `:29: service.erp.name: "erp": service defined twice (first at line 13)`}},
		{"duplicate server", edit(t, "  [[service.copy]]", "  [[service.server]]\n  name = \"erp-db\"\n    [[service.server.volume]]\n    name = \"v2\"\n    path = \"/v\"\n    size = \"1GiB\"\n  [[service.copy]]"),
			[]string{f + `:26: service.erp.server.erp-db.name: "erp-db": server defined twice in service "erp" (first at line 18)`}},
		{"duplicate volume across servers", edit(t, "  [[service.copy]]", "  [[service.server]]\n  name = \"erp-app\"\n    [[service.server.volume]]\n    name = \"data\"\n    path = \"/v\"\n    size = \"1GiB\"\n  [[service.copy]]"),
			[]string{f + `:28: service.erp.server.erp-app.volume.data.name: "data": volume defined twice in service "erp" (first at line 21): want names unique across its servers`}},
		{"duplicate link", baseCluster + "[[link]]\nbetween = [\"dc2\", \"dc1\"]\n",
			[]string{f + `:29: link.dc2-dc1.between: ["dc2", "dc1"]: link defined twice (first at line 9)`}},
		{"link to undefined site", edit(t, `between = ["dc1", "dc2"]`, `between = ["dc1", "dc9"]`),
			[]string{f + `:9: link.dc1-dc9.between[1]: "dc9": no such site: want a site defined by [[site]]: dc1, dc2`}},
		{"link with three sites", edit(t, `between = ["dc1", "dc2"]`, `between = ["dc1", "dc2", "dc3"]`),
			[]string{f + `:9: link[0].between: ["dc1", "dc2", "dc3"]: want an array of 2, not 3`}},
		{"undefined primary", edit(t, `primary = "dc1"`, `primary = "dc7"`),
			[]string{
				f + `:14: service.erp.primary: "dc7": no such site: want a site defined by [[site]]: dc1, dc2`,
				f + `:25: service.erp.copy.dc2: no [[link]] between "dc7" and "dc2": replication to dc2 has no bandwidth policy`,
			}[:1]},
		{"missing primary", edit(t, "primary = \"dc1\"\n", ""),
			[]string{f + `:12: service.erp.primary: missing: want a site defined by [[site]]: dc1, dc2`}},
		{"copy at undefined site", edit(t, `site = "dc2"`, `site = "dc3"`),
			[]string{f + `:26: service.erp.copy.dc3.site: "dc3": no such site: want a site defined by [[site]]: dc1, dc2`}},
		{"copy at primary", edit(t, `site = "dc2"`, `site = "dc1"`),
			[]string{f + `:26: service.erp.copy.dc1.site: "dc1": the primary site: want a recovery site other than "dc1"`}},
		{"two copies at one site", baseCluster + "  [[service.copy]]\n  site = \"dc2\"\n  tier = \"warm\"\n",
			[]string{f + `:29: service.erp.copy.dc2.site: "dc2": a second copy at this site (first at line 26): want one copy per site`}},
		{"bad tier", edit(t, `tier = "hot"`, `tier = "lukewarm"`),
			[]string{f + `:27: service.erp.copy.dc2.tier: "lukewarm": want one of "cold", "warm" or "hot"`}},
		{"missing tier", edit(t, "  tier = \"hot\"\n", ""),
			[]string{f + `:25: service.erp.copy.dc2.tier: missing: want one of "cold", "warm" or "hot"`}},
		{"cold without schedule", edit(t, `tier = "hot"`, `tier = "cold"`),
			[]string{f + `:25: service.erp.copy.dc2.schedule: missing: a cold copy needs one: want a schedule like "hourly", "hourly :15", "daily 02:00", "weekly sun 03:00" or "every 6h"`}},
		{"bad cold schedule", edit(t, `tier = "hot"`, "tier = \"cold\"\n  schedule = \"nightly\""),
			[]string{f + `:28: service.erp.copy.dc2.schedule: "nightly": want a schedule like "hourly", "hourly :15", "daily 02:00", "weekly sun 03:00" or "every 6h"`}},
		{"schedule on hot copy", edit(t, `tier = "hot"`, "tier = \"hot\"\n  schedule = \"hourly\""),
			[]string{f + `:28: service.erp.copy.dc2.schedule: "hourly": only cold copies have a schedule: hot copies replicate continuously`}},
		{"export without archive", edit(t, `tier = "hot"`, "tier = \"cold\"\n  schedule = \"daily 02:00\"\n  export = \"qcow2\""),
			[]string{f + `:29: service.erp.copy.dc2.export: "qcow2": site "dc2" has no archive_dir to export to: set one or export = "none"`}},
		{"bad export", edit(t, `tier = "hot"`, "tier = \"cold\"\n  schedule = \"daily 02:00\"\n  export = \"zip\""),
			[]string{f + `:29: service.erp.copy.dc2.export: "zip": want one of "none", "raw", "qcow2" or "vhdx"`}},
		{"block size not a power of two", edit(t, `size = "100GiB"`, "size = \"100GiB\"\n    block_size = \"48KiB\""),
			[]string{f + `:24: service.erp.server.erp-db.volume.data.block_size: 48KiB: want a power of two from 4KiB to 1MiB (4KiB, 8KiB, ..., 64KiB, ..., 1MiB)`}},
		{"block size too large", edit(t, `size = "100GiB"`, "size = \"100GiB\"\n    block_size = \"2MiB\""),
			[]string{f + `:24: service.erp.server.erp-db.volume.data.block_size: 2MiB: want a power of two from 4KiB to 1MiB (4KiB, 8KiB, ..., 64KiB, ..., 1MiB)`}},
		{"size not a multiple", edit(t, `size = "100GiB"`, `size = 100000`),
			[]string{f + `:23: service.erp.server.erp-db.volume.data.size: 100kB (100000 bytes): want a multiple of block_size 64KiB`}},
		{"size missing", edit(t, "    size = \"100GiB\"\n", ""),
			[]string{f + `:20: service.erp.server.erp-db.volume.data.size: 0: want the volume's size, like "100GiB", a positive multiple of block_size`}},
		{"bad size unit", edit(t, `size = "100GiB"`, `size = "100 gallons"`),
			[]string{f + `:23: service.erp.server.erp-db.volume.data.size: "100 gallons": want a whole number of bytes with an optional unit, like 512, "64KiB", "2GiB" or "100MB"`}},
		{"relative volume path", edit(t, `path = "/dev/vg0/erp-data"`, `path = "dev/vg0"`),
			[]string{f + `:22: service.erp.server.erp-db.volume.data.path: "dev/vg0": want an absolute path, like "/dev/vg0/erp-data"`}},
		{"server without volume", edit(t, "    [[service.server.volume]]\n    name = \"data\"\n    path = \"/dev/vg0/erp-data\"\n    size = \"100GiB\"\n", ""),
			[]string{f + `:17: service.erp.server.erp-db.volume: missing: want at least one [[service.server.volume]] with a name, path and size`}},
		{"service without server", edit(t, "  [[service.server]]\n  name = \"erp-db\"\n\n    [[service.server.volume]]\n    name = \"data\"\n    path = \"/dev/vg0/erp-data\"\n    size = \"100GiB\"\n", ""),
			[]string{f + `:12: service.erp.server: missing: want at least one [[service.server]] with a [[service.server.volume]]`}},
		{"bad hook timeout", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nhooks = { start = \"/bin/true\", timeout = \"-5s\" }"),
			[]string{f + `:16: service.erp.hooks.timeout: -5s: want a positive duration, like "60s"`}},
		{"suspect share above 1", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nsuspect = { changed = 1.5, incompressible = 0.9 }"),
			[]string{f + `:16: service.erp.suspect.changed: 1.5: want a share above 0 and at most 1, like 0.3`}},
		{"suspect negative", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nsuspect = { incompressible = -0.1 }"),
			[]string{f + `:16: service.erp.suspect.incompressible: -0.1: want a share above 0 and at most 1, like 0.3`}},
		{"suspect not a number", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nsuspect = { changed = \"lots\" }"),
			[]string{f + `:16: service.erp.suspect.changed: "lots": want a number, not a string`}},
		{"suspect window too short", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nsuspect = { window = \"500ms\" }"),
			[]string{f + `:16: service.erp.suspect.window: 500ms: want a duration from 1s to 24h, like "5m"`}},
		{"require_verified not a bool", edit(t, `rpo = "30s"`, "rpo = \"30s\"\nverify = { require_verified = \"yes\" }"),
			[]string{f + `:16: service.erp.verify.require_verified: "yes": want true or false, not a string`}},
		{"bad timezone", edit(t, `timezone = "Europe/Berlin"`, `timezone = "Mars/Olympus"`),
			[]string{f + `:3: site.dc1.timezone: "Mars/Olympus": want an IANA time zone like "Europe/Berlin", "America/New_York" or "UTC"`}},
		{"bad schedule days", edit(t, `rate = "200Mbit"`, "rate = \"200Mbit\"\n[[link.schedule]]\ndays = \"weekdays\"\nrate = \"1Mbit\""),
			[]string{f + `:12: link.dc1-dc2.schedule[0].days: "weekdays": want days like "mon-fri", "sat,sun" or ["mon", "wed"] (mon, tue, wed, thu, fri, sat, sun)`}},
		{"bad schedule hours", edit(t, `rate = "200Mbit"`, "rate = \"200Mbit\"\n[[link.schedule]]\nhours = \"8-18\"\nrate = \"1Mbit\""),
			[]string{f + `:12: link.dc1-dc2.schedule[0].hours: "8-18": want a time window like "08:00-18:00" or "22:00-06:00"`}},
		{"schedule without rate", edit(t, `rate = "200Mbit"`, "rate = \"200Mbit\"\n[[link.schedule]]\nhours = \"08:00-18:00\""),
			[]string{f + `:11: link.dc1-dc2.schedule[0].rate: missing: this key is required`}},
		{"negative retention", edit(t, `tier = "hot"`, "tier = \"hot\"\n  retention = { keep_last = -1, daily = \"30d\" }"),
			[]string{f + `:28: service.erp.copy.dc2.retention.keep_last: -1: want 0 or more`}},
		{"retention keeps nothing", edit(t, `tier = "hot"`, "tier = \"hot\"\n  retention = { lock = \"7d\" }"),
			[]string{f + `:28: service.erp.copy.dc2.retention: keeps no point: want keep_last of at least 1 or a positive all, hourly, daily, weekly, monthly or yearly`}},
		{"no sites", "",
			[]string{f + `: site: missing: want at least one [[site]] with a name, like name = "dc1"`}},
		{"every problem", edit(t, `"200Mbit"`, `"fast"`, `primary = "dc1"`, `primary = "dc7"`, `tier = "hot"`, `tier = "tepid"`, `name = "erp-db"`, `name = "ERP DB"`),
			[]string{
				f + `:10: link.dc1-dc2.rate: "fast": want a rate like "200Mbit", "25MiB/s" or "unlimited"`,
				f + `:14: service.erp.primary: "dc7": no such site: want a site defined by [[site]]: dc1, dc2`,
				f + `:18: service.erp.server[0].name: "ERP DB": want 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit`,
				f + `:27: service.erp.copy.dc2.tier: "tepid": want one of "cold", "warm" or "hot"`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseCluster(f, []byte(tc.toml))
			if c != nil {
				t.Errorf("got a cluster with errors")
			}
			checkErrors(t, err, tc.want...)
		})
	}
}

func TestClusterWarnings(t *testing.T) {
	t.Parallel()
	src := edit(t, "[[link]]\nbetween = [\"dc1\", \"dc2\"]\nrate = \"200Mbit\"\n", "[[site]]\nname = \"dc3\"\n[[link]]\nbetween = [\"dc1\", \"dc3\"]\ncoalesce = \"1m\"\n") +
		"  [[service.copy]]\n  site = \"dc3\"\n  tier = \"warm\"\n" +
		"[[service]]\nname = \"lonely\"\nprimary = \"dc2\"\nrpo = \"1h\"\n[[service.server]]\nname = \"s\"\n[[service.server.volume]]\nname = \"v\"\npath = \"/v\"\nsize = \"1GiB\"\n" +
		"[[service.copy]]\nsite = \"dc3\"\ntier = \"cold\"\nschedule = \"daily 01:00\"\n" +
		"[[service]]\nname = \"nocopy\"\nprimary = \"dc1\"\n[[service.server]]\nname = \"s\"\n[[service.server.volume]]\nname = \"v\"\npath = \"/v\"\nsize = \"1GiB\"\n"
	c, err := ParseCluster("cluster.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`service.erp.copy.dc2: no [[link]] between "dc1" and "dc2": replication to dc2 has no bandwidth policy`,
		`service.erp.copy.dc3: rpo 30s is shorter than the coalesce window 1m of link dc1-dc3`,
		`service.lonely.copy.dc3: no [[link]] between "dc2" and "dc3": replication to dc3 has no bandwidth policy`,
		`service.lonely.copy.dc3: rpo 1h cannot be met by a cold copy daily 01:00 (up to 24h lost)`,
		`service.nocopy: no [[service.copy]]: losing site "dc1" loses this service`,
	}
	if got := c.Warnings(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestClusterJSONRoundTrip(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("examples/cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCluster("cluster.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Cluster
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, &back) {
		t.Fatalf("JSON round trip changed the cluster:\n%+v\n%+v\n%s", c, &back, j)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("the cluster from JSON does not validate: %v", err)
	}
	for _, s := range []string{`"rate":"400Mbit"`, `"schedule":"daily 02:00"`, `"days":"mon-fri"`, `"hours":"08:00-18:00"`, `"size":"100GiB"`} {
		if !strings.Contains(string(j), s) {
			t.Errorf("JSON lacks %s: %s", s, j)
		}
	}
}

func TestRateAt(t *testing.T) {
	t.Parallel()
	src := `[[site]]
name = "dc1"
timezone = "Europe/Berlin"
[[site]]
name = "dc2"
timezone = "America/New_York"
[[link]]
between = ["dc1", "dc2"]
rate = "400Mbit"
  [[link.schedule]]
  days = "mon-fri"
  hours = "08:00-18:00"
  rate = "100Mbit"
  [[link.schedule]]
  days = "fri"
  hours = "22:00-06:00"
  rate = "unlimited"
  [[link.schedule]]
  days = ["wed"]
  hours = "12:00-13:00"
  rate = "10Mbit"
  [[link.schedule]]
  days = "sun"
  rate = "1Mbit"
`
	c, err := ParseCluster("cluster.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Link("dc2", "dc1")
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		t.Helper()
		tm, err := time.ParseInLocation("Mon 2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	mbit := func(n float64) Rate { return Rate(n * 1e6 / 8) }
	for _, tc := range []struct {
		name string
		t    time.Time
		want Rate
	}{
		{"weekday business hours", at("Tue 2026-11-03 09:00"), mbit(100)},
		{"weekday at window start", at("Tue 2026-11-03 08:00"), mbit(100)},
		{"weekday at window end", at("Tue 2026-11-03 18:00"), mbit(400)},
		{"weekday evening", at("Tue 2026-11-03 20:00"), mbit(400)},
		{"last match wins", at("Wed 2026-11-04 12:30"), mbit(10)},
		{"friday late wraps", at("Fri 2026-11-06 23:00"), Unlimited},
		{"saturday early belongs to friday", at("Sat 2026-11-07 03:00"), Unlimited},
		{"saturday after window", at("Sat 2026-11-07 06:00"), mbit(400)},
		{"friday early is not friday's window", at("Fri 2026-11-06 03:00"), mbit(400)},
		{"whole day", at("Sun 2026-11-08 15:00"), mbit(1)},
		{"other zone, same instant", at("Tue 2026-11-03 09:00").In(time.UTC), mbit(100)},
		// 07:30 UTC is 08:30 in Berlin (CET, UTC+1) in November,
		{"utc instant in berlin business hours", time.Date(2026, 11, 3, 7, 30, 0, 0, time.UTC), mbit(100)},
		// but 06:30 UTC in July is 08:30 CEST (UTC+2).
		{"summer time", time.Date(2026, 7, 7, 6, 30, 0, 0, time.UTC), mbit(100)},
		{"winter time before start", time.Date(2026, 1, 6, 6, 30, 0, 0, time.UTC), mbit(400)},
	} {
		if got := l.RateAt(tc.t); got != tc.want {
			t.Errorf("%s: RateAt(%s) = %s, want %s", tc.name, tc.t, got, tc.want)
		}
	}

	// A link's own time zone overrides the first site's.
	c2, err := ParseCluster("cluster.toml", []byte(strings.Replace(src, `rate = "400Mbit"`, "rate = \"400Mbit\"\ntimezone = \"America/New_York\"", 1)))
	if err != nil {
		t.Fatal(err)
	}
	// 09:00 in Berlin is 03:00 in New York: not business hours there.
	if got := c2.Links[0].RateAt(at("Tue 2026-11-03 09:00")); got != mbit(400) {
		t.Errorf("RateAt in New York time = %s, want 400Mbit", got)
	}
}
