package throttle

import (
	"math"
	"time"
)

// run is the dispatcher: the one goroutine that grants bytes to waiters.
// It returns when Close closes quit.
func (l *Link) run() {
	defer close(l.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		l.mu.Lock()
		sleep := l.dispatch()
		l.mu.Unlock()
		var tick <-chan time.Time
		if sleep > 0 {
			timer.Reset(sleep)
			tick = timer.C
		}
		select {
		case <-tick:
		case <-l.kick:
		case <-l.quit:
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// dispatch grants every chunk the bucket holds tokens for, then returns how
// long to sleep before the next one may go, or 0 when nobody waits (sleep
// until poked). l.mu must be held.
//
// It takes tokens only once they are there, never ahead, so a rate change
// applies to the very next chunk and a cancelled Wait leaves no debt.
func (l *Link) dispatch() time.Duration {
	if l.closed {
		return 0
	}
	now := l.now()
	l.refresh(now)
	if l.rate == 0 {
		l.grantAll()
		return 0
	}
	for {
		t, wait := l.pick(now)
		if wait >= 0 {
			return wait
		}
		w := l.queues[t][0]
		k := min(w.left, l.chunk)
		if tokens := l.lim.TokensAt(now); tokens < float64(k) {
			// Sleep until the tokens are there or the rate is due
			// again, whichever is first (in float: at tiny rates the
			// first may not fit in a Duration).
			d := l.evalAt.Add(evalEvery).Sub(now)
			if secs := (float64(k) - tokens) / l.rate; secs < d.Seconds() {
				d = time.Duration(math.Ceil(secs * float64(time.Second)))
			}
			return max(d, minSleep)
		}
		if !l.lim.AllowN(now, k) {
			// Not reached: there are k tokens. Should it ever be,
			// retry shortly rather than spin.
			return minSleep
		}
		w.left -= k
		l.deficit[t] -= k
		l.stats[t].Granted += int64(k)
		if w.left == 0 {
			l.queues[t][0] = nil
			l.queues[t] = l.queues[t][1:]
			close(w.ready)
			if len(l.queues[t]) == 0 {
				// Its sender is likely about to Wait again but
				// cannot before we let go of the lock: keep the
				// turn for it a moment.
				l.graceUntil = now.Add(grace)
			}
		}
	}
}

// pick chooses the tier whose queue head gets the next chunk, by deficit
// round robin over the tiers in the order hot, warm, cold: a tier's turn
// adds weight×chunk bytes to its deficit and lasts while the deficit
// covers its head's next chunk; a tier found empty loses its deficit and
// its turn, unless it emptied less than grace ago (then pick returns how
// long to wait for it). It returns wait 0 when nobody waits, and -1 with
// the tier otherwise. Since a quantum is at least a chunk, every turn of a
// waiting tier grants at least one chunk, so no tier starves. l.mu must be
// held.
func (l *Link) pick(now time.Time) (t Tier, wait time.Duration) {
	if l.waiting() == 0 {
		return 0, 0
	}
	for {
		t := l.cur
		if q := l.queues[t]; len(q) > 0 {
			if l.deficit[t] >= min(q[0].left, l.chunk) {
				return t, -1
			}
			if !l.topped {
				l.deficit[t] += l.weights[t] * l.chunk
				l.topped = true
				continue
			}
		} else {
			if now.Before(l.graceUntil) && l.topped {
				return 0, max(l.graceUntil.Sub(now), time.Microsecond)
			}
			l.deficit[t] = 0
		}
		l.cur = (t + 1) % numTiers
		l.topped = false
		l.graceUntil = time.Time{}
	}
}

// waiting counts the blocked Waits. l.mu must be held.
func (l *Link) waiting() int {
	n := 0
	for _, q := range l.queues {
		n += len(q)
	}
	return n
}

// grantAll grants every waiter all it asked for: the link is unlimited.
// l.mu must be held.
func (l *Link) grantAll() {
	for t := range l.queues {
		for _, w := range l.queues[t] {
			l.stats[t].Granted += int64(w.left)
			w.left = 0
			close(w.ready)
		}
		l.queues[t] = nil
		l.deficit[t] = 0
	}
}
