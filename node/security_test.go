package node

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/config"
)

func TestAuditLogTrims(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var l auditLog
	pol := &config.Audit{Keep: config.Duration(48 * time.Hour), MaxEntries: 3}
	for i := range 5 {
		l.add([]AuditEntry{{Time: t0.Add(time.Duration(i) * time.Hour), Who: string(rune('a' + i))}}, pol)
	}
	if got := len(l.entries); got != 3 || l.entries[0].Who != "c" {
		t.Fatalf("after 5 entries with max 3: %d entries from %q", got, l.entries[0].Who)
	}
	l.add([]AuditEntry{{Time: t0.Add(100 * time.Hour), Who: "z"}}, pol)
	if len(l.entries) != 1 || l.entries[0].Who != "z" {
		t.Fatalf("entries older than keep remain: %+v", l.entries)
	}
}

// TestSnapshotKeepsAuditAndRevocations: a snapshot carries the audit log
// and the revocations; a version 1 snapshot (catalog only) still restores.
func TestSnapshotKeepsAuditAndRevocations(t *testing.T) {
	f := newFSM()
	for i, c := range []*Command{
		{Op: opRevoke, Revoke: []Revocation{{Serial: "ab12", Name: "mallory"}}},
		{Op: opAudit, Audit: []AuditEntry{{Time: time.Now(), Who: "alice", Action: "POST /v1/revoke", Result: "ok"}}},
	} {
		b, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(applyResult); r.err != nil {
			t.Fatal(r.err)
		}
	}
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	s.Persist(sink)
	cat, audit, err := decodeSnapshot(sink.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cat.Revoked["ab12"]; !ok || len(audit) != 1 || audit[0].Who != "alice" {
		t.Fatalf("restored revoked %v, audit %+v", cat.Revoked, audit)
	}
	v1 := append(append([]byte{}, snapshotMagicV1...), `{"nodes":{},"services":{}}`...)
	if _, _, err := decodeSnapshot(v1); err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
}

func TestSensitiveChanges(t *testing.T) {
	parse := func(extra string) *config.Cluster {
		c, err := config.ParseCluster("p.toml", []byte(`approvals = 2
[[site]]
name = "dc1"
[[service]]
name = "web"
primary = "dc1"
`+extra+`
  [[service.server]]
  name = "w"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/x"
    size = "1MiB"
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\"")
	cases := []struct {
		name string
		new  *config.Cluster
		want string
	}{
		{"same", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), ""},
		{"hook changed", parse("  [service.hooks]\n  start = \"b\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), "hooks.start"},
		{"drill hook added", parse("  [service.hooks]\n  start = \"a\"\n  drill = \"x\"\n  [service.retention]\n  keep_last = 1\n  lock = \"30d\""), "hooks.drill"},
		{"lock shortened", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"1d\""), "retention.lock"},
		{"lock lengthened", parse("  [service.hooks]\n  start = \"a\"\n  [service.retention]\n  keep_last = 1\n  lock = \"60d\""), ""},
	}
	for _, tc := range cases {
		got := strings.Join(sensitiveChanges(base, tc.new), "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: changes %q, want %q", tc.name, got, tc.want)
		}
	}
	if n := needsApprovals(base, base); n != 2 {
		t.Errorf("approvals needed %d, want 2", n)
	}
	if n := needsApprovals(nil, base); n != 1 {
		t.Errorf("first policy needs %d approvals, want 1", n)
	}
}

func TestPolicyFileName(t *testing.T) {
	for _, bad := range []string{"../../etc/shadow", "/etc/passwd", "a/b.toml", ".hidden", "x y"} {
		if _, err := policyFileName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := policyFileName("cluster.toml"); err != nil || got != "cluster.toml" {
		t.Errorf("cluster.toml: %q %v", got, err)
	}
}
