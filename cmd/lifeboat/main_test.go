package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

// result is what one lifeboat invocation produced.
type result struct {
	code           int
	stdout, stderr string
}

// lifeboat runs the command line in-process.
func lifeboat(t *testing.T, args ...string) result {
	t.Helper()
	return lifeboatCtx(t.Context(), args...)
}

func lifeboatCtx(ctx context.Context, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs the command line and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := lifeboat(t, args...)
	if r.code != exitOK {
		t.Fatalf("lifeboat %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

const (
	mib       = 1 << 20
	imageSize = 3 * mib
)

// makeImage writes a 3 MiB image: 1 MiB random, a 1 MiB hole, then one
// random 64 KiB block repeated 16 times. It returns the contents.
func makeImage(t *testing.T, path string, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed)}))
	data := make([]byte, imageSize)
	for i := 0; i < mib; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	blk := make([]byte, 64<<10)
	for i := range blk {
		blk[i] = byte(rng.Uint32())
	}
	for off := 2 * mib; off < imageSize; off += len(blk) {
		copy(data[off:], blk)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data[:mib], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[2*mib:], 2*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

// newStore initializes a store in a new temporary directory.
func newStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	mustRun(t, "store", "init", "--store", dir)
	return dir
}

var pointIDRe = regexp.MustCompile(`^[0-9a-f]{16}$`)

// imageAndStore returns a temporary directory, a new store and, in the
// directory, disk.img made by makeImage with seed, and its bytes.
func imageAndStore(t *testing.T, seed uint64) (tmp, store, img string, data []byte) {
	t.Helper()
	tmp = t.TempDir()
	store = newStore(t)
	img = filepath.Join(tmp, "disk.img")
	return tmp, store, img, makeImage(t, img, seed)
}

// pointLines counts the lines of "points --store store": the header and
// a line for each point.
func pointLines(t *testing.T, store string) int {
	t.Helper()
	return strings.Count(mustRun(t, "points", "--store", store).stdout, "\n")
}

// snapshot snapshots src as volume disk and returns the point ID and the
// stderr summary.
func snapshot(t *testing.T, store, src string, extra ...string) (id, summary string) {
	t.Helper()
	r := mustRun(t, append([]string{"snapshot", "--store", store, "--volume", "disk", src}, extra...)...)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 1 || !pointIDRe.MatchString(lines[0]) {
		t.Fatalf("snapshot stdout = %q, want one line with a point ID", r.stdout)
	}
	return lines[0], r.stderr
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d bytes snapshotted", path, len(got), len(want))
	}
}

