package mesh

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer returns a raft.StreamLayer over KindRaft streams, for
// raft.NewNetworkTransport: Accept returns inbound raft streams, Dial opens
// one to an address, Addr is the endpoint's advertised address. Closing the
// layer ends its Accept calls (with ErrClosed), not the endpoint.
func (e *Endpoint) RaftLayer() raft.StreamLayer {
	return &raftLayer{e: e, done: make(chan struct{})}
}

type raftLayer struct {
	e    *Endpoint
	done chan struct{}
	once sync.Once
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func (l *raftLayer) Accept() (net.Conn, error) {
	s, err := l.e.Accept(contextDone(l.done), KindRaft)
	if err != nil {
		select {
		case <-l.done:
			return nil, ErrClosed
		default:
		}
		return nil, err
	}
	return s, nil
}

func (l *raftLayer) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *raftLayer) Addr() net.Addr { return l.e.advertise }

// Dial opens a raft stream to address within timeout. raft's StreamLayer
// has no context, so the timeout is turned into one here.
func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(contextDone(l.done), timeout)
	defer cancel()
	s, err := l.e.Dial(ctx, string(address), KindRaft)
	if err != nil {
		return nil, fmt.Errorf("raft dial: %w", err)
	}
	return s, nil
}
