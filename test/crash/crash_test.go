package crash_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/lifeboat-dr/lifeboat/blockstore/blockstoretest"
	"hash/maphash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/workload"
)

// Environment variables.
const (
	// childEnv names the work directory; set only in the child process.
	childEnv = "LIFEBOAT_CRASH_CHILD"
	// seedEnv replays a run; the parent passes its seed to the child in it.
	seedEnv = blockstoretest.SeedEnv
	// roundsEnv overrides the number of kills.
	roundsEnv = "LIFEBOAT_CRASH_ROUNDS"
)

// volumeSpec is one volume the child ingests.
type volumeSpec struct {
	name      string
	size      int64
	blockSize int
}

var volumes = []volumeSpec{
	{"vol", 24 << 20, 4096},
	{"big", 16 << 20, 64 << 10},
}

// volumeFor returns the volume that version i is a version of: mostly "vol",
// every fourth one "big".
func volumeFor(i int) volumeSpec {
	if i%4 == 3 {
		return volumes[1]
	}
	return volumes[0]
}

func specOf(name string) (volumeSpec, bool) {
	for _, v := range volumes {
		if v.name == name {
			return v, true
		}
	}
	return volumeSpec{}, false
}

// pruneDue says whether the child prunes after committing version i.
func pruneDue(i int) bool { return i%7 == 6 }

// keepLast is the child's retention.
const keepLast = 3

// versionName is the image file of version i of volume vol, in the version
// directory (outside the store).
func versionName(i int, vol string) string { return fmt.Sprintf("%06d-%s.img", i, vol) }

func parseVersionName(name string) (i int, vol string, ok bool) {
	base, ok := strings.CutSuffix(name, ".img")
	if !ok {
		return 0, "", false
	}
	num, vol, ok := strings.Cut(base, "-")
	if !ok {
		return 0, "", false
	}
	i, err := strconv.Atoi(num)
	if err != nil || len(num) != 6 {
		return 0, "", false
	}
	return i, vol, true
}

// newestVersions returns, per volume, the path of the newest complete version
// file in vdir (files are renamed into place when complete), and the number
// the next version gets.
func newestVersions(vdir string) (map[string]string, int, error) {
	entries, err := os.ReadDir(vdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, 0, err
	}
	newest := map[string]string{}
	num := map[string]int{}
	next := 0
	for _, e := range entries {
		i, vol, ok := parseVersionName(e.Name())
		if !ok {
			continue
		}
		next = max(next, i+1)
		if _, seen := newest[vol]; !seen || i > num[vol] {
			newest[vol], num[vol] = filepath.Join(vdir, e.Name()), i
		}
	}
	return newest, next, nil
}

// TestCrashChild is the child process of TestCrash; it runs only when
// LIFEBOAT_CRASH_CHILD names its work directory. It ingests forever and
// reports progress on stdout, one line per event:
//
//	phase open|image|snapshot|prune <version>
//	committed <version> <volume> <pointID>   (after Snapshot returned)
//	prune-start <pointID>...                 (the points Prune may delete)
//	pruned repacked=<n> dropped=<n> <pointID>...  (after Prune returned)
//	error <message>                          (then it exits with status 3)
//
// It exits when its stdin reaches EOF, so it cannot outlive the parent.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper process for TestCrash; runs only with " + childEnv + " set")
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(2)
	}()
	seed, err := strconv.ParseInt(os.Getenv(seedEnv), 10, 64)
	if err == nil {
		err = runChild(context.Background(), dir, seed)
	}
	fmt.Printf("error %v\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(3)
}

