package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/blockstore/imgfmt"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/internal/flock"
)

// Sentinel errors callers branch on.
var (
	// ErrCorrupt marks an export whose files do not match its manifest.
	ErrCorrupt = errors.New("export does not match its manifest")
	// ErrLocked means another process is exporting or pruning the service.
	ErrLocked = errors.New("archive of the service is in use by another process")
)

// CorruptError reports a damaged export file. Hint tells the operator what
// to do.
type CorruptError struct {
	Path string
	Err  error
	Hint string
}

func (e *CorruptError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *CorruptError) Unwrap() error { return e.Err }

const corruptHint = "do not boot from this export; delete it and export the point again (lifeboat keeps the point in its store while retention allows)"

// Source is what Export reads points from. *blockstore.Store satisfies it.
type Source interface {
	// Restore writes a volume state to w; holes are skipped unless
	// o.WriteZeros, so a new truncated file stays sparse.
	Restore(ctx context.Context, v blockstore.VolumeState, w io.WriterAt, o blockstore.RestoreOptions) error
	// OpenImage opens a volume state for random reads (qcow2 and vhdx).
	OpenImage(ctx context.Context, v blockstore.VolumeState) (*blockstore.Image, error)
}

var _ Source = (*blockstore.Store)(nil)

// Options configure Export and Prune. The zero value gives the defaults.
type Options struct {
	// Logger receives progress and cleanup messages; nil means
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock: the manifest's creation time, and the time
	// against which Prune ages exports. nil means time.Now.
	Now func() time.Time
	// ImageFormat of the images Export writes; "" means raw.
	ImageFormat imgfmt.Format
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ImageFormat == "" {
		o.ImageFormat = imgfmt.Raw
	}
	return o
}

// Entry is one export found by List.
type Entry struct {
	Path    string    // the export directory
	Name    string    // its name, <time>-<point ID prefix>
	Time    time.Time // the point's time, to the second (from the name)
	PointID string    // the first 12 digits of the point ID (from the name)
}

const (
	lockName    = ".lock"
	tmpPrefix   = ".tmp-"
	prunePrefix = ".prune-"
)

// Export writes point pt of its service (pt.Group) into
// dir/SERVICE/<time>-<ID prefix>/: an image per volume (sparse raw, or
// qcow2 or vhdx as o.ImageFormat says), manifest.json and SHA256SUMS. It writes into a temporary directory
// beside the final one, syncs every file and the directory, then renames
// it into place and syncs the parent: an export is there completely or
// not at all. Leftovers of an interrupted Export or Prune of the service
// are removed first. Exporting a point that is already there returns its
// manifest and writes nothing. ctx is checked until the rename.
func Export(ctx context.Context, src Source, pt blockstore.Point, dir string, o Options) (Manifest, error) {
	o = o.withDefaults()
	log, now := o.Logger, o.Now
	m, err := newManifest(pt, o.ImageFormat)
	if err != nil {
		return Manifest{}, fmt.Errorf("export point %s: %w", pt.ID, err)
	}
	sdir := filepath.Join(dir, pt.Group)
	if err := durable.MkdirAll(sdir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("export point %s: %w", pt.ID, err)
	}
	unlock, err := lock(sdir)
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	if err := cleanLeftovers(sdir, log); err != nil {
		return Manifest{}, err
	}
	name := m.DirName()
	final := filepath.Join(sdir, name)
	if _, err := os.Stat(final); err == nil {
		old, err := readManifest(final)
		if err != nil {
			return Manifest{}, fmt.Errorf("export point %s: %s exists: %w", pt.ID, final, err)
		}
		if old.Point.ID != pt.ID {
			return Manifest{}, fmt.Errorf("export point %s: %s holds point %s", pt.ID, final, old.Point.ID)
		}
		return old, nil
	}
	tmp := filepath.Join(sdir, tmpPrefix+name)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("export point %s: %w", pt.ID, err)
	}
	start := time.Now()
	var written atomic.Int64
	err = func() error {
		for i := range m.Volumes {
			v := &m.Volumes[i]
			vs, _ := pt.Volume(v.Name)
			write := writeImage
			if o.ImageFormat != imgfmt.Raw {
				write = writeFormatted(o.ImageFormat)
			}
			sum, err := write(ctx, src, vs, filepath.Join(tmp, v.File), &written)
			if err != nil {
				return err
			}
			v.SHA256 = sum
		}
		m.Created = now().UTC()
		mb := encodeManifest(m)
		if err := durable.Create(filepath.Join(tmp, manifestName), mb, 0o644); err != nil {
			return err
		}
		if err := writeFileSynced(filepath.Join(tmp, sumsName), encodeSums(m, mb)); err != nil {
			return err
		}
		if err := durable.SyncDir(tmp); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		return durable.SyncDir(sdir)
	}()
	if err != nil {
		os.RemoveAll(tmp)
		return Manifest{}, fmt.Errorf("export point %s to %s: %w", pt.ID, final, err)
	}
	log.Debug("point exported", "service", pt.Group, "point", pt.ID, "path", final, "volumes", len(m.Volumes), "bytes", written.Load(), "duration", time.Since(start))
	return m, nil
}

