package nbd

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
	"testing"
	"time"
)

// Tests against real NBD clients: nbdinfo (Debian package libnbd-bin) and
// qemu-img / qemu-io (qemu-utils), over TCP on 127.0.0.1.

// tool returns the path of a client binary, skipping the test when it is
// missing (failing it under CI=true).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (apt-get install -y %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed; install the Debian package %s (apt-get install -y %s) to run this test", name, pkg, pkg)
	}
	return p
}

// run runs a client with a time limit and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	t.Logf("%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out), err
}

func TestNbdinfo(t *testing.T) {
	nbdinfo := tool(t, "nbdinfo", "libnbd-bin")
	const size = 4<<20 + 512
	for _, tc := range []struct {
		name     string
		writable bool
	}{
		{"read-only", false},
		{"writable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, Export{Name: "vol", Size: size, Data: bytes.NewReader(make([]byte, size)), Writable: tc.writable})
			for _, uri := range []string{"nbd://" + addr, "nbd://" + addr + "/vol"} {
				out, err := run(t, nbdinfo, "--json", uri)
				if err != nil {
					t.Fatalf("nbdinfo %s: %v", uri, err)
				}
				var info struct {
					Exports []struct {
						Size     int64 `json:"export-size"`
						ReadOnly bool  `json:"is_read_only"`
						MinBlock int64 `json:"block_size_minimum"`
						MaxBlock int64 `json:"block_size_maximum"`
					} `json:"exports"`
				}
				if err := json.Unmarshal([]byte(out), &info); err != nil {
					t.Fatalf("nbdinfo output is not JSON: %v", err)
				}
				if len(info.Exports) != 1 {
					t.Fatalf("nbdinfo lists %d exports, want 1", len(info.Exports))
				}
				e := info.Exports[0]
				if e.Size != size || e.ReadOnly != !tc.writable || e.MinBlock != 1 || e.MaxBlock != 32<<20 {
					t.Fatalf("nbdinfo: size %d read-only %v block sizes %d..%d, want %d %v 1..%d",
						e.Size, e.ReadOnly, e.MinBlock, e.MaxBlock, size, !tc.writable, 32<<20)
				}
			}
			// --list goes through NBD_OPT_LIST.
			out, err := run(t, nbdinfo, "--list", "--json", "nbd://"+addr)
			if err != nil || !strings.Contains(out, `"export-name": "vol"`) {
				t.Fatalf("nbdinfo --list: %v; want export vol listed", err)
			}
		})
	}
}

func TestQemuImgConvert(t *testing.T) {
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	const size = 8 << 20
	data := randData(size, 10)
	pt := newFrozen(data)
	s, addr := startServer(t, Export{Name: "vol", Size: size, Data: pt})
	out := filepath.Join(t.TempDir(), "out.img")
	if _, err := run(t, qemuImg, "convert", "-f", "raw", "-O", "raw", "nbd://"+addr+"/vol", out); err != nil {
		t.Fatalf("qemu-img convert: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("qemu-img convert wrote %d bytes that differ from the %d-byte point", len(got), len(data))
	}
	pt.unchanged(t)
	if st := s.Stats(); st.BytesRead < size || st.FirstRequest.IsZero() {
		t.Fatalf("stats %+v: want at least %d bytes read", st, size)
	}
}

func TestQemuIOWrite(t *testing.T) {
	qemuIO := tool(t, "qemu-io", "qemu-utils")
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	const size = 4 << 20
	data := randData(size, 11)
	pt := newFrozen(data)
	_, addr := startServer(t, Export{Size: size, Data: pt, Writable: true})
	uri := "nbd://" + addr

	// Aligned and unaligned writes, then qemu-io's own pattern checks.
	if _, err := run(t, qemuIO, "-f", "raw",
		"-c", "write -P 0xab 4096 8192",
		"-c", "write -P 0xcd 100001 3000",
		"-c", "write -z 1048576 65536",
		"-c", "write -z 200003 5000",
		uri); err != nil {
		t.Fatalf("qemu-io write: %v", err)
	}
	out, err := run(t, qemuIO, "-f", "raw",
		"-c", "read -P 0xab 4096 8192",
		"-c", "read -P 0xcd 100001 3000",
		"-c", "read -P 0 1048576 65536",
		"-c", "read -P 0 200003 5000",
		uri)
	if err != nil || strings.Contains(out, "Pattern verification failed") || strings.Count(out, "read ") != 4 {
		t.Fatalf("qemu-io read back: %v", err)
	}

	want := bytes.Clone(data)
	copy(want[4096:4096+8192], bytes.Repeat([]byte{0xab}, 8192))
	copy(want[100001:100001+3000], bytes.Repeat([]byte{0xcd}, 3000))
	clear(want[1048576 : 1048576+65536])
	clear(want[200003 : 200003+5000])
	img := filepath.Join(t.TempDir(), "out.img")
	if _, err := run(t, qemuImg, "convert", "-f", "raw", "-O", "raw", uri, img); err != nil {
		t.Fatalf("qemu-img convert: %v", err)
	}
	if got, err := os.ReadFile(img); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("image after writes differs from the expected bytes (%v)", err)
	}
	pt.unchanged(t)
}