func say(format string, args ...any) {
	// os.Stdout is unbuffered: each line is in the pipe when this returns.
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// runChild opens the store and ingests new versions until killed.
func runChild(ctx context.Context, dir string, seed int64) error {
	vdir := filepath.Join(dir, "v")
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return err
	}
	say("phase open -1")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := blockstore.Open(filepath.Join(dir, "store"), blockstore.Options{Logger: log})
	if err != nil {
		return err
	}
	newest, next, err := newestVersions(vdir)
	if err != nil {
		return err
	}
	for i := next; ; i++ {
		vol := volumeFor(i)
		say("phase image %d", i)
		path := filepath.Join(vdir, versionName(i, vol.name))
		if err := makeVersion(path, newest[vol.name], vol, seed, i); err != nil {
			return err
		}
		newest[vol.name] = path
		say("phase snapshot %d", i)
		f, err := blockstore.OpenSource(path)
		if err != nil {
			return err
		}
		p, _, err := s.Snapshot(ctx, f, blockstore.SnapshotOptions{Volume: vol.name, BlockSize: vol.blockSize})
		f.Close()
		if err != nil {
			return fmt.Errorf("snapshot version %d: %w", i, err)
		}
		say("committed %d %s %s", i, vol.name, p.ID)
		if !pruneDue(i) {
			continue
		}
		say("phase prune %d", i)
		pts, err := s.Points(ctx, "")
		if err != nil {
			return err
		}
		byGroup := map[string][]string{}
		for _, p := range pts {
			byGroup[p.Group] = append(byGroup[p.Group], p.ID)
		}
		var may []string
		for _, ids := range byGroup {
			may = append(may, ids[:max(0, len(ids)-keepLast)]...)
		}
		say("prune-start %s", strings.Join(may, " "))
		rep, err := s.Maintenance().Prune(ctx, blockstore.Retention{Last: keepLast}, blockstore.PruneOptions{})
		if err != nil {
			return fmt.Errorf("prune after version %d: %w", i, err)
		}
		gone := []string{fmt.Sprintf("repacked=%d", rep.PacksRepacked), fmt.Sprintf("dropped=%d", rep.PacksDeleted)}
		for _, p := range rep.Deleted {
			gone = append(gone, p.ID)
		}
		say("pruned %s", strings.Join(gone, " "))
	}
}

// makeVersion writes version i of vol to path: a fresh image if there is no
// earlier version, else a copy of the previous one with 5-20% rewritten. It
// writes a temporary file, syncs it and renames it into place.
func makeVersion(path, prev string, vol volumeSpec, seed int64, i int) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if prev == "" {
		if err := workload.Image(f, vol.size, seed+int64(vol.blockSize)); err != nil {
			return err
		}
	} else {
		src, err := os.Open(prev)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, src)
		src.Close()
		if err != nil {
			return err
		}
		r := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
		if _, err := workload.Mutate(f, vol.size, seed*1_000_003+int64(i), float64(5+r.IntN(16))); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// childLine is a line the child printed and when the parent read it.
type childLine struct {
	at   time.Duration
	text string
}

// sum identifies an image's content. maphash (AES-based, seeded once per
// run) is several times faster than sha256 here, and a 64-bit match is
// byte-exact for any purpose of this test.
type sum uint64

// expectation is what a point must restore to.
type expectation struct {
	volume  string
	version int
	sum     sum
	known   bool // sum is set
	acked   bool
}

// killMode is how a round picks the moment of its kill.
type killMode int

const (
	// killUniform kills 0 to 1.5 times the usual time from start to the
	// first commit after the child starts: open, image making, ingest,
	// commit, and the iterations after it.
	killUniform killMode = iota
	// killInSnapshot waits for a snapshot to begin, then kills 0 to 1.5
	// times the usual snapshot time later: ingest, pack sync, index write,
	// commit, and just after.
	killInSnapshot
	// killInPrune waits for a prune to begin, then kills 0 to 1.5 times
	// the usual prune time later: point deletion, repack, index update,
	// pack removal. Prunes are short, so uniform kills rarely hit them.
	killInPrune
)

func (m killMode) String() string {
	return [...]string{"uniform", "in-snapshot", "in-prune"}[m]
}