// allocated returns the bytes a file occupies on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// holesWork reports whether the file system under dir keeps holes.
func holesWork(t *testing.T, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, "probe")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	f.WriteAt([]byte{1}, 4*mib)
	f.Close()
	return allocated(t, p) < mib
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.lifeboat-tmp"))
	if len(m) > 0 {
		t.Errorf("temporary files left behind: %v", m)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tmp, store, img, data := imageAndStore(t, 1)

	id1, sum1 := snapshot(t, store, img)
	if want := "48 blocks, 32 changed, 0 unchanged, 16 zero"; !strings.Contains(sum1, want) {
		t.Errorf("first snapshot summary = %q, want it to contain %q", sum1, want)
	}
	for _, w := range []string{"MB/s", "3.00 MiB"} {
		if !strings.Contains(sum1, w) {
			t.Errorf("first snapshot summary = %q, want it to contain %q", sum1, w)
		}
	}
	id2, sum2 := snapshot(t, store, img, "--name", "unchanged")
	if want := "48 blocks, 0 changed, 32 unchanged, 16 zero"; !strings.Contains(sum2, want) {
		t.Errorf("second snapshot summary = %q, want it to contain %q", sum2, want)
	}

	// Change the first block; the third point differs from the others.
	changed := bytes.Clone(data)
	copy(changed, bytes.Repeat([]byte("lifeboat"), 8<<10))
	if err := os.WriteFile(img, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	id3, sum3 := snapshot(t, store, img, "--name", "v3")
	if want := "1 changed, 31 unchanged, 16 zero"; !strings.Contains(sum3, want) {
		t.Errorf("third snapshot summary = %q, want it to contain %q", sum3, want)
	}

	// points: table and JSON.
	table := mustRun(t, "points", "--store", store).stdout
	for _, w := range []string{"ID", "TIME", id1, id2, id3, "unchanged", "v3", "disk", "3.00 MiB"} {
		if !strings.Contains(table, w) {
			t.Errorf("points table lacks %q:\n%s", w, table)
		}
	}
	var pts []blockstore.Point
	if err := json.Unmarshal([]byte(mustRun(t, "points", "--store", store, "--volume", "disk", "--json").stdout), &pts); err != nil {
		t.Fatalf("points --json: %v", err)
	}
	if len(pts) != 3 || pts[0].ID != id1 || pts[2].ID != id3 || pts[2].Name != "v3" {
		t.Fatalf("points --json = %+v, want points %s, %s, %s", pts, id1, id2, id3)
	}
	if v, ok := pts[0].Volume("disk"); !ok || v.Size != imageSize || v.BlockSize != 64<<10 || v.Used != 32 {
		t.Errorf("point %s volume disk = %+v, want size %d, block size 65536, 32 used blocks", id1, v, imageSize)
	}

	// restore: the newest point by default, older ones by ID, prefix, name
	// or time.
	out := filepath.Join(tmp, "latest.img")
	r := mustRun(t, "restore", "--store", store, "--volume", "disk", "--out", out)
	if r.stdout != "" || !strings.Contains(r.stderr, "restored disk") {
		t.Errorf("restore stdout = %q, stderr = %q; want a summary on stderr only", r.stdout, r.stderr)
	}
	checkFile(t, out, changed)
	if holesWork(t, tmp) {
		if got := allocated(t, out); got > imageSize-mib+64<<10 {
			t.Errorf("restored image occupies %d bytes, want the 1 MiB of zeros left as a hole", got)
		}
	} else {
		t.Log("file system keeps no holes; sparseness not checked")
	}
	for _, at := range []string{id1, id2[:8], "unchanged", pts[1].Time.Format(time.RFC3339Nano)} {
		out := filepath.Join(tmp, "at-"+strings.ReplaceAll(at, ":", "_")+".img")
		mustRun(t, "restore", "--store", store, "--volume", "disk", "--at", at, "--out", out)
		checkFile(t, out, data)
	}
	noTemps(t, tmp)

	// --force replaces an existing file.
	mustRun(t, "restore", "--store", store, "--volume", "disk", "--at", id1, "--out", out, "--force")
	checkFile(t, out, data)
	noTemps(t, tmp)
}

func TestJSONReports(t *testing.T) {
	t.Parallel()
	_, store, img, _ := imageAndStore(t, 2)
	snapshot(t, store, img)
	snapshot(t, store, img)

	var v verifyJSON
	if err := json.Unmarshal([]byte(mustRun(t, "verify", "--store", store, "--json").stdout), &v); err != nil {
		t.Fatalf("verify --json: %v", err)
	}
	if !v.OK || v.Points != 2 || v.Packs < 1 || v.Blocks != 17 || len(v.Damage) != 0 {
		t.Errorf("verify --json = %+v, want ok, 2 points, 17 blocks", v)
	}
	human := mustRun(t, "verify", "--store", store, "--sample", "0.5").stdout
	if !strings.Contains(human, "no damage found") || !strings.Contains(human, "2 points") {
		t.Errorf("verify output = %q", human)
	}

	var st statsJSON
	if err := json.Unmarshal([]byte(mustRun(t, "stats", "--store", store, "--json").stdout), &st); err != nil {
		t.Fatalf("stats --json: %v", err)
	}
	if st.Points != 2 || st.Volumes != 1 || st.LogicalBytes != 2*imageSize || st.DedupRatio < 2 {
		t.Errorf("stats --json = %+v, want 2 points, 1 volume, %d logical bytes, dedup above 2", st, 2*imageSize)
	}
	human = mustRun(t, "stats", "--store", store).stdout
	if !regexp.MustCompile(`dedup\s+\d+\.\d\dx`).MatchString(human) || !strings.Contains(human, "MiB") {
		t.Errorf("stats output = %q, want sizes in MiB and a ratio like 2.41x", human)
	}

	var p pruneJSON
	if err := json.Unmarshal([]byte(mustRun(t, "prune", "--store", store, "--keep-last", "1", "--dry-run", "--json").stdout), &p); err != nil {
		t.Fatalf("prune --json: %v", err)
	}
	if !p.DryRun || p.PointsKept != 1 || p.PointsDeleted != 1 || len(p.Deleted) != 1 {
		t.Errorf("prune --dry-run --json = %+v, want 1 kept, 1 deleted", p)
	}
	if n := pointLines(t, store); n != 3 {
		t.Errorf("points after a dry run: %d lines, want header and 2 points", n)
	}
	out := mustRun(t, "prune", "--store", store, "--keep-last", "1").stdout
	if !strings.Contains(out, "deleted 1 points, kept 1") {
		t.Errorf("prune output = %q", out)
	}
	if n := pointLines(t, store); n != 2 {
		t.Errorf("points after prune: %d lines, want header and 1 point", n)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tmp, store, img, _ := imageAndStore(t, 3)
	snapshot(t, store, img)
	existing := filepath.Join(tmp, "existing.img")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "no-such-store")
	ca, opTLS, emptyTLS := filepath.Join(tmp, "ca"), filepath.Join(tmp, "operator-tls"), filepath.Join(tmp, "empty-tls")
	mustRun(t, "ca", "init", "--dir", ca)
	mustRun(t, "ca", "issue", "--dir", ca, "--operator", "tester", "--role", "viewer", "--out", opTLS)
	if err := os.Mkdir(emptyTLS, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		code int
		want []string // substrings of stderr
	}{
		{"missing store dir", []string{"points", "--store", missing}, exitNotFound, []string{"lifeboat: ", "not a lifeboat store", "Try: ", "lifeboat store init --store " + missing}},
		{"wrong volume", []string{"restore", "--store", store, "--volume", "nope", "--out", filepath.Join(tmp, "x.img")}, exitNotFound, []string{`volume "nope"`, "volumes in this store: disk"}},
		{"points of wrong volume", []string{"points", "--store", store, "--volume", "nope"}, exitNotFound, []string{"volumes in this store: disk"}},
		{"unknown point", []string{"restore", "--store", store, "--volume", "disk", "--at", "no-such-point", "--out", filepath.Join(tmp, "x.img")}, exitNotFound, []string{"no-such-point"}},
		{"decimal block size", []string{"snapshot", "--store", store, "--volume", "v2", "--block-size", "64KB", img}, exitUsage, []string{"--block-size", "ambiguous", "64KiB", "Run 'lifeboat snapshot --help'"}},
		{"block size not a power of two", []string{"snapshot", "--store", store, "--volume", "v2", "--block-size", "3000", img}, exitUsage, []string{"power of two"}},
		{"block size too large", []string{"snapshot", "--store", store, "--volume", "v2", "--block-size", "2MiB", img}, exitUsage, []string{"power of two"}},
		{"block size fraction", []string{"snapshot", "--store", store, "--volume", "v2", "--block-size", "1.5MiB", img}, exitUsage, []string{"whole number"}},
		{"restore onto existing file", []string{"restore", "--store", store, "--volume", "disk", "--out", existing}, exitError, []string{"exists", "Try: pass --force"}},
		{"prune without keep flags", []string{"prune", "--store", store}, exitUsage, []string{"--keep-last"}},
		{"prune negative", []string{"prune", "--store", store, "--keep-last", "-1"}, exitUsage, []string{"--keep-last -1"}},
		{"verify bad sample", []string{"verify", "--store", store, "--sample", "1.5"}, exitUsage, []string{"--sample"}},
		{"unknown command", []string{"frobnicate"}, exitUsage, []string{`unknown command "frobnicate"`}},
		{"unknown subcommand", []string{"store", "frobnicate"}, exitUsage, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"points", "--store", store, "--colour"}, exitUsage, []string{"--colour"}},
		{"missing --store", []string{"points"}, exitUsage, []string{"--store DIR or --admin ADDR is required"}},
		{"missing --store for verify", []string{"verify"}, exitUsage, []string{"--store DIR or --admin ADDR is required"}},
		{"--store and --admin", []string{"points", "--store", store, "--admin", "127.0.0.1:1"}, exitUsage, []string{"exclude each other"}},
		{"--service without --admin", []string{"points", "--store", store, "--service", "web"}, exitUsage, []string{"--service works with --admin"}},
		{"no node at --admin", []string{"points", "--admin", "127.0.0.1:1", "--tls-dir", opTLS}, exitUnavailable, []string{"admin API unreachable", "Try:"}},
		{"--tls-dir without a certificate", []string{"status", "--admin", "127.0.0.1:1", "--tls-dir", emptyTLS}, exitError, []string{emptyTLS, "Try: check " + emptyTLS}},
		{"operator flags with node flags", []string{"ca", "issue", "--dir", ca, "--operator", "x", "--role", "admin", "--name", "n", "--out", filepath.Join(tmp, "x-tls")}, exitUsage, []string{"--operator takes no --name"}},
		{"bad operator role", []string{"ca", "issue", "--dir", ca, "--operator", "x", "--role", "root", "--out", filepath.Join(tmp, "x-tls")}, exitUsage, []string{"--role"}},
		{"missing SOURCE", []string{"snapshot", "--store", store, "--volume", "disk"}, exitUsage, []string{"SOURCE"}},
		{"bad volume name", []string{"snapshot", "--store", store, "--volume", "../etc", img}, exitUsage, []string{"--volume"}},
		{"bad log level", []string{"--log-level", "loud", "points", "--store", store}, exitUsage, []string{"--log-level"}},
		{"missing source", []string{"snapshot", "--store", store, "--volume", "disk", filepath.Join(tmp, "nope.img")}, exitError, []string{"nope.img"}},
		{"directory source", []string{"snapshot", "--store", store, "--volume", "disk", tmp}, exitError, []string{"not a regular file or a block device"}},
		{"init existing store", []string{"store", "init", "--store", store}, exitError, []string{"already exists"}},
		{"restore onto directory", []string{"restore", "--store", store, "--volume", "disk", "--out", tmp, "--force"}, exitError, []string{"is a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := lifeboat(t, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", r.code, tt.code, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "lifeboat: ") {
				t.Errorf("stderr = %q, want it to start with \"lifeboat: \"", r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q, want it to contain %q", r.stderr, w)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
	// The refused restore left the file alone.
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Errorf("existing file now holds %q", b)
	}
	noTemps(t, tmp)
}

// TestOperatorCertificateLookup: cluster commands find the operator's
// certificate in --tls-dir, then $LIFEBOAT_TLS_DIR, then
// ~/.config/lifeboat/tls; with none they stop before dialing (exit 2,
// naming the places and how to issue one). The binary runs as a child
// with its own environment, so the test's process keeps its own.
func TestOperatorCertificateLookup(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: builds the lifeboat binary")
	}
	bin := testbin.Build(t)
	tmp := t.TempDir()
	ca, opTLS := filepath.Join(tmp, "ca"), filepath.Join(tmp, "operator-tls")
	testbin.Run(t, bin, 0, "ca", "init", "--dir", ca)
	out := testbin.Run(t, bin, 0, "ca", "issue", "--dir", ca, "--operator", "tester", "--role", "viewer", "--out", opTLS)
	if want := "LIFEBOAT_TLS_DIR=" + opTLS; !strings.Contains(out, want) {
		t.Errorf("ca issue --operator said %q, want it to name %q", out, want)
	}
	// A config directory holding the certificate where the default is.
	withDefault := filepath.Join(tmp, "config")
	if err := os.MkdirAll(filepath.Join(withDefault, "lifeboat"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(opTLS, filepath.Join(withDefault, "lifeboat", "tls")); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(tmp, "empty-config")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args, env []string
		code      int
		want      []string // substrings of stderr
	}{
		{"none", nil, []string{"XDG_CONFIG_HOME=" + empty}, exitUsage,
			[]string{"no operator certificate", "LIFEBOAT_TLS_DIR", filepath.Join(empty, "lifeboat", "tls"), "Try: issue one with `lifeboat ca issue"}},
		{"--tls-dir", []string{"--tls-dir", opTLS}, []string{"XDG_CONFIG_HOME=" + empty}, exitUnavailable, []string{"admin API unreachable"}},
		{"LIFEBOAT_TLS_DIR", nil, []string{"XDG_CONFIG_HOME=" + empty, "LIFEBOAT_TLS_DIR=" + opTLS}, exitUnavailable, []string{"admin API unreachable"}},
		{"default directory", nil, []string{"XDG_CONFIG_HOME=" + withDefault}, exitUnavailable, []string{"admin API unreachable"}},
		{"--tls-dir before LIFEBOAT_TLS_DIR", []string{"--tls-dir", empty}, []string{"XDG_CONFIG_HOME=" + withDefault, "LIFEBOAT_TLS_DIR=" + opTLS}, exitError, []string{"check " + empty}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"status", "--admin", "127.0.0.1:1"}, tt.args...)...)
			for _, e := range os.Environ() {
				if !strings.HasPrefix(e, "LIFEBOAT_TLS_DIR=") && !strings.HasPrefix(e, "XDG_CONFIG_HOME=") {
					cmd.Env = append(cmd.Env, e)
				}
			}
			cmd.Env = append(cmd.Env, tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", code, tt.code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), w)
				}
			}
		})
	}
}

