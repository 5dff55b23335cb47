package streams

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
)

// serve runs Serve for kind admin on a new endpoint with handle until the
// test ends, and returns an endpoint of the same CA to ask from and the
// address to ask.
func serve(t *testing.T, handle func(context.Context, *mesh.Stream) error) (*mesh.Endpoint, string) {
	t.Helper()
	ca := meshtest.CA(t)
	to, from := meshtest.Endpoint(t, ca.Node("n1", "dc1")), meshtest.Endpoint(t, ca.Node("n2", "dc1"))
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Accept: to.Accept, Logger: testlog.New(t)}, mesh.KindAdmin, "admin", handle)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return from, to.Addr().String()
}

// TestRequest: the answer frame, a handler's refusal as the peer's
// RemoteError (type FrameTypeError), and an answer over MaxAnswer.
func TestRequest(t *testing.T) {
	from, addr := serve(t, func(_ context.Context, s *mesh.Stream) error {
		typ, p, err := mesh.NewFrameReader(s, 64).Next()
		if err != nil {
			return err
		}
		switch string(p) {
		case "refuse":
			return Refuse(mesh.CodeWrongNode, "ask %s", "n9")
		case "big":
			return mesh.WriteFrame(s, typ+1, make([]byte, MaxAnswer+1))
		}
		return mesh.WriteFrame(s, typ+1, append([]byte("re: "), p...))
	})
	tests := []struct {
		name     string
		payload  string
		wantType mesh.FrameType
		wantCode mesh.ErrCode // with wantType FrameTypeError
		wantErr  string       // a failure other than a refusal
		want     string
	}{
		{"answer", "hello", 8, 0, "", "re: hello"},
		{"refusal", "refuse", mesh.FrameTypeError, mesh.CodeWrongNode, "ask n9", ""},
		{"answer too big", "big", 0, 0, "read answer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, p, err := Request(t.Context(), from.Dial, addr, mesh.KindAdmin, 7, []byte(tt.payload), 3*time.Second)
			if typ != tt.wantType {
				t.Fatalf("type %d (%v), want %d", typ, err, tt.wantType)
			}
			var re *mesh.RemoteError
			switch {
			case tt.wantCode != 0:
				if !errors.As(err, &re) || re.Code != tt.wantCode || !strings.Contains(re.Message, tt.wantErr) {
					t.Errorf("err %v, want the peer's %s saying %q", err, tt.wantCode, tt.wantErr)
				}
			case tt.wantErr != "":
				if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err %v, want a failure saying %q", err, tt.wantErr)
				}
			case err != nil || string(p) != tt.want:
				t.Errorf("answer %q, %v; want %q", p, err, tt.want)
			}
		})
	}
}

// TestRequestDialFails: a node nobody answers at is an error with type 0
// within the dial timeout, naming the address.
func TestRequestDialFails(t *testing.T) {
	ca := meshtest.CA(t)
	from := meshtest.Endpoint(t, ca.Node("n2", "dc1"))
	gone := meshtest.Endpoint(t, ca.Node("n1", "dc1"))
	addr := gone.Addr().String()
	gone.Close()
	typ, _, err := Request(t.Context(), from.Dial, addr, mesh.KindAdmin, 7, nil, 500*time.Millisecond)
	if typ != 0 || err == nil || !strings.Contains(err.Error(), "dial "+addr) {
		t.Errorf("Request to a closed endpoint: type %d, %v; want type 0 and an error naming the dial to %s", typ, err, addr)
	}
}
