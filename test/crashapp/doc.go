// Package crashapp holds the crash-consistency test with a real application
// (issue #4). It has no code of its own, only TestCrashApp:
//
// A node and an intercept-mode agent run as real processes; the agent's
// volume file carries a loop device, ext4 on it, and on that a SQLite
// database that a long-lived sqlite3 process commits transactions into
// (synchronous=FULL in WAL mode, EXTRA in rollback-journal mode, where the
// journal's deletion is the commit). Each transaction inserts the row of
// its sequence number, rewrites one of 64 ring rows with a random payload
// and its SHA3, and counts itself in a meta row; the test records a
// sequence number as committed only once sqlite3 has reported the COMMIT.
//
// Every round SIGKILLs, at a seeded random moment, the agent, the node, the
// application or all three, and brings them back the way an operator would:
// a killed agent leaves a dead FUSE file under the loop device, so the ext4
// is unmounted and the loop detached, the agent restarted on its spool, the
// loop attached again and the file system's journal replayed (after which
// e2fsck -fn must find nothing) before it is mounted and the application
// restarted. After each round the newest point the node holds is restored
// through the admin API and must:
//
//   - need nothing but a journal replay: after e2fsck -E journal_only,
//     e2fsck -fn reports no error;
//   - mount, and hold a database that passes PRAGMA integrity_check, whose
//     ring payloads match their hashes and whose rows agree with each other
//     (meta counts the rows; each ring slot holds the newest row of its
//     slot), so every transaction is in whole or not at all;
//   - hold every transaction whose commit returned before the point's time
//     and, when it holds a transaction, every one committed before it; no
//     row the application never wrote;
//   - with --ack sync, hold every transaction whose commit returned before
//     the points were listed: an acknowledged write is at the node.
//
// At the end the application stops, and a point made after its last commit
// must hold every committed transaction.
//
// Two configurations run in parallel: --ack sync with WAL and 4 KiB blocks,
// --ack async with the rollback journal and 64 KiB blocks. Rounds: 10 each,
// 3 with -short, 60 with LIFEBOAT_SOAK=1; LIFEBOAT_CRASHAPP_ROUNDS
// overrides. The seed is logged; LIFEBOAT_SEED replays it (the kill moments
// still depend on timing).
//
// It needs root, /dev/fuse, loop devices, mkfs.ext4, e2fsck and sqlite3:
// without them it says so and skips, and with CI=true it fails instead.
package crashapp