// crashRun is the parent's knowledge of the store across rounds.
type crashRun struct {
	t     *testing.T
	exe   string
	dir   string // holds store/ and v/
	store string
	vdir  string
	seed  int64
	rng   *rand.Rand
	log   *slog.Logger
	hseed maphash.Seed

	expect   map[string]*expectation // points that must exist
	pruned   map[string]bool         // points that must not exist
	fileSums map[string]sum          // version file -> content sum
	buf      []byte                  // restore buffer

	// Smoothed durations that scale the kill delays, and whether each was
	// observed yet.
	toCommit, snapshot, prune       time.Duration
	seenCommit, seenSnap, seenPrune bool

	// statistics
	afterCommit int
	phases      map[string]int
	modes       map[killMode]int
	unacked     int
	lostByPrune int
	restored    int
	checking    time.Duration // in check and collectVersions
	prunes      int           // completed
	repacked    int
	dropped     int
}

func TestCrash(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child process")
	}
	seed := blockstoretest.Seed(t)
	rounds := 60
	if testing.Short() {
		rounds = 10
	}
	if s := os.Getenv(roundsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", roundsEnv, s)
		}
		rounds = v
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &crashRun{
		t: t, exe: exe, dir: dir,
		store: filepath.Join(dir, "store"), vdir: filepath.Join(dir, "v"),
		seed:     seed,
		rng:      rand.New(rand.NewPCG(uint64(seed), 0xc4a5)),
		log:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
		hseed:    maphash.MakeSeed(),
		expect:   map[string]*expectation{},
		pruned:   map[string]bool{},
		fileSums: map[string]sum{},
		phases:   map[string]int{},
		modes:    map[killMode]int{},
		toCommit: time.Second, // guesses until observed
		snapshot: 200 * time.Millisecond,
		prune:    50 * time.Millisecond,
	}
	if err := blockstore.Init(r.store, blockstore.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for round := range rounds {
		r.round(round)
		if t.Failed() {
			t.Fatalf("round %d failed (seed %d); the store is at %s until the test ends", round, seed, r.store)
		}
	}
	t.Logf("%d kills in %v (seed %d): %d after at least one commit this round; kill modes %s; killed in phase %s; "+
		"%d points committed but not acknowledged; %d deleted by an interrupted prune; %d prunes completed, %d packs repacked, %d dropped; %d restores checked (checks took %v in all); "+
		"smoothed start-to-commit %v, snapshot %v, prune %v",
		rounds, time.Since(start).Round(time.Millisecond), seed, r.afterCommit, counts(r.modes), counts(r.phases),
		r.unacked, r.lostByPrune, r.prunes, r.repacked, r.dropped, r.restored, r.checking.Round(time.Millisecond),
		r.toCommit.Round(time.Millisecond), r.snapshot.Round(time.Millisecond), r.prune.Round(time.Millisecond))
	// With the default 60 rounds each of these is missed with a
	// probability far below one in a million.
	if rounds >= 50 {
		if r.afterCommit == 0 {
			t.Errorf("no kill landed after a commit in %d rounds", rounds)
		}
		for _, p := range []string{"image", "snapshot", "prune"} {
			if r.phases[p] == 0 {
				t.Errorf("no kill landed in phase %s in %d rounds", p, rounds)
			}
		}
	}
}

