package agent

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

// TestNewRefusesMissingVolume: a scan agent given a volume path that does
// not exist fails at once, naming the volume, instead of staying
// "starting" forever.
func TestNewRefusesMissingVolume(t *testing.T) {
	ca := meshtest.CA(t)
	missing := filepath.Join(t.TempDir(), "no-such-disk")
	_, err := New(Options{
		Name: "web1", Service: "web", Volumes: []Volume{{Name: "disk", Path: missing}},
		Node: "127.0.0.1:1", Creds: ca.Agent("web1", "dc1", "web"), Interval: time.Second, SpoolDir: t.TempDir(),
	})
	if err == nil || !strings.Contains(err.Error(), "volume disk") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want one naming volume disk and %s", err, missing)
	}
}
