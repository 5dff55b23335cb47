// Package throttle enforces the bandwidth policy of one WAN link: a rate
// that may follow a time-of-day schedule, shared by priority among the
// replication tiers (hot before warm before cold). The replicator makes one
// Link per pair of sites and every stream between the two asks it before
// sending: Wait(ctx, tier, n) for n bytes, or a writer wrapped by Writer.
// It imports only the standard library and golang.org/x/time/rate.
//
// # Scheduling
//
// A token bucket (rate.Limiter) holds max(rate×20 ms, 16 KiB) bytes: a
// burst of a few milliseconds under-delivers when the process is slow to
// wake (PLATFORM.md); 20 ms delivered within 2% of the rate here, even
// with both cores busy. Bytes are granted in chunks of half a burst (10 ms of traffic, or
// 8 KiB at 6.5 Mbit/s and below), so the dispatcher may wake a chunk's
// time late without the bucket overflowing.
//
// Each tier has a FIFO queue of blocked Waits. One dispatcher goroutine
// serves the queue heads chunk by chunk by deficit round robin over the
// tiers in the order hot, warm, cold: a turn adds weight×chunk bytes to the
// tier's deficit (weights 16, 4 and 1 by default) and lasts while the
// deficit covers its head's next chunk. A tier found empty loses its turn
// and its deficit, except that the tier whose queue a grant just emptied
// keeps its turn for 2 ms: a sender that loops Wait-then-send cannot queue
// its next Wait before the dispatcher lets go, and without that grace a
// single hot stream would lose its turn at every grant. With all three
// tiers waiting, hot gets 16/21 of the link, warm 4/21 and cold 1/21; a
// tier alone gets all of it.
//
// The dispatcher takes a chunk's tokens only once the bucket holds them,
// never ahead. It evaluates Options.Rate at least every 100 ms while
// anyone waits (and at Wait and Stats calls 100 ms or more after the last
// evaluation) and applies it with SetLimitAt and SetBurstAt, so a schedule
// change reaches the next chunk, including the rest of a Wait already
// under way. A rate of 0 means unlimited: Wait returns at once, still
// counting the bytes, and the bucket is bypassed; it fills meanwhile at the
// last limited rate.
//
// # Invariants
//
//   - Over any span with a constant rate, the bytes granted are at most
//     rate × span + one burst: the bucket never goes into debt.
//   - A grant means the bytes may go now, never later.
//   - Waits of one tier are granted in the order they came; a Wait
//     returns only when all its n bytes are granted.
//   - Every tier with waiters gets at least one chunk per round, and a
//     round grants fewer than (sum of weights + 3) chunks: nothing starves.
//   - A Wait that returns an error is charged only the chunks it was
//     granted before; nothing is refunded and nothing more is charged.
//   - Close fails every blocked Wait with ErrClosed and returns only once
//     the dispatcher has.
//
// # What it never does
//
// It never sends, reads, copies or buffers the data itself (Writer passes
// the caller's slices on as they are); it never drops or reorders the
// bytes of a write; it never blocks on anything but the link's tokens and
// the caller's context (or Close); it never calls Options.Rate from two
// goroutines at once.
package throttle
