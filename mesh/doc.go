// Package mesh connects lifeboat nodes: the cluster PKI, one QUIC endpoint
// per node with mutual TLS and typed streams, the raft stream layer, the
// framing and error codes of the stream protocols, membership over
// memberlist, and the Network seam that tests wrap to cut, slow or drop
// traffic (mesh/meshtest). It may import blockstore for IDs only; it never
// imports config or node.
//
// Invariants:
//   - Nothing is accepted from a peer without a certificate signed by the
//     cluster CA: the QUIC handshake fails first.
//   - An agent opens only ingest streams; any other kind is refused.
//   - Every decoder checks lengths against a limit before allocating.
//   - Every goroutine started by an Endpoint or a Gossip is joined by its
//     Close or Shutdown.
//
// # Identities (PKI)
//
// One cluster CA (ECDSA P-256, 10 years) signs node and agent certificates
// (ECDSA P-256, 5 years by default). A certificate's identity is its one
// URI SAN with scheme "lifeboat":
//
//	lifeboat://node/<site>/<name>              a node
//	lifeboat://agent/<site>/<service>/<name>   an agent, scoped to one service
//	lifeboat://operator/<role>/<name>          a person or tool on the admin API;
//	                                           role viewer, operator or admin
//
// The certificate's CN equals <name>. Names, sites and services are 1-64
// characters from [A-Za-z0-9._-], not starting with '.' or '-'. Node
// certificates carry the ServerAuth and ClientAuth extended key usages,
// agent certificates ClientAuth only, so an agent can never act as a
// server. Operator certificates carry both (serve-nbd may serve TLS with
// one on the operator's own host) and the SANs 127.0.0.1, ::1 and
// localhost. The QUIC endpoint refuses operator certificates: operators
// use the admin API, never the mesh. A credentials directory (Issue,
// LoadCreds) holds ca.crt, cert.crt, cert.key (0600), for nodes gossip.key
// and dedup.key (32 bytes each, hex, 0600) and for agents dedup.key,
// copied from the CA directory (InitCA); for operators the GnuTLS names
// ca-cert.pem, client-cert.pem and client-key.pem link to the same files.
// Issue refuses a certificate that would be expired or not yet valid, and
// appends every certificate it signs to the CA's ledger, issued.jsonl
// (one JSON object a line: serial in lowercase hex, kind, name, site,
// service, role, validity).
//
// Revocation: Creds.SetRevoked installs the set of revoked serials (the
// node takes it from the catalog); every later handshake with a config
// from ServerTLS or ClientTLS refuses a peer in it, and
// Endpoint.DropRevoked closes the connections made before. The admin API
// (AdminServerTLS) lets revoked and certificate-less clients through the
// handshake so that it can refuse them itself and record the attempt.
//
// # QUIC endpoint
//
// One UDP socket per node; QUIC v1 with TLS 1.3, ALPN "lifeboat/1", client
// certificates required and verified against the CA on both sides (host
// names are not checked: the identity is). Streams are bidirectional and
// are opened by the dialer only; a dialed connection accepts no streams and
// no side uses unidirectional streams. The QUIC stateless reset key is
// derived from the node's private key, so a node restarted with the same
// credentials resets its peers' stale connections at once.
//
// # Stream header (version 1)
//
// The opener of a stream first writes 5 bytes:
//
//	offset size  field
//	0      3     magic "LBS" (0x4C 0x42 0x53)
//	3      1     version, 1
//	4      1     kind (below)
//
// The acceptor reads them within the handshake timeout and answers with 2
// bytes, an ErrCode, big-endian: CodeOK (0) and the stream is handed to
// the application, or a refusal after which it closes the stream:
// CodeBadRequest (bad magic, version or kind), CodeForbidden (an agent
// asking for a kind other than ingest) or CodeUnavailable (the accept
// queue of that kind is full; retry later). Only then does either side
// send the kind's own bytes.
//
// Kinds:
//
//	1  raft    raft RPCs in raft's own encoding (hashicorp/raft
//	           NetworkTransport over a raft.StreamLayer); no frames. One
//	           raft "connection" is one stream.
//	2  blocks  block exchange between nodes: framed, payloads up to 8 MiB.
//	3  ingest  agent to node: captured changes, framed, payloads up to 8 MiB.
//	           The only kind an agent may open.
//	4  admin   node-to-node admin requests: framed, payloads up to 1 MiB,
//	           except a forwarded catalog command (up to 4 MiB, the
//	           catalog's command limit: a policy is the biggest).
//
// A reader of a kind passes StreamKind.MaxFrame to NewFrameReader.
//
// # Frames (version 1, in streams of kinds 2-4)
//
// After the header and the answer, each direction is a sequence of frames:
//
//	offset size  field
//	0      1     type (defined by the kind's protocol; 0xFF = error frame)
//	1      4     payload length n, big-endian unsigned
//	5      n     payload
//
// The length is fixed-size so a reader can check it against the kind's
// limit before it allocates or reads the payload. A stream ends cleanly
// only between frames (FIN right after a payload); an end inside a frame is
// an error (io.ErrUnexpectedEOF). No frame is longer than MaxFramePayload
// (64 MiB) whatever the kind.
//
// Error frame (type 0xFF), for any request/response protocol:
//
//	offset size  field
//	0      2     code, big-endian (table below)
//	2      m     message, UTF-8, m <= 1024, for operators; programs branch
//	             on the code only
//
// # Error codes
//
// One table for every protocol (stream answers, error frames, QUIC stream
// resets and connection closes by this package). Values never change.
// Programs branch on the code, never on the message: a received code is a
// *RemoteError whose errors.Is matches the sentinel in parentheses, and
// IsRetryable is the one place that says which codes are worth retrying.
// A permanent code is not retried as is: the sender stops, or parks the
// work until what it depends on (the policy, the holders) changes.
//
//	code name         meaning                                      retry
//	0    ok           success (also a normal close)                -
//	1    bad request  malformed or unknown request, or one the     permanent
//	                  receiver cannot accept as sent (a wrong size,
//	                  a commit out of order) (ErrBadRequest)
//	2    not found    the thing asked for does not exist here: a   permanent
//	                  service or volume the policy does not list, a
//	                  base point the receiver lacks (ErrNotFound)
//	3    forbidden    the peer's identity may not do this: wrong   permanent
//	                  certificate kind, service or site (ErrRefused)
//	4    not leader   ask the raft leader instead (ErrNotLeader)   retry
//	5    unavailable  temporarily unable: queue full, shutting     retry with
//	                  down, no holder placed yet, a fetch running, back-off
//	                  a store error (ErrUnreachable)
//	6    internal     a bug or local failure on the answering      retry with
//	                  side (ErrInternal)                           back-off
//	7    fenced       the service failed over to another site at   permanent
//	                  a higher epoch: this side takes no more
//	                  writes for it; only a failback lifts it
//	                  (ErrFenced). The agent's state is "fenced".
//	8    held         the service is stopped here for a planned    retry with
//	                  failover and its writes wait: the hold ends  back-off
//	                  with the failover (then fenced) or after its
//	                  time (ErrHeld). The agent's state is "held".
//	9    wrong node   this node never serves the request: a        permanent
//	                  witness holds no data, or the service runs
//	                  at another site; the message says where to
//	                  go (ErrWrongNode)
//	10   no space     the receiver's disk is nearly full and it    retry with
//	                  takes no new points of this service for now  back-off
//	                  (lowest priority first, node doc.go); it
//	                  resumes by itself once space is freed; the
//	                  message says how full and what to do
//	                  (ErrNoSpace). The agent's state is "nospace":
//	                  it keeps spooling.
//
// A code this version does not know is permanent (nodes of one version
// talk only to each other: an unknown code is a bug, not a hint to retry).
//
// # Gossip meta (version 1)
//
// memberlist carries each node's Meta (at most 512 bytes):
//
//	offset size  field
//	0      1     version, 1
//	1      1     flags: bit 0 = has raft state, bit 1 = leaving (set by
//	             Leave just before leaving, so others record "left" rather
//	             than "dead"), bit 2 = the node's block store is
//	             encrypted at rest; other bits 0
//	2      1     role: 1 = node, 2 = witness
//	3      ...   three strings, each a uvarint length (<= 255) then bytes:
//	             site, QUIC address (host:port), admin address (host:port;
//	             may be empty)
//
// A version-1 decoder refuses trailing bytes; it decodes a higher version's
// first fields the same way and ignores what follows them, so that later
// versions may append fields.
//
// # Gossip
//
// memberlist with AES-256-GCM encryption under the cluster's gossip key
// (wrong key = join refused), over Network.GossipTransport. Profiles:
// "wan" (memberlist's WAN defaults; the default), "lan" (its LAN defaults), "test"
// (fast failure detection: a stopped member is dead within ~2-3 s).
// Members lists every member seen since start, dead and left ones
// included, with the state tracked from memberlist's notifications.
// memberlist reports a death and a graceful leave alike; Leave first sets
// the leaving flag in the meta so that the others record "left". memberlist
// gives no notice of suspicion: EventSuspect is not emitted, and a suspect
// member stays "alive" until it is declared dead. A cut between two members
// that a third can still reach is masked by memberlist's indirect probes:
// neither is declared dead.
//
// # Ingest protocol (KindIngest, agent to node, version 1)
//
// Frames (type, then payload; all integers big-endian):
//
//	1 Hello      agent → node  JSON {version: 1, service, agent, volumes: [{name, size}]}
//	2 Welcome    node → agent  JSON {node, volumes: [{name, size, block_size}], seq, point, point_time}
//	3 Offer      agent → node  1 to 4096 block IDs, 32 bytes each
//	4 Want       node → agent  bitmap of ceil(n/8) bytes; bit i (LSB first) set = send offer i
//	5 Blocks     agent → node  records: ID (32) | codec (1: 0 raw, 1 zstd, 2 S2) | raw length (4) | data length (4) | data
//	6 Changes    agent → node  name length (1) | volume name | count (4) | count × (block (8) | ID (32)), sorted by block
//	7 Commit     agent → node  JSON {seq, time}
//	8 Committed  node → agent  JSON {seq, point, time}
//
// The node answers Hello with Welcome or an error frame: CodeForbidden
// when the certificate's service is not the Hello's, CodeNotFound for a
// service or volume the policy does not list, CodeBadRequest for a volume
// size that differs from the policy's, CodeWrongNode from a witness or a
// node of a site the service does not run at, CodeFenced once the service
// failed over to another site, CodeHeld while it is stopped for a planned
// failover, CodeUnavailable while no holder is placed or a fetch runs,
// CodeNoSpace while the node's disk is too full to take new points of the
// service. A Blocks frame may be answered with CodeNoSpace, and a Commit
// the same way as a Hello (CodeFenced or CodeHeld when a failover started
// during the session, CodeNoSpace when the disk filled up); nothing of a
// refused commit is acknowledged. The node checks every received block against
// its ID (keyed BLAKE3 of the plaintext, the cluster's dedup key) before
// storing it, and every change's ID is present before it commits. Seq is
// the agent's own counter of points; Welcome returns the newest one the
// node committed for that agent, so a restarted agent does not resend.
// Limits: 8 MiB per frame, 1 MiB per block, 65536 changes per frame.
//
// Barrier stream (same kind, second stream of an agent): the agent sends
// 9 BarrierJoin (a Hello); the node then repeats, for all agents of the
// service at once: 10 Prepare {id, hold_ms} → each agent stops
// acknowledging writes, appends a mark and answers 11 Marked {id, seq} →
// once all answered (or the hold time passed) 12 Release {id, ok} → the
// agents acknowledge writes again. With ok, each agent commits a point
// exactly at its mark, and the node composes the service point
// "barrier/ID" from those: no write in it depends on one it lacks.
//
// Welcome may instead carry only {node, redirect}: this node does not hold
// the service at its site; the agent ships to the redirect address (the
// holder's QUIC address) and comes back to the configured node when the
// holder stops answering.
//
// # Replication protocol (KindBlocks, node to node, version 1)
//
// The holder of a service at its primary site opens one stream per
// recovery site to the holder there (named in the catalog). Frames:
//
//	20 ReplHello      opener → acceptor  JSON {version: 1, service, site, tier, fetch, repair}
//	21 ReplWelcome    receiver → sender  JSON {node, points: [point IDs, newest first, at most 64]}
//	22 ReplBegin      sender → receiver  JSON {base: point ID or absent, point: {id, name, group, time, volumes: [{name, root, size, block_size, used_blocks}]}}
//	 3 Offer, 4 Want, 6 Changes          as in the ingest protocol; Changes name volumes without the "SERVICE/" prefix
//	 5 Blocks                            as in the ingest protocol, records raw
//	25 BlocksPacked   sender → receiver  one zstd frame whose content is a Blocks payload (at most 4 MiB once decompressed)
//	23 ReplCommit     sender → receiver  empty
//	24 ReplCommitted  receiver → sender  JSON {point, time}
//
// The sender picks as base the newest point of the Welcome that it holds
// too (none: every volume is diffed against an empty map), then for every
// volume walks the Merkle diff from the base's map to the point's, in
// batches of up to 4096 changes: Offer the batch's distinct non-zero IDs,
// send the wanted blocks in Blocks or BlocksPacked frames of about 1 MiB of
// raw data, then the batch's Changes. A volume whose size or block size
// differs from the base's is diffed against an empty map. The receiver
// applies the Changes to its copy of the base's maps; at ReplCommit every
// rebuilt root and used-block count must equal the sender's, and the point
// committed with the same name, group and time gets the same ID. The
// receiver refuses a stream for a service it does not hold at its site
// (CodeUnavailable: the catalog moves), for a site without a copy or from
// a node that is not the primary's holder (CodeForbidden), from an agent
// certificate or whose Hello site is not the certificate's
// (CodeForbidden), for a service not in its policy (CodeNotFound), and a
// witness refuses every stream (CodeWrongNode); a receiver whose disk is
// too full for new points of the service refuses with CodeNoSpace (at the
// hello and at ReplCommit), and the sender retries it with back-off, its
// progress error saying why. The sender retries the
// retryable codes with back-off and parks on a permanent one until the
// policy or the holders in its catalog change.
// Received blocks are flushed every 8 MiB: after a cut, a restart or a
// crash the next session re-offers them and they are not wanted again.
// Each stream's writes pass through the link's throttle (mesh/throttle).
//
// With fetch set (tier "primary"), the stream runs the other way: the
// opener is the holder at the service's primary site that has no point of
// it (it took over from a dead holder); it sends ReplWelcome, and the
// acceptor, the holder of a copy, sends its newest point as above and
// closes its side. Only the primary's holder may fetch (CodeForbidden).
//
// With repair set (no tier; service the one whose points use the blocks,
// or absent), the opener asks for blocks by ID, to replace copies its
// store found damaged: it sends Offer frames of at most 256 IDs; the
// acceptor answers each with Blocks frames (records raw, at most about
// 1 MiB a frame) holding the blocks it reads soundly, then a Want frame
// whose bit i is set when it sent the Offer's block i. The opener checks
// every block's keyed hash against its ID before storing it. Any node
// certificate may ask; when a service is named, the opener's site must
// keep it (CodeForbidden). The acceptor reads only its own store to
// answer, never asking further nodes.
//
// # Testing
//
// mesh/meshtest provides a throw-away CA (meshtest.CA) and a Network
// (meshtest.Net) that runs many nodes in one process on 127.0.0.1 and cuts,
// isolates, delays, throttles or drops their traffic at the packet level,
// so faults also hit connections that are already open.
package mesh
