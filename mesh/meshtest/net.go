// Package meshtest helps test code that uses package mesh: a throw-away
// cluster CA (CA) and a Network (Net) for many nodes in one process on
// 127.0.0.1 that can cut, delay, throttle or drop traffic between chosen
// nodes or sites.
package meshtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/lifeboat-dr/lifeboat/mesh"
)

// MaxThrottleQueue is how much traffic a throttled link holds before it
// drops packets (tail drop, like a router's queue).
const MaxThrottleQueue = 200 * time.Millisecond

// Net is a mesh.Network for tests with many nodes in one process. Each
// node gets its own view (Node), which opens real sockets and records their
// addresses, so that traffic can be told apart by sender and receiver.
//
// Faults act on packets: QUIC datagrams are dropped, delayed or throttled
// when written (reporting success, as a lossy network would: a failing send
// makes quic-go close the connection) and filtered again when read, so a
// cut also stops traffic on connections that are already open. memberlist's
// UDP packets are treated the same way; its TCP streams are refused when
// cut (dial) and dropped when accepted from a cut peer, and are neither
// delayed nor throttled.
//
// Cut and Isolate are undirected. Delay, Throttle and DropRate set both
// directions of a pair; each direction has its own throttle queue. Safe for
// concurrent use.
type Net struct {
	os mesh.Network

	mu       sync.Mutex
	sites    map[mesh.NodeID]mesh.Site
	addrs    map[string]mesh.NodeID // "ip:port" of every socket a node opened
	cuts     map[[2]mesh.NodeID]bool
	isolated map[mesh.Site]bool
	links    map[[2]mesh.NodeID]*link // directed
	rng      *rand.Rand
	sent     map[[2]mesh.NodeID]int64 // bytes of packets let through, directed
}

type link struct {
	delay    time.Duration
	rate     float64 // bytes per second; 0 = unlimited
	drop     float64 // probability
	nextFree time.Time
}

// NewNet returns a Net with no faults, its packet drops seeded with 1.
func NewNet() *Net { return NewNetSeed(1) }

// NewNetSeed is NewNet with the random packet drops seeded with seed.
func NewNetSeed(seed uint64) *Net {
	return &Net{
		os:       mesh.OS(),
		sites:    make(map[mesh.NodeID]mesh.Site),
		addrs:    make(map[string]mesh.NodeID),
		cuts:     make(map[[2]mesh.NodeID]bool),
		isolated: make(map[mesh.Site]bool),
		links:    make(map[[2]mesh.NodeID]*link),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Node returns the network as node name at site sees it.
func (n *Net) Node(name mesh.NodeID, site mesh.Site) mesh.Network {
	n.mu.Lock()
	n.sites[name] = site
	n.mu.Unlock()
	return &nodeNet{n: n, self: name}
}

func undirected(a, b mesh.NodeID) [2]mesh.NodeID {
	if a > b {
		a, b = b, a
	}
	return [2]mesh.NodeID{a, b}
}

// Cut stops all traffic between a and b.
func (n *Net) Cut(a, b mesh.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cuts[undirected(a, b)] = true
}

// Isolate cuts every path between the nodes of site and all other nodes.
func (n *Net) Isolate(site mesh.Site) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[site] = true
}

// Heal removes every cut and isolation (delays, throttles and drop rates
// stay; set them to zero to remove them).
func (n *Net) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cuts)
	clear(n.isolated)
}

func (n *Net) setLink(a, b mesh.NodeID, f func(*link)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range [][2]mesh.NodeID{{a, b}, {b, a}} {
		l := n.links[k]
		if l == nil {
			l = &link{}
			n.links[k] = l
		}
		f(l)
	}
}

// Delay adds d of one-way latency to every packet between a and b.
func (n *Net) Delay(a, b mesh.NodeID, d time.Duration) {
	n.setLink(a, b, func(l *link) { l.delay = d })
}

