package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/clamav"
)

// sha256Hex is what sha256sum prints for data.
func sha256Hex(data string) string {
	s := sha256.Sum256([]byte(data))
	return hex.EncodeToString(s[:])
}

// A detection carries the SHA-256 of the bytes judged, taken from the
// scanned descriptor; a clean verdict carries none. Each open is decided
// by the policy in force, from the same cached verdict: the allow lists
// (the digest first), then the mode; changing the policy needs no scan.
func TestGateAllowances(t *testing.T) {
	const content = "some bytes, then EICAR, then more"
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
	p := writeFile(t, content)
	sum := sha256Hex(content)

	d := g.Check(t.Context(), openFile(t, p), someone)
	checkDecision(t, "enforce", d, expect{reason: ReasonInfected, sig: eicarSig})
	if d.Verdict.SHA256 != sum {
		t.Errorf("Verdict.SHA256 = %q; want %q", d.Verdict.SHA256, sum)
	}
	clean := writeFile(t, "nothing here")
	if d := g.Check(t.Context(), openFile(t, clean), someone); d.Verdict.SHA256 != "" {
		t.Errorf("a clean verdict has SHA256 %q; want none", d.Verdict.SHA256)
	}

	other := sha256Hex("another file")
	tests := []struct {
		name string
		p    Policy
		want expect
	}{
		{"enforce", Policy{}, expect{reason: ReasonInfected, sig: eicarSig, cached: true}},
		{"audit", Policy{Audit: true}, expect{allow: true, reason: ReasonAuditInfected, sig: eicarSig, cached: true}},
		{"sha256", Policy{AllowSHA256: map[string]bool{sum: true}},
			expect{allow: true, reason: ReasonAllowedSHA256, sig: eicarSig, cached: true}},
		{"another sha256", Policy{AllowSHA256: map[string]bool{other: true}},
			expect{reason: ReasonInfected, sig: eicarSig, cached: true}},
		{"signature", Policy{AllowSignatures: map[string]bool{eicarSig: true}},
			expect{allow: true, reason: ReasonAllowedSignature, sig: eicarSig, cached: true}},
		{"another signature", Policy{AllowSignatures: map[string]bool{"Other": true}},
			expect{reason: ReasonInfected, sig: eicarSig, cached: true}},
		{"sha256 before signature before audit", Policy{Audit: true, AllowSHA256: map[string]bool{sum: true},
			AllowSignatures: map[string]bool{eicarSig: true}},
			expect{allow: true, reason: ReasonAllowedSHA256, sig: eicarSig, cached: true}},
		{"signature before audit", Policy{Audit: true, AllowSignatures: map[string]bool{eicarSig: true}},
			expect{allow: true, reason: ReasonAllowedSignature, sig: eicarSig, cached: true}},
	}
	for _, tt := range tests {
		g.SetPolicy(tt.p)
		d := g.Check(t.Context(), openFile(t, p), someone)
		checkDecision(t, tt.name, d, tt.want)
		if d.Verdict.SHA256 != sum {
			t.Errorf("%s: Verdict.SHA256 = %q; want %q (cached with the verdict)", tt.name, d.Verdict.SHA256, sum)
		}
		if d.Sum != 0 {
			t.Errorf("%s: Sum = %#x; want 0: only a clean decision lets the kernel keep its page cache", tt.name, d.Sum)
		}
	}
	if n := s.Calls(); n != 2 {
		t.Errorf("%d scans; want 2 (one per file; policies decide from the cache)", n)
	}
	st := g.Stats()
	if want := uint64(1 + len(tests)); st.Infected != want {
		t.Errorf("Stats.Infected = %d; want %d: a detection is counted whatever the policy allows", st.Infected, want)
	}
	if st.Denied != 4 {
		t.Errorf("Stats.Denied = %d; want 4", st.Denied)
	}
}

// In audit mode an open without a verdict is allowed too, with its own
// reason; an interrupted one is not.
func TestGateAuditWithoutVerdict(t *testing.T) {
	unavailable := fmt.Errorf("clamd: %w", clamav.ErrUnavailable)
	tests := []struct {
		name    string
		content string
		judge   func([]byte) (clamav.Result, error)
		opts    Options
		want    expect
	}{
		{"error", "x", failWith(unavailable), Options{},
			expect{allow: true, reason: ReasonAuditError, err: clamav.ErrUnavailable}},
		{"oversize", "12345", nil, Options{MaxSize: 4}, expect{allow: true, reason: ReasonAuditOversize, err: errAny}},
		{"clamd's size limit", "x", failWith(clamav.ErrSizeLimit), Options{},
			expect{allow: true, reason: ReasonAuditOversize, err: clamav.ErrSizeLimit}},
		{"allowed on error anyway", "x", failWith(unavailable), Options{AllowOnError: true},
			expect{allow: true, reason: ReasonError, err: clamav.ErrUnavailable}},
	}
	for _, tt := range tests {
		opts := tt.opts
		opts.MaxEntries = 16
		g := NewGate(&fakeScanner{judge: tt.judge}, opts)
		p := g.Policy()
		p.Audit = true
		g.SetPolicy(p)
		checkDecision(t, tt.name, g.Check(t.Context(), openFile(t, writeFile(t, tt.content)), someone), tt.want)
		if st := g.Stats(); st.Denied != 0 {
			t.Errorf("%s: Stats.Denied = %d; want 0", tt.name, st.Denied)
		}
	}

	s := &fakeScanner{honorCtx: true}
	s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16})
	g.SetPolicy(Policy{Audit: true})
	ctx, cancel := context.WithCancel(t.Context())
	ch := checkAsync(ctx, g, openFile(t, writeFile(t, "y")), someone)
	waitFor(t, "the scan to start", func() bool { return s.Calls() == 1 })
	cancel()
	checkDecision(t, "cancelled", recv(t, ch), expect{reason: ReasonCancelled, err: context.Canceled})
}

// Every allowance is a WARN line that names it, with the digest.
func TestGateAllowanceLog(t *testing.T) {
	content := "EICAR"
	tests := []struct {
		p   Policy
		msg string
	}{
		{Policy{Audit: true}, "infected file allowed (audit mode)"},
		{Policy{AllowSHA256: map[string]bool{sha256Hex(content): true}}, "infected file allowed by scan.allow_sha256"},
		{Policy{AllowSignatures: map[string]bool{eicarSig: true}}, "infected file allowed by scan.allow_signatures"},
		{Policy{}, "infected file denied"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		g := NewGate(&fakeScanner{judge: infectedIf("EICAR")},
			Options{MaxEntries: 16, Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		g.SetPolicy(tt.p)
		g.Check(t.Context(), openFile(t, writeFile(t, content)), someone)
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%s: log %q: %v", tt.msg, buf.String(), err)
		}
		if m["level"] != "WARN" || m["msg"] != tt.msg || m["sha256"] != sha256Hex(content) || m["signature"] != eicarSig {
			t.Errorf("logged %v; want a WARN %q with the signature and sha256", m, tt.msg)
		}
	}
	var buf bytes.Buffer
	g := NewGate(&fakeScanner{judge: failWith(clamav.ErrUnavailable)},
		Options{MaxEntries: 16, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	g.SetPolicy(Policy{Audit: true})
	g.Check(t.Context(), openFile(t, writeFile(t, "x")), someone)
	if l := buf.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, `msg="file allowed without a verdict (audit mode)"`) ||
		!strings.Contains(l, "reason=audit-error") {
		t.Errorf("logged %q; want a WARN allowance without a verdict", l)
	}
}
