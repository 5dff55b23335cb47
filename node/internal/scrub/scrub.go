// Package scrub reads a node's block store back continuously, at the pace
// its site's policy sets, and repairs what it finds from other nodes: a
// block whose record is damaged or that a point names but the store lacks
// is fetched by ID from another node (node/internal/repair), checked and
// rewritten. A block no node can give is lost: the engine logs it naming
// service, volume, point and byte range, counts it, and marks the points
// that need it damaged at this site in the catalog, so that failovers and
// drills pass them over. Reads elsewhere in the node (restore, failover,
// drill, NBD) repair the same way through the store's Fetch option; their
// findings reach the engine through Damaged.
//
// One goroutine per node: Run. A full pass on demand: Pass (lifeboat
// verify --admin --repair).
package scrub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/durable"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/repair"
)

// Store is the part of the block store the engine uses.
type Store interface {
	Scrub(ctx context.Context, o blockstore.ScrubOptions) (blockstore.ScrubReport, error)
	Repair(ctx context.Context, id blockstore.ID, data []byte) error
	Users(ctx context.Context, ids []blockstore.ID) ([]blockstore.BlockUse, error)
	Stats(ctx context.Context) (blockstore.Stats, error)
}

// CatalogReader gives the applied policy (the site's pace).
type CatalogReader interface {
	Catalog() *catalog.Catalog
}

// Fetch gets sound copies of blocks from other nodes (repair.Fetcher).
type Fetch func(ctx context.Context, service string, ids []blockstore.ID) (map[blockstore.ID]repair.Found, error)

// Defaults.
const (
	DefaultCycle = 7 * 24 * time.Hour
	DefaultRate  = 16 << 20 // bytes/s at most
	DefaultTick  = 10 * time.Second
	minSlice     = 1 << 20 // bytes a tick reads at least
)

// Options configure an Engine.
type Options struct {
	Name    mesh.NodeID
	Site    mesh.Site
	Store   Store
	Fetch   Fetch
	Catalog CatalogReader
	// Propose writes a command (damaged marks) to the catalog.
	Propose func(context.Context, *catalog.Command) error
	// State is the file the cycle's cursor and counts are kept in.
	State  string
	Tick   time.Duration // time between slices at most; 0 = 10s (a cycle has 100 slices at least)
	Clock  clock.Clock
	Logger *slog.Logger
	// Counted, if set, is told of each finding: "repaired", "lost" or
	// "unreferenced" (a metric).
	Counted func(result string)
}

// state is what survives a restart: where the cycle is and what it found.
type state struct {
	Cursor     blockstore.ScrubCursor `json:"cursor"`
	Started    time.Time              `json:"started,omitzero"`
	LastCycle  time.Time              `json:"last_cycle,omitzero"`
	CycleBytes int64                  `json:"cycle_bytes"`
	Total      int64                  `json:"total_bytes"` // the store's pack bytes when the cycle started
	Cycles     int64                  `json:"cycles"`
	Found      int64                  `json:"found"`
	Repaired   int64                  `json:"repaired"`
	Lost       int64                  `json:"lost"`
	LastError  string                 `json:"last_error,omitempty"`
}

// Engine is one node's scrub.
type Engine struct {
	o       Options
	log     *slog.Logger
	damaged chan blockstore.BadBlock // reads' findings, for Run

	mu  sync.Mutex // st; one slice or pass at a time
	st  state
	lim *rate.Limiter
	run sync.Mutex // held by a slice or a pass
}

// New returns an engine; it reads the state file (a damaged one starts a
// new cycle, with a warning).
func New(o Options) *Engine {
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	e := &Engine{o: o, log: o.Logger, damaged: make(chan blockstore.BadBlock, 1024)}
	if b, err := os.ReadFile(o.State); err == nil {
		if err := json.Unmarshal(b, &e.st); err != nil {
			e.log.Warn("scrub state unreadable: a new cycle starts", "path", o.State, "err", err)
			e.st = state{}
		}
	}
	return e
}

