package config

import (
	"fmt"
	"reflect"
	"time"
)

// Agent is an agent file: one `lifeboat agent` on a protected server.
// doc.go describes every key. Every key is also a flag of `agent run`.
type Agent struct {
	Name     string   `toml:"name" json:"name"`
	Service  string   `toml:"service" json:"service"`
	Node     string   `toml:"node" json:"node"`       // QUIC address of a node at the agent's site
	TLSDir   string   `toml:"tls_dir" json:"tls_dir"` // what `lifeboat ca issue --agent --out` wrote
	Spool    string   `toml:"spool" json:"spool"`     // state directory
	Mode     string   `toml:"mode" json:"mode"`       // scan or intercept
	Interval Duration `toml:"interval" json:"interval"`
	ReadRate Rate     `toml:"read_rate" json:"read_rate"`
	Mount    string   `toml:"mount" json:"mount"`
	Ack      string   `toml:"ack" json:"ack"`
	SpoolMax Size     `toml:"spool_max" json:"spool_max"`
	LogLevel string   `toml:"log_level" json:"log_level"`
	// Hooks for application-consistent points, run with sh -c.
	PreHook     string        `toml:"pre_hook" json:"pre_hook"`
	PostHook    string        `toml:"post_hook" json:"post_hook"`
	HookTimeout Duration      `toml:"hook_timeout" json:"hook_timeout"`
	Volumes     []AgentVolume `toml:"volume" json:"volumes"`
}

// AgentVolume is a volume an agent protects.
type AgentVolume struct {
	Name string `toml:"name" json:"name"`
	Path string `toml:"path" json:"path"`
}

// Agent defaults.
const (
	DefaultAgentMode     = "scan"
	DefaultAgentInterval = Duration(30 * time.Second)
	DefaultReadRate      = Rate(200 << 20)
	DefaultAck           = "async"
	DefaultSpoolMax      = Size(1 << 30)
)

// LoadAgent reads, parses and validates the agent file at path.
func LoadAgent(path string) (*Agent, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseAgent(path, data)
}

// ParseAgent parses and validates an agent file; filename names it in
// errors. It applies defaults and returns every problem found.
func ParseAgent(filename string, data []byte) (*Agent, error) {
	m, lines, err := parseTOML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeAgent(filename, m, lines)
}

func decodeAgent(filename string, m map[string]any, lines map[string]int) (*Agent, error) {
	ps := &problems{file: filename, lines: lines}
	var a Agent
	ps.decode(path{}, m, reflect.ValueOf(&a).Elem())
	a.SetDefaults()
	a.validate(ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return &a, nil
}

// SetDefaults fills every unset field with its default.
func (a *Agent) SetDefaults() {
	if a.Mode == "" {
		a.Mode = DefaultAgentMode
	}
	if a.Interval == 0 {
		a.Interval = DefaultAgentInterval
	}
	if a.ReadRate == 0 {
		a.ReadRate = DefaultReadRate
	}
	if a.Ack == "" {
		a.Ack = DefaultAck
	}
	if a.SpoolMax == 0 {
		a.SpoolMax = DefaultSpoolMax
	}
	if a.LogLevel == "" {
		a.LogLevel = DefaultLogLevel
	}
	if a.HookTimeout == 0 {
		a.HookTimeout = Duration(time.Minute)
	}
}

// Validate checks every field and returns every problem.
func (a *Agent) Validate() error {
	ps := &problems{}
	a.validate(ps)
	return ps.err()
}

func (a *Agent) validate(ps *problems) {
	root := path{}
	checkName(ps, root.key("name"), a.Name, "agent", "web1")
	checkName(ps, root.key("service"), a.Service, "service", "erp")
	if err := checkHostPort(a.Node); err != nil {
		ps.addErr(root.key("node"), err)
	}
	if a.TLSDir == "" {
		ps.add(root.key("tls_dir"), "missing: want the directory `lifeboat ca issue --agent --out` wrote")
	}
	if a.Spool == "" {
		ps.add(root.key("spool"), `missing: want the agent's state directory, like "/var/lib/lifeboat-agent"`)
	}
	switch a.Mode {
	case "scan", "intercept":
	default:
		ps.add(root.key("mode"), "%q: want scan or intercept", a.Mode)
	}
	if a.Mode == "intercept" && a.Mount == "" {
		ps.add(root.key("mount"), "missing: intercept mode needs the directory where the volumes appear as files")
	}
	switch a.Ack {
	case "async", "sync":
	default:
		ps.add(root.key("ack"), "%q: want async or sync", a.Ack)
	}
	if a.Interval < Duration(time.Second) {
		ps.add(root.key("interval"), "%s: want at least 1s", a.Interval)
	}
	if a.SpoolMax < 1<<20 {
		ps.add(root.key("spool_max"), "%s: want at least 1MiB", a.SpoolMax)
	}
	if a.HookTimeout < Duration(time.Second) {
		ps.add(root.key("hook_timeout"), "%s: want at least 1s", a.HookTimeout)
	}
	if len(a.Volumes) == 0 {
		ps.add(root.key("volume"), `missing: want at least one [[volume]] with name and path`)
	}
	seen := map[string]bool{}
	for i, v := range a.Volumes {
		p := root.key("volume").elem(i, v.Name)
		checkName(ps, p.key("name"), v.Name, "volume", "data")
		if v.Path == "" {
			ps.add(p.key("path"), `missing: want the image file or block device, like "/dev/vg0/data"`)
		}
		if seen[v.Name] && v.Name != "" {
			ps.add(p.key("name"), "%q: listed twice", v.Name)
		}
		seen[v.Name] = true
	}
}

// Summary describes the agent file for `lifeboat config check`.
func (a *Agent) Summary() string {
	return summary(fmt.Sprintf("agent %s of service %s (%s mode)", a.Name, a.Service, a.Mode), func(row func(k, v string)) {
		row("node", a.Node)
		row("tls dir", a.TLSDir)
		row("spool", a.Spool)
		if a.Mode == "scan" {
			row("interval", a.Interval.String())
			row("read rate", a.ReadRate.String())
		} else {
			row("mount", a.Mount)
			row("ack", a.Ack)
			row("spool max", a.SpoolMax.String())
			row("interval", a.Interval.String()+" (longest time without a point)")
		}
		for _, v := range a.Volumes {
			row("volume "+v.Name, v.Path)
		}
	})
}
