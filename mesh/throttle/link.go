package throttle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Sizing and timing; doc.go says why these values.
const (
	// burstWindow is how much traffic at the current rate the token bucket
	// holds; a chunk is half of it, so the dispatcher may oversleep by one
	// chunk's worth of time without the link losing bandwidth.
	burstWindow = 20 * time.Millisecond
	// minBurst keeps chunks at slow rates from getting so small that every
	// few hundred bytes cost a wake-up.
	minBurst = 16 << 10
	maxBurst = 1 << 40
	// evalEvery is how stale the evaluated rate may get while anyone waits.
	evalEvery = 100 * time.Millisecond
	// minSleep bounds the dispatcher's wake-ups; tokens keep accruing while
	// it sleeps, so this costs latency, never bandwidth.
	minSleep = time.Millisecond
	// grace is how long the tier whose turn it is keeps it after its queue
	// empties; far below a chunk's time, so the bucket never overflows
	// meanwhile.
	grace     = 2 * time.Millisecond
	maxWeight = 1 << 16
)

var defaultWeights = [numTiers]int{Hot: 16, Warm: 4, Cold: 1}

// ErrClosed is returned by Wait, and by writes through Writer, once the
// Link is closed.
var ErrClosed = errors.New("throttle: link closed")

// Options configure a Link. The zero value is an unlimited link.
type Options struct {
	// Name names the link in errors and Stats, e.g. "dc1-dc2".
	Name string
	// Rate returns the link's rate in bytes per second at a moment. A
	// result of 0 (or anything not positive and finite) means unlimited;
	// a nil Rate is always unlimited. It is called at most once per
	// 100 ms of the Link's clock (and at least that often while anyone
	// waits), with the Link's lock held: it must be cheap and must not
	// call the Link.
	Rate func(time.Time) float64
	// Weights are the tiers' relative shares of the link when they
	// compete, indexed by Tier. A zero or negative entry takes its
	// default (16 hot, 4 warm, 1 cold); entries above 65536 count as 65536.
	Weights [3]int
	// Overhead is charged on top of every byte waited for, as a fraction:
	// the transport's own bytes on the wire (QUIC packet headers,
	// authentication tags, acknowledgements: about 1.0/32). Granted
	// includes it. Zero or less charges nothing more.
	Overhead float64
	// Now tells the time; nil means time.Now. The Link sleeps with the
	// time package's timers, so a test that fakes time runs the Link in a
	// testing/synctest bubble (and then needs no Now).
	Now func() time.Time
}

// Stats is a snapshot of a Link's counters. Granted and Waited only grow.
type Stats struct {
	Name string
	// Rate is the rate in bytes per second in force when the snapshot was
	// taken; 0 means unlimited.
	Rate float64
	// Tiers holds the counters of each tier, indexed by Tier.
	Tiers [3]TierStats
}

// TierStats are one tier's counters.
type TierStats struct {
	// Granted counts the bytes charged to the link: every byte a Wait
	// returned nil for, plus the chunks granted to Waits that were
	// cancelled before they got all their bytes.
	Granted int64
	// Waited is the total time Waits of this tier spent blocked, added
	// when each returns (whether granted, cancelled or closed).
	Waited time.Duration
	// Waiters is the number of Waits blocked now.
	Waiters int
}

// A Link enforces the bandwidth of one WAN link. One Link is shared by all
// the streams between two sites. Make it with New; all its methods are
// safe for concurrent use. Close it to stop its goroutine.
type Link struct {
	name      string
	overhead  float64
	rateFn    func(time.Time) float64
	now       func() time.Time
	weights   [numTiers]int
	errClosed error

	kick      chan struct{} // wakes the dispatcher; buffered, 1
	quit      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the dispatcher returns
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool
	lim    *rate.Limiter // nil until the first limited rate
	rate   float64       // bytes/s; 0 = unlimited
	chunk  int           // largest grant at once; burst/2
	evalAt time.Time     // when rate was last evaluated
	queues [numTiers][]*waiter
	// Deficit round robin: cur has the turn; topped says whether cur's
	// quantum was added for this turn; cur keeps an empty queue's turn
	// until graceUntil.
	deficit    [numTiers]int
	cur        Tier
	topped     bool
	graceUntil time.Time
	stats      [numTiers]TierStats
}

// waiter is one blocked Wait. left is guarded by Link.mu; ready is closed,
// under Link.mu, when left reaches 0 or the Link closes (then err is set).
type waiter struct {
	left  int
	ready chan struct{}
	err   error
}