// Damaged hands a read's finding to the engine (the store's OnDamage): a
// block repaired on the fly is counted, a lost one marked. It never blocks.
func (e *Engine) Damaged(b blockstore.BadBlock, repaired bool) {
	if e == nil {
		return // the node is starting: the scrub finds it again
	}
	if repaired {
		e.mu.Lock()
		e.st.Found++
		e.st.Repaired++
		e.mu.Unlock()
		e.count("repaired")
		e.log.Info("a read met a damaged block and repaired it from another node", "block", b.ID.String(), "path", b.Path, "offset", b.Offset)
		return
	}
	select {
	case e.damaged <- b:
	default: // the next scrub cycle finds it again
	}
}

// pace is the site's cycle and rate from the applied policy.
func (e *Engine) pace() (cycle time.Duration, bps int64) {
	cycle, bps = DefaultCycle, DefaultRate
	cat := e.o.Catalog.Catalog()
	if cat.Policy == nil || cat.Policy.Cluster == nil {
		return
	}
	if s := cat.Policy.Cluster.Site(string(e.o.Site)); s != nil {
		if s.Scrub > 0 {
			cycle = time.Duration(s.Scrub)
		}
		if s.ScrubRate > 0 {
			bps = int64(s.ScrubRate)
		}
	}
	return
}

// Run scrubs a slice every tick until ctx ends, and marks what reads
// found lost.
func (e *Engine) Run(ctx context.Context) error {
	// The slices run on this goroutine: on its own thread at the idle
	// I/O class, other reads and writes of the disk go first.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := idleIOPriority(); err != nil {
		e.log.Debug("scrub: idle I/O priority not set", "err", err)
	}
	for {
		// At least a hundred slices a cycle: a short cycle (a test's, a
		// small store's) is not read in one gulp.
		cycle, _ := e.pace()
		tick := min(e.o.Tick, max(cycle/100, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case b := <-e.damaged:
			e.handle(ctx, []blockstore.BadBlock{b})
		case <-e.o.Clock.After(tick):
			if err := e.slice(ctx, tick); err != nil && ctx.Err() == nil {
				e.log.Warn("scrub slice failed; the next tick goes on from where it stopped", "err", err)
			}
		}
	}
}

// limiter returns the rate limiter for bps.
func (e *Engine) limiter(bps int64) *rate.Limiter {
	burst := int(max(bps, 8<<20))
	if e.lim == nil || e.lim.Limit() != rate.Limit(bps) {
		e.lim = rate.NewLimiter(rate.Limit(bps), burst)
	}
	return e.lim
}

// slice scrubs the share of the store one tick owes to finish a cycle in
// the site's time.
func (e *Engine) slice(ctx context.Context, tick time.Duration) error {
	e.run.Lock()
	defer e.run.Unlock()
	cycle, bps := e.pace()
	e.mu.Lock()
	st := e.st
	e.mu.Unlock()
	if st.Cursor == (blockstore.ScrubCursor{}) && st.CycleBytes == 0 {
		stats, err := e.o.Store.Stats(ctx)
		if err != nil {
			return err
		}
		st.Total, st.Started = stats.StoredBytes, e.o.Clock.Now()
	}
	budget := int64(float64(st.Total) * float64(tick) / float64(cycle))
	budget = min(max(budget, minSlice), max(int64(float64(bps)*tick.Seconds()), minSlice))
	lim := e.limiter(bps)
	rep, err := e.o.Store.Scrub(ctx, blockstore.ScrubOptions{From: st.Cursor, Bytes: budget,
		Wait: func(ctx context.Context, n int) error { return lim.WaitN(ctx, min(n, lim.Burst())) }})
	st.Cursor = rep.Next
	st.CycleBytes += rep.Bytes
	if err != nil {
		st.LastError = err.Error()
	}
	if rep.Cycle {
		st.Cycles++
		st.LastCycle = e.o.Clock.Now()
		e.log.Info("scrub cycle done", "bytes", st.CycleBytes, "took", st.LastCycle.Sub(st.Started).Round(time.Second))
		st.CycleBytes, st.Cursor = 0, blockstore.ScrubCursor{}
	}
	e.mu.Lock()
	e.st.Cursor, e.st.CycleBytes, e.st.Total, e.st.Started = st.Cursor, st.CycleBytes, st.Total, st.Started
	e.st.Cycles, e.st.LastCycle, e.st.LastError = st.Cycles, st.LastCycle, st.LastError
	e.mu.Unlock()
	if len(rep.Bad) > 0 {
		e.handle(ctx, rep.Bad)
	}
	e.save()
	return err
}

