package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/internal/retry"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Modes of capture.
const (
	ModeScan      = "scan"
	ModeIntercept = "intercept"
)

// Volume is a protected volume: its name in the service and the image file
// or block device that holds it.
type Volume struct {
	Name string
	Path string
}

// Options configure an agent. Zero values of optional fields are defaults.
type Options struct {
	Name     string      // the agent's name; must match its certificate
	Service  string      // the service it protects; must match its certificate
	Volumes  []Volume    // at least one
	Node     string      // QUIC address of a node at the agent's site
	Creds    *mesh.Creds // the agent certificate (with dedup.key)
	Mode     string      // ModeScan (default) or ModeIntercept
	Interval time.Duration
	// Interval is the time between scans in scan mode; 0 = 30s.
	SpoolDir string // state: status file, and the spool in intercept mode; required
	// Intercept mode: where the volume files appear, the ack mode and the
	// spool bound (0 = 1 GiB).
	Mountpoint string
	Ack        string // AckAsync (default) or AckSync
	SpoolMax   int64
	// Hooks for application-consistent points (see hooks.go), run with
	// sh -c; HookTimeout 0 = 60s.
	PreHook, PostHook string
	HookTimeout       time.Duration
	ReadRate          int64 // scan mode read limit in bytes/s; 0 = 200 MiB/s
	Network           mesh.Network
	Logger            *slog.Logger
	Now               func() time.Time
	// After is the clock of the reconnect back-off; nil = time.After.
	After func(time.Duration) <-chan time.Time
}

func (o *Options) check() error {
	var errs []error
	if !mesh.ValidName(o.Name) {
		errs = append(errs, fmt.Errorf("agent name %q: want letters, digits, '.', '_' or '-'", o.Name))
	}
	if !mesh.ValidName(o.Service) {
		errs = append(errs, fmt.Errorf("service %q: want letters, digits, '.', '_' or '-'", o.Service))
	}
	if len(o.Volumes) == 0 {
		errs = append(errs, errors.New("at least one volume is needed (--volume NAME=PATH)"))
	}
	seen := map[string]bool{}
	for _, v := range o.Volumes {
		if !mesh.ValidName(v.Name) {
			errs = append(errs, fmt.Errorf("volume name %q: want letters, digits, '.', '_' or '-'", v.Name))
		}
		if seen[v.Name] {
			errs = append(errs, fmt.Errorf("volume %s listed twice", v.Name))
		}
		seen[v.Name] = true
		if o.Mode != ModeIntercept {
			if _, err := os.Stat(v.Path); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
			}
		}
	}
	if o.Node == "" {
		errs = append(errs, errors.New("the node's QUIC address is needed (--node HOST:PORT)"))
	}
	if o.Creds == nil {
		errs = append(errs, errors.New("TLS credentials are needed (--tls-dir)"))
	} else {
		id := o.Creds.Self
		if !id.Agent || id.Service != o.Service || string(id.Name) != o.Name {
			errs = append(errs, fmt.Errorf("the certificate is for %s, not agent %s of service %s: issue one with `lifeboat ca issue --agent --name %s --service %s`",
				id, o.Name, o.Service, o.Name, o.Service))
		}
		if len(o.Creds.DedupKey) != 32 {
			errs = append(errs, errors.New("the TLS dir holds no dedup.key: reissue the agent certificate"))
		}
	}
	switch o.Mode {
	case "":
		o.Mode = ModeScan
	case ModeScan, ModeIntercept:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want %s or %s", o.Mode, ModeScan, ModeIntercept))
	}
	switch o.Ack {
	case "":
		o.Ack = AckAsync
	case AckAsync, AckSync:
	default:
		errs = append(errs, fmt.Errorf("ack %q: want %s or %s", o.Ack, AckAsync, AckSync))
	}
	if o.SpoolDir == "" {
		errs = append(errs, errors.New("a state directory is needed (--spool DIR)"))
	}
	if o.Interval == 0 {
		o.Interval = 30 * time.Second
	}
	if o.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %s: want a positive duration", o.Interval))
	}
	if o.HookTimeout == 0 {
		o.HookTimeout = time.Minute
	}
	if o.ReadRate == 0 {
		o.ReadRate = 200 << 20
	}
	if o.Network == nil {
		o.Network = mesh.OS()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return errors.Join(errs...)
}

// counters are the agent's running totals.
type counters struct {
	sentBytes  atomic.Int64
	sentBlocks atomic.Int64
	dedupBytes atomic.Int64
	readBytes  atomic.Int64
}

