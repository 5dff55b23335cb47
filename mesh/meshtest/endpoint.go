package meshtest

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/testlog"
	"github.com/lifeboat-dr/lifeboat/mesh"
)

// Endpoint opens a QUIC endpoint with creds on a free port of 127.0.0.1,
// logging to the test, and closes it when the test ends. It fails the
// test on error.
func Endpoint(t testing.TB, creds *mesh.Creds) *mesh.Endpoint {
	t.Helper()
	pc, err := mesh.OS().ListenPacket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: creds, Conn: pc, Logger: testlog.New(t)})
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
