package checks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// File systems the fsck check knows.
const (
	FSExt = "ext2/3/4"
	FSXFS = "xfs"
)

// Part is a file system found in a volume: the whole volume, or one
// partition of its MBR partition table.
type Part struct {
	Index  int   // partition number from 1; 0 = the whole volume
	Type   byte  // MBR partition type; 0 for the whole volume
	Offset int64 // bytes
	Size   int64
	FS     string // FSExt, FSXFS, or "" = none recognised
}

// Detect reads a volume's layout from its first sectors: a file system
// on the whole volume, else the partitions of an MBR partition table
// (GPT and extended partitions are not read; note says so). A damaged
// table gives what can be read and a note, never a panic.
func Detect(r io.ReaderAt, size int64) (parts []Part, note string) {
	if fs := superblock(r, 0); fs != "" {
		return []Part{{Offset: 0, Size: size, FS: fs}}, ""
	}
	var mbr [512]byte
	if _, err := r.ReadAt(mbr[:], 0); err != nil || mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, "no file system and no partition table"
	}
	var notes []string
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		first, count := int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		switch {
		case typ == 0:
			continue
		case typ == 0xEE:
			notes = append(notes, "GPT partition table: not read (MBR partitions only)")
			continue
		case typ == 0x05 || typ == 0x0F || typ == 0x85:
			notes = append(notes, fmt.Sprintf("partition %d: extended partitions are not read", i+1))
			continue
		case count == 0 || first*512 >= size:
			notes = append(notes, fmt.Sprintf("partition %d: sectors %d+%d lie outside the volume", i+1, first, count))
			continue
		}
		p := Part{Index: i + 1, Type: typ, Offset: first * 512, Size: min(count*512, size-first*512)}
		p.FS = superblock(r, p.Offset)
		parts = append(parts, p)
	}
	if len(parts) == 0 && len(notes) == 0 {
		notes = append(notes, "a partition table with no partitions")
	}
	return parts, strings.Join(notes, "; ")
}

// superblock recognises the file system starting at off.
func superblock(r io.ReaderAt, off int64) string {
	var b [1024 + 0x3A]byte
	n, _ := r.ReadAt(b[:], off)
	if n >= 4 && string(b[:4]) == "XFSB" {
		return FSXFS
	}
	if n >= len(b) && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xEF53 {
		return FSExt
	}
	return ""
}

// fsck checks every image's file systems read-only.
func (r *Runner) fsck(ctx context.Context, req Request, timeout time.Duration) catalog.CheckResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var ok, failed, skips []string
	var evidence []string
	for _, im := range req.Images {
		f, err := os.Open(im.Path)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", im.Volume, err))
			continue
		}
		fi, err := f.Stat()
		var parts []Part
		var note string
		if err == nil {
			parts, note = Detect(f, fi.Size())
		}
		f.Close()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", im.Volume, err))
			continue
		}
		if note != "" {
			skips = append(skips, im.Volume+": "+note)
		}
		for _, p := range parts {
			name := im.Volume
			if p.Index > 0 {
				name += " partition " + strconv.Itoa(p.Index)
			}
			if p.FS == "" {
				if p.Type == 0x83 {
					failed = append(failed, fmt.Sprintf("%s (type 0x83 Linux): no ext2/3/4 or xfs superblock", name))
				} else {
					skips = append(skips, fmt.Sprintf("%s (type 0x%02x): not an ext2/3/4 or xfs file system", name, p.Type))
				}
				continue
			}
			logPath := filepath.Join(req.Evidence, "fsck-"+envName(im.Volume)+partSuffix(p)+".log")
			res, detail := r.fsckPart(ctx, im.Path, p, logPath)
			if _, err := os.Stat(logPath); err == nil {
				evidence = append(evidence, logPath)
			}
			line := fmt.Sprintf("%s (%s): %s", name, p.FS, detail)
			switch res {
			case catalog.VerifyOK:
				ok = append(ok, line)
			case catalog.VerifyFailed:
				failed = append(failed, line)
			default:
				skips = append(skips, line)
			}
		}
	}
	res := catalog.CheckResult{Evidence: evidence}
	switch {
	case len(failed) > 0:
		res.Result = catalog.VerifyFailed
	case len(ok) > 0:
		res.Result = catalog.VerifyOK
	default:
		res.Result = catalog.VerifySkipped
	}
	res.Detail = strings.Join(append(append(failed, ok...), skips...), "; ")
	return res
}

func partSuffix(p Part) string {
	if p.Index == 0 {
		return ""
	}
	return "-p" + strconv.Itoa(p.Index)
}

// fsckPart checks one file system and writes the tool's output to
// logPath.
func (r *Runner) fsckPart(ctx context.Context, image string, p Part, logPath string) (result, detail string) {
	var cmd *exec.Cmd
	switch p.FS {
	case FSExt:
		bin, ok := tool(r.o.E2fsck, "e2fsck")
		if !ok {
			return catalog.VerifySkipped, "e2fsck is not installed (apt-get install e2fsprogs)"
		}
		dev := image
		if p.Offset > 0 {
			dev += "?offset=" + strconv.FormatInt(p.Offset, 10)
		}
		cmd = exec.CommandContext(ctx, bin, "-f", "-n", dev)
	case FSXFS:
		bin, ok := tool(r.o.XFSRepair, "xfs_repair")
		if !ok {
			return catalog.VerifySkipped, "xfs_repair is not installed (apt-get install xfsprogs)"
		}
		dev := image
		if p.Offset > 0 {
			// xfs_repair takes no offset: the partition goes into a
			// throwaway sparse file of its own.
			tmp, err := extract(image, p)
			if err != nil {
				return catalog.VerifyFailed, err.Error()
			}
			defer os.Remove(tmp)
			dev = tmp
		}
		cmd = exec.CommandContext(ctx, bin, "-n", "-f", dev)
	default:
		return catalog.VerifySkipped, "no checker"
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	t0 := time.Now()
	err := cmd.Run()
	os.WriteFile(logPath, out.Bytes(), 0o600)
	took := time.Since(t0).Round(time.Millisecond)
	if ctx.Err() != nil {
		return catalog.VerifyFailed, fmt.Sprintf("%s did not finish in time (killed)", filepath.Base(cmd.Path))
	}
	var xe *exec.ExitError
	switch {
	case err == nil:
		return catalog.VerifyOK, fmt.Sprintf("clean (%s -n, %s)", filepath.Base(cmd.Path), took)
	case errors.As(err, &xe):
		return catalog.VerifyFailed, fmt.Sprintf("%s -n exit code %d: %s", filepath.Base(cmd.Path), xe.ExitCode(), tail(out.String(), 2))
	}
	return catalog.VerifyFailed, fmt.Sprintf("%s: %v", filepath.Base(cmd.Path), err)
}

// extract copies partition p of image into a sparse file beside it,
// skipping zero runs, and returns its path.
func extract(image string, p Part) (string, error) {
	in, err := os.Open(image)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(image), ".part-*")
	if err != nil {
		return "", err
	}
	name := out.Name()
	err = out.Truncate(p.Size)
	buf := make([]byte, 1<<20)
	for off := int64(0); err == nil && off < p.Size; off += int64(len(buf)) {
		n := int(min(int64(len(buf)), p.Size-off))
		var m int
		if m, err = in.ReadAt(buf[:n], p.Offset+off); err == io.EOF {
			err, n = nil, m
		}
		if err == nil && !allZero(buf[:n]) {
			_, err = out.WriteAt(buf[:n], off)
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("extract partition %d: %w", p.Index, err)
	}
	return name, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