func counts[K comparable](m map[K]int) string {
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%v=%d", k, n))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// smooth folds an observed duration into an estimate; the first observation
// replaces the initial guess.
func smooth(est *time.Duration, seen *bool, d time.Duration) {
	if !*seen {
		*est, *seen = d, true
		return
	}
	*est = (7**est + 3*d) / 10
}

// round runs the child, kills it at a random moment and checks the store.
func (r *crashRun) round(round int) {
	t := r.t
	mode := killUniform
	switch x := r.rng.IntN(10); {
	case x < 2:
		mode = killInSnapshot
	case x < 4:
		mode = killInPrune
	}
	r.modes[mode]++
	lines, killedAt, exited := r.runAndKill(round, mode)
	if exited != nil {
		t.Errorf("round %d: child stopped by itself before the kill: %v; its output:\n%s", round, exited, joinLines(lines))
		return
	}
	// Apply what the child reported, in order.
	phase, phaseAt := "start", time.Duration(0)
	commits := 0
	mayDelete := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l.text)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "phase":
			if len(f) >= 2 {
				phase, phaseAt = f[1], l.at
			}
		case "committed":
			if len(f) != 4 {
				t.Errorf("round %d: bad child line %q", round, l.text)
				continue
			}
			i, err := strconv.Atoi(f[1])
			if err != nil {
				t.Errorf("round %d: bad child line %q", round, l.text)
				continue
			}
			if commits == 0 {
				smooth(&r.toCommit, &r.seenCommit, l.at)
			}
			if phase == "snapshot" {
				smooth(&r.snapshot, &r.seenSnap, l.at-phaseAt)
			}
			commits++
			r.expect[f[3]] = &expectation{volume: f[2], version: i, acked: true}
			phase = "committed"
		case "prune-start":
			for _, id := range f[1:] {
				mayDelete[id] = true
			}
		case "pruned":
			if phase == "prune" {
				smooth(&r.prune, &r.seenPrune, l.at-phaseAt)
			}
			for _, w := range f[1:] {
				if n, ok := strings.CutPrefix(w, "repacked="); ok {
					k, _ := strconv.Atoi(n)
					r.repacked += k
					continue
				}
				if n, ok := strings.CutPrefix(w, "dropped="); ok {
					k, _ := strconv.Atoi(n)
					r.dropped += k
					continue
				}
				delete(r.expect, w)
				r.pruned[w] = true
			}
			clear(mayDelete)
			phase = "pruned"
			r.prunes++
		case "error":
			t.Errorf("round %d: child: %s", round, l.text)
		}
	}
	// A kill inside a phase says the phase takes longer than that: raise
	// the estimate past it, or in-phase kills would never reach the end of
	// the phase; completed phases pull it back down.
	switch in := killedAt - phaseAt; phase {
	case "snapshot":
		r.snapshot = max(r.snapshot, in*3/2)
	case "prune":
		r.prune = max(r.prune, in*3/2)
	}
	if commits > 0 {
		r.afterCommit++
	}
	r.phases[phase]++
	t.Logf("round %d: %s kill after %v in phase %s (%d commits this round)", round, mode, killedAt.Round(time.Millisecond), phase, commits)
	checkStart := time.Now()
	r.check(round, mayDelete)
	r.collectVersions()
	r.checking += time.Since(checkStart)
}

