package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/clock"
	"github.com/lifeboat-dr/lifeboat/internal/logpolicy"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// The space guard's thresholds (issue 15 item 5), in percent of a file
// system free (statfs: blocks available to the node over its size). The
// worst of the node's file systems counts. node doc.go has the rules.
const (
	// Under SpaceLowPercent the state is "low": one WARN with what to do;
	// it is "ok" again at SpaceLowClearPercent.
	SpaceLowPercent      = 20.0
	SpaceLowClearPercent = 21.0
	// Under SpaceCriticalPercent the services of the lowest priority held
	// here are refused new points; under SpaceSeverePercent every service
	// but those of the highest priority; under SpaceFloorPercent all.
	SpaceCriticalPercent = 5.0
	SpaceSeverePercent   = 3.0
	SpaceFloorPercent    = 1.0
	// Refusals only grow while the disk stays under SpaceResumePercent;
	// at or over it every service is taken again (hysteresis: refusing
	// does not flap around 5%).
	SpaceResumePercent = 7.0
	// DefaultSpaceInterval is how long a statfs reading is used.
	DefaultSpaceInterval = time.Second
)

// Refusal stages: how far the guard has gone, by spaceStage.
const (
	stageNone    = 0 // every service takes points
	stageLowest  = 1 // the lowest-priority group is refused
	stageSevere  = 2 // all but the highest-priority group
	stageAll     = 3 // every service
	spaceLogKey  = "space/low"
	spaceRefused = "space/refusing/"
)

// spaceStage returns the refusal stage at pct percent free after stage
// prev: at or over SpaceResumePercent none; under it the stage of pct's
// band, and never less than prev (the disk must come back over the resume
// mark before anything resumes).
func spaceStage(prev int, pct float64) int {
	if pct >= SpaceResumePercent {
		return stageNone
	}
	s := stageNone
	switch {
	case pct < SpaceFloorPercent:
		s = stageAll
	case pct < SpaceSeverePercent:
		s = stageSevere
	case pct < SpaceCriticalPercent:
		s = stageLowest
	}
	return max(s, prev)
}

