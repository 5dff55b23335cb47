package mesh_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

const benchPayload = 256 << 10

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkBlockStream measures one framed KindBlocks stream between two
// endpoints on loopback (mutual TLS, the OS network so quic-go gets a
// *net.UDPConn with GSO): 256 KiB payloads through WriteFrame, read with a
// FrameReader.
func BenchmarkBlockStream(b *testing.B) {
	ca := meshtest.CA(b)
	mk := func(name mesh.NodeID) *mesh.Endpoint {
		pc, err := mesh.OS().ListenPacket("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := pc.(*net.UDPConn); !ok {
			b.Fatalf("OS().ListenPacket returned %T, want *net.UDPConn", pc)
		}
		e, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: ca.Node(name, "dc1"), Conn: pc, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.Close() })
		return e
	}
	src, dst := mk("src"), mk("dst")
	done := make(chan error, 1)
	go func() {
		s, err := dst.Accept(b.Context(), mesh.KindBlocks)
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		fr := mesh.NewFrameReader(s, mesh.KindBlocks.MaxFrame())
		for {
			_, p, err := fr.Next()
			if errors.Is(err, io.EOF) {
				_, err = s.Write([]byte{1})
				done <- err
				return
			}
			if err != nil {
				done <- err
				return
			}
			if len(p) != benchPayload {
				done <- errors.New("short frame")
				return
			}
		}
	}()
	s, err := src.Dial(b.Context(), dst.Addr().String(), mesh.KindBlocks)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	// A b.N loop rather than b.Loop: the timer must also cover draining
	// the flow-control window after the last Write (the ack below), which
	// b.Loop would leave out.
	b.ResetTimer()
	for range b.N {
		if err := mesh.WriteFrame(s, 1, payload); err != nil {
			b.Fatal(err)
		}
	}
	s.CloseWrite()
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		b.Fatalf("read ack: %v", err)
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBareQUIC is the baseline: a bare quic-go stream with the same
// TLS (mesh.Creds' configs), the same flow-control windows and the same
// bytes, no stream header and no frames.
func BenchmarkBareQUIC(b *testing.B) {
	ca := meshtest.CA(b)
	listen := func() *quic.Transport {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		tr := &quic.Transport{Conn: c}
		b.Cleanup(func() { tr.Close(); c.Close() })
		return tr
	}
	conf := &quic.Config{MaxStreamReceiveWindow: 16 << 20, MaxConnectionReceiveWindow: 32 << 20}
	srvTLS := ca.Node("dst", "dc1").ServerTLS()
	srvTLS.NextProtos = []string{mesh.ALPN}
	cliTLS := ca.Node("src", "dc1").ClientTLS()
	cliTLS.NextProtos = []string{mesh.ALPN}
	str, ctr := listen(), listen()
	ln, err := str.Listen(srvTLS, conf)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(b.Context())
		if err != nil {
			done <- err
			return
		}
		s, err := conn.AcceptStream(b.Context())
		if err != nil {
			done <- err
			return
		}
		buf := make([]byte, benchPayload)
		for {
			_, err := io.ReadFull(s, buf)
			if errors.Is(err, io.EOF) {
				_, err = s.Write([]byte{1})
				done <- err
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	conn, err := ctr.Dial(ctx, str.Conn.LocalAddr(), cliTLS, conf)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	// A b.N loop rather than b.Loop: the timer must also cover draining
	// the flow-control window after the last Write (the ack below), which
	// b.Loop would leave out.
	b.ResetTimer()
	for range b.N {
		if _, err := s.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		b.Fatalf("read ack: %v", err)
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