// runAndKill starts the child, kills it at a moment chosen by mode, and
// returns what it printed. exited is non-nil if the child ended before the
// kill.
func (r *crashRun) runAndKill(round int, mode killMode) (lines []childLine, killedAt time.Duration, exited error) {
	t := r.t
	cmd := exec.Command(r.exe, "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+r.dir, seedEnv+"="+strconv.FormatInt(r.seed, 10))
	cmd.Stderr = t.Output()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	frac := 1.5 * r.rng.Float64()
	var trigger string
	delay := time.Duration(frac * float64(r.toCommit))
	switch mode {
	case killInSnapshot:
		trigger, delay = "phase snapshot", time.Duration(frac*float64(r.snapshot))
	case killInPrune:
		trigger, delay = "phase prune", time.Duration(frac*float64(r.prune))
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	linec := make(chan childLine, 64)
	go func() {
		defer close(linec)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			linec <- childLine{time.Since(start), sc.Text()}
		}
	}()
	// A trigger line comes within about seven iterations; if it does not,
	// kill anyway.
	timer := time.NewTimer(delay)
	if trigger != "" {
		timer.Reset(20 * r.toCommit)
	}
	defer timer.Stop()
	for exited == nil && killedAt == 0 {
		select {
		case l, ok := <-linec:
			if !ok {
				// stdout closed: the child exited by itself.
				cmd.Process.Kill()
				exited = errors.New("stdout closed")
				break
			}
			lines = append(lines, l)
			if trigger != "" && strings.HasPrefix(l.text, trigger+" ") {
				trigger = ""
				timer.Reset(delay)
			}
		case <-timer.C:
			killedAt = time.Since(start)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("round %d: kill: %v", round, err)
			}
		}
	}
	for l := range linec {
		lines = append(lines, l)
	}
	err = cmd.Wait()
	if exited != nil {
		return lines, 0, fmt.Errorf("%w: %v", exited, err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Exited() {
		// Exited normally: it had finished before the signal arrived.
		return lines, killedAt, fmt.Errorf("child was not killed by the signal: %v", err)
	}
	return lines, killedAt, nil
}

// check opens the store after a kill and checks every invariant.
func (r *crashRun) check(round int, mayDelete map[string]bool) {
	t := r.t
	ctx := t.Context()
	s, err := blockstore.Open(r.store, blockstore.Options{Logger: r.log})
	if err != nil {
		t.Errorf("round %d: open after kill: %v", round, err)
		return
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("round %d: close: %v", round, err)
		}
	}()
	pts, err := s.Points(ctx, "")
	if err != nil {
		t.Errorf("round %d: points: %v", round, err)
		return
	}
	present := map[string]blockstore.Point{}
	for _, p := range pts {
		present[p.ID] = p
	}
	for id, e := range r.expect {
		if _, ok := present[id]; ok {
			continue
		}
		if mayDelete[id] {
			// The kill hit a prune after it had deleted the points.
			delete(r.expect, id)
			r.pruned[id] = true
			r.lostByPrune++
			continue
		}
		t.Errorf("round %d: point %s (version %d of %s, acknowledged %v) is gone", round, id, e.version, e.volume, e.acked)
	}
	newest, _, err := newestVersions(r.vdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if r.pruned[p.ID] {
			t.Errorf("round %d: pruned point %s is back", round, p.ID)
			continue
		}
		if len(p.Volumes) != 1 || p.Volumes[0].Name != p.Group {
			t.Errorf("round %d: point %s: group %q volumes %+v, want one volume named as the group", round, p.ID, p.Group, p.Volumes)
			continue
		}
		v := p.Volumes[0]
		spec, ok := specOf(v.Name)
		if !ok || v.Size != spec.size || v.BlockSize != spec.blockSize {
			t.Errorf("round %d: point %s: volume %s size %d block size %d, want %+v", round, p.ID, v.Name, v.Size, v.BlockSize, spec)
			continue
		}
		e := r.expect[p.ID]
		if e == nil {
			// Committed, but the kill came before the child said so: it
			// must be the newest image of its volume.
			path := newest[v.Name]
			if path == "" {
				t.Errorf("round %d: unacknowledged point %s of %s, but no image of %s exists", round, p.ID, v.Name, v.Name)
				continue
			}
			i, _, _ := parseVersionName(filepath.Base(path))
			e = &expectation{volume: v.Name, version: i}
			r.unacked++
			t.Logf("round %d: point %s committed but not acknowledged; expecting version %d of %s", round, p.ID, i, v.Name)
			r.expect[p.ID] = e
		}
		if e.volume != v.Name {
			t.Errorf("round %d: point %s holds volume %s, child committed it for %s", round, p.ID, v.Name, e.volume)
			continue
		}
		if !e.known {
			sum, err := r.fileSum(filepath.Join(r.vdir, versionName(e.version, e.volume)))
			if err != nil {
				t.Errorf("round %d: point %s: %v", round, p.ID, err)
				continue
			}
			e.sum, e.known = sum, true
		}
		got, err := r.restoreSum(ctx, s, v)
		if err != nil {
			t.Errorf("round %d: restore point %s (%s): %v", round, p.ID, v.Name, err)
			continue
		}
		r.restored++
		if got != e.sum {
			t.Errorf("round %d: point %s restores to other bytes than version %d of %s (acknowledged %v)%s",
				round, p.ID, e.version, e.volume, e.acked, r.whichVersion(got))
		}
	}
	rep, err := s.Maintenance().Verify(ctx, blockstore.VerifyOptions{})
	if err != nil {
		t.Errorf("round %d: verify: %v", round, err)
		return
	}
	for _, d := range rep.Damage {
		t.Errorf("round %d: verify: %v", round, d)
	}
	if rep.Points != int64(len(pts)) {
		t.Errorf("round %d: verify checked %d points, store lists %d", round, rep.Points, len(pts))
	}
}

// whichVersion names the version file whose content has sum, for a failure
// message.
func (r *crashRun) whichVersion(got sum) string {
	entries, _ := os.ReadDir(r.vdir)
	for _, e := range entries {
		if _, _, ok := parseVersionName(e.Name()); !ok {
			continue
		}
		if s, err := r.fileSum(filepath.Join(r.vdir, e.Name())); err == nil && s == got {
			return "; it equals " + e.Name()
		}
	}
	return "; it equals no version file left"
}

// restoreSum restores v into memory and returns the sum of its content.
func (r *crashRun) restoreSum(ctx context.Context, s *blockstore.Store, v blockstore.VolumeState) (sum, error) {
	if int64(cap(r.buf)) < v.Size {
		r.buf = make([]byte, v.Size)
	}
	b := r.buf[:v.Size]
	clear(b)
	if err := s.Restore(ctx, v, blockstoretest.Image(b), blockstore.RestoreOptions{}); err != nil {
		return 0, err
	}
	return sum(maphash.Bytes(r.hseed, b)), nil
}

// fileSum returns the sum of a version file; files never change once in
// place, so sums are remembered.
func (r *crashRun) fileSum(path string) (sum, error) {
	if s, ok := r.fileSums[path]; ok {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("version file: %w", err)
	}
	s := sum(maphash.Bytes(r.hseed, b))
	r.fileSums[path] = s
	return s, nil
}

// collectVersions deletes version files that no check needs any more: every
// point's sum is known by now, and the child builds only on the newest
// version of each volume.
func (r *crashRun) collectVersions() {
	newest, _, err := newestVersions(r.vdir)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range r.expect {
		if !e.known {
			return // a failed check; keep everything for the report
		}
	}
	keep := map[string]bool{}
	for _, p := range newest {
		keep[p] = true
	}
	entries, err := os.ReadDir(r.vdir)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(r.vdir, e.Name())
		if !keep[p] {
			if err := os.Remove(p); err != nil {
				r.t.Fatal(err)
			}
			delete(r.fileSums, p)
		}
	}
}

