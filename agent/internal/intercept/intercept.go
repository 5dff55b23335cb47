//go:build linux

package intercept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Volume is one protected volume.
type Volume struct {
	// Name is the file name on the mount.
	Name string
	// Backing is the real image file or block device.
	Backing string
	// BlockSize is a power of two from 4 KiB to 1 MiB.
	BlockSize int
}

// Sink receives the intercepted writes of every volume of a mount.
//
// Blocks is called for every write, in the order writes reach the backing
// file, after the write is in the backing file, with the full content of
// every block the write touched (blocks[i] is block first+i), read back
// from the backing file while the volume's write lock is held: two writes
// to one block are seen in order and each call sees exactly its own
// effect. Calls for one volume never overlap; calls for different volumes
// may run concurrently. The slices are valid only during the call. The
// write is acknowledged to its caller only when Blocks returns nil; an
// error fails the write with EIO (the backing file holds it nonetheless,
// so the sink must treat a failed call as a reason to resync those blocks).
//
// Flush is called on fsync, fdatasync, and on close (flush) of a handle
// that wrote, after the backing file is synced: a consistency point. The
// fsync returns when Flush returns; an error fails it with EIO.
type Sink interface {
	Blocks(volume string, first int64, blocks [][]byte) error
	Flush(volume string) error
}

// Options configure Mount.
type Options struct {
	// Mountpoint is an existing directory.
	Mountpoint string
	Volumes    []Volume
	Sink       Sink
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// AllowOther lets users other than the mounting one open the files.
	AllowOther bool
}

// FS is a mounted intercept file system.
type FS struct {
	mountpoint string
	server     *fuse.Server
	vols       []*volNode
	log        *slog.Logger

	mu        sync.Mutex
	unmounted bool
}

// volNode is the file of one volume.
type volNode struct {
	fs.Inode
	v    Volume
	f    *os.File
	fd   int
	size int64
	sink Sink
	log  *slog.Logger

	// mu is the volume's write lock: pwrite, read back and Blocks happen
	// under it, so Blocks sees writes in the order they were applied.
	mu  sync.Mutex
	buf []byte // read-back buffer, used under mu

	wrote sync.Mutex // guards dirty
	dirty bool       // written since the last sync
}

// handle is an open file of a volume.
type handle struct {
	writable bool
}

var (
	_ fs.NodeOpener    = (*volNode)(nil)
	_ fs.NodeGetattrer = (*volNode)(nil)
	_ fs.NodeSetattrer = (*volNode)(nil)
	_ fs.NodeReader    = (*volNode)(nil)
	_ fs.NodeWriter    = (*volNode)(nil)
	_ fs.NodeWritever  = (*volNode)(nil)
	_ fs.NodeFsyncer   = (*volNode)(nil)
	_ fs.NodeFlusher   = (*volNode)(nil)
	_ fs.NodeAllocater = (*volNode)(nil)
)

// Mount exposes every volume as Mountpoint/NAME, a regular file of the
// backing's size whose writes pass through the Sink. Files cannot be
// created, removed, renamed or resized (EPERM). A stale mount left by a
// killed agent at Mountpoint is lazily unmounted first.
func Mount(o Options) (*FS, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Sink == nil {
		return nil, errors.New("mount intercept: no Sink")
	}
	if len(o.Volumes) == 0 {
		return nil, errors.New("mount intercept: no volumes")
	}
	log := o.Logger.With("mountpoint", o.Mountpoint)
	if stale, err := isStale(o.Mountpoint); err != nil {
		return nil, err
	} else if stale {
		log.Warn("intercept_stale_mount_removed")
		if err := UnmountStale(o.Mountpoint); err != nil {
			return nil, err
		}
	}
	fi, err := os.Stat(o.Mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mount intercept: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("mount intercept at %s: not a directory", o.Mountpoint)
	}
	f := &FS{mountpoint: o.Mountpoint, log: log}
	seen := map[string]bool{}
	for _, v := range o.Volumes {
		if err := checkVolume(v); err != nil {
			f.closeBacking()
			return nil, err
		}
		if seen[v.Name] {
			f.closeBacking()
			return nil, fmt.Errorf("mount intercept: volume %s given twice", v.Name)
		}
		seen[v.Name] = true
		n, err := openVolume(v, o.Sink, log)
		if err != nil {
			f.closeBacking()
			return nil, err
		}
		f.vols = append(f.vols, n)
	}
	root := &rootNode{vols: f.vols}
	timeout := time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: o.AllowOther,
			FsName:     "lifeboat",
			Name:       "lifeboat",
			// One request per write up to 1 MiB (kernel max_pages 256).
			MaxWrite:      1 << 20,
			DirectMount:   true,
			DisableXAttrs: true,
			// Reads of 1 MiB do not fit a pipe with the reply header:
			// splicing would only log and fall back to a copy.
			DisableSplice: true,
			MaxBackground: 64,
		},
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		Logger:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	server, err := fs.Mount(o.Mountpoint, root, opts)
	if err != nil {
		f.closeBacking()
		return nil, fmt.Errorf("mount intercept at %s: %w", o.Mountpoint, err)
	}
	f.server = server
	log.Info("intercept_mounted", "volumes", len(f.vols))
	return f, nil
}

