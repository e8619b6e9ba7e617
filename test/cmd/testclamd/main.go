// Command testclamd runs the private test clamd of package clamdtest until
// it is interrupted, for `make demo` and `make bench`:
//
//	go run ./test/cmd/testclamd -dir /tmp/clamfuse-demo
//
// It creates DIR if needed, starts clamd with the test-only signature
// database (EICAR, clamav-testfiles' clam.exe and the clamdtest marker),
// prints CLAMD_SOCKET=<path> as the first line of its standard output, writes
// the same line to DIR/env (so a Makefile can `. DIR/env`), and stops clamd on
// SIGINT or SIGTERM. Everything else goes to standard error.
//
// Exit status: 0 after a signal, 1 if clamd fails to start or dies, 2 on a
// usage error.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

func main() {
	os.Exit(run())
}

func run() int {
	dir := flag.String("dir", "", "directory for clamd's config, database, log and socket (required; created if missing)")
	maxFileSize := flag.String("max-file-size", "200M",
		"clamd MaxFileSize, MaxScanSize and StreamMaxLength, in clamd syntax (e.g. 200M, 1G)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: testclamd -dir DIR [-max-file-size SIZE]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		flag.Usage()
		return 2
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "testclamd: %v\n", err)
		return 1
	}

	// Subscribe before starting clamd so an early Ctrl-C still stops it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	c, err := clamdtest.Start(*dir, clamdtest.Options{
		MaxFileSize:     *maxFileSize,
		StreamMaxLength: *maxFileSize,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "testclamd: %v\n", err)
		return 1
	}

	line := "CLAMD_SOCKET=" + c.Socket
	if _, err := fmt.Println(line); err != nil {
		fmt.Fprintf(os.Stderr, "testclamd: %v\n", err)
		stop(c)
		return 1
	}
	envFile := filepath.Join(c.Dir, "env")
	if err := os.WriteFile(envFile, []byte(line+"\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "testclamd: %v\n", err)
		stop(c)
		return 1
	}
	fmt.Fprintf(os.Stderr, "testclamd: clamd ready on %s (log %s, env %s); SIGINT or SIGTERM stops it\n",
		c.Socket, c.LogFile, envFile)
	fmt.Fprintf(os.Stderr, "testclamd: detects %s, %s and %s\n",
		clamdtest.EICARSignature, clamdtest.ClamExeSignature, clamdtest.MarkerSignature)

	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "testclamd: %v: stopping clamd\n", s)
		if !stop(c) {
			return 1
		}
		return 0
	case <-c.Done():
		fmt.Fprintf(os.Stderr, "testclamd: clamd exited unexpectedly; see %s\n", c.LogFile)
		stop(c)
		return 1
	}
}

// stop stops clamd and reports whether that went cleanly.
func stop(c *clamdtest.Clamd) bool {
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testclamd: %v\n", err)
		return false
	}
	return true
}