// Agent captures a service's volumes and ships them to a node.
type Agent struct {
	opts   Options
	log    *slog.Logger
	hasher *blockstore.Hasher
	ep     *mesh.Endpoint
	stats  counters
	// backlog is the bytes written but not yet committed at the node.
	backlog atomic.Int64
	lag     lagStats
	board   *board // the status and its file

	mu sync.Mutex
	// holder is the address of the node holding the service at the site,
	// learned from a redirect; "" = the configured node.
	holder string
}

// nodeAddr returns the address to ship to: the holder a node redirected
// the agent to, else the configured node.
func (a *Agent) nodeAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.holder != "" {
		return a.holder
	}
	return a.opts.Node
}

func (a *Agent) setHolder(addr string) {
	a.mu.Lock()
	a.holder = addr
	a.mu.Unlock()
}

// New checks the options and opens the agent's QUIC endpoint.
func New(o Options) (*Agent, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	var key blockstore.Key
	copy(key[:], o.Creds.DedupKey)
	h, err := blockstore.NewHasher(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	pc, err := o.Network.ListenPacket(":0")
	if err != nil {
		return nil, fmt.Errorf("open QUIC socket: %w", err)
	}
	// A short idle timeout: a node that died is noticed in seconds, and the
	// status says so (the spool keeps the writes meanwhile).
	ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: o.Creds, Conn: pc, Logger: o.Logger,
		IdleTimeout: 5 * time.Second, KeepAlive: time.Second})
	if err != nil {
		pc.Close()
		return nil, err
	}
	a := &Agent{opts: o, log: o.Logger.With("agent", o.Name, "service", o.Service), hasher: h, ep: ep}
	a.board = newBoard(filepath.Join(o.SpoolDir, StatusFile), o.Now, a.log, a.totals,
		Status{Agent: o.Name, Service: o.Service, Mode: o.Mode, Node: o.Node, State: "starting", PID: os.Getpid()})
	a.board.write()
	return a, nil
}

// Status returns the agent's current status.
func (a *Agent) Status() Status { return a.board.snapshot() }

// totals fills in the running totals of s.
func (a *Agent) totals(s *Status) {
	s.SentBytes, s.SentBlocks = a.stats.sentBytes.Load(), a.stats.sentBlocks.Load()
	s.DedupBytes, s.ReadBytes = a.stats.dedupBytes.Load(), a.stats.readBytes.Load()
	s.Backlog = a.backlog.Load()
	s.LagP50, s.LagP99, s.LagWrites = a.lag.quantiles()
}

// setState records a state change (see board.set).
func (a *Agent) setState(state, detail string, err error) {
	a.board.set(state, detail, err, a.nodeAddr())
}

// Run captures and ships until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	sctx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan struct{})
	go func() { a.board.run(sctx); close(statusDone) }()
	defer func() {
		stopStatus()
		<-statusDone
		a.ep.Close()
		a.setState("stopped", "", nil)
	}()
	switch a.opts.Mode {
	case ModeScan:
		return a.runScan(ctx)
	case ModeIntercept:
		return a.spoolDamage(a.runIntercept(ctx))
	}
	return fmt.Errorf("mode %q", a.opts.Mode)
}

// hello describes the agent's volumes to the node.
func (a *Agent) hello() (mesh.Hello, error) {
	h := mesh.Hello{Version: mesh.IngestVersion, Service: a.opts.Service, Agent: a.opts.Name}
	for _, v := range a.opts.Volumes {
		size, err := volumeSize(v.Path)
		if err != nil {
			return h, err
		}
		h.Volumes = append(h.Volumes, mesh.HelloVolume{Name: v.Name, Size: size})
	}
	return h, nil
}

// volumeSize is the size of an image file or block device.
func volumeSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open volume: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of volume %s: %w", path, err)
	}
	return n, nil
}