func checkVolume(v Volume) error {
	if v.Name == "" || v.Name == "." || v.Name == ".." || len(v.Name) > 255 {
		return fmt.Errorf("mount intercept: volume name %q: want a file name", v.Name)
	}
	for _, c := range v.Name {
		if c == '/' || c == 0 {
			return fmt.Errorf("mount intercept: volume name %q: want a file name (no slash)", v.Name)
		}
	}
	if v.BlockSize < 4096 || v.BlockSize > 1<<20 || v.BlockSize&(v.BlockSize-1) != 0 {
		return fmt.Errorf("mount intercept: volume %s: block size %d: want a power of two from 4 KiB to 1 MiB", v.Name, v.BlockSize)
	}
	return nil
}

func openVolume(v Volume, sink Sink, log *slog.Logger) (*volNode, error) {
	f, err := os.OpenFile(v.Backing, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing of volume %s: %w", v.Name, err)
	}
	// Seek, not Stat: a block device's stat size is 0.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of backing %s: %w", v.Backing, err)
	}
	return &volNode{v: v, f: f, fd: int(f.Fd()), size: size, sink: sink, log: log.With("volume", v.Name)}, nil
}

func (f *FS) closeBacking() {
	for _, v := range f.vols {
		v.f.Close()
	}
}

// Mountpoint returns the directory the volumes appear in.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Path returns the path of a volume's file on the mount.
func (f *FS) Path(volume string) string { return f.mountpoint + "/" + volume }

// Unmount unmounts the file system and closes the backing files. It fails
// (and leaves everything mounted) while a file is busy, e.g. attached to a
// loop device; UnmountStale detaches lazily instead.
func (f *FS) Unmount() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unmounted {
		return nil
	}
	if err := f.server.Unmount(); err != nil {
		return fmt.Errorf("unmount intercept at %s: %w", f.mountpoint, err)
	}
	f.server.Wait()
	f.unmounted = true
	var errs []error
	for _, v := range f.vols {
		if err := v.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close backing %s: %w", v.v.Backing, err))
		}
	}
	f.log.Info("intercept_unmounted")
	return errors.Join(errs...)
}

// rootNode is the mount's directory: a fixed list of volume files.
type rootNode struct {
	fs.Inode
	vols []*volNode
}

var (
	_ fs.NodeOnAdder   = (*rootNode)(nil)
	_ fs.NodeCreater   = (*rootNode)(nil)
	_ fs.NodeMkdirer   = (*rootNode)(nil)
	_ fs.NodeMknoder   = (*rootNode)(nil)
	_ fs.NodeUnlinker  = (*rootNode)(nil)
	_ fs.NodeRmdirer   = (*rootNode)(nil)
	_ fs.NodeRenamer   = (*rootNode)(nil)
	_ fs.NodeSymlinker = (*rootNode)(nil)
	_ fs.NodeLinker    = (*rootNode)(nil)
)

func (r *rootNode) OnAdd(ctx context.Context) {
	for _, v := range r.vols {
		ch := r.NewPersistentInode(ctx, v, fs.StableAttr{Mode: syscall.S_IFREG})
		r.AddChild(v.v.Name, ch, false)
	}
}

func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EPERM
}