func TestLocked(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	s, err := blockstore.Open(store, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := lifeboat(t, "points", "--store", store)
	if r.code != exitLocked || !strings.Contains(r.stderr, "in use") {
		t.Errorf("points on a locked store: exit %d, stderr %q; want %d", r.code, r.stderr, exitLocked)
	}
}

func TestInterrupted(t *testing.T) {
	t.Parallel()
	tmp, store, img, _ := imageAndStore(t, 4)
	snapshot(t, store, img)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(tmp, "out.img")
	r := lifeboatCtx(ctx, "restore", "--store", store, "--volume", "disk", "--out", out)
	if r.code != exitInterrupted || r.stderr != "lifeboat: interrupted\n" {
		t.Errorf("interrupted restore: exit %d, stderr %q; want %d and \"lifeboat: interrupted\"", r.code, r.stderr, exitInterrupted)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("interrupted restore created %s", out)
	}
	noTemps(t, tmp)

	r = lifeboatCtx(ctx, "snapshot", "--store", store, "--volume", "disk", img)
	if r.code != exitInterrupted || r.stdout != "" {
		t.Errorf("interrupted snapshot: exit %d, stdout %q; want %d and no point ID", r.code, r.stdout, exitInterrupted)
	}
	if n := pointLines(t, store); n != 2 {
		t.Errorf("points after an interrupted snapshot: %d lines, want header and 1 point", n)
	}
}

func TestVerifyDamage(t *testing.T) {
	t.Parallel()
	_, store, img, _ := imageAndStore(t, 5)
	snapshot(t, store, img)

	packs, _ := filepath.Glob(filepath.Join(store, "packs", "*"))
	if len(packs) == 0 {
		t.Fatal("no pack files")
	}
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	b := make([]byte, 1)
	f.ReadAt(b, fi.Size()/2)
	b[0] ^= 0xff
	f.WriteAt(b, fi.Size()/2)
	f.Close()

	r := lifeboat(t, "verify", "--store", store)
	if r.code != exitDamage {
		t.Errorf("verify of a damaged store: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitDamage, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "damage: ") || !strings.Contains(r.stderr, "lifeboat: verify found") {
		t.Errorf("verify output:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	r = lifeboat(t, "verify", "--store", store, "--json")
	var v verifyJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	if r.code != exitDamage || v.OK || len(v.Damage) == 0 || v.Damage[0].Error == "" {
		t.Errorf("verify --json of a damaged store: exit %d, %+v", r.code, v)
	}
}

// TestDemo runs the built-in demo end to end on a small image and keeps its
// store, which must then pass verify.
func TestDemo(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: the demo builds the binary and runs seven processes for about 15 s; it runs without -short (as CI does)")
	}
	bin := testbin.Build(t)
	dir := filepath.Join(t.TempDir(), "demo")
	start := time.Now()
	out, errOut, code := testbin.RunCode(bin, "demo", "--keep", dir)
	took := time.Since(start)
	t.Logf("lifeboat demo (%s):\n%s%s", took.Round(time.Millisecond), out, errOut)
	if code != 0 || !strings.Contains(out, "demo ok: web is up at dc2 (epoch 2)") || !strings.Contains(out, "the started image equals the point") {
		t.Fatalf("demo: exit %d, no success line", code)
	}
	if took > 60*time.Second {
		t.Errorf("the demo took %s; it must finish in under 60 s", took)
	}
	for _, f := range []string{"cluster.toml", "ca/ca.crt", "dc2-n1/store", "dc2-n1.log", "hooks/started.sha256", "start-nodes.sh", "stop-nodes.sh", "env.sh",
		"operator-tls/cert.crt", "operator-tls/cert.key", "operator-tls/ca.crt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("--keep: %v", err)
		}
	}
	// env.sh gives the kept cluster's commands the demo's operator
	// certificate.
	if b, err := os.ReadFile(filepath.Join(dir, "env.sh")); err != nil || !strings.Contains(string(b), "LIFEBOAT_TLS_DIR=") {
		t.Errorf("env.sh does not export LIFEBOAT_TLS_DIR (%v):\n%s", err, b)
	}
	// No process of the demo is left running.
	if b, _ := exec.Command("pgrep", "-f", dir).Output(); len(b) > 0 {
		t.Errorf("processes left running: %s", b)
	}
}

// TestDemoInterrupted: Ctrl-C stops the demo's processes and removes its
// files.
func TestDemoInterrupted(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: builds the binary and runs the demo for a few seconds")
	}
	bin := testbin.Build(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, "demo")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	logPath := filepath.Join(t.TempDir(), "demo.out")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	// On to SIGINT whether or not the demo got there: exit 130 is wanted either way.
	testwait.Until(30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(output(), "initial sync") {
			return errors.New("no initial sync yet")
		}
		return nil
	})
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("demo after SIGINT: %v, want exit 130:\n%s", err, output())
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the demo left %d entries in TMPDIR", len(ents))
	}
	if b, _ := exec.Command("pgrep", "-f", tmp).Output(); len(b) > 0 {
		t.Errorf("processes left running: %s", b)
	}
}

