package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
)

// Names of the files in an export directory, and limits.
const (
	manifestName  = "manifest.json"
	sumsName      = "SHA256SUMS"
	formatName    = "lifeboat-export"
	formatVersion = 1
	timeLayout    = "20060102T150405Z"
	idPrefixLen   = 12
	pointIDLen    = 16
	maxVolumes    = 4096
	maxManifest   = 16 << 20
)

// Manifest describes one export: a point of a service and its images.
type Manifest struct {
	Format      string    `json:"format"`       // "lifeboat-export"
	Version     int       `json:"version"`      // 1
	ImageFormat string    `json:"image_format"` // "raw", "qcow2" or "vhdx"
	Service     string    `json:"service"`
	Point       Point     `json:"point"`
	Created     time.Time `json:"created"`
	Volumes     []Volume  `json:"volumes"`
}

// Point identifies the consistency point an export holds.
type Point struct {
	ID   string    `json:"id"`
	Name string    `json:"name,omitempty"`
	Time time.Time `json:"time"`
}

// Volume is one image of an export.
type Volume struct {
	Name      string        `json:"name"` // SERVICE/VOLUME, as in the point
	File      string        `json:"file"` // image file in the export directory
	Size      int64         `json:"size"`
	BlockSize int           `json:"block_size"`
	Root      blockstore.ID `json:"root"` // the block map root in the store
	SHA256    string        `json:"sha256"`
}

// DirName returns the name of the export's directory:
// <UTC time as 20060102T150405Z>-<first 12 digits of the point ID>.
func (m Manifest) DirName() string { return dirName(m.Point.Time, m.Point.ID) }

func dirName(t time.Time, id string) string {
	return t.UTC().Format(timeLayout) + "-" + id[:idPrefixLen]
}

// parseDirName parses an export directory name.
func parseDirName(name string) (time.Time, string, bool) {
	ts, id, ok := strings.Cut(name, "-")
	if !ok || len(id) != idPrefixLen || !isLowerHex(id) || len(ts) != len(timeLayout) {
		return time.Time{}, "", false
	}
	t, err := time.Parse(timeLayout, ts)
	if err != nil {
		return time.Time{}, "", false
	}
	return t, id, true
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func encodeManifest(m Manifest) []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// decodeManifest checks and decodes a manifest.
func decodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > maxManifest {
		return m, fmt.Errorf("manifest: %d bytes, limit %d", len(b), maxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("manifest: %v", err)
	}
	if dec.More() {
		return m, errors.New("manifest: data after the JSON object")
	}
	if m.Format != formatName {
		return m, fmt.Errorf("manifest: format %q, want %q", m.Format, formatName)
	}
	if m.Version != formatVersion {
		return m, fmt.Errorf("manifest: version %d, this lifeboat reads version %d", m.Version, formatVersion)
	}
	ext, ok := imageExts[m.ImageFormat]
	if !ok {
		return m, fmt.Errorf("manifest: image format %q, want raw, qcow2 or vhdx", m.ImageFormat)
	}
	if err := checkService(m.Service); err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	if err := checkPointID(m.Point.ID); err != nil {
		return m, fmt.Errorf("manifest: %w", err)
	}
	if m.Point.Name != "" {
		if err := blockstore.ValidName("point", m.Point.Name); err != nil {
			return m, fmt.Errorf("manifest: %w", err)
		}
	}
	if m.Point.Time.IsZero() {
		return m, errors.New("manifest: point has no time")
	}
	if len(m.Volumes) == 0 || len(m.Volumes) > maxVolumes {
		return m, fmt.Errorf("manifest: %d volumes, want 1..%d", len(m.Volumes), maxVolumes)
	}
	files := map[string]bool{}
	for _, v := range m.Volumes {
		f, err := fileName(v.Name, ext)
		if err != nil {
			return m, fmt.Errorf("manifest: %w", err)
		}
		if v.File != f {
			return m, fmt.Errorf("manifest: volume %q has file %q, want %q", v.Name, v.File, f)
		}
		if files[f] {
			return m, fmt.Errorf("manifest: file %q twice", f)
		}
		files[f] = true
		if err := (blockstore.Geometry{Size: v.Size, BlockSize: v.BlockSize}).Validate(); err != nil {
			return m, fmt.Errorf("manifest: volume %q: %w", v.Name, err)
		}
		if len(v.SHA256) != 64 || !isLowerHex(v.SHA256) {
			return m, fmt.Errorf("manifest: volume %q: sha256 %q: want 64 lowercase hex digits", v.Name, v.SHA256)
		}
	}
	return m, nil
}

func checkService(s string) error {
	if err := blockstore.ValidName("service", s); err != nil {
		return err
	}
	if strings.Contains(s, "/") {
		return fmt.Errorf("service name %q: must not contain '/'", s)
	}
	return nil
}

func checkPointID(id string) error {
	if len(id) != pointIDLen || !isLowerHex(id) {
		return fmt.Errorf("point id %q: want %d lowercase hex digits", id, pointIDLen)
	}
	return nil
}

// imageExts are the image file extensions by image format.
var imageExts = map[string]string{"raw": ".img", "qcow2": ".qcow2", "vhdx": ".vhdx"}

// fileName returns the image file name of a volume: the part of its name
// after the last '/', plus the format's extension.
func fileName(volume, ext string) (string, error) {
	if err := blockstore.ValidName("volume", volume); err != nil {
		return "", err
	}
	base := volume[strings.LastIndexByte(volume, '/')+1:]
	if base == "" || base[0] == '.' {
		return "", fmt.Errorf("volume name %q: the part after the last '/' must be a file name not starting with '.'", volume)
	}
	return base + ext, nil
}

// encodeSums returns the SHA256SUMS file for m and the manifest bytes, in
// the format `sha256sum -c` reads: the manifest first, then the images in
// manifest order.
func encodeSums(m Manifest, manifest []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s  %s\n", sha256Hex(manifest), manifestName)
	for _, v := range m.Volumes {
		fmt.Fprintf(&b, "%s  %s\n", v.SHA256, v.File)
	}
	return b.Bytes()
}

// decodeSums parses a SHA256SUMS file into file name -> hex digest.
func decodeSums(b []byte) (map[string]string, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%d bytes, limit %d", len(b), maxManifest)
	}
	out := map[string]string{}
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			sum, name, ok = strings.Cut(line, " *")
		}
		if !ok || len(sum) != 64 || !isLowerHex(sum) || name == "" {
			return nil, fmt.Errorf("line %d: want \"<64 hex digits>  <file>\"", i+1)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("line %d: %s listed twice", i+1, name)
		}
		out[name] = sum
	}
	return out, nil
}