func TestQemuIOWriteReadOnly(t *testing.T) {
	qemuIO := tool(t, "qemu-io", "qemu-utils")
	const size = 1 << 20
	data := randData(size, 12)
	pt := newFrozen(data)
	_, addr := startServer(t, Export{Size: size, Data: pt})
	out, err := run(t, qemuIO, "-f", "raw", "-c", "write -P 0xab 4096 8192", "nbd://"+addr)
	if err == nil && !strings.Contains(out, "failed") {
		t.Fatal("qemu-io wrote to a read-only export")
	}
	// Opened read-only it reads fine.
	if _, err := run(t, qemuIO, "-r", "-f", "raw", "-c", "read 0 4096", "nbd://"+addr); err != nil {
		t.Fatalf("qemu-io -r read: %v", err)
	}
	pt.unchanged(t)
}

// TestClientsTLS: nbdinfo and qemu-img negotiate STARTTLS with a client
// certificate (GnuTLS file names in one directory, as `lifeboat ca issue
// --operator` writes them), and without TLS they are told it is required.
func TestClientsTLS(t *testing.T) {
	nbdinfo := tool(t, "nbdinfo", "libnbd-bin")
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	const size = 4<<20 + 4096
	data := randData(size, 31)
	pt := newFrozen(data)
	ca, other := newTestCA(t), newTestCA(t)
	s, addr, rf := tlsServer(t, ca, Export{Name: "vol", Size: size, Data: pt})
	dir := ca.writeGnuTLSDir(t, ca.issue(t, "alice"))
	_, port, _ := net.SplitHostPort(addr)

	out, err := run(t, nbdinfo, "--json", "nbds://"+addr+"/vol?tls-certificates="+dir)
	if err != nil || !strings.Contains(out, fmt.Sprintf(`"export-size": %d`, size)) {
		t.Fatalf("nbdinfo over TLS: %v", err)
	}
	img := filepath.Join(t.TempDir(), "out.img")
	if _, err := run(t, qemuImg, "convert", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port="+port+",export=vol,tls-creds=tls0",
		"-O", "raw", img); err != nil {
		t.Fatalf("qemu-img convert over TLS: %v", err)
	}
	if got, err := os.ReadFile(img); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("qemu-img convert over TLS: the copy differs from the point (%v)", err)
	}
	rf.none(t)

	out, err = run(t, nbdinfo, "nbd://"+addr+"/vol")
	if err == nil || !strings.Contains(strings.ToLower(out), "tls") {
		t.Fatalf("nbdinfo without TLS: %v, want a failure that names TLS", err)
	}
	rf.next(t, ErrTLSRequired)
	// It trusts the server, but its own certificate is from another CA.
	foreign := ca.writeGnuTLSDir(t, other.issue(t, "alice"))
	if _, err := run(t, nbdinfo, "nbds://"+addr+"/vol?tls-certificates="+foreign); err == nil {
		t.Fatal("nbdinfo with a certificate of another CA connected")
	}
	rf.next(t, ErrHandshake)
	pt.unchanged(t)
	if st := s.Stats(); st.Refused != 2 {
		t.Fatalf("Stats.Refused = %d, want 2", st.Refused)
	}
}
