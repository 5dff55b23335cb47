package config

import (
	"slices"
	"strings"
	"time"
)

// Verify says how a service's points are proven to restore (issue 16):
// how often the node holding them at a recovery site checks the newest
// one, with which checks, and whether failover and drill take only
// verified points. Hook, like the service's hooks, is a command of the
// policy on disk: no request carries one, and changing it needs the
// policy's approvals.
type Verify struct {
	Every  Duration `toml:"every" json:"every,omitempty"`   // between verifications of the newest point; required with checks
	Checks []Check  `toml:"checks" json:"checks,omitempty"` // "fsck", "boot", "hook"
	// BootVolume is the volume the boot check starts; default the
	// service's first volume.
	BootVolume string   `toml:"boot_volume" json:"boot_volume,omitempty"`
	SerialOK   string   `toml:"serial_ok" json:"serial_ok,omitempty"` // the serial console line that means booted; required with boot
	Timeout    Duration `toml:"timeout" json:"timeout,omitempty"`     // per check; default 5m
	Memory     Size     `toml:"memory" json:"memory,omitempty"`       // the boot check's guest memory; default 256MiB
	Hook       string   `toml:"hook" json:"hook,omitempty"`           // command run against the restored images; required with the hook check
	// RequireVerified makes failover and drill take, by default, only a
	// point whose verification passed.
	RequireVerified bool `toml:"require_verified" json:"require_verified,omitempty"`
}

// Check is one kind of verification check.
type Check string

// The checks.
const (
	CheckFsck Check = "fsck" // the volumes' file systems, read-only
	CheckBoot Check = "boot" // the boot volume started in qemu
	CheckHook Check = "hook" // the service's verify hook on the images
)

// Checks lists the valid checks.
var Checks = []Check{CheckFsck, CheckBoot, CheckHook}

// Verify defaults.
const (
	DefaultVerifyTimeout = Duration(5 * time.Minute)
	DefaultVerifyMemory  = Size(256 << 20)
)

// Has says whether the check is configured.
func (v *Verify) Has(c Check) bool { return slices.Contains(v.Checks, c) }

// BootVolumeOf returns the volume the boot check starts: BootVolume, or
// the service's first volume.
func (s *Service) BootVolumeOf() string {
	if s.Verify.BootVolume != "" {
		return s.Verify.BootVolume
	}
	for _, sv := range s.Servers {
		for _, v := range sv.Volumes {
			return v.Name
		}
	}
	return ""
}

func (v *Verify) setDefaults() {
	if len(v.Checks) == 0 {
		return
	}
	if v.Timeout == 0 {
		v.Timeout = DefaultVerifyTimeout
	}
	if v.Memory == 0 && v.Has(CheckBoot) {
		v.Memory = DefaultVerifyMemory
	}
}

// validateVerify checks the service's [service.verify] at p.
func validateVerify(ps *problems, p path, s *Service) {
	v := &s.Verify
	p = p.key("verify")
	if len(v.Checks) == 0 {
		if v.Every != 0 {
			ps.add(p.key("checks"), `missing: every is set: want the checks to run, some of %s, like checks = ["fsck", "boot"]`, joinEnum(Checks))
		}
		for _, k := range []struct{ key, val string }{{"boot_volume", v.BootVolume}, {"serial_ok", v.SerialOK}, {"hook", v.Hook}} {
			if k.val != "" {
				ps.add(p.key(k.key), "%s: no checks are set: want checks = [...] with %s", quote(k.val), joinEnum(Checks))
			}
		}
		return
	}
	if v.Every <= 0 {
		if v.Every == 0 {
			ps.add(p.key("every"), `missing: want how often the newest point is verified, a positive duration like "24h"`)
		} else {
			ps.add(p.key("every"), `%s: want a positive duration, like "24h"`, v.Every)
		}
	}
	seen := map[Check]bool{}
	for i, c := range v.Checks {
		cp := p.key("checks").elem(i, "")
		switch {
		case !slices.Contains(Checks, c):
			ps.add(cp, "%q: want one of %s", c, joinEnum(Checks))
		case seen[c]:
			ps.add(cp, "%q: listed twice", c)
		}
		seen[c] = true
	}
	if v.Timeout <= 0 {
		ps.add(p.key("timeout"), `%s: want a positive duration, like "5m"`, v.Timeout)
	}
	if v.Has(CheckBoot) {
		if strings.TrimSpace(v.SerialOK) == "" {
			ps.add(p.key("serial_ok"), `missing: the boot check needs the serial console line that means booted, like "login:"`)
		}
		if v.Memory < 16<<20 || v.Memory > 64<<30 {
			ps.add(p.key("memory"), `%s: want the guest's memory, from 16MiB to 64GiB, like "512MiB"`, v.Memory)
		}
	} else if v.SerialOK != "" {
		ps.add(p.key("serial_ok"), "%s: only the boot check reads the serial console: add \"boot\" to checks", quote(v.SerialOK))
	}
	if v.BootVolume != "" {
		if _, vol := s.Volume(v.BootVolume); vol == nil {
			ps.add(p.key("boot_volume"), "%s: no such volume in service %q", quote(v.BootVolume), s.Name)
		}
	}
	switch {
	case v.Has(CheckHook) && v.Hook == "":
		ps.add(p.key("hook"), `missing: the hook check needs a command, like "/usr/local/bin/erp-probe"`)
	case !v.Has(CheckHook) && v.Hook != "":
		ps.add(p.key("hook"), "%s: add \"hook\" to checks to run it", quote(v.Hook))
	}
}