// save writes the state file; a failure costs at most a re-read.
func (e *Engine) save() {
	e.mu.Lock()
	b, _ := json.Marshal(e.st)
	e.mu.Unlock()
	if err := durable.WriteFile(e.o.State, b, 0o600); err != nil {
		e.log.Warn("save scrub state", "path", e.o.State, "err", err)
	}
}

// Outcome is what handling a batch of findings did.
type Outcome struct {
	Repaired     []api.RepairedBlock
	Lost         []api.LostBlock
	Unreferenced int
	Pages        int // damaged map pages (not repaired)
}

// handle repairs bad blocks from other nodes, and reports and marks the
// ones no node has.
func (e *Engine) handle(ctx context.Context, bad []blockstore.BadBlock) Outcome {
	var out Outcome
	ids := make([]blockstore.ID, 0, len(bad))
	where := map[blockstore.ID]blockstore.BadBlock{}
	for _, b := range bad {
		if b.Page {
			// A block map page: not fetched by ID (a peer's pages are
			// its own); the points over it cannot be read in full here.
			out.Pages++
			e.count("lost")
			e.log.Error("a damaged block map page: the points over it cannot be restored in full here; restore them from another site", "page", b.ID.String(), "path", b.Path, "offset", b.Offset, "why", b.Err)
			continue
		}
		if b.ID.IsZero() {
			continue
		}
		if _, dup := where[b.ID]; !dup {
			ids = append(ids, b.ID)
			where[b.ID] = b
		}
	}
	if len(ids) == 0 {
		e.mu.Lock()
		e.st.Found += int64(out.Pages)
		e.st.Lost += int64(out.Pages)
		e.mu.Unlock()
		return out
	}
	users, err := e.o.Store.Users(ctx, ids)
	if err != nil {
		e.log.Error("scrub: cannot list the points that use damaged blocks; they are tried again next cycle", "blocks", len(ids), "err", err)
		return out
	}
	byService := map[string][]blockstore.ID{}
	uses := map[blockstore.ID][]blockstore.BlockUse{}
	for _, u := range users {
		if _, seen := uses[u.ID]; !seen {
			svc := serviceOf(u.Volume)
			byService[svc] = append(byService[svc], u.ID)
		}
		uses[u.ID] = append(uses[u.ID], u)
	}
	for _, id := range ids {
		if len(uses[id]) == 0 {
			out.Unreferenced++
			e.count("unreferenced")
			e.log.Info("scrub: a damaged block no point uses; garbage collection removes it", "block", id.String(), "path", where[id].Path)
		}
	}
	var marks []catalog.PointMark
	for _, svc := range slices.Sorted(maps.Keys(byService)) {
		want := byService[svc]
		found, ferr := e.o.Fetch(ctx, svc, want)
		for _, id := range want {
			b := where[id]
			if f, ok := found[id]; ok {
				if err := e.o.Store.Repair(ctx, id, f.Data); err == nil {
					out.Repaired = append(out.Repaired, api.RepairedBlock{Block: id.String(), Service: svc, From: string(f.From), Path: b.Path, Offset: b.Offset})
					e.count("repaired")
					e.log.Warn("repaired a damaged block from another node", "service", svc, "block", id.String(), "from", f.From, "path", b.Path, "offset", b.Offset)
					continue
				} else {
					ferr = errors.Join(ferr, err)
				}
			}
			for _, u := range uses[id] {
				l := api.LostBlock{Block: id.String(), Service: svc, Volume: u.Volume, Point: u.Point, Offset: u.Offset, Length: u.Length}
				out.Lost = append(out.Lost, l)
				marks = append(marks, catalog.PointMark{Service: svc, Point: u.Point,
					Damaged: map[string]string{string(e.o.Site): fmt.Sprintf("%s bytes %d-%d (block %s)", u.Volume, u.Offset, u.Offset+u.Length, id.Short())}})
				e.log.Error("a block no node holds: the point cannot be restored in full here", "service", svc, "volume", u.Volume,
					"point", u.Point, "offset", u.Offset, "length", u.Length, "block", id.String(), "why", ferr)
			}
			e.count("lost")
		}
	}
	e.mu.Lock()
	e.st.Found += int64(len(ids) + out.Pages)
	e.st.Repaired += int64(len(out.Repaired))
	e.st.Lost += int64(len(ids) - len(out.Repaired) - out.Unreferenced + out.Pages)
	e.mu.Unlock()
	if len(marks) > 0 {
		if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpMarks, Marks: marks}); err != nil {
			e.log.Error("mark damaged points in the catalog", "points", len(marks), "err", err)
		}
	}
	return out
}

