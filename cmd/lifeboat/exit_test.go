package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/node"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"65536", 65536, ""},
		{"4KiB", 4 << 10, ""},
		{"64KiB", 64 << 10, ""},
		{"64 KiB", 64 << 10, ""},
		{"64kib", 64 << 10, ""},
		{"64K", 64 << 10, ""},
		{"1MiB", 1 << 20, ""},
		{"1M", 1 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"512B", 512, ""},
		{"", 0, "whole number"},
		{"KiB", 0, "whole number"},
		{"-4KiB", 0, "whole number"},
		{"64KB", 0, "ambiguous"},
		{"1MB", 0, "ambiguous"},
		{"1.5MiB", 0, "whole number"},
		{"64XiB", 0, "unknown unit"},
		{"99999999999999999999", 0, "too large"},
		{"9999999999999GiB", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("parseSize(%q) error %v, want %d", tt.in, err, tt.want)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("parseSize(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			case got != tt.want:
				t.Fatalf("parseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestBlockSizeFlag(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"4KiB", 4 << 10, true},
		{"64KiB", 64 << 10, true},
		{"1MiB", 1 << 20, true},
		{"65536", 65536, true},
		{"2KiB", 0, false},
		{"2MiB", 0, false},
		{"48KiB", 0, false},
		{"0", 0, false},
	}
	for _, tt := range tests {
		var b blockSizeFlag
		err := b.Set(tt.in)
		if (err == nil) != tt.ok || int(b) != tt.want {
			t.Errorf("Set(%q) = %d, %v; want %d, ok %v", tt.in, b, err, tt.want, tt.ok)
		}
		if tt.ok && b.String() != formatSize(int64(tt.want)) {
			t.Errorf("Set(%q).String() = %q", tt.in, b.String())
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{formatBytes(0), "0 B"},
		{formatBytes(1023), "1023 B"},
		{formatBytes(64 << 10), "64.0 KiB"},
		{formatBytes(3 << 20), "3.00 MiB"},
		{formatBytes(1536 << 20), "1.50 GiB"},
		{formatBytes(300 << 30), "300 GiB"},
		{formatSize(65536), "64KiB"},
		{formatSize(1 << 20), "1MiB"},
		{formatSize(1000), "1000"},
		{formatRatio(2.4142), "2.41x"},
		{formatRate(50e6, time.Second), "50.0 MB/s"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestExitCode(t *testing.T) {
	live := t.Context()
	done, cancel := context.WithCancel(t.Context())
	cancel()
	corrupt := &blockstore.CorruptError{Path: "packs/00000001.pack", Offset: 12, Hint: "restore the pack from another site", Err: errors.New("bad checksum")}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		code int
		hint string
	}{
		{"nil", live, nil, exitOK, ""},
		{"plain", live, errors.New("disk on fire"), exitError, ""},
		{"usage", live, usagef("bad flag"), exitUsage, ""},
		{"locked", live, fmt.Errorf("open x: %w", blockstore.ErrLocked), exitLocked, "wait"},
		{"corrupt", live, fmt.Errorf("restore block 3: %w", corrupt), exitDamage, "restore the pack from another site"},
		{"damage", live, &damageError{n: 2}, exitDamage, ""},
		{"not found", live, fmt.Errorf("volume %q: %w", "x", blockstore.ErrNotFound), exitNotFound, ""},
		{"not a store", live, fmt.Errorf("open x: %w", blockstore.ErrNotStore), exitNotFound, "lifeboat store init"},
		{"unsafe", live, fmt.Errorf("rm: %w", node.ErrUnsafe), exitUnsafe, "images list"},
		{"unsafe from the API", live, &node.APIError{Status: 409, Code: "unsafe", Msg: "in use"}, exitUnsafe, "images list"},
		{"interrupted", done, fmt.Errorf("snapshot: %w", context.Canceled), exitInterrupted, ""},
		{"canceled but not by us", live, context.Canceled, exitError, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.ctx, tt.err); got != tt.code {
				t.Errorf("exitCode = %d, want %d", got, tt.code)
			}
			if tt.err == nil {
				return
			}
			var buf bytes.Buffer
			printError(tt.ctx, &buf, tt.err, "lifeboat x")
			out := buf.String()
			if !strings.HasPrefix(out, "lifeboat: ") {
				t.Errorf("printed %q, want a \"lifeboat: \" prefix", out)
			}
			if hasTry := strings.Contains(out, "\nTry: "); hasTry != (tt.hint != "") || !strings.Contains(out, tt.hint) {
				t.Errorf("printed %q, want hint %q", out, tt.hint)
			}
		})
	}
}

func TestHelpAndCompletion(t *testing.T) {
	t.Parallel()
	var paths [][]string
	var walk func(prefix []string, cmds []*cobra.Command)
	walk = func(prefix []string, cmds []*cobra.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), prefix...), c.Name())
			paths = append(paths, p)
			walk(p, c.Commands())
		}
	}
	var out, errOut bytes.Buffer
	walk(nil, newRootCmd(&out, &errOut).Commands())
	if len(paths) < 8 {
		t.Fatalf("command tree has %d commands: %v", len(paths), paths)
	}
	for _, p := range append(paths, nil) {
		r := lifeboat(t, append(p, "--help")...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("lifeboat %s --help: exit %d, stdout %q", strings.Join(p, " "), r.code, r.stdout)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := lifeboat(t, "completion", sh)
		if r.code != exitOK || !strings.Contains(r.stdout, "lifeboat") {
			t.Errorf("lifeboat completion %s: exit %d, %d bytes", sh, r.code, len(r.stdout))
		}
	}
}