func joinLines(lines []childLine) string {
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %8v %s\n", l.at.Round(time.Millisecond), l.text)
	}
	return b.String()
}

// TestCrashTornTail damages the newest pack of a closed store with two
// points, the second of which has its new blocks in that pack.
func TestCrashTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		// recovers: open truncates the damage away and everything is
		// intact; otherwise the second point is damaged.
		recovers bool
	}{
		{"garbage appended", func(t *testing.T, path string, size int64) {
			garbage := make([]byte, 3001)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range garbage {
				garbage[i] = byte(r.Uint32())
			}
			appendFile(t, path, garbage)
		}, true},
		{"torn frame appended", func(t *testing.T, path string, size int64) {
			// The first half of a copy of the pack's first frame (after
			// the 16-byte pack header; a frame is a 16-byte header with
			// the entry count at 6 and the payload length at 12, 36 bytes
			// per entry, the payload and a 4-byte checksum): a record cut
			// short by the crash, with a valid-looking header.
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			h := b[16:]
			n := 16 + 36*int(binary.LittleEndian.Uint16(h[6:])) + int(binary.LittleEndian.Uint32(h[12:])) + 4
			if n > len(h) {
				t.Fatalf("first frame of %d bytes does not fit the %d-byte pack", n, len(b))
			}
			appendFile(t, path, h[:n/2])
		}, true},
		{"truncated below committed length", func(t *testing.T, path string, size int64) {
			// A quarter off: through the point record copy at the
			// end and into the block frames before it.
			if err := os.Truncate(path, size*3/4); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"byte flipped in the middle", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := []byte{0}
			if _, err := f.ReadAt(b, size/2); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x10
			if _, err := f.WriteAt(b, size/2); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			store := filepath.Join(dir, "store")
			log := slog.New(slog.NewTextHandler(t.Output(), nil))
			if err := blockstore.Init(store, blockstore.InitOptions{}); err != nil {
				t.Fatal(err)
			}
			const size = 8 << 20
			img1 := filepath.Join(dir, "1.img")
			f, err := os.Create(img1)
			if err != nil {
				t.Fatal(err)
			}
			if err := workload.Image(f, size, 7); err != nil {
				t.Fatal(err)
			}
			f.Close()
			want1, err := os.ReadFile(img1)
			if err != nil {
				t.Fatal(err)
			}
			want2 := bytes.Clone(want1)
			if _, err := workload.Mutate(blockstoretest.Image(want2), size, 8, 20); err != nil {
				t.Fatal(err)
			}
			img2 := filepath.Join(dir, "2.img")
			if err := os.WriteFile(img2, want2, 0o600); err != nil {
				t.Fatal(err)
			}
			// Two sessions, so that the second point's new blocks are in
			// a pack of their own.
			var points []blockstore.Point
			for _, img := range []string{img1, img2} {
				s, err := blockstore.Open(store, blockstore.Options{Logger: log})
				if err != nil {
					t.Fatal(err)
				}
				f, err := blockstore.OpenSource(img)
				if err != nil {
					t.Fatal(err)
				}
				p, _, err := s.Snapshot(ctx, f, blockstore.SnapshotOptions{Volume: "vol", BlockSize: 4096})
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				points = append(points, p)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			pack := newestPack(t, store)
			fi, err := os.Stat(pack)
			if err != nil {
				t.Fatal(err)
			}
			committed := fi.Size()

			tc.damage(t, pack, committed)

			s, err := blockstore.Open(store, blockstore.Options{Logger: log})
			if err != nil {
				t.Fatalf("open after damage: %v", err)
			}
			defer s.Close()
			if tc.recovers {
				fi, err := os.Stat(pack)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != committed {
					t.Errorf("pack is %d bytes after open, want the committed %d", fi.Size(), committed)
				}
			}
			// The first point's own blocks are in an undamaged pack: it
			// restores in every case.
			if got, err := restoreBytes(ctx, s, points[0]); err != nil || !bytes.Equal(got, want1) {
				t.Errorf("first point: restore error %v, byte-exact %v", err, err == nil && bytes.Equal(got, want1))
			}
			got, err := restoreBytes(ctx, s, points[1])
			switch {
			case err == nil && !bytes.Equal(got, want2):
				t.Errorf("second point restored WRONG data without an error")
			case tc.recovers && err != nil:
				t.Errorf("second point: restore: %v", err)
			case !tc.recovers && err == nil:
				t.Errorf("second point restored although its pack is damaged")
			case !tc.recovers:
				var ce *blockstore.CorruptError
				if !errors.As(err, &ce) {
					t.Errorf("second point: restore error %v (%T), want a *blockstore.CorruptError", err, err)
				}
			}
			rep, err := s.Maintenance().Verify(ctx, blockstore.VerifyOptions{})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if tc.recovers {
				for _, d := range rep.Damage {
					t.Errorf("verify: %v", d)
				}
				return
			}
			if len(rep.Damage) == 0 {
				t.Fatalf("verify found no damage")
			}
			named := false
			for _, d := range rep.Damage {
				var ce *blockstore.CorruptError
				if errors.As(d, &ce) && ce.Path == pack {
					named = true
				}
			}
			if !named {
				t.Errorf("verify damage does not name %s: %v", pack, rep.Damage)
			}
		})
	}
}

func restoreBytes(ctx context.Context, s *blockstore.Store, p blockstore.Point) ([]byte, error) {
	v, ok := p.Volume("vol")
	if !ok {
		return nil, fmt.Errorf("point %s has no volume vol", p.ID)
	}
	b := make([]byte, v.Size)
	err := s.Restore(ctx, v, blockstoretest.Image(b), blockstore.RestoreOptions{})
	return b, err
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// newestPack returns the path of the highest-numbered pack of a store.
func newestPack(t *testing.T, store string) string {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(store, "packs", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	if len(packs) < 2 {
		t.Fatalf("store has packs %v, want at least 2", packs)
	}
	slices.Sort(packs) // fixed-width hex names sort by number
	return packs[len(packs)-1]
}
