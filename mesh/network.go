package mesh

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// Network opens the sockets a node uses. OS returns the real one; tests wrap
// it (mesh/meshtest) to cut, delay, throttle or drop traffic between chosen
// nodes or sites. Implementations are safe for concurrent use.
type Network interface {
	// ListenPacket opens the UDP socket of the QUIC endpoint at addr
	// (host:port, port 0 allowed). The Endpoint owns and closes it.
	ListenPacket(addr string) (net.PacketConn, error)
	// GossipTransport opens memberlist's UDP and TCP listeners at bind
	// (host:port, port 0 allowed). memberlist shuts it down.
	GossipTransport(bind string) (memberlist.NodeAwareTransport, error)
}

// OS returns the operating system's network, logging memberlist transport
// messages to slog.Default().
func OS() Network { return osNetwork{log: nil} }

// OSWithLogger is OS with memberlist transport messages going to log.
func OSWithLogger(log *slog.Logger) Network { return osNetwork{log: log} }

type osNetwork struct{ log *slog.Logger }

// ListenPacket returns a *net.UDPConn, so that quic-go can use GSO, ECN
// and batched reads.
func (o osNetwork) ListenPacket(addr string) (net.PacketConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	return c, nil
}

func (o osNetwork) GossipTransport(bind string) (memberlist.NodeAwareTransport, error) {
	host, port, err := splitHostPort(bind)
	if err != nil {
		return nil, err
	}
	log := o.log
	if log == nil {
		log = slog.Default()
	}
	// Port 0 takes a free TCP port and then binds UDP on the same
	// number, which another process may hold: try a few fresh ports
	// (memberlist does the same for the transports it builds itself).
	tries := 1
	if port == 0 {
		tries = 10
	}
	for i := 1; ; i++ {
		t, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host},
			BindPort:  port,
			Logger:    StdLogger(log, "memberlist"),
		})
		if err == nil {
			return t, nil
		}
		if i >= tries {
			return nil, fmt.Errorf("gossip transport %s: %w", bind, err)
		}
	}
}

// splitHostPort splits host:port; an empty host means all interfaces.
func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port %q", addr, ps)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}