// Throttle limits each direction between a and b to bytesPerSec (0 = no
// limit). Packets queue up to MaxThrottleQueue, then are dropped.
func (n *Net) Throttle(a, b mesh.NodeID, bytesPerSec float64) {
	n.setLink(a, b, func(l *link) { l.rate = bytesPerSec })
}

// DropRate drops each packet between a and b with probability p.
func (n *Net) DropRate(a, b mesh.NodeID, p float64) {
	n.setLink(a, b, func(l *link) { l.drop = p })
}

// register records that node self owns addr.
func (n *Net) register(addr string, self mesh.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs[addr] = self
}

func (n *Net) unregister(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.addrs, addr)
}

// owner returns the node owning addr ("" if none of ours).
func (n *Net) owner(addr string) mesh.NodeID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[addr]
}

// blockedLocked reports whether traffic between from and to is cut.
// Addresses that belong to no node are never cut.
func (n *Net) blockedLocked(from, to mesh.NodeID) bool {
	if from == "" || to == "" || from == to {
		return false
	}
	if n.cuts[undirected(from, to)] {
		return true
	}
	sf, st := n.sites[from], n.sites[to]
	return sf != st && (n.isolated[sf] || n.isolated[st])
}

func (n *Net) blocked(from, to mesh.NodeID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blockedLocked(from, to)
}

// decide says what happens to a packet of size bytes from → to: dropped, or
// sent after delay.
func (n *Net) decide(from, to mesh.NodeID, size int) (drop bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.blockedLocked(from, to) {
		return true, 0
	}
	l := n.links[[2]mesh.NodeID{from, to}]
	if l != nil && l.drop > 0 && n.rng.Float64() < l.drop {
		return true, 0
	}
	if n.sent == nil {
		n.sent = map[[2]mesh.NodeID]int64{}
	}
	n.sent[[2]mesh.NodeID{from, to}] += int64(size)
	if l == nil {
		return false, 0
	}
	delay = l.delay
	if l.rate > 0 {
		now := time.Now()
		if l.nextFree.Before(now) {
			l.nextFree = now
		}
		if l.nextFree.Sub(now) > MaxThrottleQueue {
			return true, 0
		}
		l.nextFree = l.nextFree.Add(time.Duration(float64(size) / l.rate * float64(time.Second)))
		delay += l.nextFree.Sub(now)
	}
	return false, delay
}

// Sent returns the bytes of the UDP payloads (QUIC packets and gossip)
// let through from nodes of site from to nodes of site to so far.
func (n *Net) Sent(from, to mesh.Site) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var total int64
	for k, b := range n.sent {
		if n.sites[k[0]] == from && n.sites[k[1]] == to {
			total += b
		}
	}
	return total
}

// nodeNet is one node's view of a Net.
type nodeNet struct {
	n    *Net
	self mesh.NodeID
}

// ListenPacket opens a real UDP socket and wraps it. The wrapper is not a
// *net.UDPConn, so quic-go does without GSO and ECN here.
func (v *nodeNet) ListenPacket(addr string) (net.PacketConn, error) {
	pc, err := v.n.os.ListenPacket(addr)
	if err != nil {
		return nil, err
	}
	local := pc.LocalAddr().String()
	v.n.register(local, v.self)
	return &packetConn{PacketConn: pc, n: v.n, self: v.self, local: local}, nil
}

type packetConn struct {
	net.PacketConn
	n     *Net
	self  mesh.NodeID
	local string
	once  sync.Once
}

func (c *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	drop, delay := c.n.decide(c.self, c.n.owner(addr.String()), len(b))
	switch {
	case drop:
		return len(b), nil
	case delay > 0:
		cp := append([]byte(nil), b...)
		time.AfterFunc(delay, func() { c.PacketConn.WriteTo(cp, addr) })
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		k, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !c.n.blocked(c.n.owner(addr.String()), c.self) {
			return k, addr, err
		}
	}
}

