package config

import (
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/ladder"
	"github.com/lifeboat-dr/lifeboat/internal/units"
)

// Cluster is a cluster policy file: the sites, the links between them and
// the services to protect. doc.go describes every key. It is stored in the
// raft catalog as JSON and comes back equal.
type Cluster struct {
	Sites    []Site    `toml:"site" json:"sites"`
	Links    []Link    `toml:"link" json:"links"`
	Services []Service `toml:"service" json:"services"`
	Audit    Audit     `toml:"audit" json:"audit"`
	// Approvals is how many different admins must agree before a policy
	// that adds or changes a hook, or shortens a retention lock, takes
	// effect: 1 (the default) or 2 (four-eyes).
	Approvals int `toml:"approvals" json:"approvals"`
}

// Audit says how long the cluster keeps its audit log.
type Audit struct {
	Keep       Duration `toml:"keep" json:"keep"`               // default 365d
	MaxEntries int      `toml:"max_entries" json:"max_entries"` // default 100000
}

// Audit log defaults.
const (
	DefaultAuditKeep       = Duration(365 * 24 * time.Hour)
	DefaultAuditMaxEntries = 100000
)

// Site is a data center, room or cloud region.
type Site struct {
	Name       string `toml:"name" json:"name"`
	Timezone   string `toml:"timezone" json:"timezone"`       // IANA name; default "UTC"
	ArchiveDir string `toml:"archive_dir" json:"archive_dir"` // where cold exports go; "" = none
	// Encrypt makes the site's nodes keep their stores encrypted at rest
	// (each node's file names its key-encryption key).
	Encrypt bool `toml:"encrypt" json:"encrypt"`
	// Scrub is the time one full read-back of each node's store at the
	// site takes (the scrub's pace); ScrubRate caps its reads.
	Scrub     Duration `toml:"scrub" json:"scrub"`           // default 7d
	ScrubRate Rate     `toml:"scrub_rate" json:"scrub_rate"` // default 16MiB/s
}

// Scrub defaults.
const (
	DefaultScrub     = Duration(7 * 24 * time.Hour)
	DefaultScrubRate = Rate(16 << 20)
)

// Link is the WAN path between two sites and its bandwidth policy.
type Link struct {
	Between  [2]string      `toml:"between" json:"between"`
	Rate     Rate           `toml:"rate" json:"rate"`         // default unlimited
	Coalesce Duration       `toml:"coalesce" json:"coalesce"` // default 0, off
	Timezone string         `toml:"timezone" json:"timezone"` // of Schedule; default the first site's
	Schedule []LinkSchedule `toml:"schedule" json:"schedule"`
}

// LinkSchedule overrides a link's rate at some times of some days.
type LinkSchedule struct {
	Days  Days   `toml:"days" json:"days"`   // default every day
	Hours Window `toml:"hours" json:"hours"` // default the whole day
	Rate  Rate   `toml:"rate,required" json:"rate"`
}

// Tier is how ready a recovery copy is.
type Tier string

// The tiers, from cheapest to fastest to recover.
const (
	TierCold Tier = "cold"
	TierWarm Tier = "warm"
	TierHot  Tier = "hot"
)

// Tiers lists the valid tiers.
var Tiers = []Tier{TierCold, TierWarm, TierHot}

// Export is the image format a cold copy exports to its site's archive_dir.
type Export string

// The export formats.
const (
	ExportNone  Export = "none"
	ExportRaw   Export = "raw"
	ExportQCOW2 Export = "qcow2"
	ExportVHDX  Export = "vhdx"
)

// Exports lists the valid export formats.
var Exports = []Export{ExportNone, ExportRaw, ExportQCOW2, ExportVHDX}