// newManifest checks pt and returns its manifest without digests.
func newManifest(pt blockstore.Point, format imgfmt.Format) (Manifest, error) {
	ext, ok := imageExts[string(format)]
	if !ok {
		return Manifest{}, fmt.Errorf("image format %q: want raw, qcow2 or vhdx", format)
	}
	if err := checkService(pt.Group); err != nil {
		return Manifest{}, err
	}
	if err := checkPointID(pt.ID); err != nil {
		return Manifest{}, err
	}
	if pt.Time.IsZero() {
		return Manifest{}, errors.New("point has no time")
	}
	if len(pt.Volumes) == 0 || len(pt.Volumes) > maxVolumes {
		return Manifest{}, fmt.Errorf("%d volumes, want 1..%d", len(pt.Volumes), maxVolumes)
	}
	m := Manifest{Format: formatName, Version: formatVersion, ImageFormat: string(format), Service: pt.Group,
		Point: Point{ID: pt.ID, Name: pt.Name, Time: pt.Time.UTC()}}
	files := map[string]string{}
	for _, v := range pt.Volumes {
		f, err := fileName(v.Name, ext)
		if err != nil {
			return Manifest{}, err
		}
		if other, dup := files[f]; dup {
			return Manifest{}, fmt.Errorf("volumes %q and %q would share image file %s", other, v.Name, f)
		}
		files[f] = v.Name
		if err := v.Geometry().Validate(); err != nil {
			return Manifest{}, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		m.Volumes = append(m.Volumes, Volume{Name: v.Name, File: f, Size: v.Size, BlockSize: v.BlockSize, Root: v.Root})
	}
	return m, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	f io.WriterAt
	n *atomic.Int64
}

func (w countingWriter) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	w.n.Add(int64(n))
	return n, err
}

// writeImage writes volume v sparse into a new file at path, syncs it and
// returns the SHA-256 of its contents, read back in one pass.
func writeImage(ctx context.Context, src Source, v blockstore.VolumeState, path string, written *atomic.Int64) (string, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Truncate(v.Size); err != nil {
		return "", fmt.Errorf("size image %s: %w", path, err)
	}
	if err := src.Restore(ctx, v, countingWriter{blockstore.NewWriteback(f), written}, blockstore.RestoreOptions{}); err != nil {
		return "", fmt.Errorf("write image %s of volume %q: %w", path, v.Name, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync image %s: %w", path, err)
	}
	// The digest is of the bytes the file holds after the sync, read back
	// (holes are not read), so it also covers what the file system kept.
	sum, err := hashFile(f, v.Size)
	if err != nil {
		return "", err
	}
	return sum, f.Close()
}

// writeFormatted returns the writer of qcow2 or vhdx images: streamed
// from the store into a new file, hashed as written, synced.
func writeFormatted(format imgfmt.Format) func(ctx context.Context, src Source, v blockstore.VolumeState, path string, written *atomic.Int64) (string, error) {
	return func(ctx context.Context, src Source, v blockstore.VolumeState, path string, written *atomic.Int64) (string, error) {
		im, err := src.OpenImage(ctx, v)
		if err != nil {
			return "", fmt.Errorf("open volume %q: %w", v.Name, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return "", err
		}
		defer f.Close()
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h), n: written}
		if err := imgfmt.Write(ctx, cw, format, imgfmt.FromStore(im), nil); err != nil {
			return "", fmt.Errorf("write %s image %s of volume %q: %w", format, path, v.Name, err)
		}
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("sync image %s: %w", path, err)
		}
		return hex.EncodeToString(h.Sum(nil)), f.Close()
	}
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// lock takes the service directory's lock file.
func lock(sdir string) (unlock func(), err error) {
	l, err := flock.TryLock(filepath.Join(sdir, lockName))
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("lock archive %s: %w", sdir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("lock archive %s: %w", sdir, err)
	}
	return func() { l.Unlock() }, nil
}

// cleanLeftovers removes what an interrupted Export or Prune left in the
// service directory. The caller holds the lock.
func cleanLeftovers(sdir string, log *slog.Logger) error {
	entries, err := os.ReadDir(sdir)
	if err != nil {
		return fmt.Errorf("read archive %s: %w", sdir, err)
	}
	removed := false
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, tmpPrefix) || strings.HasPrefix(n, prunePrefix) {
			path := filepath.Join(sdir, n)
			log.Warn("removing export leftover of an interrupted run", "path", path)
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("remove export leftover: %w", err)
			}
			removed = true
		}
	}
	if removed {
		return durable.SyncDir(sdir)
	}
	return nil
}

