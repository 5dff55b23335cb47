package blockstore

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/lifeboat-dr/lifeboat/internal/names"
)

// VolumeState is one volume at one point: its geometry and the root of its
// block map.
type VolumeState struct {
	Name      string `json:"name"`
	Root      ID     `json:"root"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
	// Used is the number of non-zero blocks.
	Used int64 `json:"used_blocks"`
}

// Geometry returns the volume's geometry.
func (v VolumeState) Geometry() Geometry { return Geometry{Size: v.Size, BlockSize: v.BlockSize} }

// Point is a named, time-stamped consistency point over one or more volumes
// of a group (a service, or a single volume in a local store).
type Point struct {
	ID      string        `json:"id"`
	Name    string        `json:"name,omitempty"`
	Group   string        `json:"group"`
	Time    time.Time     `json:"time"`
	Volumes []VolumeState `json:"volumes"`
}

// Volume returns the state of the named volume in p.
func (p Point) Volume(name string) (VolumeState, bool) {
	for _, v := range p.Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return VolumeState{}, false
}

// MarshalText and UnmarshalText make IDs hex in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

const pointIDLen = 16

// ValidName checks a volume, group or point name: 1 to 128 letters, digits,
// and '-', '_', '.', '/' (for SERVICE/VOLUME), not starting with a dot or
// slash.
func ValidName(kind, s string) error { return names.CheckLabel(kind, s) }

func (p *Point) validate() error {
	if err := ValidName("group", p.Group); err != nil {
		return err
	}
	if p.Name != "" {
		if err := ValidName("point", p.Name); err != nil {
			return err
		}
	}
	if p.Time.IsZero() {
		return fmt.Errorf("point: no time")
	}
	if len(p.Volumes) == 0 || len(p.Volumes) > 4096 {
		return fmt.Errorf("point: %d volumes, want 1..4096", len(p.Volumes))
	}
	seen := map[string]bool{}
	for _, v := range p.Volumes {
		if err := ValidName("volume", v.Name); err != nil {
			return err
		}
		if seen[v.Name] {
			return fmt.Errorf("point: volume %q twice", v.Name)
		}
		seen[v.Name] = true
		if err := v.Geometry().Validate(); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if v.Used < 0 || v.Used > v.Geometry().Blocks() {
			return fmt.Errorf("volume %q: %d used blocks of %d", v.Name, v.Used, v.Geometry().Blocks())
		}
	}
	return nil
}

func pointKey(t time.Time, id string) []byte {
	k := make([]byte, 1+8, 1+8+pointIDLen)
	k[0] = prefixPoint
	binary.BigEndian.PutUint64(k[1:], uint64(t.UnixNano()))
	return append(k, id...)
}

// decodePoint checks and decodes a point record.
func decodePoint(b []byte) (Point, error) {
	var p Point
	if len(b) > 4<<20 {
		return p, corruptf("point record: %d bytes", len(b))
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, corruptf("point record: %v", err)
	}
	if dec.More() {
		return p, corruptf("point record: data after the record")
	}
	if len(p.ID) != pointIDLen {
		return p, corruptf("point id %q", p.ID)
	}
	if _, err := hex.DecodeString(p.ID); err != nil {
		return p, corruptf("point id %q", p.ID)
	}
	if err := p.validate(); err != nil {
		return p, corruptf("point %s: %v", p.ID, err)
	}
	return p, nil
}

// CommitPoint makes every block put so far durable, then records p
// atomically. Its ID is derived from its contents; p.Time defaults to now.
// When CommitPoint returns nil the point survives any crash.
func (s *Store) CommitPoint(ctx context.Context, p Point) (Point, error) {
	if p.Time.IsZero() {
		p.Time = s.now()
	}
	p.Time = p.Time.UTC().Round(0)
	p.ID = ""
	if err := p.validate(); err != nil {
		return Point{}, err
	}
	for _, v := range p.Volumes {
		if !v.Root.IsZero() {
			ok, err := s.w.has(ref{kindPage, v.Root})
			if err == nil && !ok {
				err = fmt.Errorf("map root %s: %w", v.Root.Short(), ErrNotFound)
			}
			if err != nil {
				return Point{}, fmt.Errorf("commit point: volume %q: %w", v.Name, err)
			}
		}
	}
	body, _ := json.Marshal(p)
	id := s.h.sum(body)
	p.ID = hex.EncodeToString(id[:pointIDLen/2])
	rec, _ := json.Marshal(p)
	if err := ctx.Err(); err != nil {
		return Point{}, err
	}
	if err := s.w.writable(); err != nil {
		return Point{}, err
	}
	// A copy of the record goes into the pack, synced by the flush with the
	// blocks: the index can be rebuilt from the packs (RebuildIndex).
	fid := s.h.pointFrameID(p.ID)
	if err := s.w.write(kindPoint, [][]byte{rec}, []ID{fid}, []int{0}); err != nil {
		return Point{}, err
	}
	if err := s.w.flush(); err != nil {
		return Point{}, err
	}
	if err := checkSpace(s.dir, int64(len(rec)), 1<<20, "write point"); err != nil {
		return Point{}, err
	}
	var lock time.Time
	if s.lockFor != nil {
		lock = s.lockFor(p)
	}
	// The record and its lock go in one synced batch: a point is never
	// seen without the lock it was committed with.
	pk := pointKey(p.Time, p.ID)
	b := s.idx.db.NewBatch()
	defer b.Close()
	b.Set(pk, s.idx.sealValue(pk, rec), nil)
	s.pts.mu.Lock()
	defer s.pts.mu.Unlock()
	if !lock.IsZero() && lock.UnixNano() > 0 {
		// Never lower a lock the point may already have (the same point
		// committed twice).
		cur, err := s.idx.lockOf(p.ID)
		if err != nil {
			return Point{}, err
		}
		if lock.After(cur) {
			lk := lockKey(p.ID)
			b.Set(lk, s.idx.sealValue(lk, encodeLock(lock)), nil)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		err = s.idx.err("write point", err)
		s.w.fail(err)
		return Point{}, err
	}
	return p, nil
}

// pointFrameID is the ID under which the pack copy of point id is indexed.
func (h *hasher) pointFrameID(id string) ID {
	return h.sum([]byte("lifeboat point record " + id))
}

// Points returns every point, oldest first. A non-empty volume keeps only the
// points that hold it.
func (s *Store) Points(ctx context.Context, volume string) ([]Point, error) {
	if s.idx.shut.Load() {
		return nil, ErrClosed
	}
	it, err := s.idx.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixPoint}, UpperBound: []byte{prefixPoint + 1}})
	if err != nil {
		return nil, s.idx.err("list points", err)
	}
	defer it.Close()
	var out []Point
	for it.First(); it.Valid(); it.Next() {
		v, err := s.idx.openValue(it.Key(), it.Value())
		var p Point
		if err == nil {
			p, err = decodePoint(v)
		}
		if err != nil {
			return nil, s.idx.corrupt(ZeroID, err)
		}
		if volume != "" {
			if _, ok := p.Volume(volume); !ok {
				continue
			}
		}
		out = append(out, p)
	}
	if err := it.Error(); err != nil {
		return nil, s.idx.err("list points", err)
	}
	return out, nil
}

// Resolve finds the state of volume at a point: at is "" or "latest" for the
// newest point, a point ID (or a unique prefix of at least 6 digits), a point
// name, or an RFC 3339 time (the newest point at or before it).
func (s *Store) Resolve(ctx context.Context, volume, at string) (Point, VolumeState, error) {
	pts, err := s.Points(ctx, volume)
	if err != nil {
		return Point{}, VolumeState{}, err
	}
	if len(pts) == 0 {
		names, _ := s.Volumes(ctx)
		return Point{}, VolumeState{}, fmt.Errorf("volume %q: %w (volumes in this store: %s)", volume, ErrNotFound, strings.Join(names, ", "))
	}
	var found []Point
	switch {
	case at == "" || at == "latest":
		found = pts[len(pts)-1:]
	default:
		if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
			for i := len(pts) - 1; i >= 0; i-- {
				if !pts[i].Time.After(t) {
					found = pts[i : i+1]
					break
				}
			}
			if found == nil {
				return Point{}, VolumeState{}, fmt.Errorf("volume %q has no point at or before %s (oldest is %s): %w", volume, at, pts[0].Time.Format(time.RFC3339), ErrNotFound)
			}
			break
		}
		for _, p := range pts {
			if p.ID == at || p.Name == at || (len(at) >= 6 && strings.HasPrefix(p.ID, at)) {
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 0:
		return Point{}, VolumeState{}, fmt.Errorf("volume %q: point %q: %w (give a point ID, name or RFC 3339 time)", volume, at, ErrNotFound)
	case 1:
		v, _ := found[0].Volume(volume)
		return found[0], v, nil
	default:
		return Point{}, VolumeState{}, fmt.Errorf("volume %q: point %q is ambiguous (%d points match)", volume, at, len(found))
	}
}

// Volumes returns the names of all volumes in the store, sorted.
func (s *Store) Volumes(ctx context.Context) ([]string, error) {
	pts, err := s.Points(ctx, "")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range pts {
		for _, v := range p.Volumes {
			names = append(names, v.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