func (e *Engine) count(result string) {
	if e.o.Counted != nil {
		e.o.Counted(result)
	}
}

// serviceOf is the service of a store volume name, "SERVICE/VOLUME".
func serviceOf(volume string) string {
	svc, _, _ := strings.Cut(volume, "/")
	return svc
}

// Pass scrubs the whole store now, unthrottled, and with repair set
// repairs what it finds (lifeboat verify --admin --repair). It does not
// move the background cycle's cursor.
func (e *Engine) Pass(ctx context.Context, repairIt bool) (api.ScrubResult, error) {
	e.run.Lock()
	defer e.run.Unlock()
	var res api.ScrubResult
	var bad []blockstore.BadBlock
	from := blockstore.ScrubCursor{}
	for {
		rep, err := e.o.Store.Scrub(ctx, blockstore.ScrubOptions{From: from})
		res.Bytes += rep.Bytes
		res.Blocks += rep.Blocks
		bad = append(bad, rep.Bad...)
		if err != nil {
			return res, err
		}
		if rep.Cycle {
			break
		}
		from = rep.Next
	}
	for _, b := range bad {
		d := api.Damage{Error: fmt.Sprint(b.Err), Path: b.Path, Block: b.ID.String()}
		if b.Offset >= 0 {
			off := b.Offset
			d.Offset = &off
		}
		if b.Missing {
			d.Error = "missing: " + d.Error
		}
		res.Found = append(res.Found, d)
	}
	if repairIt && len(bad) > 0 {
		out := e.handle(ctx, bad)
		res.Repaired, res.Lost, res.Unreferenced, res.Pages = out.Repaired, out.Lost, out.Unreferenced, out.Pages
	}
	res.OK = len(bad) == 0 || (repairIt && len(res.Lost) == 0 && res.Pages == 0)
	return res, nil
}

// Status is the engine's progress and findings for status and stats.
func (e *Engine) Status() *api.ScrubStatus {
	cycle, bps := e.pace()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &api.ScrubStatus{Cycle: cycle.String(), Rate: bps, CycleBytes: e.st.CycleBytes, Total: e.st.Total,
		Started: e.st.Started, LastCycle: e.st.LastCycle, Cycles: e.st.Cycles,
		Found: e.st.Found, Repaired: e.st.Repaired, Lost: e.st.Lost, Error: e.st.LastError}
	if e.st.Total > 0 {
		st.Progress = min(float64(e.st.CycleBytes)/float64(e.st.Total), 1)
	}
	return st
}

// StatePath is where a node keeps its scrub state.
func StatePath(dataDir string) string { return filepath.Join(dataDir, "scrub.json") }
