// Package crash holds the block store's crash-safety tests. It has no code of
// its own, only tests:
//
//   - TestCrash re-executes the test binary as a child (TestCrashChild) that
//     ingests versions of two volumes into one store forever, pruning now and
//     then, and kills it with SIGKILL at a seeded random moment, 60 times (10
//     with -short; LIFEBOAT_CRASH_ROUNDS overrides). After each kill it opens
//     the store in process and checks that every acknowledged point is still
//     there and restores byte-exact, that a point committed but not yet
//     acknowledged restores to the image it was taken from, that no pruned
//     point came back, and that Verify finds no damage. The same store lives
//     on across rounds, so it accumulates history and repeated recoveries.
//     The seed is logged; LIFEBOAT_SEED replays it (kill moments still
//     depend on timing).
//   - TestCrashTornTail damages the newest pack of a closed store: bytes
//     appended past the committed length must be truncated on open with
//     every point intact, while a pack cut below its committed length or a
//     flipped byte must be reported by Verify and make the restore of an
//     affected point fail with a *blockstore.CorruptError, never return
//     wrong data.
package crash