// Service is what the business cares about: servers with volumes, a
// primary site, and copies at recovery sites.
type Service struct {
	Name    string   `toml:"name" json:"name"`
	Primary string   `toml:"primary" json:"primary"`
	RPO     Duration `toml:"rpo" json:"rpo"` // target; 0 = none
	// Priority orders services when a node runs short of disk: the lowest
	// stop taking new points first. Default 0; higher is more important.
	Priority  int       `toml:"priority" json:"priority,omitempty"`
	Hooks     Hooks     `toml:"hooks" json:"hooks"`
	Retention Retention `toml:"retention" json:"retention"` // at the primary; default DefaultRetention
	Suspect   Suspect   `toml:"suspect" json:"suspect"`     // the ransomware signal's thresholds (trust.go)
	Servers   []Server  `toml:"server" json:"servers"`
	Copies    []Copy    `toml:"copy" json:"copies"`
	Verify    Verify    `toml:"verify" json:"verify,omitzero"` // verified points (verify.go)
}

// Hooks are the commands that start, stop and check a service's servers.
type Hooks struct {
	Start   string   `toml:"start" json:"start"`
	Stop    string   `toml:"stop" json:"stop"`
	Health  string   `toml:"health" json:"health"`
	Drill   string   `toml:"drill" json:"drill"`     // run by `lifeboat drill` on the node; default the health hook
	Timeout Duration `toml:"timeout" json:"timeout"` // per hook run; default 60s
}

// DefaultHookTimeout is how long a hook may run when hooks.timeout is unset.
const DefaultHookTimeout = Duration(time.Minute)

// Server is one protected server of a service.
type Server struct {
	Name    string   `toml:"name" json:"name"`
	Volumes []Volume `toml:"volume" json:"volumes"`
}

// Volume is a block device or disk image of a server.
type Volume struct {
	Name      string `toml:"name" json:"name"`
	Path      string `toml:"path" json:"path"`             // on the server
	Size      Size   `toml:"size" json:"size"`             // a multiple of BlockSize
	BlockSize Size   `toml:"block_size" json:"block_size"` // default 64KiB
}

// Block sizes.
const (
	DefaultBlockSize Size = 64 << 10
	MinBlockSize     Size = 4 << 10
	MaxBlockSize     Size = 1 << 20
)

// Copy is a service's copy at a recovery site.
type Copy struct {
	Site      string    `toml:"site" json:"site"`
	Tier      Tier      `toml:"tier" json:"tier"`
	Schedule  Cadence   `toml:"schedule" json:"schedule"`   // cold only, required there
	Export    Export    `toml:"export" json:"export"`       // cold only; default none
	Retention Retention `toml:"retention" json:"retention"` // default the service's
}

// Retention says which points a site keeps: the newest KeepLast, every
// point younger than All, one an hour younger than Hourly, one a day
// younger than Daily, one a week younger than Weekly, one a month younger
// than Monthly, one a year younger than Yearly (hours to years in the
// site's time zone). A point is locked for Lock from when it is recorded:
// nothing deletes it before. Zero fields keep nothing by that rule.
type Retention struct {
	KeepLast int      `toml:"keep_last" json:"keep_last"`
	All      Duration `toml:"all" json:"all"`
	Hourly   Duration `toml:"hourly" json:"hourly"`
	Daily    Duration `toml:"daily" json:"daily"`
	Weekly   Duration `toml:"weekly" json:"weekly"`
	Monthly  Duration `toml:"monthly" json:"monthly,omitempty"`
	Yearly   Duration `toml:"yearly" json:"yearly,omitempty"`
	Lock     Duration `toml:"lock" json:"lock"`
}

// Ladder returns r's keep rules with days in loc.
func (r Retention) Ladder(loc *time.Location) ladder.Rules {
	return ladder.Rules{KeepLast: r.KeepLast, All: time.Duration(r.All), Hourly: time.Duration(r.Hourly),
		Daily: time.Duration(r.Daily), Weekly: time.Duration(r.Weekly), Monthly: time.Duration(r.Monthly),
		Yearly: time.Duration(r.Yearly), Location: loc}
}