// refusedBelow returns, for a stage and the services' priorities, the
// highest priority refused (services of it and lower are refused), and
// false when none is. With one priority group every stage refuses it: a
// node cannot prefer among equals.
func refusedBelow(stage int, prios map[string]int) (int, bool) {
	var groups []int
	for _, p := range prios {
		groups = append(groups, p)
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	n := 0
	switch stage {
	case stageLowest:
		n = 1
	case stageSevere:
		n = max(1, len(groups)-1)
	case stageAll:
		n = len(groups)
	}
	if n == 0 || len(groups) == 0 {
		return 0, false
	}
	return groups[n-1], true
}

// SpaceOptions configure a Space guard.
type SpaceOptions struct {
	Name mesh.NodeID
	Site mesh.Site
	// Paths are the directories whose file systems count: the block
	// store's first, then the data dir. A path on the file system of an
	// earlier one is not listed again.
	Paths []string
	// Catalog gives the policy: the services held at Site (primary here,
	// or a copy here) and their priorities.
	Catalog interface{ Catalog() *catalog.Catalog }
	// Statfs returns a directory's free and total bytes (the file
	// system's, as the node may use them); nil = statfs(2).
	Statfs   func(path string) (free, size int64, err error)
	Interval time.Duration      // how long a reading is used; 0 = DefaultSpaceInterval
	Clock    clock.Clock        // nil = the real clock
	Logs     *logpolicy.Repeats // nil = its own
	Logger   *slog.Logger       // nil = slog.Default()
}

// Space is the node's disk space guard: it reads the free space of the
// node's file systems at most once per Interval (on a check or on its
// Run ticker), keeps the state, and refuses new points of services by
// priority when the disk is nearly full. Safe for concurrent use.
type Space struct {
	o SpaceOptions

	mu      sync.Mutex
	read    time.Time // of the last reading; zero = none yet
	stores  []api.StoreSpace
	err     error
	worst   float64 // lowest percent free of the stores
	low     bool
	stage   int
	refused map[string]int // service → priority, refused now
	below   int            // services of this priority and lower are refused (stage > 0)
	detail  string
}

// NewSpace returns a guard; it reads the disk on first use.
func NewSpace(o SpaceOptions) *Space {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Clock = clock.Or(o.Clock)
	if o.Logs == nil {
		o.Logs = logpolicy.New(logpolicy.Options{Log: o.Logger, Now: o.Clock.Now})
	}
	if o.Interval <= 0 {
		o.Interval = DefaultSpaceInterval
	}
	if o.Statfs == nil {
		o.Statfs = blockstore.DiskSpace
	}
	return &Space{o: o, worst: 100}
}

// Run re-reads the disk every Interval until ctx ends, so that the state,
// the logs and the resumption follow the disk without any traffic.
func (s *Space) Run(ctx context.Context) error {
	t := s.o.Clock.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		s.refresh(true)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// Check returns nil when the node takes new points of service, else a
// streams.Refusal with mesh.CodeNoSpace that says how full the disk is
// and what to do. It reads the disk when the last reading is older than
// Interval.
func (s *Space) Check(service string) error {
	s.refresh(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.refused[service]
	if !ok {
		return nil
	}
	return streams.Refuse(mesh.CodeNoSpace, "node %s refuses new points of service %s (priority %d): disk low on the node (%s); %s",
		s.o.Name, service, p, s.describe(), s.hint())
}

// Status returns the guard's view for the node's status.
func (s *Space) Status() *api.SpaceStatus {
	s.refresh(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &api.SpaceStatus{State: "ok", Stores: slices.Clone(s.stores), Checked: s.read, Detail: s.detail}
	if st.Stores == nil {
		st.Stores = []api.StoreSpace{}
	}
	if s.err != nil {
		st.Error = s.err.Error()
	}
	switch {
	case s.stage > stageNone:
		st.State = "critical"
		below := s.below
		st.RefusedPriority = &below
		for name := range s.refused {
			st.Refused = append(st.Refused, name)
		}
		slices.Sort(st.Refused)
	case s.low:
		st.State = "low"
	}
	return st
}

// describe sums up the fullest store; s.mu must be held.
func (s *Space) describe() string {
	for _, st := range s.stores {
		if st.FreePercent == s.worst {
			return fmt.Sprintf("%.1f%% free: %s of %s at %s", st.FreePercent, sizeString(st.Free), sizeString(st.Size), st.Path)
		}
	}
	return fmt.Sprintf("%.1f%% free", s.worst)
}

// hint says what happens and what to do while refusing; s.mu must be held.
func (s *Space) hint() string {
	return fmt.Sprintf("services of priority %d and lower take no new points until the disk is %.0f%% free again, and resume by themselves then; "+
		"their agents keep spooling: free space on the node (lifeboat prune, lifeboat images rm, remove other files) or grow its file system",
		s.below, SpaceResumePercent)
}

// refresh reads the disk when the last reading is older than Interval
// (always when force), updates the state and logs its changes.
func (s *Space) refresh(force bool) {
	now := s.o.Clock.Now()
	s.mu.Lock()
	if !force && !s.read.IsZero() && now.Sub(s.read) < s.o.Interval {
		s.mu.Unlock()
		return
	}
	s.read = now
	s.mu.Unlock()

	// Read outside the lock: a slow statfs must not stall commits that
	// use the last reading.
	var stores []api.StoreSpace
	var errs []error
	seen := map[uint64]bool{}
	worst := 100.0
	for _, p := range s.o.Paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil {
			if seen[st.Dev] {
				continue
			}
			seen[st.Dev] = true
		}
		free, size, err := s.o.Statfs(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pct := 100.0
		if size > 0 {
			pct = float64(free) * 100 / float64(size)
		}
		worst = min(worst, pct)
		stores = append(stores, api.StoreSpace{Path: p, Free: free, Size: size, FreePercent: pct})
	}
	prios := map[string]int{}
	if s.o.Catalog != nil {
		cat := s.o.Catalog.Catalog()
		if cat.Policy != nil && cat.Policy.Cluster != nil {
			for _, svc := range cat.Policy.Cluster.Services {
				if svc.Primary == string(s.o.Site) || svc.Copy(string(s.o.Site)) != nil {
					prios[svc.Name] = svc.Priority
				}
			}
		}
	}

	s.mu.Lock()
	s.stores, s.err = stores, errors.Join(errs...)
	wasStage, wasLow := s.stage, s.low
	if len(stores) > 0 {
		s.worst = worst
		s.stage = spaceStage(s.stage, worst)
		switch {
		case worst < SpaceLowPercent:
			s.low = true
		case worst >= SpaceLowClearPercent:
			s.low = false
		}
	}
	s.refused = map[string]int{}
	below, any := refusedBelow(s.stage, prios)
	if any {
		s.below = below
		for name, p := range prios {
			if p <= below {
				s.refused[name] = p
			}
		}
	}
	var refusedNames []string
	for name := range s.refused {
		refusedNames = append(refusedNames, name)
	}
	slices.Sort(refusedNames)
	desc, stage, low, readErr := s.describe(), s.stage, s.low, s.err
	s.detail = ""
	hint := ""
	switch {
	case stage > stageNone:
		hint = s.hint()
		s.detail = fmt.Sprintf("disk nearly full (%s): refusing new points of %v; %s", desc, refusedNames, hint)
	case low:
		hint = fmt.Sprintf("under %.0f%% free the node refuses new points of its lowest-priority services: free space on the node (lifeboat prune, lifeboat images rm) or grow its file system", SpaceCriticalPercent)
		s.detail = fmt.Sprintf("disk space low (%s); %s", desc, hint)
	}
	s.mu.Unlock()

	logs := s.o.Logs
	if readErr != nil {
		logs.Fail("space/statfs", "free space of the node's disk cannot be read", readErr, "check the data dir and the block store's directory")
	} else {
		logs.OK("space/statfs")
	}
	if len(stores) == 0 {
		return
	}
	// A condition that lasts is logged once at WARN with what to do,
	// then in summaries (logpolicy); its end once at INFO.
	if low && stage == stageNone {
		logs.Fail(spaceLogKey, "disk space low", errors.New(desc), hint)
	} else if !low && wasLow {
		logs.OK(spaceLogKey)
	}
	if stage > stageNone {
		logs.Fail(fmt.Sprintf("%s%d", spaceRefused, stage), "disk nearly full: refusing new points", errors.New(desc), hint,
			"services", refusedNames, "refused_priority", below)
	}
	if stage < wasStage {
		for st := stageLowest; st <= stageAll; st++ {
			logs.OK(fmt.Sprintf("%s%d", spaceRefused, st))
		}
		s.o.Logger.Info("disk space freed: new points are taken again", "free", desc)
	}
}

// sizeString formats a byte count for operators.
func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