// TestRestoreTempFile: the temporary file of a restore that was killed does
// not block the next restore to the same place; one still being written
// (its lock held) refuses the second restore and is left alone.
func TestRestoreTempFile(t *testing.T) {
	t.Parallel()
	tmp, store, img, data := imageAndStore(t, 3)
	snapshot(t, store, img)

	out := filepath.Join(tmp, "out.img")
	// What a kill -9 leaves: a half-written temporary file, no lock.
	if err := os.WriteFile(out+".lifeboat-tmp", []byte("half an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "restore", "--store", store, "--volume", "disk", "--out", out)
	checkFile(t, out, data)
	noTemps(t, tmp)

	// A restore in progress holds the lock.
	lk, err := flock.TryLock(out + ".lifeboat-tmp")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	r := lifeboat(t, "restore", "--store", store, "--volume", "disk", "--out", out, "--force")
	if r.code != exitLocked || !strings.Contains(r.stderr, "another restore is writing") {
		t.Errorf("restore beside a running one: exit %d, stderr %q; want exit %d naming the other restore", r.code, r.stderr, exitLocked)
	}
	if _, err := os.Stat(out + ".lifeboat-tmp"); err != nil {
		t.Errorf("the running restore's temporary file: %v", err)
	}
	checkFile(t, out, data)
}
