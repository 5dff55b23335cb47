package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/node"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/nbd"
)

// localDrill runs a drill's hook on the operator's machine: the point's
// volumes are read through the admin API (authenticated and audited as
// image reads) and served over NBD on Unix sockets in a private directory,
// with copy-on-write overlays; the node only records the result.
func (s *adminSession) localDrill(ctx context.Context, service, at, hook string) error {
	cl, js := s.cl, s.json
	pts, err := cl.Points(ctx, service, "")
	if err != nil {
		return err
	}
	if len(pts) == 0 {
		return fmt.Errorf("service %s has no points on the node at --admin: run the drill against the node that holds it", service)
	}
	// The node chooses the point as for its own drills: by default the
	// newest worth having (issue 16).
	ch, err := cl.ChoosePoint(ctx, service, at)
	if err != nil {
		return err
	}
	at = ch.Point
	if len(ch.PassedOver) > 0 {
		s.event(node.FailoverEvent{Step: "plan", Message: "passed over " + api.PassedText(ch.PassedOver)})
	}
	if ch.Warning != "" {
		s.event(node.FailoverEvent{Step: "plan", Message: "warning: " + ch.Warning})
	}
	// The first volume resolves --at; the others open at the same point.
	var vols []string
	for _, v := range pts[len(pts)-1].Volumes {
		vols = append(vols, v.Name)
	}
	dir, err := os.MkdirTemp("", "lifeboat-drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		point  string
		ptTime time.Time
		env    []string
		uris   []string
	)
	defer wg.Wait()
	for i, v := range vols {
		name := v
		if !strings.Contains(name, "/") {
			name = service + "/" + v
		}
		want := at
		if i > 0 {
			want = point
		}
		im, err := cl.OpenImage(ctx, name, want)
		if err != nil {
			return fmt.Errorf("open %s at %s: %w", name, want, err)
		}
		point, ptTime = im.Point, im.Time
		srv, err := nbd.NewServer(nbd.Export{Name: name, Size: im.Size(), Data: im, Writable: true, OverlayDir: dir, Log: s.log.With("volume", name)})
		if err != nil {
			return err
		}
		defer srv.Close()
		sock := filepath.Join(dir, fmt.Sprintf("vol%d.sock", i))
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(ctx, ln) }()
		uri := "nbd+unix:///?socket=" + sock
		uris = append(uris, uri)
		short := name[strings.LastIndexByte(name, '/')+1:]
		env = append(env, "LIFEBOAT_NBD_"+envSuffix(short)+"="+uri)
	}
	env = append(env, "LIFEBOAT_SERVICE="+service, "LIFEBOAT_POINT="+point, "LIFEBOAT_POINT_TIME="+ptTime.UTC().Format(time.RFC3339Nano),
		"LIFEBOAT_DRILL=local", "LIFEBOAT_PHASE=drill", "LIFEBOAT_NBDS="+strings.Join(uris, " "))
	if !js {
		fmt.Fprintf(s.stdout, "drill of %s at point %s (%s): %d volumes over NBD on this machine; running the hook here\n",
			service, shortPoint(point), ptTime.Local().Format(time.RFC3339), len(vols))
	}
	t0 := time.Now()
	hc := exec.CommandContext(ctx, "/bin/sh", "-c", hook)
	hc.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	hc.Stdout, hc.Stderr = &out, &out
	hc.WaitDelay = time.Second
	herr := hc.Run()
	od := node.OperatorDrill{Service: service, Point: point, HookCommand: hook, HookSeconds: time.Since(t0).Seconds(),
		Passed: herr == nil, Output: lastLines(out.String(), 5)}
	if herr != nil {
		od.Error = "drill hook: " + herr.Error()
	}
	cancel()
	d, err := cl.RecordDrill(context.WithoutCancel(ctx), od)
	if err != nil {
		return fmt.Errorf("the drill ran (passed=%v) but could not be recorded: %w", od.Passed, err)
	}
	if js {
		return json.NewEncoder(s.stdout).Encode(d)
	}
	res := "PASSED"
	if !d.Passed {
		res = "FAILED"
	}
	fmt.Fprintf(s.stdout, "drill %s %s: %s from point %s, hook %s on this machine\n", d.ID, res, d.Service, shortPoint(d.Point), secs(d.Hook))
	if d.Output != "" {
		fmt.Fprintf(s.stdout, "hook output:\n%s\n", d.Output)
	}
	if !d.Passed {
		return fmt.Errorf("drill failed: %s", d.Error)
	}
	return nil
}

func shortPoint(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// envSuffix makes a volume name an environment variable suffix, as the
// node does for its hooks.
func envSuffix(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}
