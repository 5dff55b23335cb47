package api

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// FuzzReadEvents: any reply stream ends in a result or an error, never a
// panic, and a result is the last "done" line.
func FuzzReadEvents(f *testing.F) {
	var good bytes.Buffer
	enc := json.NewEncoder(&good)
	enc.Encode(FailoverEvent{Step: "plan", Plan: &FailoverPlan{Service: "web"}})
	enc.Encode(FailoverEvent{Step: "images", Message: "m", Done: 1, Total: 2})
	enc.Encode(FailoverEvent{Step: "done", Result: &catalog.FailoverRecord{Service: "web", Epoch: 2}})
	f.Add(good.Bytes())
	f.Add([]byte(`{"error":"x","code":"not_holder","message":"127.0.0.1:1"}` + "\n"))
	f.Add([]byte(`{"step":"images"}` + "\n"))
	f.Add([]byte("{\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := readEvents(context.Background(), bytes.NewReader(b), func(FailoverEvent) {})
		if err == nil && e.Step != "done" {
			t.Fatalf("result without a done step: %+v", e)
		}
	})
}
