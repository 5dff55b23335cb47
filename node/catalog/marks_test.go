package catalog

import (
	"fmt"
	"testing"
	"time"
)

func TestMarksMerge(t *testing.T) {
	t.Parallel()
	f := NewFSM()
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	steps := []*Command{
		{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: "p1", Time: at, Suspect: &Suspicion{Volume: "root", Changed: 0.6, Incompressible: 0.99, At: at}}}},
		{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: "p1", Damaged: map[string]string{"dc2": "root 0-4096"}}}},
		{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: "p1", Damaged: map[string]string{"dc1": "root 0-4096"}}}},
		{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: "p1", Damaged: map[string]string{"dc2": ""}}}},
		{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: "p0", Verified: &Verification{Result: VerifyOK, Site: "dc2", At: at}}}},
	}
	for i, c := range steps {
		if err := applyCmd(t, f, uint64(i+1), c); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	s := f.Catalog().Services["erp"]
	m, ok := s.Mark("p1")
	if !ok || !m.IsSuspect() || !m.Time.Equal(at) {
		t.Fatalf("p1 mark = %+v, want suspect at %v", m, at)
	}
	if m.IsDamaged("dc2") || !m.IsDamaged("dc1") || !m.IsDamaged("") {
		t.Errorf("p1 damaged = %v, want dc1 only (dc2 cleared)", m.Damaged)
	}
	if m0, _ := s.Mark("p0"); m0.Verified == nil || m0.Verified.Result != VerifyOK || m0.IsSuspect() {
		t.Errorf("p0 mark = %+v, want verified ok and not suspect", m0)
	}
	if err := applyCmd(t, f, 9, &Command{Op: OpMarks, Marks: []PointMark{{Service: "erp"}}}); err == nil {
		t.Error("a mark without a point applied")
	}
	for i := range marksLen + 10 {
		if err := applyCmd(t, f, uint64(10+i), &Command{Op: OpMarks, Marks: []PointMark{{Service: "erp", Point: fmt.Sprintf("q%d", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	st := f.Catalog().Services["erp"]
	if n := len(st.Marks); n != marksLen {
		t.Errorf("%d marks kept, want %d", n, marksLen)
	}
	if m, ok := st.Mark("p1"); !ok || !m.IsSuspect() {
		t.Error("the suspect mark was dropped for newer plain ones")
	}
}