// New returns a Link and starts its dispatcher goroutine. It evaluates
// o.Rate once.
func New(o Options) *Link {
	l := &Link{
		name:      o.Name,
		overhead:  max(o.Overhead, 0),
		rateFn:    o.Rate,
		now:       o.Now,
		errClosed: ErrClosed,
		kick:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	for t, w := range o.Weights {
		switch {
		case w <= 0:
			w = defaultWeights[t]
		case w > maxWeight:
			w = maxWeight
		}
		l.weights[t] = w
	}
	if l.name != "" {
		l.errClosed = fmt.Errorf("%s: %w", l.label(), ErrClosed)
	}
	l.mu.Lock()
	l.refresh(l.now())
	l.mu.Unlock()
	go l.run()
	return l
}

// Wait blocks until n bytes of the given tier may be sent on the link and
// charges them to it. It returns ctx's error if ctx ends first; bytes of
// chunks already granted to this Wait stay charged, nothing more is. It
// returns ErrClosed once the Link is closed. n may be any size: bytes are
// granted in chunks of half the limiter's burst, so a large Wait shares
// the link with others and sees a rate change while it waits. When the
// link is unlimited (or n is 0), Wait returns at once.
func (l *Link) Wait(ctx context.Context, tier Tier, n int) error {
	if !tier.valid() {
		return fmt.Errorf("wait on %s: invalid tier %d", l.label(), int(tier))
	}
	if n < 0 {
		return fmt.Errorf("wait on %s: negative byte count %d", l.label(), n)
	}
	n += int(float64(n) * l.overhead)
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.errClosed
	}
	start := l.now()
	changed := l.refresh(start)
	if n == 0 || l.rate == 0 {
		l.stats[tier].Granted += int64(n)
		l.mu.Unlock()
		if changed {
			l.poke()
		}
		return nil
	}
	w := &waiter{left: n, ready: make(chan struct{})}
	l.queues[tier] = append(l.queues[tier], w)
	l.mu.Unlock()
	l.poke()

	select {
	case <-w.ready:
	case <-ctx.Done():
	}
	var err error
	l.mu.Lock()
	select {
	case <-w.ready:
		// Granted in full (even if done fired meanwhile: the bytes are
		// charged, so the caller may as well send them) or closed.
		err = w.err
	default:
		l.remove(tier, w)
		err = ctx.Err()
		// The head may have gone: let the dispatcher look again.
		l.poke()
	}
	l.stats[tier].Waited += l.now().Sub(start)
	l.mu.Unlock()
	return err
}

// label names the link in errors.
func (l *Link) label() string {
	if l.name == "" {
		return "link"
	}
	return "link " + l.name
}

// remove takes w out of its queue, keeping the order of the others.
func (l *Link) remove(tier Tier, w *waiter) {
	q := l.queues[tier]
	for i, x := range q {
		if x == w {
			copy(q[i:], q[i+1:])
			q[len(q)-1] = nil
			l.queues[tier] = q[:len(q)-1]
			return
		}
	}
}

// Stats returns a snapshot of the link's counters and its current rate.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed && l.refresh(l.now()) {
		l.poke()
	}
	s := Stats{Name: l.name, Rate: l.rate}
	for t := range numTiers {
		s.Tiers[t] = l.stats[t]
		s.Tiers[t].Waiters = len(l.queues[t])
	}
	return s
}

// Close fails every blocked Wait with ErrClosed, stops the dispatcher and
// waits for it to return. Later Waits return ErrClosed. Close may be
// called more than once.
func (l *Link) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		for t := range l.queues {
			for _, w := range l.queues[t] {
				w.err = l.errClosed
				close(w.ready)
			}
			l.queues[t] = nil
		}
		l.mu.Unlock()
		close(l.quit)
	})
	<-l.stopped
}

// poke wakes the dispatcher without blocking.
func (l *Link) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// chunkSize is the most bytes a Writer sends per wait: a chunk when the
// link is limited, everything when it is not.
func (l *Link) chunkSize() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate == 0 {
		return math.MaxInt
	}
	return l.chunk
}

// refresh evaluates the rate when it was last evaluated evalEvery or more
// ago (or the clock went back) and applies it to the limiter. It reports
// whether the rate changed. l.mu must be held.
func (l *Link) refresh(now time.Time) bool {
	if !l.evalAt.IsZero() && !now.Before(l.evalAt) && now.Sub(l.evalAt) < evalEvery {
		return false
	}
	l.evalAt = now
	r := 0.0
	if l.rateFn != nil {
		r = l.rateFn(now)
	}
	if !(r > 0) || math.IsInf(r, 1) {
		r = 0
	}
	if r == l.rate {
		return false
	}
	l.rate = r
	if r == 0 {
		// Unlimited: the limiter is bypassed and left as it was.
		return true
	}
	burst := maxBurst
	if b := r * burstWindow.Seconds(); b < maxBurst {
		burst = max(int(b), minBurst)
	}
	l.chunk = burst / 2
	if l.lim == nil {
		l.lim = rate.NewLimiter(rate.Limit(r), burst)
		return true
	}
	// Tokens earned up to now accrue at the old rate (after an unlimited
	// spell, at the last limited rate).
	l.lim.SetLimitAt(now, rate.Limit(r))
	l.lim.SetBurstAt(now, burst)
	return true
}
