package recovery

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

func TestChoosePoint(t *testing.T) {
	t.Parallel()
	at := func(m int) time.Time { return time.Date(2026, 12, 7, 9, m, 0, 0, time.UTC) }
	var pts []blockstore.Point
	for i := 1; i <= 9; i++ {
		pts = append(pts, blockstore.Point{ID: "p" + string(rune('0'+i)) + "aaaaaaaaaa", Time: at(i)})
	}
	id := func(i int) string { return pts[i-1].ID }
	suspect := func(i int, cleared string) catalog.PointMark {
		return catalog.PointMark{Service: "erp", Point: id(i), Time: at(i), Suspect: &catalog.Suspicion{Volume: "erp/data",
			Changed: 0.62, Incompressible: 0.99, BaselineChanged: 0.01, BaselineIncompressible: 0.2, Cleared: cleared}}
	}
	damaged := func(i int, site string) catalog.PointMark {
		return catalog.PointMark{Service: "erp", Point: id(i), Time: at(i), Damaged: map[string]string{site: "erp/data bytes 0-65535"}}
	}
	verified := func(i int, result string) catalog.PointMark {
		return catalog.PointMark{Service: "erp", Point: id(i), Time: at(i), Verified: &catalog.Verification{Result: result, Site: "dc2", At: at(i)}}
	}
	for _, c := range []struct {
		name     string
		marks    []catalog.PointMark
		verified bool
		want     int      // the point chosen (1-9), 0 = none
		passed   []string // why, newest first
	}{
		{"no marks: the newest", nil, false, 9, nil},
		{"suspect point and those after it", []catalog.PointMark{suspect(7, "")}, false, 6,
			[]string{"after suspect point p7aaaaaa", "suspect: erp/data: 62% of blocks changed, 99% incompressible (baseline 1%, 20%)"}},
		{"an attack over two points", []catalog.PointMark{suspect(5, ""), suspect(6, "")}, false, 4,
			[]string{"after suspect point p5aaaaaa", "suspect: erp/data", "suspect: erp/data"}},
		{"a cleared suspicion", []catalog.PointMark{suspect(7, "alice")}, false, 9, nil},
		{"damaged here", []catalog.PointMark{damaged(9, "dc2"), damaged(8, "dc2")}, false, 7,
			[]string{"damaged at dc2: erp/data bytes 0-65535", "damaged at dc2"}},
		{"damaged at another site only", []catalog.PointMark{damaged(9, "dc1")}, false, 9, nil},
		{"require verified", []catalog.PointMark{verified(8, catalog.VerifyFailed), verified(6, catalog.VerifyOK)}, true, 6,
			[]string{"not verified", "verified failed at dc2, not ok", "not verified"}},
		{"verified ignored when not required", []catalog.PointMark{verified(9, catalog.VerifyFailed)}, false, 9, nil},
		{"nothing worth having", []catalog.PointMark{suspect(1, "")}, false, 0, []string{"after suspect point p1aaaaaa", "suspect"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := &catalog.ServiceState{Marks: c.marks}
			ch, err := choosePoint(pts, st, "dc2", c.verified)
			if c.want == 0 {
				if !errors.Is(err, blockstore.ErrNotFound) || !strings.Contains(err.Error(), "--at") {
					t.Fatalf("choosePoint = %s, %v: want ErrNotFound naming --at", ch.point.ID, err)
				}
			} else if err != nil || ch.point.ID != id(c.want) {
				t.Fatalf("choosePoint = %s, %v: want %s", ch.point.ID, err, id(c.want))
			}
			if len(ch.passed) != len(c.passed) {
				t.Fatalf("passed over %s, want %d entries", api.PassedText(ch.passed), len(c.passed))
			}
			for i, why := range c.passed {
				if !strings.HasPrefix(ch.passed[i].Why, why) {
					t.Errorf("passed[%d] = %+v, want why %q", i, ch.passed[i], why)
				}
			}
		})
	}
}

func TestChoosePointRunIsOneEntry(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	var pts []blockstore.Point
	for i := range 100 {
		pts = append(pts, blockstore.Point{ID: "point-" + string(rune('A'+i/26)) + string(rune('a'+i%26)), Time: base.Add(time.Duration(i) * time.Second)})
	}
	st := &catalog.ServiceState{Marks: []catalog.PointMark{{Service: "erp", Point: pts[50].ID, Time: pts[50].Time,
		Suspect: &catalog.Suspicion{Volume: "erp/data", Changed: 0.7, Incompressible: 1}}}}
	ch, err := choosePoint(pts, st, "dc2", false)
	if err != nil || ch.point.ID != pts[49].ID {
		t.Fatalf("choosePoint = %s, %v: want %s", ch.point.ID, err, pts[49].ID)
	}
	if len(ch.passed) != 2 || ch.passed[0].Count != 49 || ch.passed[0].Point != pts[51].ID || ch.passed[0].After != pts[50].ID {
		t.Fatalf("passed over %+v: want one run of 49 points from %s, then the suspect point", ch.passed, pts[51].ID)
	}
	if got := api.PassedText(ch.passed); !strings.HasPrefix(got, "49 points from point-Bz on (after suspect point point-By)") {
		t.Errorf("text %q", got)
	}
}

func TestAtWarning(t *testing.T) {
	t.Parallel()
	p := blockstore.Point{ID: "0123456789abcdef", Time: time.Unix(100, 0)}
	st := &catalog.ServiceState{Marks: []catalog.PointMark{{Service: "erp", Point: p.ID, Time: p.Time, Suspect: &catalog.Suspicion{Volume: "erp/data", Changed: 0.5, Incompressible: 0.9}}}}
	if w := atWarning(p, st, "dc2", false); !strings.Contains(w, "0123456789ab, named by --at, is suspect: erp/data: 50% of blocks changed") {
		t.Errorf("warning %q", w)
	}
	if w := atWarning(p, &catalog.ServiceState{}, "dc2", false); w != "" {
		t.Errorf("warning %q for a clean point", w)
	}
}
