package checks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// The boot check starts the service's boot volume in qemu-system-x86_64:
//
//	qemu-system-x86_64 -snapshot -nic none -display none -monitor none
//	  -no-reboot -sandbox on,... (seccomp: no exec, no privilege change)
//	  -accel kvm -accel tcg -m MEMORY -serial file:EVIDENCE/serial.log
//	  -qmp unix:SOCKET,server=on,wait=off
//	  -drive file=BOOT,format=raw,if=ide [-drive ... the server's other volumes]
//
// -snapshot keeps every guest write in a temporary file qemu deletes:
// the image is never written. There is no network device. The check
// passes when serial.log holds verify.serial_ok within verify.timeout;
// either way a QMP screendump (PNG) of the guest's screen is saved as
// screen.png, then qemu is killed.

// pollSerial is how often the serial log is read.
const pollSerial = 50 * time.Millisecond

// boot runs the boot check.
func (r *Runner) boot(ctx context.Context, req Request, timeout time.Duration) catalog.CheckResult {
	vf := req.Service.Verify
	bin, ok := tool(r.o.Qemu, "qemu-system-x86_64")
	if !ok {
		return skipped("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
	}
	bootVol := req.Service.Name + "/" + req.Service.BootVolumeOf()
	var drives []string
	for _, im := range req.Images {
		if im.Volume == bootVol {
			drives = append([]string{im.Path}, drives...)
		}
	}
	if len(drives) == 0 {
		return skipped("the point has no boot volume %s", bootVol)
	}
	// The server's other volumes follow the boot volume, as its disks.
	if sv, _ := req.Service.Volume(req.Service.BootVolumeOf()); sv != nil {
		for _, v := range sv.Volumes {
			for _, im := range req.Images {
				if im.Volume == req.Service.Name+"/"+v.Name && im.Volume != bootVol && len(drives) < 4 {
					drives = append(drives, im.Path)
				}
			}
		}
	}
	// A unix socket path is short (108 bytes): the QMP socket goes into
	// a directory of its own under the system's temporary directory.
	sockDir, err := os.MkdirTemp("", "lifeboat-qmp-")
	if err != nil {
		return catalog.CheckResult{Result: catalog.VerifyFailed, Detail: "QMP socket directory: " + err.Error()}
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "qmp.sock")
	serial := filepath.Join(req.Evidence, "serial.log")
	screen := filepath.Join(req.Evidence, "screen.png")
	os.Remove(serial)
	os.Remove(screen)
	args := []string{"-snapshot", "-nic", "none", "-display", "none", "-monitor", "none", "-no-reboot",
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-accel", "kvm", "-accel", "tcg", "-m", strconv.FormatInt(int64(vf.Memory)>>20, 10),
		"-name", "lifeboat-verify-" + req.Service.Name, "-serial", "file:" + serial, "-qmp", "unix:" + sock + ",server=on,wait=off"}
	for _, d := range drives {
		args = append(args, "-drive", "file="+qemuFile(d)+",format=raw,if=ide")
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(bctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.WaitDelay = 2 * time.Second
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return catalog.CheckResult{Result: catalog.VerifyFailed, Detail: "start qemu: " + err.Error()}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cancel()
		<-exited
	}()
	want := []byte(vf.SerialOK)
	tick := time.NewTicker(pollSerial)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	res := catalog.CheckResult{Result: catalog.VerifyFailed}
	var qemuErr error
wait:
	for {
		select {
		case <-ctx.Done():
			res.Detail = "cancelled: " + ctx.Err().Error()
			break wait
		case qemuErr = <-exited:
			exited <- qemuErr // for the deferred wait
			if b, _ := os.ReadFile(serial); bytes.Contains(b, want) {
				res.Result = catalog.VerifyOK
				res.Detail = fmt.Sprintf("booted in %s: the serial console printed %q (then the guest stopped)", time.Since(t0).Round(time.Millisecond), vf.SerialOK)
				break wait
			}
			res.Detail = fmt.Sprintf("qemu exited after %s before the console printed %q: %v: %s", time.Since(t0).Round(time.Millisecond), vf.SerialOK, qemuErr, tail(stderr.String(), 2))
			break wait
		case <-deadline.C:
			res.Detail = fmt.Sprintf("the serial console did not print %q within %s", vf.SerialOK, timeout)
			break wait
		case <-tick.C:
			if b, _ := os.ReadFile(serial); bytes.Contains(b, want) {
				res.Result = catalog.VerifyOK
				res.Detail = fmt.Sprintf("booted in %s: the serial console printed %q", time.Since(t0).Round(time.Millisecond), vf.SerialOK)
				break wait
			}
		}
	}
	if qemuErr == nil {
		if err := screendump(ctx, sock, screen); err != nil {
			res.Detail += "; no screendump: " + err.Error()
		}
	}
	for _, p := range []string{screen, serial} {
		if _, err := os.Stat(p); err == nil {
			res.Evidence = append(res.Evidence, p)
		}
	}
	return res
}

// qemuFile escapes a path for -drive file=: a comma is doubled.
func qemuFile(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		if p[i] == ',' {
			b = append(b, ',')
		}
		b = append(b, p[i])
	}
	return string(b)
}

// screendump asks qemu over QMP for a PNG of the guest's screen at path.
func screendump(ctx context.Context, sock, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	rd := bufio.NewReader(conn)
	// The greeting, then each command's return; events are skipped.
	if _, err := qmpReply(rd, true); err != nil {
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, c := range []map[string]any{
		{"execute": "qmp_capabilities"},
		{"execute": "screendump", "arguments": map[string]any{"filename": path, "format": "png"}},
	} {
		b, _ := json.Marshal(c)
		if _, err := conn.Write(append(b, '\n')); err != nil {
			return err
		}
		if _, err := qmpReply(rd, false); err != nil {
			return fmt.Errorf("QMP %s: %w", c["execute"], err)
		}
	}
	return nil
}

// qmpReply reads QMP messages until the greeting (greeting) or a return
// or error.
func qmpReply(rd *bufio.Reader, greeting bool) (json.RawMessage, error) {
	for range 64 {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		var m struct {
			QMP    json.RawMessage `json:"QMP"`
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("bad QMP message %.80q: %w", line, err)
		}
		switch {
		case greeting && m.QMP != nil:
			return m.QMP, nil
		case m.Error != nil:
			return nil, fmt.Errorf("%s: %s", m.Error.Class, m.Error.Desc)
		case !greeting && m.Return != nil:
			return m.Return, nil
		}
	}
	return nil, errors.New("no reply in 64 QMP messages")
}