// DefaultRetention applies where no retention table is given.
var DefaultRetention = Retention{
	KeepLast: 1,
	All:      Duration(24 * time.Hour),
	Hourly:   Duration(7 * 24 * time.Hour),
	Daily:    Duration(30 * 24 * time.Hour),
}

// LoadCluster reads, parses and validates the cluster policy file at path.
func LoadCluster(path string) (*Cluster, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCluster(path, data)
}

// ParseCluster parses and validates a cluster policy; filename names it in
// errors. It applies defaults and returns every problem found.
func ParseCluster(filename string, data []byte) (*Cluster, error) {
	m, lines, err := parseTOML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeCluster(filename, m, lines)
}

func decodeCluster(filename string, m map[string]any, lines map[string]int) (*Cluster, error) {
	ps := &problems{file: filename, lines: lines}
	var c Cluster
	ps.decode(path{}, m, reflect.ValueOf(&c).Elem())
	c.SetDefaults()
	c.validate(ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills every unset field with its default.
func (c *Cluster) SetDefaults() {
	if c.Approvals == 0 {
		c.Approvals = 1
	}
	if c.Audit.Keep == 0 {
		c.Audit.Keep = DefaultAuditKeep
	}
	if c.Audit.MaxEntries == 0 {
		c.Audit.MaxEntries = DefaultAuditMaxEntries
	}
	for i := range c.Sites {
		if c.Sites[i].Timezone == "" {
			c.Sites[i].Timezone = "UTC"
		}
		if c.Sites[i].Scrub == 0 {
			c.Sites[i].Scrub = DefaultScrub
		}
		if c.Sites[i].ScrubRate == 0 {
			c.Sites[i].ScrubRate = DefaultScrubRate
		}
	}
	for i := range c.Links {
		l := &c.Links[i]
		if l.Timezone == "" {
			if s := c.Site(l.Between[0]); s != nil {
				l.Timezone = s.Timezone
			}
		}
	}
	for i := range c.Services {
		s := &c.Services[i]
		if s.Hooks.Timeout == 0 {
			s.Hooks.Timeout = DefaultHookTimeout
		}
		if s.Retention == (Retention{}) {
			s.Retention = DefaultRetention
		}
		s.Suspect.defaults()
		s.Verify.setDefaults()
		for j := range s.Servers {
			for k := range s.Servers[j].Volumes {
				if v := &s.Servers[j].Volumes[k]; v.BlockSize == 0 {
					v.BlockSize = DefaultBlockSize
				}
			}
		}
		for j := range s.Copies {
			cp := &s.Copies[j]
			if cp.Retention == (Retention{}) {
				cp.Retention = s.Retention
			}
			if cp.Export == "" && cp.Tier == TierCold {
				cp.Export = ExportNone
			}
		}
	}
}

// Validate checks every field and cross-reference and returns every
// problem, each an *Error naming the key without a file or line.
func (c *Cluster) Validate() error {
	ps := &problems{}
	c.validate(ps)
	return ps.err()
}

// Paths of the elements of a cluster, as decode names them.
func sitePath(i int, s *Site) path { return path{}.key("site").elem(i, s.Name) }
func linkPath(i int, l *Link) path {
	lb := ""
	if validName(l.Between[0]) && validName(l.Between[1]) {
		lb = l.Between[0] + "-" + l.Between[1]
	}
	return path{}.key("link").elem(i, lb)
}
func servicePath(i int, s *Service) path { return path{}.key("service").elem(i, s.Name) }

// firstAt says where a name was first defined, for duplicate errors.
func (ps *problems) firstAt(p path) string {
	if l := ps.line(p.idx); l > 0 {
		return fmt.Sprintf(" (first at line %d)", l)
	}
	return ""
}

func (c *Cluster) validate(ps *problems) {
	if c.Approvals < 1 || c.Approvals > 2 {
		ps.add(path{}.key("approvals"), "%d: want 1, or 2 for a second admin's approval of hook and lock changes", c.Approvals)
	}
	if c.Audit.Keep < 0 {
		ps.add(path{}.key("audit").key("keep"), "%s: want a positive duration, like \"365d\"", c.Audit.Keep)
	}
	if c.Audit.MaxEntries < 0 {
		ps.add(path{}.key("audit").key("max_entries"), "%d: want a positive number", c.Audit.MaxEntries)
	}
	if len(c.Sites) == 0 {
		ps.add(path{}.key("site"), `missing: want at least one [[site]] with a name, like name = "dc1"`)
	}
	sites := map[string]path{}
	for i := range c.Sites {
		s := &c.Sites[i]
		p := sitePath(i, s)
		checkName(ps, p.key("name"), s.Name, "site", "dc1")
		if first, dup := sites[s.Name]; dup && s.Name != "" {
			ps.add(p.key("name"), "%q: site defined twice%s", s.Name, ps.firstAt(first.key("name")))
		} else {
			sites[s.Name] = p
		}
		if _, err := loadLocation(s.Timezone); err != nil {
			ps.addErr(p.key("timezone"), err)
		}
		if s.ArchiveDir != "" && !filepath.IsAbs(s.ArchiveDir) {
			ps.add(p.key("archive_dir"), "%s: want an absolute path, like \"/srv/lifeboat/archive\"", quote(s.ArchiveDir))
		}
		if s.Scrub < 0 {
			ps.add(p.key("scrub"), "%s: want a positive duration, like \"7d\"", s.Scrub)
		} else if s.Scrub > 0 && s.Scrub < Duration(time.Minute) {
			ps.add(p.key("scrub"), "%s: want a minute or more (a full read-back of the store takes at least that)", s.Scrub)
		}
		checkRate(ps, p.key("scrub_rate"), s.ScrubRate)
	}
	siteWant := func() string {
		names := make([]string, 0, len(c.Sites))
		for _, s := range c.Sites {
			if validName(s.Name) && !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
		}
		if len(names) == 0 {
			return "no [[site]] is defined"
		}
		return "want a site defined by [[site]]: " + strings.Join(names, ", ")
	}
	checkSite := func(p path, name string) bool {
		if name == "" {
			ps.add(p, "missing: %s", siteWant())
			return false
		}
		if _, ok := sites[name]; !ok {
			ps.add(p, "%s: no such site: %s", quote(name), siteWant())
			return false
		}
		return true
	}

	pairs := map[[2]string]path{}
	for i := range c.Links {
		l := &c.Links[i]
		p := linkPath(i, l)
		ok0 := checkSite(p.key("between").elem(0, ""), l.Between[0])
		ok1 := checkSite(p.key("between").elem(1, ""), l.Between[1])
		if ok0 && ok1 {
			pair := l.Between
			if pair[0] > pair[1] {
				pair[0], pair[1] = pair[1], pair[0]
			}
			if pair[0] == pair[1] {
				ps.add(p.key("between"), "[%q, %q]: want two different sites", l.Between[0], l.Between[1])
			} else if first, dup := pairs[pair]; dup {
				ps.add(p.key("between"), "[%q, %q]: link defined twice%s", l.Between[0], l.Between[1], ps.firstAt(first.key("between")))
			} else {
				pairs[pair] = p
			}
		}
		checkRate(ps, p.key("rate"), l.Rate)
		if l.Coalesce < 0 {
			ps.add(p.key("coalesce"), "%s: want 0 (off) or a positive duration, like \"30s\"", l.Coalesce)
		}
		if s := c.Site(l.Between[0]); s == nil || l.Timezone != s.Timezone {
			// The default, the first site's time zone, is checked there.
			if _, err := loadLocation(l.Timezone); err != nil {
				ps.addErr(p.key("timezone"), err)
			}
		}
		for j := range l.Schedule {
			checkRate(ps, p.key("schedule").elem(j, "").key("rate"), l.Schedule[j].Rate)
		}
	}

	services := map[string]path{}
	for i := range c.Services {
		s := &c.Services[i]
		p := servicePath(i, s)
		checkName(ps, p.key("name"), s.Name, "service", "erp")
		if first, dup := services[s.Name]; dup && s.Name != "" {
			ps.add(p.key("name"), "%q: service defined twice%s", s.Name, ps.firstAt(first.key("name")))
		} else {
			services[s.Name] = p
		}
		checkSite(p.key("primary"), s.Primary)
		if s.RPO < 0 {
			ps.add(p.key("rpo"), "%s: want a positive duration, like \"30s\"", s.RPO)
		}
		if s.Hooks.Timeout <= 0 {
			ps.add(p.key("hooks").key("timeout"), "%s: want a positive duration, like \"60s\"", s.Hooks.Timeout)
		}
		checkRetention(ps, p.key("retention"), s.Retention)
		checkSuspect(ps, p.key("suspect"), s.Suspect)
		c.validateServers(ps, p, s)
		validateVerify(ps, p, s)
		copies := map[string]path{}
		for j := range s.Copies {
			cp := &s.Copies[j]
			cpp := p.key("copy").elem(j, cp.Site)
			if checkSite(cpp.key("site"), cp.Site) {
				if first, dup := copies[cp.Site]; dup {
					ps.add(cpp.key("site"), "%q: a second copy at this site%s: want one copy per site", cp.Site, ps.firstAt(first.key("site")))
				} else if cp.Site == s.Primary {
					ps.add(cpp.key("site"), "%q: the primary site: want a recovery site other than %q", cp.Site, s.Primary)
				}
				copies[cp.Site] = cpp
			}
			c.validateCopy(ps, cpp, cp)
		}
	}
}

// validateServers checks the servers and volumes of service s at p.
func (c *Cluster) validateServers(ps *problems, p path, s *Service) {
	if len(s.Servers) == 0 {
		ps.add(p.key("server"), "missing: want at least one [[service.server]] with a [[service.server.volume]]")
	}
	servers := map[string]path{}
	volumes := map[string]path{}
	for j := range s.Servers {
		sv := &s.Servers[j]
		svp := p.key("server").elem(j, sv.Name)
		checkName(ps, svp.key("name"), sv.Name, "server", "erp-db")
		if first, dup := servers[sv.Name]; dup && sv.Name != "" {
			ps.add(svp.key("name"), "%q: server defined twice in service %q%s", sv.Name, s.Name, ps.firstAt(first.key("name")))
		} else {
			servers[sv.Name] = svp
		}
		if len(sv.Volumes) == 0 {
			ps.add(svp.key("volume"), "missing: want at least one [[service.server.volume]] with a name, path and size")
		}
		for k := range sv.Volumes {
			v := &sv.Volumes[k]
			vp := svp.key("volume").elem(k, v.Name)
			checkName(ps, vp.key("name"), v.Name, "volume", "data")
			if first, dup := volumes[v.Name]; dup && v.Name != "" {
				ps.add(vp.key("name"), "%q: volume defined twice in service %q%s: want names unique across its servers", v.Name, s.Name, ps.firstAt(first.key("name")))
			} else {
				volumes[v.Name] = vp
			}
			switch {
			case v.Path == "":
				ps.add(vp.key("path"), `missing: want the device or image file on the server, like "/dev/vg0/erp-data"`)
			case !filepath.IsAbs(v.Path):
				ps.add(vp.key("path"), "%s: want an absolute path, like \"/dev/vg0/erp-data\"", quote(v.Path))
			}
			bs := v.BlockSize
			goodBS := bs >= MinBlockSize && bs <= MaxBlockSize && bs&(bs-1) == 0
			if !goodBS {
				ps.add(vp.key("block_size"), "%s: want a power of two from 4KiB to 1MiB (4KiB, 8KiB, ..., 64KiB, ..., 1MiB)", bs)
			}
			switch {
			case v.Size <= 0:
				ps.add(vp.key("size"), "%s: want the volume's size, like \"100GiB\", a positive multiple of block_size", v.Size)
			case goodBS && v.Size%bs != 0:
				ps.add(vp.key("size"), "%s (%d bytes): want a multiple of block_size %s", v.Size, int64(v.Size), bs)
			}
		}
	}
}

// validateCopy checks copy cp at p.
func (c *Cluster) validateCopy(ps *problems, p path, cp *Copy) {
	switch cp.Tier {
	case TierCold:
		if cp.Schedule.IsZero() {
			ps.add(p.key("schedule"), "missing: a cold copy needs one: %s", cadenceWant)
		}
		switch cp.Export {
		case ExportNone:
		case ExportRaw, ExportQCOW2, ExportVHDX:
			if s := c.Site(cp.Site); s != nil && s.ArchiveDir == "" {
				ps.add(p.key("export"), "%q: site %q has no archive_dir to export to: set one or export = \"none\"", cp.Export, cp.Site)
			}
		default:
			ps.add(p.key("export"), "%q: want one of %s", cp.Export, joinEnum(Exports))
		}
	case TierWarm, TierHot:
		if !cp.Schedule.IsZero() {
			ps.add(p.key("schedule"), "%q: only cold copies have a schedule: %s copies replicate continuously", cp.Schedule, cp.Tier)
		}
		if cp.Export != "" {
			ps.add(p.key("export"), "%q: only cold copies export images", cp.Export)
		}
	case "":
		ps.add(p.key("tier"), "missing: want one of %s", joinEnum(Tiers))
	default:
		ps.add(p.key("tier"), "%q: want one of %s", cp.Tier, joinEnum(Tiers))
	}
	checkRetention(ps, p.key("retention"), cp.Retention)
}

// checkRate records a negative or non-finite rate.
func checkRate(ps *problems, p path, r Rate) {
	if _, err := r.MarshalText(); err != nil || r < 0 {
		ps.add(p, "%s: %s", r, units.RateWant)
	}
}

// checkRetention records negative retention values.
func checkRetention(ps *problems, p path, r Retention) {
	if r.KeepLast < 0 {
		ps.add(p.key("keep_last"), "%d: want 0 or more", r.KeepLast)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"all", r.All}, {"hourly", r.Hourly}, {"daily", r.Daily}, {"weekly", r.Weekly}, {"monthly", r.Monthly}, {"yearly", r.Yearly}, {"lock", r.Lock}} {
		if d.v < 0 {
			ps.add(p.key(d.key), "%s: want 0 (off) or a positive duration, like \"30d\"", d.v)
		}
	}
	if r.Ladder(nil).Empty() && r != (Retention{}) {
		ps.add(p, "keeps no point: want keep_last of at least 1 or a positive all, hourly, daily, weekly, monthly or yearly")
	}
}

// joinEnum lists enum values for messages: "cold, warm or hot".
func joinEnum[T ~string](vs []T) string {
	var b strings.Builder
	for i, v := range vs {
		switch {
		case i == 0:
		case i == len(vs)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", string(v))
	}
	return b.String()
}

// Warnings lists what is allowed but probably a mistake: a copy at a site
// with no link to the service's primary, a service with no copy, an RPO
// target that a cold schedule or a link's coalescing window cannot meet.
func (c *Cluster) Warnings() []string {
	var w []string
	for i := range c.Services {
		s := &c.Services[i]
		p := servicePath(i, s)
		if len(s.Copies) == 0 {
			w = append(w, fmt.Sprintf("%s: no [[service.copy]]: losing site %q loses this service", p.show, s.Primary))
		}
		if s.Verify.RequireVerified && len(s.Verify.Checks) == 0 {
			w = append(w, fmt.Sprintf("%s: verify.require_verified without verify.checks: no point is verified, failover and drill need --at", p.show))
		}
		for j := range s.Copies {
			cp := &s.Copies[j]
			cpp := p.key("copy").elem(j, cp.Site)
			l := c.Link(s.Primary, cp.Site)
			if l == nil {
				w = append(w, fmt.Sprintf("%s: no [[link]] between %q and %q: replication to %s has no bandwidth policy", cpp.show, s.Primary, cp.Site, cp.Site))
			}
			if s.RPO <= 0 {
				continue
			}
			if iv := cp.Schedule.Interval(); cp.Tier == TierCold && iv > s.RPO.Std() {
				w = append(w, fmt.Sprintf("%s: rpo %s cannot be met by a cold copy %s (up to %s lost)", cpp.show, s.RPO, cp.Schedule, Duration(iv)))
			}
			if l != nil && cp.Tier != TierCold && l.Coalesce > s.RPO {
				w = append(w, fmt.Sprintf("%s: rpo %s is shorter than the coalesce window %s of link %s-%s", cpp.show, s.RPO, l.Coalesce, l.Between[0], l.Between[1]))
			}
		}
	}
	return w
}

// Site returns the site called name, or nil.
func (c *Cluster) Site(name string) *Site {
	return find(c.Sites, func(s *Site) bool { return s.Name == name })
}

// Service returns the service called name, or nil.
func (c *Cluster) Service(name string) *Service {
	return find(c.Services, func(s *Service) bool { return s.Name == name })
}

// Link returns the link between sites a and b, in either order, or nil.
func (c *Cluster) Link(a, b string) *Link {
	return find(c.Links, func(l *Link) bool { return l.Between == [2]string{a, b} || l.Between == [2]string{b, a} })
}

// find returns the first element of xs that match accepts, or nil.
func find[T any](xs []T, match func(*T) bool) *T {
	for i := range xs {
		if match(&xs[i]) {
			return &xs[i]
		}
	}
	return nil
}

// Location returns the site's time zone; UTC if it does not load (Validate
// reports that).
func (s *Site) Location() *time.Location { return locationOrUTC(s.Timezone) }

// Location returns the time zone of the link's schedules; UTC if it does
// not load (Validate reports that).
func (l *Link) Location() *time.Location { return locationOrUTC(l.Timezone) }

// locationOrUTC loads the time zone name; UTC if it does not load.
func locationOrUTC(name string) *time.Location {
	loc, err := loadLocation(name)
	if err != nil {
		return time.UTC
	}
	return loc
}

// RateAt returns the link's rate at t: the rate of the last schedule whose
// days and hours cover t's wall clock time in the link's time zone, else
// the link's own rate. A window that wraps midnight belongs to the day it
// starts on: "22:00-06:00" on fri covers Saturday 03:00, not Friday 03:00.
func (l *Link) RateAt(t time.Time) Rate {
	lt := t.In(l.Location())
	r := l.Rate
	for _, s := range l.Schedule {
		if active(s.Days, s.Hours, lt) {
			r = s.Rate
		}
	}
	return r
}

// Copy returns the service's copy at site, or nil.
func (s *Service) Copy(site string) *Copy {
	return find(s.Copies, func(c *Copy) bool { return c.Site == site })
}

// Volume returns the service's volume called name and its server, or nils.
func (s *Service) Volume(name string) (*Server, *Volume) {
	for i := range s.Servers {
		for j := range s.Servers[i].Volumes {
			if s.Servers[i].Volumes[j].Name == name {
				return &s.Servers[i], &s.Servers[i].Volumes[j]
			}
		}
	}
	return nil, nil
}

// Size returns the total size of the service's volumes, at most
// math.MaxInt64.
func (s *Service) Size() Size {
	var n Size
	for _, sv := range s.Servers {
		for _, v := range sv.Volumes {
			if v.Size > 0 {
				n += min(v.Size, math.MaxInt64-n)
			}
		}
	}
	return n
}