func (r *rootNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (r *rootNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EPERM
}

func (r *rootNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Open gives every handle FOPEN_DIRECT_IO: the kernel keeps no page cache
// for the file, so every read and write reaches us (no stale reads after
// writes through another path) and no handle is a passthrough fd (with
// FUSE passthrough no write would reach Go, see PLATFORM.md).
func (n *volNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	acc := flags & syscall.O_ACCMODE
	return &handle{writable: acc == syscall.O_WRONLY || acc == syscall.O_RDWR}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *volNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(n.size)
	out.Blksize = uint32(min(n.v.BlockSize, 1<<16))
	out.Blocks = (uint64(n.size) + 511) / 512
	var st unix.Stat_t
	if err := unix.Fstat(n.fd, &st); err == nil {
		out.SetTimes(nil, timePtr(time.Unix(st.Mtim.Unix())), timePtr(time.Unix(st.Ctim.Unix())))
	}
	return 0
}

func timePtr(t time.Time) *time.Time { return &t }

// Setattr refuses a size change; other attributes are ignored.
func (n *volNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.size {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

// Allocate (fallocate, including punching holes) would change content
// without a write: refused.
func (n *volNode) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	return syscall.EOPNOTSUPP
}

func (n *volNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.size {
		return fuse.ReadResultData(nil), 0
	}
	want := dest[:min(int64(len(dest)), n.size-off)]
	done := 0
	for done < len(want) {
		k, err := unix.Pread(n.fd, want[done:], off+int64(done))
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			n.log.Error("intercept_read_failed", "offset", off, "err", err)
			return nil, fs.ToErrno(err)
		}
		if k == 0 {
			break
		}
		done += k
	}
	return fuse.ReadResultData(want[:done]), 0
}

func (n *volNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return n.write([][]byte{data}, off)
}

// Writev is where go-fuse >= 2.12 sends writes (PLATFORM.md).
func (n *volNode) Writev(ctx context.Context, f fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	return n.write(data, off)
}

// write applies a write to the backing file and hands the touched blocks to
// the sink, all under the volume's write lock.
func (n *volNode) write(data [][]byte, off int64) (uint32, syscall.Errno) {
	total := 0
	for _, d := range data {
		total += len(d)
	}
	if total == 0 {
		return 0, 0
	}
	if off < 0 || off >= n.size {
		return 0, syscall.ENOSPC
	}
	if rest := n.size - off; int64(total) > rest {
		// The volume does not grow: write what fits.
		data = clip(data, int(rest))
		total = int(rest)
	}
	bs := int64(n.v.BlockSize)
	first := off / bs
	last := (off + int64(total) - 1) / bs
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := pwritevAll(n.fd, data, off); err != nil {
		n.log.Error("intercept_write_failed", "offset", off, "bytes", total, "err", err)
		return 0, fs.ToErrno(err)
	}
	n.wrote.Lock()
	n.dirty = true
	n.wrote.Unlock()
	count := int(last - first + 1)
	need := count * int(bs)
	if cap(n.buf) < need {
		n.buf = make([]byte, need)
	}
	buf := n.buf[:need]
	if err := preadFull(n.fd, buf, first*bs, n.size); err != nil {
		n.log.Error("intercept_read_back_failed", "block", first, "blocks", count, "err", err)
		return 0, syscall.EIO
	}
	blocks := make([][]byte, count)
	for i := range blocks {
		blocks[i] = buf[i*int(bs) : (i+1)*int(bs)]
	}
	if err := n.sink.Blocks(n.v.Name, first, blocks); err != nil {
		n.log.Error("intercept_sink_failed", "block", first, "blocks", count, "err", err)
		return 0, syscall.EIO
	}
	return uint32(total), 0
}

// clip returns the first n bytes of the iovec.
func clip(data [][]byte, n int) [][]byte {
	var out [][]byte
	for _, d := range data {
		if n == 0 {
			break
		}
		k := min(len(d), n)
		out = append(out, d[:k])
		n -= k
	}
	return out
}

// pwritevAll writes all of data at off, looping over short writes.
func pwritevAll(fd int, data [][]byte, off int64) error {
	for len(data) > 0 {
		k, err := unix.Pwritev(fd, data, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrShortWrite
		}
		off += int64(k)
		for k > 0 {
			if k >= len(data[0]) {
				k -= len(data[0])
				data = data[1:]
			} else {
				data[0] = data[0][k:]
				k = 0
			}
		}
		for len(data) > 0 && len(data[0]) == 0 {
			data = data[1:]
		}
	}
	return nil
}

// preadFull fills buf from off; bytes past size (a last block that the
// volume only partly covers) are zero.
func preadFull(fd int, buf []byte, off, size int64) error {
	valid := int(min(int64(len(buf)), size-off))
	done := 0
	for done < valid {
		k, err := unix.Pread(fd, buf[done:valid], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF
		}
		done += k
	}
	clear(buf[valid:])
	return nil
}

// Fsync syncs the backing file, then calls the sink's Flush: a
// consistency point.
func (n *volNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	return n.syncAndFlush()
}

// Flush (close of a handle) is a consistency point when the volume was
// written since the last one; readers closing cost nothing.
func (n *volNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*handle); !ok || !h.writable {
		return 0
	}
	n.wrote.Lock()
	dirty := n.dirty
	n.wrote.Unlock()
	if !dirty {
		return 0
	}
	return n.syncAndFlush()
}

func (n *volNode) syncAndFlush() syscall.Errno {
	n.wrote.Lock()
	n.dirty = false
	n.wrote.Unlock()
	if err := unix.Fdatasync(n.fd); err != nil {
		n.wrote.Lock()
		n.dirty = true
		n.wrote.Unlock()
		n.log.Error("intercept_sync_failed", "err", err)
		return syscall.EIO
	}
	if err := n.sink.Flush(n.v.Name); err != nil {
		n.log.Error("intercept_sink_flush_failed", "err", err)
		return syscall.EIO
	}
	return 0
}