// connect dials the node until it answers, backing off (internal/retry);
// a permanent refusal (fenced, refused: see refusal) is returned at once.
func (a *Agent) connect(ctx context.Context) (*conn, error) {
	b := a.backoff()
	redirects := 0
	for {
		h, err := a.hello()
		if err != nil {
			// A volume that went away: say so (the status shows it) and
			// let the caller retry after an interval.
			a.setState("error", "a volume cannot be read: check its path", err)
			return nil, err
		}
		addr := a.nodeAddr()
		c, err := dial(ctx, a.ep, addr, h, &a.stats)
		if err == nil {
			a.setState("connected", "node "+c.welcome.Node, nil)
			return c, nil
		}
		var re *redirectError
		if errors.As(err, &re) && redirects < 3 {
			redirects++
			a.log.Info("the node redirects to the service's holder", "node", addr, "holder", re.node, "address", re.addr)
			a.setHolder(re.addr)
			continue
		}
		redirects = 0
		if addr != a.opts.Node {
			// The holder does not answer: ask the configured node again,
			// which knows when another node has taken over.
			a.setHolder("")
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		state, permanent := refusal(err)
		if permanent {
			a.setState(state, a.failureDetail(state, err), err)
			return nil, err
		}
		a.setState(state, a.failureDetail(state, err), err)
		if err := b.Wait(ctx); err != nil {
			return nil, err
		}
	}
}

// afterFailure records a failed session with the node and waits before
// the next one: a whole interval after a permanent refusal (the policy or
// a failback may change it), else the back-off b. detail is the status
// detail of a plain disconnection. It reports whether ctx is still live.
func (a *Agent) afterFailure(ctx context.Context, b *retry.Backoff, detail string, err error) bool {
	state, permanent := refusal(err)
	if state != "disconnected" {
		detail = a.failureDetail(state, err)
	}
	a.setState(state, detail, err)
	if permanent {
		return sleepCtx(ctx, a.opts.Interval)
	}
	return b.Wait(ctx) == nil
}

// backoff returns the back-off of the agent's reconnect loops.
func (a *Agent) backoff() *retry.Backoff {
	return retry.New(retry.Options{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Retryable: mesh.IsRetryable, After: a.opts.After})
}

// refusalDetail is the status detail of a state refusal returns: what
// happens next and what to do. It is constant per state, so that a
// failure that repeats changes the status (and logs) once.
func refusalDetail(state string) string {
	switch state {
	case "fenced":
		return "the service runs at another site now: this side ships no more writes; fail back to resume"
	case "held":
		return "a planned failover stopped the service: the spool keeps the writes, retrying"
	case "nospace":
		return "the node's disk is nearly full: the spool keeps the writes, retrying with back-off; free space on the node"
	case "refused":
		return "the node refuses this agent: check the policy and the agent's certificate; retrying every interval"
	}
	return "the spool keeps the writes; retrying with back-off"
}

// failureDetail is the status detail of a failure: refusalDetail, except
// for a node short of disk space, whose message (how full, what to do)
// and the agent's backlog are the detail: "node dc1-n1 refuses new points
// of service web (priority 0): disk low on the node (3.1% free ...); ...;
// spooling, 12.0 MiB spooled" (issue 15 item 5). The detail follows the
// backlog; the log says it once (board.fails).
func (a *Agent) failureDetail(state string, err error) string {
	if state != "nospace" {
		return refusalDetail(state)
	}
	msg := "the node's disk is nearly full"
	var re *mesh.RemoteError
	if errors.As(err, &re) && re.Message != "" {
		msg = re.Message
	}
	if a.opts.Mode == ModeIntercept {
		return fmt.Sprintf("%s; spooling, %.1f MiB spooled; retrying with back-off", msg, float64(a.backlog.Load())/(1<<20))
	}
	return msg + "; the next scans retry with back-off"
}

// scanLimiter returns the limiter of scan reads at bytesPerSecond.
func scanLimiter(bytesPerSecond int64) *rate.Limiter {
	burst := int(max(bytesPerSecond/100, 4<<20))
	return rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
}

// lagWindow is how many recent writes the lag quantiles cover.
const lagWindow = 100000

// lagStats keeps the replication lag of the most recent writes.
type lagStats struct {
	mu    sync.Mutex
	ring  []time.Duration
	next  int
	total int64
}

func (l *lagStats) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < lagWindow {
		l.ring = append(l.ring, d)
	} else {
		l.ring[l.next] = d
		l.next = (l.next + 1) % lagWindow
	}
	l.total++
}

// quantiles returns p50 and p99 in milliseconds and the writes counted.
func (l *lagStats) quantiles() (p50, p99 float64, n int64) {
	l.mu.Lock()
	s := slices.Clone(l.ring)
	n = l.total
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0, n
	}
	slices.Sort(s)
	ms := func(q float64) float64 { return float64(s[int(q*float64(len(s)-1))]) / float64(time.Millisecond) }
	return ms(0.50), ms(0.99), n
}
