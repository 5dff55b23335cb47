package standby

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
)

const (
	stateName    = "standby.json"
	stateFormat  = "lifeboat-standby"
	stateVersion = 1
	// maxStateBytes bounds the state file (and the state inside a journal's
	// begin record): 4096 volumes of a few hundred bytes each fit easily.
	maxStateBytes = 8 << 20
	// maxVolumes is blockstore's limit on the volumes of a point.
	maxVolumes = 4096
	pointIDLen = 16
	imageExt   = ".img"
	newExt     = ".new"
)

// state is what the images hold: one complete point. It is the "state"
// object of the state file and of a journal's begin record.
type state struct {
	Format  string           `json:"format"`
	Version int              `json:"version"`
	Point   blockstore.Point `json:"point"`
}

// stateFile is the state file: the state and the SHA-256 of its bytes as
// they appear in the file.
type stateFile struct {
	State  json.RawMessage `json:"state"`
	SHA256 string          `json:"sha256"`
}

// encodeState returns the state file contents for p.
func encodeState(p blockstore.Point) []byte {
	body, _ := json.Marshal(state{Format: stateFormat, Version: stateVersion, Point: p})
	sum := sha256.Sum256(body)
	out, _ := json.Marshal(stateFile{State: body, SHA256: hex.EncodeToString(sum[:])})
	return append(out, '\n')
}

// decodeState checks and decodes a state file.
func decodeState(b []byte) (blockstore.Point, error) {
	if len(b) > maxStateBytes {
		return blockstore.Point{}, fmt.Errorf("%w: state file is %d bytes, limit %d", ErrCorrupt, len(b), maxStateBytes)
	}
	var f stateFile
	if err := strictJSON(b, &f); err != nil {
		return blockstore.Point{}, fmt.Errorf("%w: state file: %v", ErrCorrupt, err)
	}
	if len(f.State) == 0 {
		return blockstore.Point{}, fmt.Errorf("%w: state file: no \"state\"", ErrCorrupt)
	}
	sum := sha256.Sum256(f.State)
	if got := hex.EncodeToString(sum[:]); got != f.SHA256 {
		return blockstore.Point{}, fmt.Errorf("%w: state file: \"state\" hashes to sha256 %s, file says %q", ErrCorrupt, got, f.SHA256)
	}
	return decodeStateBody(f.State)
}

// decodeStateBody checks and decodes a state object.
func decodeStateBody(b []byte) (blockstore.Point, error) {
	if len(b) > maxStateBytes {
		return blockstore.Point{}, fmt.Errorf("%w: state is %d bytes, limit %d", ErrCorrupt, len(b), maxStateBytes)
	}
	var st state
	if err := strictJSON(b, &st); err != nil {
		return blockstore.Point{}, fmt.Errorf("%w: state: %v", ErrCorrupt, err)
	}
	if st.Format != stateFormat {
		return blockstore.Point{}, fmt.Errorf("%w: state format %q, want %q", ErrCorrupt, st.Format, stateFormat)
	}
	if st.Version != stateVersion {
		return blockstore.Point{}, fmt.Errorf("%w: state version %d, this lifeboat reads version %d", ErrCorrupt, st.Version, stateVersion)
	}
	if err := checkPoint(st.Point); err != nil {
		return blockstore.Point{}, fmt.Errorf("%w: state: %v", ErrCorrupt, err)
	}
	return st.Point, nil
}

// strictJSON decodes exactly one JSON value with no unknown fields.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// checkPoint checks a point as Apply receives it and as the state records
// it: an ID, valid names, at most 4096 volumes with valid geometry and
// distinct image file names.
func checkPoint(p blockstore.Point) error {
	if len(p.ID) != pointIDLen {
		return fmt.Errorf("point id %q: want %d hex digits", p.ID, pointIDLen)
	}
	if _, err := hex.DecodeString(p.ID); err != nil {
		return fmt.Errorf("point id %q: want %d hex digits", p.ID, pointIDLen)
	}
	if err := blockstore.ValidName("group", p.Group); err != nil {
		return err
	}
	if p.Name != "" {
		if err := blockstore.ValidName("point", p.Name); err != nil {
			return err
		}
	}
	if p.Time.IsZero() {
		return fmt.Errorf("point %s: no time", p.ID)
	}
	if len(p.Volumes) == 0 || len(p.Volumes) > maxVolumes {
		return fmt.Errorf("point %s: %d volumes, want 1..%d", p.ID, len(p.Volumes), maxVolumes)
	}
	files := make(map[string]string, len(p.Volumes))
	for _, v := range p.Volumes {
		file, err := fileName(v.Name)
		if err != nil {
			return err
		}
		if other, dup := files[file]; dup {
			return fmt.Errorf("point %s: volumes %q and %q would share image file %s", p.ID, other, v.Name, file)
		}
		files[file] = v.Name
		g := v.Geometry()
		if err := g.Validate(); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if v.Used < 0 || v.Used > g.Blocks() {
			return fmt.Errorf("volume %q: %d used blocks of %d", v.Name, v.Used, g.Blocks())
		}
	}
	return nil
}

// fileName returns the image file name of a volume: the part of its name
// after the last '/', plus ".img".
func fileName(volume string) (string, error) {
	if err := blockstore.ValidName("volume", volume); err != nil {
		return "", err
	}
	base := volume[strings.LastIndexByte(volume, '/')+1:]
	if base == "" || base[0] == '.' {
		return "", fmt.Errorf("volume name %q: the part after the last '/' must be a file name not starting with '.'", volume)
	}
	return base + imageExt, nil
}

// ImageName returns the image file name of a volume (SERVICE/.../NAME →
// NAME.img), as standby images are named; "" for a name that makes none.
// Failover images taken from a standby keep these names.
func ImageName(volume string) string {
	f, _ := fileName(volume)
	return f
}

// validFile reports whether name is an image file name as fileName makes
// them (journals name files; they are checked before any is touched).
func validFile(name string) bool {
	base, ok := strings.CutSuffix(name, imageExt)
	return ok && base != "" && base[0] != '.' && !strings.ContainsAny(base, "/") && blockstore.ValidName("volume", base) == nil
}

// readState reads the state file in dir; ok is false when there is none.
func readState(dir string) (p blockstore.Point, ok bool, err error) {
	path := filepath.Join(dir, stateName)
	b, err := durable.ReadFile(path, maxStateBytes)
	if errors.Is(err, os.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("read standby state: %w", err)
	}
	p, err = decodeState(b)
	if err != nil {
		return p, false, &CorruptError{Path: path, Offset: -1, Err: err, Hint: stateHint}
	}
	return p, true, nil
}

const stateHint = "the standby images cannot be trusted: move the directory aside; the hot tier then rebuilds them from the store"
