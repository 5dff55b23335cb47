package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/testwait"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/test/testbin"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServeNBD runs serve-nbd with args and --listen listen until stop
// is called, and waits until it accepts connections (on 127.0.0.1 when
// listen is 0.0.0.0).
func startServeNBD(t *testing.T, listen string, args ...string) (stop func() result) {
	t.Helper()
	probe := listen
	if host, port, _ := net.SplitHostPort(listen); host == "0.0.0.0" {
		probe = net.JoinHostPort("127.0.0.1", port)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		done <- lifeboatCtx(ctx, append([]string{"serve-nbd", "--listen", listen}, args...)...)
	}()
	var exited *result
	if err := testwait.Until(10*time.Second, 20*time.Millisecond, func() error {
		select {
		case r := <-done:
			exited = &r
			return nil
		default:
		}
		c, err := net.Dial("tcp", probe)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		cancel()
		t.Fatalf("serve-nbd does not listen on %s: %v: %+v", listen, err, <-done)
	}
	if exited != nil {
		t.Fatalf("serve-nbd exited: %+v", *exited)
	}
	var once sync.Once
	var r result
	stop = func() result {
		once.Do(func() { cancel(); r = <-done })
		return r
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestServeNBD serves a point of a local store over NBD to real clients:
// nbdinfo sees its size, qemu-img convert copies it out byte for byte, and
// with --writable qemu-io's writes read back while the point stays as it
// was. Without TLS it warns that anyone on the host can read the volume.
func TestServeNBD(t *testing.T) {
	t.Setenv(envTLSDir, "") // not parallel: a set LIFEBOAT_TLS_DIR would turn TLS on
	qemuImg := testbin.NeedTool(t, "qemu-img", "qemu-utils")
	qemuIO := testbin.NeedTool(t, "qemu-io", "qemu-utils")
	nbdinfo := testbin.NeedTool(t, "nbdinfo", "libnbd-bin")
	tmp := t.TempDir()
	store := newStore(t)
	img := filepath.Join(tmp, "disk.img")
	data := makeImage(t, img, 9)
	id, _ := snapshot(t, store, img)

	addr := freePort(t)
	stop := startServeNBD(t, addr, "--store", store, "--volume", "disk", "--at", id)
	uri := "nbd://" + addr + "/disk"
	out, err := exec.Command(nbdinfo, "--json", uri).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"export-size": 3145728`) || !strings.Contains(string(out), `"is_read_only": true`) {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	copyOut := filepath.Join(tmp, "copy.img")
	if out, err := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "raw", uri, copyOut).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	checkFile(t, copyOut, data)
	if r := stop(); r.code != exitInterrupted || !strings.Contains(r.stdout, "serving disk at point "+id) ||
		!strings.Contains(r.stdout, "on nbd://"+addr+"/disk ") || !strings.Contains(r.stderr, "anyone on this host can read the volume") {
		t.Fatalf("serve-nbd: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}

	addr = freePort(t)
	stop = startServeNBD(t, addr, "--store", store, "--volume", "disk", "--at", id, "--writable", "--overlay-dir", tmp)
	uri = "nbd://" + addr + "/disk"
	if out, err := exec.Command(qemuIO, "-f", "raw", "-c", "write -P 0xab 4096 8192", "-c", "read -P 0xab 4096 8192", uri).CombinedOutput(); err != nil || bytes.Contains(out, []byte("fail")) {
		t.Fatalf("qemu-io write and read back: %v\n%s", err, out)
	}
	if r := stop(); !strings.Contains(r.stderr, "anyone on this host can read and write the volume") {
		t.Fatalf("serve-nbd --writable without TLS did not warn:\n%s", r.stderr)
	}
	// The point is unchanged.
	restored := filepath.Join(tmp, "restored.img")
	mustRun(t, "restore", "--store", store, "--volume", "disk", "--at", id, "--out", restored)
	checkFile(t, restored, data)
}

// nbdCerts are the credentials of the TLS tests, issued with mesh.Issue as
// `lifeboat ca issue` does.
type nbdCerts struct {
	ca                    string // CA directory
	server                string // serve-nbd's --tls-dir: an operator certificate
	operator, admin       string // clients that are let in
	viewer, node, foreign string // clients that are refused
}

func issueNBDCerts(t *testing.T) nbdCerts {
	t.Helper()
	tmp := t.TempDir()
	c := nbdCerts{ca: filepath.Join(tmp, "ca")}
	if err := mesh.InitCA(c.ca); err != nil {
		t.Fatal(err)
	}
	issue := func(ca, name string, req mesh.IssueRequest) string {
		dir := filepath.Join(tmp, name)
		req.Name = name
		if err := mesh.Issue(ca, req, dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	c.server = issue(c.ca, "nbd-server", mesh.IssueRequest{Operator: true, Role: mesh.RoleOperator})
	c.operator = issue(c.ca, "olga", mesh.IssueRequest{Operator: true, Role: mesh.RoleOperator})
	c.admin = issue(c.ca, "ada", mesh.IssueRequest{Operator: true, Role: mesh.RoleAdmin})
	c.viewer = issue(c.ca, "vic", mesh.IssueRequest{Operator: true, Role: mesh.RoleViewer})
	// A node certificate in the GnuTLS layout (ca issue writes it for
	// operators only).
	c.node = issue(c.ca, "n1", mesh.IssueRequest{Site: "dc1"})
	for link, target := range map[string]string{"ca-cert.pem": mesh.FileCA, "client-cert.pem": mesh.FileCert, "client-key.pem": mesh.FileKey} {
		if err := os.Symlink(target, filepath.Join(c.node, link)); err != nil {
			t.Fatal(err)
		}
	}
	// An operator of another CA that trusts this CA's server: the server
	// must refuse it, not the client the server.
	other := filepath.Join(tmp, "other-ca")
	if err := mesh.InitCA(other); err != nil {
		t.Fatal(err)
	}
	c.foreign = issue(other, "mallory", mesh.IssueRequest{Operator: true, Role: mesh.RoleAdmin})
	if err := os.Remove(filepath.Join(c.foreign, "ca-cert.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(c.ca, mesh.FileCA), filepath.Join(c.foreign, "ca-cert.pem")); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeNBDTLS serves a point with --tls-dir to real clients with
// operator certificates: nbdinfo over nbds:// with tls-certificates, and
// qemu-img convert with a tls-creds-x509 object, byte for byte. Clients
// without TLS, with a viewer or node certificate, or with a certificate
// of another CA are refused, and serve-nbd logs why.
func TestServeNBDTLS(t *testing.T) {
	t.Parallel()
	qemuImg := testbin.NeedTool(t, "qemu-img", "qemu-utils")
	nbdinfo := testbin.NeedTool(t, "nbdinfo", "libnbd-bin")
	certs := issueNBDCerts(t)
	tmp := t.TempDir()
	store := newStore(t)
	img := filepath.Join(tmp, "disk.img")
	data := makeImage(t, img, 10)
	id, _ := snapshot(t, store, img)

	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	stop := startServeNBD(t, addr, "--store", store, "--volume", "disk", "--at", id, "--tls-dir", certs.server)
	run := func(name string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		t.Logf("%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
		return string(out), err
	}
	tlsURI := func(dir string) string { return "nbds://" + addr + "/disk?tls-certificates=" + dir }

	out, err := run(nbdinfo, "--json", tlsURI(certs.operator))
	if err != nil || !strings.Contains(out, `"export-size": 3145728`) || !strings.Contains(out, `"TLS": true`) {
		t.Fatalf("nbdinfo with an operator certificate: %v", err)
	}
	copyOut := filepath.Join(tmp, "copy.img")
	if _, err := run(qemuImg, "convert", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+certs.admin,
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",export=disk,tls-creds=tls0",
		"-O", "raw", copyOut); err != nil {
		t.Fatalf("qemu-img convert over TLS with an admin certificate: %v", err)
	}
	checkFile(t, copyOut, data)

	for _, tc := range []struct{ name, uri, says string }{
		{"no TLS", "nbd://" + addr + "/disk", "server requires TLS"},
		{"viewer", tlsURI(certs.viewer), ""},
		{"node", tlsURI(certs.node), ""},
		{"foreign CA", tlsURI(certs.foreign), ""},
	} {
		if out, err := run(nbdinfo, "--size", tc.uri); err == nil || !strings.Contains(out, tc.says) {
			t.Errorf("nbdinfo as %s: %v, want it refused saying %q", tc.name, err, tc.says)
		}
	}
	r := stop()
	t.Logf("serve-nbd stderr:\n%s", r.stderr)
	if r.code != exitInterrupted || !strings.Contains(r.stdout, "on nbds://"+addr+"/disk with TLS") {
		t.Fatalf("serve-nbd: exit %d\nstdout %s", r.code, r.stdout)
	}
	for _, want := range []string{
		"TLS required",
		"operator vic has role viewer: serve-nbd needs role operator or admin",
		"lifeboat://node/dc1/n1 is a node certificate",
		"certificate signed by unknown authority",
		", 4 refused,",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("serve-nbd stderr lacks %q", want)
		}
	}
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("serve-nbd with TLS on loopback warned:\n%s", r.stderr)
	}
}

// TestServeNBDTLSDirFromEnv: without --tls-dir, LIFEBOAT_TLS_DIR turns TLS
// on, and then any --listen address is allowed.
func TestServeNBDTLSDirFromEnv(t *testing.T) {
	certs := issueNBDCerts(t)
	t.Setenv(envTLSDir, certs.server)
	store := newStore(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	makeImage(t, img, 11)
	snapshot(t, store, img)
	_, port, _ := net.SplitHostPort(freePort(t))
	r := startServeNBD(t, "0.0.0.0:"+port, "--store", store, "--volume", "disk")()
	if !strings.Contains(r.stdout, ":"+port+"/disk with TLS") || !strings.Contains(r.stdout, "on nbds://") || strings.Contains(r.stderr, "warning") {
		t.Fatalf("serve-nbd with LIFEBOAT_TLS_DIR: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestServeNBDRefusesToStart: a network-wide --listen without TLS and
// unusable TLS directories are refused before anything is served.
func TestServeNBDRefusesToStart(t *testing.T) {
	t.Setenv(envTLSDir, "") // not parallel: a set LIFEBOAT_TLS_DIR would turn TLS on
	store := newStore(t)
	tmp := t.TempDir()
	agent := filepath.Join(tmp, "agent")
	ca := filepath.Join(tmp, "ca")
	if err := mesh.InitCA(ca); err != nil {
		t.Fatal(err)
	}
	if err := mesh.Issue(ca, mesh.IssueRequest{Name: "a1", Site: "dc1", Agent: true, Service: "web"}, agent); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"0.0.0.0 without TLS", []string{"--listen", "0.0.0.0:0"}, exitUsage,
			"serve-nbd: --listen 0.0.0.0:0 is not a loopback address: NBD without TLS would serve the volume to anyone on the network; add --tls-dir DIR (an operator certificate from `lifeboat ca issue --operator`)"},
		{"all interfaces without TLS", []string{"--listen", ":10809"}, exitUsage, "--listen :10809 is not a loopback address"},
		{"IPv6 any without TLS", []string{"--listen", "[::]:10809"}, exitUsage, "--listen [::]:10809 is not a loopback address"},
		{"host name without TLS", []string{"--listen", "example.com:10809"}, exitUsage, "is not a loopback address"},
		{"no port", []string{"--listen", "127.0.0.1"}, exitUsage, "want HOST:PORT"},
		{"missing TLS dir", []string{"--listen", "0.0.0.0:0", "--tls-dir", missing}, exitError, "Try: check " + missing},
		{"agent certificate", []string{"--listen", "0.0.0.0:0", "--tls-dir", agent}, exitUsage, "cannot serve TLS: it is not a server certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := lifeboat(t, append([]string{"serve-nbd", "--store", store, "--volume", "disk"}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr:\n%s\nwant it to contain %q", r.code, tc.code, r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Fatalf("stdout %q: want nothing served", r.stdout)
			}
		})
	}
}
