package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress turns the done/total callbacks of long store operations into a
// progress bar on stderr. It draws nothing unless stderr is a terminal, so
// logs, pipes and tests see only the summary. Its callback is safe for
// concurrent use and ignores reports that go backwards (Restore's workers
// report out of order).
type progress struct {
	w     io.Writer
	desc  string
	bytes bool

	mu   sync.Mutex
	bar  *progressbar.ProgressBar
	max  int64
	last int64
}

// newProgress returns a progress for w, or nil when w is not a terminal.
// bytes says whether done and total count bytes (else items).
func newProgress(w io.Writer, desc string, bytes bool) *progress {
	if !isTerminal(w) {
		return nil
	}
	return &progress{w: w, desc: desc, bytes: bytes}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// callback returns the function to pass as a Progress option; nil for a
// nil progress, so that the store skips reporting altogether.
func (p *progress) callback() func(done, total int64) {
	if p == nil {
		return nil
	}
	return p.report
}

func (p *progress) report(done, total int64) {
	if total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.desc),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowCount(),
		}
		if p.bytes {
			opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
		}
		p.bar = progressbar.NewOptions64(total, opts...)
		p.max = total
	}
	if total != p.max {
		p.bar.ChangeMax64(total)
		p.max = total
	}
	if done <= p.last {
		return
	}
	p.bar.Add64(min(done, total) - p.last)
	p.last = min(done, total)
}

// done erases the bar, so that the summary line that follows stands alone.
// Call it once the operation has returned.
func (p *progress) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Exit()
		p.bar.Clear()
		p.bar = nil
	}
}

// formatBytes returns n in IEC units: "512 B", "64.0 KiB", "3.00 GiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= unit
		if v < unit && v > -unit || u == "PiB" {
			switch {
			case v >= 100 || v <= -100:
				return fmt.Sprintf("%.0f %s", v, u)
			case v >= 10 || v <= -10:
				return fmt.Sprintf("%.1f %s", v, u)
			default:
				return fmt.Sprintf("%.2f %s", v, u)
			}
		}
	}
	panic("unreachable")
}

// formatRate returns n bytes over d as decimal megabytes per second.
func formatRate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- MB/s"
	}
	return fmt.Sprintf("%.1f MB/s", float64(n)/1e6/d.Seconds())
}

// formatRatio returns r like "2.41x".
func formatRatio(r float64) string { return fmt.Sprintf("%.2fx", r) }

// formatDuration rounds d for a summary line.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
