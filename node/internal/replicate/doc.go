// Package replicate replicates points between sites (issue 5; protocol in
// mesh doc.go). The holder of a service at its primary site runs one
// sender per recovery site; the holder at the recovery site receives. A
// sender sends a point as the map diff from the newest point both sides
// hold, offering block IDs in batches so that only blocks the receiver
// lacks cross the link; the receiver rebuilds each volume's map, checks
// that it arrives at the sender's roots, and commits the point under the
// same ID. After any cut the next session starts from the newest point the
// receiver committed; blocks it stored before the cut are not wanted again.
//
// A holder at the primary site that lacks any point of its service (the
// previous holder died) fetches the newest point from a copy first (see
// fetch.go). Every sender to one site shares that link's throttle (see
// links.go).
//
// The engine changes the catalog only by proposing progress reports; it
// reads it from immutable snapshots. It never accepts streams itself: the
// node's stream dispatch hands it each replication stream (Receive).
package replicate
