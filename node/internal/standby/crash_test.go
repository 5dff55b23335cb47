package standby

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"github.com/lifeboat-dr/lifeboat/internal/testcrash"
)

const (
	crashChildEnv  = "LIFEBOAT_STANDBY_CRASH_CHILD" // "STANDBYDIR STOREDIR POINTID"
	crashStepEnv   = "LIFEBOAT_STANDBY_CRASH_STEP"  // "STEP:N": SIGKILL itself at the Nth call of STEP
	crashRoundsEnv = "LIFEBOAT_CRASH_ROUNDS"
)

// TestMain runs the crash child instead of the tests when
// LIFEBOAT_STANDBY_CRASH_CHILD is set (TestCrash starts the test binary so).
func TestMain(m *testing.M) {
	if args := os.Getenv(crashChildEnv); args != "" {
		crashChild(strings.Fields(args))
	}
	os.Exit(m.Run())
}

// crashChild opens the standby directory and the store, prints "ready",
// applies the point and prints "applied ID" and the time it took. With
// LIFEBOAT_STANDBY_CRASH_STEP it kills itself (SIGKILL) at that step,
// which may come while Open finishes an earlier update.
func crashChild(args []string) {
	fail := testcrash.Exit()
	if len(args) != 3 {
		fail(fmt.Errorf("want 3 arguments, got %q", args))
	}
	var hook func(string) error
	if s := os.Getenv(crashStepEnv); s != "" {
		step, nstr, _ := strings.Cut(s, ":")
		n, _ := strconv.Atoi(nstr)
		calls := 0
		hook = func(name string) error {
			if name == step {
				if calls++; calls == n {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
			}
			return nil
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	set, err := open(args[0], Options{Logger: log}, hook)
	if err != nil {
		fail(err)
	}
	store, err := blockstore.Open(args[1], blockstore.Options{Logger: log})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	pts, err := store.Points(ctx, "")
	if err != nil {
		fail(err)
	}
	var target *blockstore.Point
	for i := range pts {
		if pts[i].ID == args[2] {
			target = &pts[i]
		}
	}
	if target == nil {
		fail(fmt.Errorf("no point %s", args[2]))
	}
	fmt.Println("ready")
	start := time.Now()
	if _, err := set.Apply(ctx, store, *target); err != nil {
		fail(err)
	}
	fmt.Printf("applied %s %d\n", target.ID, time.Since(start).Microseconds())
	os.Exit(0)
}

// TestCrash kills a child process that applies points at every step of an
// update (via the hook) and at random moments, and after each kill checks
// that Open finds every image at the old point or every image at the new
// one, matching the state, and that an Apply that returned is durable.
func TestCrash(t *testing.T) {
	t.Parallel()
	seed := blockstoretest.Seed(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	randomRounds := 12
	if testing.Short() || raceEnabled {
		randomRounds = 4
	}
	if s := os.Getenv(crashRoundsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", crashRoundsEnv, s)
		}
		randomRounds = v
	}
	// Hooked rounds: the step to die at, at its nth call (or at a fraction
	// of this update's writes). The first two rounds take the first point.
	// After a round with noCheck the parent does not open the directory,
	// so the next child's Open finishes the update, and inOpen dies there.
	type round struct {
		step    string
		n       int
		frac    float64
		noCheck bool
		inOpen  bool
	}
	rounds := []round{
		{step: "images-built", n: 1}, {step: "committed", n: 1}, // first point: no point, then all of it
		{}, // no kill: measure how long an apply takes
		{step: "images-built", n: 1}, {step: "journal-synced", n: 1}, {step: "committed", n: 1},
		{step: "write", frac: 0.3, noCheck: true},
		{step: "write", n: 3, inOpen: true},
		{step: "write", frac: 0.01}, {step: "write", frac: 0.5}, {step: "write", frac: 0.99},
		{step: "images-synced", n: 1}, {step: "state-written", n: 1}, {step: "journal-removed", n: 1},
	}
	for range randomRounds {
		rounds = append(rounds, round{step: "random"})
	}

	t0 := time.Now()
	w := newWorld(t, uint64(seed))
	w.set("db", 2<<20, 4096, 0.2)
	w.set("logs", 1<<20, 4096, 0.4)
	w.set("boot", 512<<10, 8192, 0.5)
	var chain []blockstore.Point
	for i := range len(rounds) {
		switch i % 5 {
		case 1:
			w.resize("logs", len(w.vols["logs"].data)+3000)
		case 2:
			w.resize("db", len(w.vols["db"].data)-20000)
		case 3:
			if _, ok := w.vols["tmp"]; ok {
				delete(w.vols, "tmp")
			} else {
				w.set("tmp", 256<<10, 4096, 0.5)
			}
		}
		w.mutate("db", 0.25)
		w.mutate("logs", 0.25)
		w.mutate("boot", 0.1)
		chain = append(chain, w.commit())
	}
	want := w.want
	w.expect(chain[len(chain)-1])
	w.close()
	t.Logf("%d points built in %v", len(chain), time.Since(t0).Round(time.Millisecond))

	dir := filepath.Join(t.TempDir(), "standby")
	log := testLogger(t)
	at := -1        // index in chain of the standby's point, -1 for none
	var tried []int // targets since the last check
	applyTime := 200 * time.Millisecond
	outcomes := map[string]int{}
	for i, r := range rounds {
		roundStart := time.Now()
		ti := i // every round applies the next point of the chain
		target := chain[ti]
		tried = append(tried, ti)
		env := []string{crashChildEnv + "=" + dir + " " + w.dir + " " + target.ID}
		desc := r.step
		switch {
		case r.step == "" || r.step == "random":
		case r.frac > 0:
			// Pick a write record of this update by the changed blocks.
			n := 0
			if at >= 0 {
				n = changedBlocks(chain[at], target)
			}
			k := max(1, int(float64(n)*r.frac))
			desc = fmt.Sprintf("write:%d of ~%d", k, n)
			env = append(env, crashStepEnv+"=write:"+strconv.Itoa(k))
		default:
			desc = fmt.Sprintf("%s:%d", r.step, r.n)
			env = append(env, crashStepEnv+"="+desc)
		}
		if r.inOpen {
			desc += " inside Open"
		}
		child := testcrash.Start(t, env...)
		if r.step == "random" {
			<-child.Ready()
			d := time.Duration(rng.Int64N(int64(applyTime) * 5 / 4))
			desc = fmt.Sprintf("random kill %v after ready", d.Round(time.Millisecond))
			child.KillAfter(d)
		}
		lines := child.Wait()
		applied, sawReady := false, false
		for _, l := range lines {
			f := strings.Fields(l)
			switch {
			case f[0] == "error":
				t.Fatalf("round %d (%s): child: %s", i, desc, l)
			case f[0] == "ready":
				sawReady = true
			case f[0] == "applied":
				applied = true
				if r.step == "" {
					us, _ := strconv.Atoi(f[2])
					applyTime = time.Duration(us) * time.Microsecond
				}
			}
		}
		if r.step == "" && !applied {
			t.Fatalf("round %d: the child neither applied nor failed: %q", i, lines)
		}
		if r.inOpen && sawReady {
			t.Fatalf("round %d (%s): the child was not killed inside Open", i, desc)
		}
		if r.noCheck {
			t.Logf("round %d: %s, not checked", i, desc)
			continue
		}

		// The invariant: the standby is at the point it was at or at one
		// of those tried since, all images at the same one; an Apply that
		// returned is durable.
		s, err := open(dir, Options{Logger: log}, nil)
		if err != nil {
			t.Fatalf("round %d (%s): open after kill: %v", i, desc, err)
		}
		p, ok := s.Point()
		imgs := imagesOf(t, dir)
		found := -1
		if ok {
			for k := range chain {
				if chain[k].ID == p.ID {
					found = k
				}
			}
		}
		outcome := "old"
		switch {
		case !ok && at < 0:
			if len(imgs) != 0 {
				t.Fatalf("round %d (%s): no point, but images %v", i, desc, imgs)
			}
			outcome = "none"
		case !ok:
			t.Fatalf("round %d (%s): no point after reopening; was at %s", i, desc, chain[at].ID)
		case found == ti:
			outcome = "new"
		case found == at:
		case found >= 0 && slices.Contains(tried, found):
			outcome = "earlier target"
		default:
			t.Fatalf("round %d (%s): at point %s, want the previous one or one tried since", i, desc, p.ID)
		}
		if applied && outcome != "new" {
			t.Fatalf("round %d (%s): Apply returned, but after reopening the standby is %s", i, desc, outcome)
		}
		if ok && !equalDigests(imgs, want[p.ID]) {
			t.Fatalf("round %d (%s): state says point %s (%s), images are %v, want %v", i, desc, p.ID, outcome, imgs, want[p.ID])
		}
		t.Logf("round %d: %s -> %s (%s) in %v", i, desc, outcome, p.ID, time.Since(roundStart).Round(time.Millisecond))
		outcomes[outcome]++
		if ok {
			at = found
		}
		tried = tried[:0]
		s.Close()
	}
	t.Logf("seed %d: outcomes %v, apply time %v", seed, outcomes, applyTime)
	if outcomes["new"] == 0 || outcomes["old"] == 0 {
		t.Errorf("outcomes %v: want both old and new", outcomes)
	}
}

// changedBlocks estimates the blocks an update from a to b writes (a
// quarter of the used blocks of volumes kept, as the chain mutates them);
// it only picks a kill moment, so roughness is fine.
func changedBlocks(a, b blockstore.Point) int {
	n := 0
	for _, v := range b.Volumes {
		if old, ok := a.Volume(v.Name); ok && old.BlockSize == v.BlockSize {
			n += int(v.Used) / 4
		}
	}
	return n
}
