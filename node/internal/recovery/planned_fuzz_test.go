package recovery

import (
	"testing"
)

// FuzzStopRequest: a stop request that decodes names a valid service.
func FuzzStopRequest(f *testing.F) {
	f.Add([]byte(`{"service":"web","by":"dc2-n1"}`))
	f.Add([]byte(`{"service":"","by":""}`))
	f.Add([]byte(`{"service":"web","x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeStopRequest(b)
		if err == nil && req.Service == "" {
			t.Fatalf("decoded %q without a service", b)
		}
	})
}
