package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The timed reads: catread (test/cmd/bench/reader/catread.c), compiled
// with gcc into the work directory at the start, reads the files as cat
// does, in C. The bench's own Go reader, blocked in an open that waits for
// a scan, paid its runtime's thread hand-offs besides (sysmon wake-ups,
// threads parked and woken: about 5 context switches and 55 us of CPU
// more than a C reader per first open through clamfuse, on 2 CPUs shared
// with the server and clamd), which no cat pays. Where gcc is missing the
// Go reader (readAll) is timed, and the report says so.

// catreadSource is catread's source, relative to the repository root.
const catreadSource = "test/cmd/bench/reader/catread.c"

// catreadBin is the built catread, or "" where it could not be built.
var catreadBin string

// buildReader builds catread into the work directory; if it cannot, the
// timed reads are the Go reader's, and the report says why.
func (b *bench) buildReader() {
	bin, err := buildC(b.ctx, b.repo, b.opts.dir, catreadSource, "catread", "-pthread")
	if err != nil {
		logf("catread: %v; the timed reads use the bench's Go reader", err)
		b.note(fmt.Sprintf("The timed reads were made by the bench's Go reader, not catread (%v): on the first-open rows a Go reader blocked in an open that waits for a scan costs about 5 context switches and 55 us of CPU more than a C reader per file, on the CPUs the FUSE server and clamd use.", err))
		return
	}
	catreadBin = bin
}

// timeRead times reading files (relative to the system's root) by readers
// threads, as cat reads them: catread's own figure, from its first open
// to its last close (not its start or the list it reads first).
func timeRead(ctx context.Context, s *system, files []string, readers int) (time.Duration, time.Duration, error) {
	if catreadBin == "" {
		start := time.Now()
		err := readAll(ctx, s, files, readers)
		return time.Since(start), 0, err
	}
	cmd := exec.CommandContext(ctx, catreadBin, "-j", strconv.Itoa(readers), s.root())
	cmd.Stdin = strings.NewReader(strings.Join(files, "\n") + "\n")
	if asUser != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: asUser}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return 0, 0, fmt.Errorf("%s", msg)
		}
		return 0, 0, fmt.Errorf("catread: %v", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(stdout.String()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("catread: unexpected output %q", stdout.String())
	}
	return time.Duration(ns), 0, nil
}
