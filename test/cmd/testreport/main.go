// Command testreport reads `go test -json` on stdin and prints what a
// plain `go test` would (a line per package, and the output of every test
// that failed), then every skipped test with its reason and every known
// limit the tests pinned, so that `make test` shows them without -v:
//
//	go test -json ./... | go run ./test/cmd/testreport
//
// It exits 0 whatever the tests did (run it under `set -o pipefail`, as
// the Makefile does, so that the pipeline's status is go test's), and 1
// only when it cannot read its input.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	Elapsed    float64
	ImportPath string // build-output and build-fail
}

// Prefixes of the lines test/testenv writes (testenv.SkipPrefix and
// testenv.LimitPrefix; not imported, so that this command builds alone).
const (
	skipPrefix  = "SKIP: "
	limitPrefix = "KNOWN LIMIT: "
)

type key struct{ pkg, test string }

type report struct {
	w       io.Writer
	out     map[key][]string // output of tests still running or not yet reported
	counts  map[string]int   // pass, fail, skip of tests (subtests included)
	skips   []note
	limits  []note
	slow    []note // top-level tests and their time
	failed  []string
	started time.Time
}

type note struct {
	k    key
	text string
	secs float64
}

func main() {
	r := &report{w: os.Stdout, out: map[key][]string{}, counts: map[string]int{}, started: time.Now()}
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		r.summary()
		os.Exit(1)
	}
	r.summary()
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(r.w, "%s\n", line) // not an event: go vet, a crash
			continue
		}
		r.event(e)
	}
	return sc.Err()
}

func (r *report) event(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.w, e.Output)
		return
	case "build-fail":
		r.failed = append(r.failed, e.ImportPath+" (build)")
		return
	}
	k := key{e.Package, e.Test}
	if e.Test == "" {
		r.packageEvent(e)
		return
	}
	switch e.Action {
	case "output":
		r.out[k] = append(r.out[k], e.Output)
		if i := strings.Index(e.Output, limitPrefix); i >= 0 {
			r.limits = append(r.limits, note{k: k, text: strings.TrimSpace(e.Output[i+len(limitPrefix):])})
		}
	case "pass":
		r.counts["pass"]++
		r.done(k, e)
	case "skip":
		r.counts["skip"]++
		r.skips = append(r.skips, note{k: k, text: skipReason(r.out[k])})
		r.done(k, e)
	case "fail":
		r.counts["fail"]++
		r.failed = append(r.failed, shortPkg(e.Package)+" "+e.Test)
		r.printOutput(k)
		r.done(k, e)
	}
}

func (r *report) done(k key, e event) {
	delete(r.out, k)
	if !strings.Contains(k.test, "/") {
		r.slow = append(r.slow, note{k: k, secs: e.Elapsed})
	}
}

// packageEvent handles the events of a package as a whole.
func (r *report) packageEvent(e event) {
	switch e.Action {
	case "output":
		// Framing that plain go test does not print.
		if s := strings.TrimSpace(e.Output); s == "PASS" || s == "FAIL" || strings.HasPrefix(s, "=== ") {
			return
		}
		fmt.Fprint(r.w, e.Output)
	case "fail":
		// Tests that never ended (a panic, the timeout): show what they
		// printed, which says where they hung.
		var ks []key
		for k := range r.out {
			if k.pkg == e.Package {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(i, j int) bool { return ks[i].test < ks[j].test })
		for _, k := range ks {
			fmt.Fprintf(r.w, "--- unfinished: %s\n", k.test)
			r.printOutput(k)
			r.failed = append(r.failed, shortPkg(k.pkg)+" "+k.test+" (unfinished)")
			delete(r.out, k)
		}
	}
}

// printOutput prints a test's output as plain go test shows a failure:
// without the === framing lines.
func (r *report) printOutput(k key) {
	for _, l := range r.out[k] {
		if !strings.HasPrefix(l, "=== ") {
			fmt.Fprint(r.w, l)
		}
	}
}

// logLine is the start of a t.Log line: four spaces, file:line, colon.
var logLine = regexp.MustCompile(`^ {4}\S+\.go:\d+: `)

// skipReason is the message of the skip: the last t.Log entry before
// "--- SKIP" (with its continuation lines), without file:line.
func skipReason(out []string) string {
	var entry []string
	for _, l := range out {
		l = strings.TrimRight(l, "\n")
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "--- SKIP"), strings.HasPrefix(l, "=== "):
		case logLine.MatchString(l):
			entry = []string{logLine.ReplaceAllString(l, "")}
		case len(entry) > 0 && strings.HasPrefix(l, "        "):
			entry = append(entry, strings.TrimSpace(l))
		}
	}
	if len(entry) == 0 {
		return "(no reason given)"
	}
	return strings.TrimPrefix(strings.Join(entry, " / "), skipPrefix)
}

func shortPkg(p string) string {
	return strings.TrimPrefix(p, "github.com/clamfuse/clamfuse/")
}

func (r *report) summary() {
	w := r.w
	fmt.Fprintf(w, "\n==> %d tests (subtests included): %d passed, %d skipped, %d failed, in %v\n",
		r.counts["pass"]+r.counts["skip"]+r.counts["fail"], r.counts["pass"], r.counts["skip"], r.counts["fail"],
		time.Since(r.started).Round(time.Second))
	if len(r.skips) > 0 {
		fmt.Fprintf(w, "skipped (%d; with CI=true each skip of test/testenv is a failure):\n", len(r.skips))
		for _, s := range r.skips {
			fmt.Fprintf(w, "  SKIP %s %s: %s\n", shortPkg(s.k.pkg), s.k.test, s.text)
		}
	}
	if len(r.limits) > 0 {
		fmt.Fprintf(w, "known limits, pinned (the tests pass while each is exactly as documented):\n")
		for _, l := range r.limits {
			fmt.Fprintf(w, "  LIMIT %s %s: %s\n", shortPkg(l.k.pkg), l.k.test, l.text)
		}
	}
	slices.SortFunc(r.slow, func(a, b note) int {
		switch {
		case a.secs > b.secs:
			return -1
		case a.secs < b.secs:
			return 1
		}
		return 0
	})
	if n := min(len(r.slow), 5); n > 0 {
		var parts []string
		for _, s := range r.slow[:n] {
			parts = append(parts, fmt.Sprintf("%s %.0fs", s.k.test, s.secs))
		}
		fmt.Fprintf(w, "slowest: %s\n", strings.Join(parts, ", "))
	}
	if len(r.failed) > 0 {
		fmt.Fprintf(w, "FAILED (%d):\n", len(r.failed))
		for _, f := range r.failed {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
}
