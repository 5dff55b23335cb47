package archive

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// retentionTimes are export times, newest first, and the clock: a
// Tuesday noon (ISO week 11 of 2026 starts Monday 9 March).
var (
	retentionNow   = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	retentionTimes = []time.Time{
		time.Date(2026, 3, 10, 11, 50, 0, 0, time.UTC), // 0: 10m
		time.Date(2026, 3, 10, 11, 20, 0, 0, time.UTC), // 1: 40m, same hour
		time.Date(2026, 3, 10, 10, 50, 0, 0, time.UTC), // 2: 1h10m
		time.Date(2026, 3, 10, 10, 40, 0, 0, time.UTC), // 3: 1h20m, same hour
		time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC),   // 4: 3h
		time.Date(2026, 3, 9, 11, 0, 0, 0, time.UTC),   // 5: 25h, Monday
		time.Date(2026, 3, 9, 10, 0, 0, 0, time.UTC),   // 6: 26h, same day
		time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC),   // 7: 3d, Saturday of week 10
		time.Date(2026, 3, 7, 11, 0, 0, 0, time.UTC),   // 8: 3d1h, same day
		time.Date(2026, 2, 28, 12, 0, 0, 0, time.UTC),  // 9: 10d, week 9
		time.Date(2026, 2, 18, 12, 0, 0, 0, time.UTC),  // 10: 20d, week 8
		time.Date(2026, 1, 9, 12, 0, 0, 0, time.UTC),   // 11: 60d
	}
)

func kept(keep []bool) []int {
	var out []int
	for i, k := range keep {
		if k {
			out = append(out, i)
		}
	}
	return out
}

func TestRetentionKeep(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name string
		r    Retention
		want []int
	}{
		{"nothing but the newest", Retention{}, []int{0}},
		{"keep last 3", Retention{KeepLast: 3}, []int{0, 1, 2}},
		{"all of the last hour", Retention{All: time.Hour}, []int{0, 1}},
		{"hourly for 4h", Retention{Hourly: 4 * time.Hour}, []int{0, 2, 4}},
		{"daily for a week", Retention{Daily: 7 * day}, []int{0, 5, 7}},
		{"weekly for 30 days", Retention{Weekly: 30 * day}, []int{0, 7, 9, 10}},
		{"locked for 2h", Retention{Lock: 2 * time.Hour}, []int{0, 1, 2, 3}},
		{"the config default", Retention{KeepLast: 1, All: day, Hourly: 7 * day, Daily: 30 * day}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		if got := kept(tc.r.Keep(retentionTimes, retentionNow)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: keeps %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := (Retention{KeepLast: -1}).Validate(); err == nil {
		t.Error("negative retention validates")
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	dir := t.TempDir()
	var all []string
	for i, at := range retentionTimes {
		p := commit(t, s, "erp", at, image{"db", sparseImage(uint64(i), 8192, 4096, 1), 4096})
		m, err := Export(t.Context(), s, p, dir, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, m.DirName())
	}
	o := Options{Logger: testLogger(t), Now: func() time.Time { return retentionNow }}
	names := func() []string {
		l, err := List(dir, "erp")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range l {
			out = append(out, e.Name)
		}
		return out
	}
	if got := names(); !slices.Equal(got, all) {
		t.Fatalf("list %v, want %v (newest first)", got, all)
	}
	removed, err := Prune(dir, "erp", Retention{Daily: 7 * 24 * time.Hour, Lock: 30 * time.Minute}, o)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{all[0], all[5], all[7]}; !slices.Equal(names(), want) {
		t.Fatalf("after prune: %v, want %v", names(), want)
	}
	if len(removed) != len(all)-3 {
		t.Fatalf("prune reports %d removed, want %d", len(removed), len(all)-3)
	}
	for _, e := range removed {
		if _, err := os.Stat(e.Path); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", e.Path, err)
		}
	}
	// Keeping nothing by rule still keeps the newest.
	if _, err := Prune(dir, "erp", Retention{}, o); err != nil {
		t.Fatal(err)
	}
	if want := []string{all[0]}; !slices.Equal(names(), want) {
		t.Fatalf("after prune to nothing: %v, want %v", names(), want)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "erp"))
	if len(entries) != 2 { // .lock and the newest export
		t.Fatalf("service directory holds %d entries, want 2", len(entries))
	}
	if _, err := Verify(filepath.Join(dir, "erp", all[0])); err != nil {
		t.Fatalf("the kept export: %v", err)
	}
	if _, err := Prune(dir, "mail", Retention{}, o); err != nil {
		t.Fatalf("prune of a service without exports: %v", err)
	}
}
