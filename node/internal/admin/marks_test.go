package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// marksBackend is a fakeBackend whose catalog holds marks.
type marksBackend struct {
	fakeBackend
	cat *catalog.Catalog
}

func (m *marksBackend) Catalog() *catalog.Catalog { return m.cat }

func TestClearSuspect(t *testing.T) {
	t.Parallel()
	cat := catalog.New()
	cat.Services["web"] = &catalog.ServiceState{Marks: []catalog.PointMark{
		{Service: "web", Point: "aaaa1111bbbb", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.6}},
		{Service: "web", Point: "aaaa1111cccc", Suspect: &catalog.Suspicion{Volume: "web/disk", Changed: 0.7}},
		{Service: "web", Point: "dddd3333eeee", Damaged: map[string]string{"dc2": "web/disk bytes 0-4095"}},
	}}
	var sent []*catalog.Command
	s := New(Options{Backend: &marksBackend{cat: cat}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Propose: func(_ context.Context, c *catalog.Command) error { sent = append(sent, c); return nil }})
	for _, c := range []struct {
		name, service, point string
		want                 error
	}{
		{"no such point", "web", "ffffffff", blockstore.ErrNotFound},
		{"damaged, not suspect", "web", "dddd3333", blockstore.ErrNotFound},
		{"ambiguous prefix", "web", "aaaa1111", catalog.ErrBadCommand},
		{"too short", "web", "aaaa", catalog.ErrBadCommand},
		{"no service", "", "aaaa1111", catalog.ErrBadCommand},
	} {
		_, err := s.clearSuspect(t.Context(), c.service, c.point, "alice")
		if c.want != nil && !errors.Is(err, c.want) || c.want == nil && err != nil {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if len(sent) != 0 {
		t.Fatalf("%d commands proposed for refused calls", len(sent))
	}
	if _, err := s.clearSuspect(t.Context(), "web", "aaaa1111b", "alice"); err != nil || len(sent) != 1 {
		t.Fatalf("clear aaaa1111b: %v, %d commands; want one", err, len(sent))
	}
	m := sent[0].Marks[0]
	if sent[0].Op != catalog.OpMarks || m.Point != "aaaa1111bbbb" || m.Suspect.Cleared != "alice" || m.Suspect.Changed != 0.6 {
		t.Errorf("proposed %+v %+v: want the mark of aaaa1111bbbb cleared by alice, its figures kept", sent[0], m.Suspect)
	}
}
