package mesh

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

func validBegin() ReplBegin {
	return ReplBegin{Base: "0123456789abcdef", Point: blockstore.Point{
		ID: "fedcba9876543210", Name: "web1/3", Group: "web", Time: time.Unix(1700000000, 0).UTC(),
		Volumes: []blockstore.VolumeState{
			{Name: "web/a", Root: testID(1), Size: 1 << 20, BlockSize: 64 << 10, Used: 16},
			{Name: "web/b", Size: 4096, BlockSize: 4096},
		},
	}}
}

// TestReplBeginChecks: a ReplBegin that decodes is one the receiver can
// act on; each broken field is named.
func TestReplBeginChecks(t *testing.T) {
	good, _ := json.Marshal(validBegin())
	if _, err := DecodeReplBegin(good); err != nil {
		t.Fatalf("valid begin: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*ReplBegin)
	}{
		{"bad base", "base", func(b *ReplBegin) { b.Base = "XYZ" }},
		{"bad id", "point ID", func(b *ReplBegin) { b.Point.ID = "" }},
		{"no volumes", "volumes", func(b *ReplBegin) { b.Point.Volumes = nil }},
		{"unsorted volumes", "not after", func(b *ReplBegin) { b.Point.Volumes[0], b.Point.Volumes[1] = b.Point.Volumes[1], b.Point.Volumes[0] }},
		{"block size", "block size", func(b *ReplBegin) { b.Point.Volumes[0].BlockSize = 3000 }},
		{"used past size", "used blocks", func(b *ReplBegin) { b.Point.Volumes[0].Used = 17 }},
		{"zero time", "time", func(b *ReplBegin) { b.Point.Time = time.Time{} }},
	} {
		b := validBegin()
		tc.edit(&b)
		p, _ := json.Marshal(b)
		_, err := DecodeReplBegin(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	for _, p := range []string{`{"version":2,"service":"s","site":"dc1","tier":"hot"}`, `{"version":1,"service":"s","site":"dc1","tier":"lukewarm"}`, `{"version":1,"service":"s/x","site":"dc1","tier":"hot"}`,
		`{"version":1,"site":"dc1","tier":"hot","repair":true}`, `{"version":1,"site":"dc1","fetch":true,"repair":true}`, `{"version":1,"service":"a/b","site":"dc1","repair":true}`} {
		if _, err := DecodeReplHello([]byte(p)); err == nil {
			t.Errorf("hello %s decoded", p)
		}
	}
}

func FuzzReplDecoders(f *testing.F) {
	good, _ := json.Marshal(validBegin())
	f.Add(byte(0), []byte(`{"version":1,"service":"s","site":"dc1","tier":"warm"}`))
	f.Add(byte(0), []byte(`{"version":1,"site":"dc1","repair":true}`))
	f.Add(byte(1), []byte(`{"node":"n","points":["0123456789abcdef"]}`))
	f.Add(byte(2), good)
	f.Add(byte(3), []byte(`{"point":"0123456789abcdef","time":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, which byte, p []byte) {
		switch which % 4 {
		case 0:
			if h, err := DecodeReplHello(p); err == nil && ((!ValidName(h.Service) && !(h.Repair && h.Service == "")) || h.Version != ReplVersion || (h.Repair && (h.Fetch || h.Tier != ""))) {
				t.Fatalf("accepted hello %+v", h)
			}
		case 1:
			if w, err := DecodeReplWelcome(p); err == nil && len(w.Points) > MaxWelcomePoints {
				t.Fatalf("accepted %d points", len(w.Points))
			}
		case 2:
			b, err := DecodeReplBegin(p)
			if err != nil {
				return
			}
			for _, v := range b.Point.Volumes {
				if v.BlockSize <= 0 || v.Size <= 0 || v.Used < 0 {
					t.Fatalf("accepted volume %+v", v)
				}
			}
		case 3:
			DecodeReplCommitted(p)
		}
	})
}
