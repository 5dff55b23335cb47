package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseVerify(t *testing.T) {
	t.Parallel()
	c, err := ParseCluster("cluster.toml", []byte(baseCluster+`
  [service.verify]
  every = "24h"
  checks = ["fsck", "boot"]
  serial_ok = "login:"
  require_verified = true
`))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Service("erp").Verify
	if v.Every.Std() != 24*time.Hour || !v.Has(CheckFsck) || !v.Has(CheckBoot) || v.Has(CheckHook) || !v.RequireVerified {
		t.Errorf("got %+v", v)
	}
	if v.Timeout != DefaultVerifyTimeout || v.Memory != DefaultVerifyMemory {
		t.Errorf("defaults: got timeout %s memory %s, want %s and %s", v.Timeout, v.Memory, DefaultVerifyTimeout, DefaultVerifyMemory)
	}
	if got := c.Service("erp").BootVolumeOf(); got != "data" {
		t.Errorf("boot volume: got %q, want the first volume data", got)
	}
}

func TestParseVerifyErrors(t *testing.T) {
	t.Parallel()
	const f = "cluster.toml"
	for _, tc := range []struct {
		name, table string
		want        []string
	}{
		{"zero every", "every = \"0s\"\n  checks = [\"fsck\"]",
			[]string{f + `:30: service.erp.verify.every: missing: want how often the newest point is verified, a positive duration like "24h"`}},
		{"negative every", "every = \"-1h\"\n  checks = [\"fsck\"]",
			[]string{f + `:30: service.erp.verify.every: -1h: want a positive duration, like "24h"`}},
		{"no every", `checks = ["fsck"]`,
			[]string{f + `:29: service.erp.verify.every: missing: want how often the newest point is verified, a positive duration like "24h"`}},
		{"unknown check", "every = \"1h\"\n  checks = [\"fsck\", \"smart\"]",
			[]string{f + `:31: service.erp.verify.checks[1]: "smart": want one of "fsck", "boot" or "hook"`}},
		{"twice", "every = \"1h\"\n  checks = [\"fsck\", \"fsck\"]",
			[]string{f + `:31: service.erp.verify.checks[1]: "fsck": listed twice`}},
		{"boot without serial", "every = \"1h\"\n  checks = [\"boot\"]",
			[]string{f + `:29: service.erp.verify.serial_ok: missing: the boot check needs the serial console line that means booted, like "login:"`}},
		{"boot volume", "every = \"1h\"\n  checks = [\"boot\"]\n  serial_ok = \"ok\"\n  boot_volume = \"root\"",
			[]string{f + `:33: service.erp.verify.boot_volume: "root": no such volume in service "erp"`}},
		{"memory", "every = \"1h\"\n  checks = [\"boot\"]\n  serial_ok = \"ok\"\n  memory = \"1MiB\"",
			[]string{f + `:33: service.erp.verify.memory: 1MiB: want the guest's memory, from 16MiB to 64GiB, like "512MiB"`}},
		{"hook missing", "every = \"1h\"\n  checks = [\"hook\"]",
			[]string{f + `:29: service.erp.verify.hook: missing: the hook check needs a command, like "/usr/local/bin/erp-probe"`}},
		{"hook not checked", "every = \"1h\"\n  checks = [\"fsck\"]\n  hook = \"/bin/true\"",
			[]string{f + `:32: service.erp.verify.hook: "/bin/true": add "hook" to checks to run it`}},
		{"every without checks", `every = "1h"`,
			[]string{f + `:29: service.erp.verify.checks: missing: every is set: want the checks to run, some of "fsck", "boot" or "hook", like checks = ["fsck", "boot"]`}},
		{"unknown key", "every = \"1h\"\n  checks = [\"fsck\"]\n  often = 1",
			[]string{f + `:32: service.erp.verify.often: unknown key: want one of boot_volume, checks, every, hook, memory, require_verified, serial_ok, timeout`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseCluster(f, []byte(baseCluster+"\n  [service.verify]\n  "+tc.table+"\n"))
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestVerifyRequireWithoutChecksWarns(t *testing.T) {
	t.Parallel()
	c, err := ParseCluster("cluster.toml", []byte(baseCluster+"\n  [service.verify]\n  require_verified = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(c.Warnings(), "\n")
	if !strings.Contains(w, "require_verified without verify.checks") {
		t.Errorf("warnings: %s", w)
	}
}
