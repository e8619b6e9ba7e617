package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestReport feeds a recorded `go test -json` stream: a pass, a skip with
// a two-line reason, a known limit, a failure, and a test left unfinished
// by a panic.
func TestReport(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"    a_test.go:3: KNOWN LIMIT: no sticky bit in stat\n"}
{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":1.5}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"    a_test.go:5: something logged first\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"    a_test.go:9: SKIP: no clamd here\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"        second line\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"--- SKIP: TestSkip/sub (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestSkip/sub"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    a_test.go:7: wrong\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"--- FAIL: TestBad (0.10s)\n"}
{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":0.1}
{"Action":"output","Package":"p","Test":"TestHang","Output":"panic: test timed out\n"}
{"Action":"output","Package":"p","Output":"FAIL\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t9.0s\n"}
{"Action":"fail","Package":"p","Elapsed":9}
not json: vet says hello
`
	var out bytes.Buffer
	r := &report{w: &out, out: map[key][]string{}, counts: map[string]int{}}
	if err := r.read(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	r.summary()
	got := out.String()
	for _, want := range []string{
		"    a_test.go:7: wrong\n--- FAIL: TestBad (0.10s)\n",
		"FAIL\tp\t9.0s\n",
		"--- unfinished: TestHang\npanic: test timed out\n",
		"not json: vet says hello\n",
		"3 tests (subtests included): 1 passed, 1 skipped, 1 failed",
		"SKIP p TestSkip/sub: no clamd here / second line\n",
		"LIMIT p TestOK: no sticky bit in stat\n",
		"FAILED (2):\n  p TestBad\n  p TestHang (unfinished)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"=== RUN", "KNOWN LIMIT: no sticky bit in stat\n    "} {
		if strings.Contains(got, unwanted) {
			t.Errorf("report shows %q:\n%s", unwanted, got)
		}
	}
}
