package standby

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenDamage: Open refuses damaged or unexpected files with an error
// naming the file, discards an uncommitted journal, and never applies
// anything it cannot check.
func TestOpenDamage(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 20)
	w.set("a", 256<<10, 4096, 0.2)
	w.set("b", 128<<10, 4096, 0.2)
	p1 := w.commit()
	w.mutate("a", 0.1)
	p2 := w.commit()
	w.mutate("a", 0.1)
	w.mutate("b", 0.1)
	p3 := w.commit()
	want1, want2, want3 := w.expect(p1), w.expect(p2), w.expect(p3)

	// at1: images at p1. at2: at p2, with a committed journal to p3 that
	// was not applied (the update failed right after the commit).
	at1, at2 := filepath.Join(t.TempDir(), "at1"), filepath.Join(t.TempDir(), "at2")
	s := openSet(t, at1)
	if _, err := s.Apply(t.Context(), w.store, p1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	copyDir(t, at1, at2)
	s = openSet(t, at2)
	if _, err := s.Apply(t.Context(), w.store, p2); err != nil {
		t.Fatal(err)
	}
	s.hook = func(step string) error {
		if step == "committed" {
			return errInjected
		}
		return nil
	}
	if _, err := s.Apply(t.Context(), w.store, p3); !errors.Is(err, errInjected) {
		t.Fatal(err)
	}
	s.Close()
	journalBytes, err := os.ReadFile(filepath.Join(at2, journalName))
	if err != nil {
		t.Fatal(err)
	}

	rewriteState := func(edit func(m map[string]any)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, stateName))
			var f stateFile
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			json.Unmarshal(f.State, &m)
			edit(m)
			f.State, _ = json.Marshal(m)
			sum := sha256.Sum256(f.State)
			f.SHA256 = hex.EncodeToString(sum[:])
			out, _ := json.Marshal(f)
			os.WriteFile(filepath.Join(dir, stateName), out, 0o600)
		}
	}
	for _, tc := range []struct {
		name    string
		from    string
		damage  func(t *testing.T, dir string)
		errFile string  // the file the error must name; "" when Open succeeds
		errText string  // and text it must hold
		want    digests // the images after a successful Open
		wantAt  string
	}{
		{"committed journal is replayed", at2, func(*testing.T, string) {}, "", "", want3, p3.ID},
		{"state is garbage", at1, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, stateName), []byte("hello\x00world"), 0o600)
		}, stateName, "state file", nil, ""},
		{"state truncated", at1, func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, stateName))
			os.WriteFile(filepath.Join(dir, stateName), b[:len(b)/2], 0o600)
		}, stateName, "state file", nil, ""},
		{"state byte flipped", at1, func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, stateName))
			i := strings.Index(string(b), `"size":`) + 8
			b[i] ^= 1
			os.WriteFile(filepath.Join(dir, stateName), b, 0o600)
		}, stateName, "hashes to sha256", nil, ""},
		{"state from a newer lifeboat", at1, rewriteState(func(m map[string]any) { m["version"] = 2 }), stateName, "version 2", nil, ""},
		{"state with an unknown field", at1, rewriteState(func(m map[string]any) { m["extra"] = 1 }), stateName, "unknown field", nil, ""},
		{"state with a bad volume", at1, rewriteState(func(m map[string]any) {
			m["point"].(map[string]any)["volumes"].([]any)[0].(map[string]any)["block_size"] = 3
		}), stateName, "block size", nil, ""},
		{"committed journal damaged in the middle", at2, func(t *testing.T, dir string) {
			b := append([]byte(nil), journalBytes...)
			b[len(b)/2] ^= 0x40
			os.WriteFile(filepath.Join(dir, journalName), b, 0o600)
		}, journalName, "CRC32C", nil, ""},
		{"committed journal with a record dropped", at2, func(t *testing.T, dir string) {
			b := append([]byte(nil), journalBytes...)
			r, n, err := decodeRecord(b)
			if err != nil || r.typ != recBegin {
				t.Fatal(err)
			}
			_, m, err := decodeRecord(b[n:])
			if err != nil {
				t.Fatal(err)
			}
			b = append(b[:n:n], b[n+m:]...)
			os.WriteFile(filepath.Join(dir, journalName), b, 0o600)
		}, journalName, "commit record counts", nil, ""},
		{"committed journal for another base", at1, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, journalName), journalBytes, 0o600)
		}, journalName, "journal goes from point", nil, ""},
		{"uncommitted journal is discarded", at2, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, journalName), journalBytes[:len(journalBytes)-10], 0o600)
		}, "", "", want2, p2.ID},
		{"garbage journal is discarded", at2, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, journalName), []byte(strings.Repeat("garbage!", 1000)), 0o600)
		}, "", "", want2, p2.ID},
		{"empty journal is discarded", at1, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, journalName), nil, 0o600)
		}, "", "", want1, p1.ID},
		{"leftover temporary files are removed", at1, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "a.img.new"), []byte("x"), 0o600)
			os.WriteFile(filepath.Join(dir, stateName+".tmp"), []byte("x"), 0o600)
		}, "", "", want1, p1.ID},
		{"image the state does not list", at1, func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "stray.img"), []byte("x"), 0o600)
		}, "stray.img", "does not list", nil, ""},
		{"image with the wrong size", at1, func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, "a.img"), 4096)
		}, "a.img", "the state says", nil, ""},
		{"image missing", at1, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "b.img"))
		}, "b.img", "missing", nil, ""},
		{"images without a state", at1, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, stateName))
		}, ".img", "does not list", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "standby")
			copyDir(t, tc.from, dir)
			os.Remove(filepath.Join(dir, lockName))
			tc.damage(t, dir)
			before := imagesOf(t, dir)
			s, err := Open(dir, Options{Logger: testLogger(t)})
			if tc.errFile != "" {
				var ce *CorruptError
				if !errors.As(err, &ce) || !strings.Contains(ce.Path, tc.errFile) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("open: %v; want a *CorruptError naming %s with %q", err, tc.errFile, tc.errText)
				}
				if ce.Hint == "" {
					t.Errorf("error %v has no hint", err)
				}
				if after := imagesOf(t, dir); !equalDigests(before, after) {
					t.Fatalf("a refused open changed the images: %v, were %v", after, before)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			p, ok := s.Point()
			if !ok || p.ID != tc.wantAt {
				t.Fatalf("at point %q (%v), want %s", p.ID, ok, tc.wantAt)
			}
			if got := imagesOf(t, dir); !equalDigests(got, tc.want) {
				t.Fatalf("images %v, want %v", got, tc.want)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if n := e.Name(); n != lockName && n != stateName && !strings.HasSuffix(n, imageExt) {
					t.Errorf("%s left in the directory", n)
				}
			}
		})
	}
}