// SetReadBuffer, SetWriteBuffer and SyscallConn pass through to the
// socket so quic-go sizes its buffers and sets DF as on a real UDP socket
// (it still does without GSO and ECN, which need the unwrapped conn).
func (c *packetConn) SetReadBuffer(n int) error {
	if u, ok := c.PacketConn.(interface{ SetReadBuffer(int) error }); ok {
		return u.SetReadBuffer(n)
	}
	return errors.New("meshtest: socket has no receive buffer setting")
}

func (c *packetConn) SetWriteBuffer(n int) error {
	if u, ok := c.PacketConn.(interface{ SetWriteBuffer(int) error }); ok {
		return u.SetWriteBuffer(n)
	}
	return errors.New("meshtest: socket has no send buffer setting")
}

func (c *packetConn) SyscallConn() (syscall.RawConn, error) {
	if u, ok := c.PacketConn.(syscall.Conn); ok {
		return u.SyscallConn()
	}
	return nil, errors.New("meshtest: socket has no syscall conn")
}

func (c *packetConn) Close() error {
	c.once.Do(func() { c.n.unregister(c.local) })
	return c.PacketConn.Close()
}

// GossipTransport opens memberlist's real transport and filters it.
func (v *nodeNet) GossipTransport(bind string) (memberlist.NodeAwareTransport, error) {
	inner, err := v.n.os.GossipTransport(bind)
	if err != nil {
		return nil, err
	}
	ip, port, err := inner.FinalAdvertiseAddr("", 0)
	if err != nil {
		inner.Shutdown()
		return nil, fmt.Errorf("gossip transport address: %w", err)
	}
	local := net.JoinHostPort(ip.String(), fmt.Sprint(port))
	v.n.register(local, v.self)
	t := &gossipTransport{
		NodeAwareTransport: inner,
		n:                  v.n,
		self:               v.self,
		local:              local,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	t.wg.Add(2)
	go t.relayPackets()
	go t.relayStreams()
	return t, nil
}

// gossipTransport filters a memberlist transport by the Net's faults.
type gossipTransport struct {
	memberlist.NodeAwareTransport
	n       *Net
	self    mesh.NodeID
	local   string
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *gossipTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *gossipTransport) relayPackets() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.PacketCh()
	for {
		select {
		case p := <-in:
			if t.n.blocked(t.n.owner(p.From.String()), t.self) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *gossipTransport) relayStreams() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.StreamCh()
	for {
		select {
		case c := <-in:
			if t.n.blocked(t.n.owner(c.RemoteAddr().String()), t.self) {
				c.Close()
				continue
			}
			select {
			case t.streams <- c:
			case <-t.done:
				c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *gossipTransport) send(b []byte, addr string, write func([]byte) error) (time.Time, error) {
	drop, delay := t.n.decide(t.self, t.n.owner(addr), len(b))
	switch {
	case drop:
		return time.Now(), nil
	case delay > 0:
		cp := append([]byte(nil), b...)
		time.AfterFunc(delay, func() { write(cp) })
		return time.Now(), nil
	}
	return time.Now(), write(b)
}

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.send(b, addr, func(p []byte) error {
		_, err := t.NodeAwareTransport.WriteTo(p, addr)
		return err
	})
}

func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.send(b, a.Addr, func(p []byte) error {
		_, err := t.NodeAwareTransport.WriteToAddress(p, a)
		return err
	})
}

// errCut is what a dial across a cut returns.
var errCut = errors.New("meshtest: connection refused: path is cut")

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.n.blocked(t.self, t.n.owner(a.Addr)) {
		return nil, fmt.Errorf("dial %s: %w", a.Addr, errCut)
	}
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	// The acceptor sees the ephemeral port: record it as ours so it can
	// filter by sender.
	local := c.LocalAddr().String()
	t.n.register(local, t.self)
	return &trackedConn{Conn: c, n: t.n, local: local}, nil
}

func (t *gossipTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.once.Do(func() {
		close(t.done)
		t.n.unregister(t.local)
	})
	t.wg.Wait()
	return err
}

// trackedConn forgets its local address in the Net when closed.
type trackedConn struct {
	net.Conn
	n     *Net
	local string
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.n.unregister(c.local) })
	return c.Conn.Close()
}