func readManifest(path string) (Manifest, error) {
	mpath := filepath.Join(path, manifestName)
	b, err := durable.ReadFile(mpath, maxManifest)
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	m, err := decodeManifest(b)
	if err != nil {
		return Manifest{}, &CorruptError{Path: mpath, Err: fmt.Errorf("%w: %v", ErrCorrupt, err), Hint: corruptHint}
	}
	return m, nil
}

// Verify re-reads the export at path (a directory Export made) and checks
// the manifest, SHA256SUMS and every image's size and SHA-256. A mismatch
// is a *CorruptError naming the file.
func Verify(path string) (Manifest, error) {
	mpath := filepath.Join(path, manifestName)
	mb, err := durable.ReadFile(mpath, maxManifest)
	if err != nil {
		return Manifest{}, fmt.Errorf("verify export: %w", err)
	}
	corrupt := func(file, format string, args ...any) error {
		return &CorruptError{Path: file, Err: fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...), Hint: corruptHint}
	}
	m, err := decodeManifest(mb)
	if err != nil {
		return Manifest{}, corrupt(mpath, "%v", err)
	}
	spath := filepath.Join(path, sumsName)
	sb, err := durable.ReadFile(spath, maxManifest)
	if err != nil {
		return m, fmt.Errorf("verify export: %w", err)
	}
	sums, err := decodeSums(sb)
	if err != nil {
		return m, corrupt(spath, "%v", err)
	}
	if got := sha256Hex(mb); sums[manifestName] != got {
		return m, corrupt(mpath, "sha256 %s, %s says %q", got, sumsName, sums[manifestName])
	}
	if len(sums) != len(m.Volumes)+1 {
		return m, corrupt(spath, "lists %d files, want the manifest and %d images", len(sums), len(m.Volumes))
	}
	for _, v := range m.Volumes {
		ipath := filepath.Join(path, v.File)
		if sums[v.File] != v.SHA256 {
			return m, corrupt(spath, "%s: sha256 %q, the manifest says %s", v.File, sums[v.File], v.SHA256)
		}
		if err := verifyImage(ipath, m.ImageFormat, v); err != nil {
			return m, err
		}
	}
	return m, nil
}

func verifyImage(path, format string, v Volume) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify export: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("verify export: %w", err)
	}
	size := v.Size
	if format != "raw" {
		size = fi.Size() // a qcow2 or vhdx file is not the volume's size
	}
	if !fi.Mode().IsRegular() || fi.Size() != size {
		return &CorruptError{Path: path, Err: fmt.Errorf("%w: image is %d bytes (%s), the manifest says %d", ErrCorrupt, fi.Size(), fi.Mode().Type(), v.Size), Hint: corruptHint}
	}
	sum, err := hashFile(f, size)
	if err != nil {
		return fmt.Errorf("verify export: %w", err)
	}
	if sum != v.SHA256 {
		return &CorruptError{Path: path, Err: fmt.Errorf("%w: sha256 %s, the manifest says %s", ErrCorrupt, sum, v.SHA256), Hint: corruptHint}
	}
	return nil
}

// List returns the exports of service in dir, newest first (by the
// point's time to the second, then by point ID prefix). It reads only
// directory names; a missing service directory is an empty list.
func List(dir, service string) ([]Entry, error) {
	if err := checkService(service); err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, service)
	entries, err := os.ReadDir(sdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	var out []Entry
	for _, e := range entries {
		t, id, ok := parseDirName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		out = append(out, Entry{Path: filepath.Join(sdir, e.Name()), Name: e.Name(), Time: t, PointID: id})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(b.Name, a.Name) })
	return out, nil
}

// Prune removes the exports of service in dir that r no longer keeps at
// o.Now(), and returns them. The newest export is never removed, nor one
// younger than r.Lock. Each removal is a rename out of sight (synced),
// then a recursive delete; leftovers are removed by the next Export or
// Prune.
func Prune(dir, service string, r Retention, o Options) ([]Entry, error) {
	o = o.withDefaults()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if err := checkService(service); err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, service)
	if _, err := os.Stat(sdir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	unlock, err := lock(sdir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := cleanLeftovers(sdir, o.Logger); err != nil {
		return nil, err
	}
	list, err := List(dir, service)
	if err != nil {
		return nil, err
	}
	times := make([]time.Time, len(list))
	for i, e := range list {
		times[i] = e.Time
	}
	keep := r.Keep(times, o.Now())
	var removed []Entry
	for i, e := range list {
		if keep[i] || i == 0 {
			continue
		}
		gone := filepath.Join(sdir, prunePrefix+e.Name)
		if err := os.Rename(e.Path, gone); err != nil {
			return removed, fmt.Errorf("prune export %s: %w", e.Path, err)
		}
		if err := durable.SyncDir(sdir); err != nil {
			return removed, fmt.Errorf("prune export %s: %w", e.Path, err)
		}
		removed = append(removed, e)
		if err := os.RemoveAll(gone); err != nil {
			return removed, fmt.Errorf("prune export %s: %w", e.Path, err)
		}
		o.Logger.Debug("export pruned", "service", service, "path", e.Path)
	}
	return removed, nil
}
