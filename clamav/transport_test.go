package clamav_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// clamdWithTCP starts a private clamd that listens on its unix socket and
// on a TCP port of 127.0.0.1, and returns it with its TCP address.
func clamdWithTCP(t *testing.T, opts clamdtest.Options) (*clamdtest.Clamd, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // clamd binds it next; another test taking it meanwhile is unlikely
	opts.ExtraConfig += fmt.Sprintf("TCPSocket %d\nTCPAddr 127.0.0.1\n", port)
	c := clamdtest.New(t, opts)
	return c, fmt.Sprintf("tcp://127.0.0.1:%d", port)
}

func clientWith(t *testing.T, address string, tr clamav.Transport) *clamav.Client {
	t.Helper()
	network, addr, err := clamav.ParseAddress(address)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 30 * time.Second, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// scanPath opens p and scans it with c, after seeking to seek and, with
// unlink, removing its name.
func scanPath(t *testing.T, c *clamav.Client, p string, seek int64, unlink bool) (clamav.Result, error) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(seek, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if unlink {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	return c.ScanFile(ctx, f, fi.Size())
}

// TestTransportsAgree: a real clamd gives the same verdicts by FILDES and
// by INSTREAM, over the unix socket and over TCP, and auto picks FILDES
// for the unix socket and INSTREAM for TCP. The clamd log tells them
// apart: a FILDES scan is logged under the file's path (clamd looks up
// the descriptor's name), an INSTREAM one as "instream(...)".
func TestTransportsAgree(t *testing.T) {
	c, tcp := clamdWithTCP(t, clamdtest.Options{})
	clamExe, err := os.ReadFile(clamdtest.ClamExePath)
	if err != nil {
		t.Fatal(err)
	}
	clamZip, err := os.ReadFile(clamdtest.ClamZipPath)
	if err != nil {
		t.Fatal(err)
	}
	large := append(randomBytes(32<<20, 1), clamdtest.Marker()...)

	files := []struct {
		name   string
		data   []byte
		seek   int64 // the descriptor's offset when scanned
		unlink bool  // the name is gone when scanned
		sig    string
	}{
		{name: "empty", data: nil},
		{name: "clean", data: []byte("nothing to see here\n")},
		{name: "clean-large", data: randomBytes(8<<20, 2)},
		{name: "eicar", data: clamdtest.EICAR(), sig: clamdtest.EICARSignature},
		{name: "eicar-offset-at-end", data: clamdtest.EICAR(), seek: int64(len(clamdtest.EICAR())), sig: clamdtest.EICARSignature},
		{name: "eicar-unlinked", data: clamdtest.EICAR(), unlink: true, sig: clamdtest.EICARSignature},
		{name: "clam.exe", data: clamExe, sig: clamdtest.ClamExeSignature},
		{name: "clam.zip", data: clamZip, sig: clamdtest.ClamExeSignature},
		{name: "marker-at-end-of-32MiB", data: large, seek: 12345, sig: clamdtest.MarkerSignature},
	}
	backends := []struct {
		name      string
		address   string
		transport clamav.Transport
		want      clamav.Transport // Client.Transport()
	}{
		{"unix-fildes", c.Address(), clamav.TransportFildes, clamav.TransportFildes},
		{"unix-instream", c.Address(), clamav.TransportInstream, clamav.TransportInstream},
		{"unix-auto", c.Address(), clamav.TransportAuto, clamav.TransportFildes},
		{"tcp-auto", tcp, clamav.TransportAuto, clamav.TransportInstream},
	}
	dir := t.TempDir()
	var fildesPaths, instreamPaths []string
	for _, b := range backends {
		cl := clientWith(t, b.address, b.transport)
		if got := cl.Transport(); got != b.want {
			t.Errorf("%s: Transport() = %q; want %q", b.name, got, b.want)
		}
		for _, f := range files {
			p := filepath.Join(dir, b.name+"-"+f.name)
			if err := os.WriteFile(p, f.data, 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := scanPath(t, cl, p, f.seek, f.unlink)
			if err != nil || res.Infected != (f.sig != "") || res.Signature != f.sig {
				t.Errorf("%s, %s: %+v, %v; want signature %q", b.name, f.name, res, err, f.sig)
			}
			switch {
			case f.unlink || len(f.data) == 0:
				// clamd logs "(deleted)" after the name, or may skip
				// an empty file: not used to tell transports apart.
			case b.want == clamav.TransportFildes:
				fildesPaths = append(fildesPaths, p)
			default:
				instreamPaths = append(instreamPaths, p)
			}
		}
	}

	// Every FILDES scan is logged under its path, and no INSTREAM one.
	deadline := time.Now().Add(15 * time.Second)
	for {
		log, err := os.ReadFile(c.LogFile)
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for _, p := range fildesPaths {
			if !bytes.Contains(log, []byte(p+": ")) {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			for _, p := range instreamPaths {
				if bytes.Contains(log, []byte(p)) {
					t.Errorf("clamd logged %s, scanned with INSTREAM, by its name", p)
				}
			}
			if !bytes.Contains(log, []byte("instream(127.0.0.1@")) || !bytes.Contains(log, []byte("instream(local)")) {
				t.Errorf("clamd log shows no INSTREAM scan over TCP and over the unix socket")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clamd never logged the FILDES scans of %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTransportSizeLimits pins which clamd limit applies to which
// transport. StreamMaxLength caps INSTREAM only: over it the stream is
// refused (ErrSizeLimit, which the gate treats as oversize). MaxFileSize
// (and MaxScanSize) apply to both, and with AlertExceedsMax (clamdtest
// sets it) a file over them is a Heuristics.Limits.Exceeded detection,
// which the gate denies like any other. So with FILDES a file over
// StreamMaxLength is judged like one over MaxFileSize.
func TestTransportSizeLimits(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{MaxFileSize: "1M", StreamMaxLength: "4M"})
	const exceeded = "Heuristics.Limits.Exceeded.MaxFileSize"
	tests := []struct {
		name                   string
		size                   int
		instreamSig, fildesSig string
		instreamErr            error
	}{
		{name: "under MaxFileSize", size: 512 << 10},
		{name: "over MaxFileSize", size: 2 << 20, instreamSig: exceeded, fildesSig: exceeded},
		{name: "over StreamMaxLength", size: 8 << 20, instreamErr: clamav.ErrSizeLimit, fildesSig: exceeded},
	}
	instream := clientWith(t, c.Address(), clamav.TransportInstream)
	fildes := clientWith(t, c.Address(), clamav.TransportFildes)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, randomBytes(tt.size, 3), 0o644); err != nil {
				t.Fatal(err)
			}
			res, err := scanPath(t, instream, p, 0, false)
			if !errors.Is(err, tt.instreamErr) || (tt.instreamErr == nil && err != nil) || res.Signature != tt.instreamSig {
				t.Errorf("INSTREAM: %+v, %v; want signature %q, error %v", res, err, tt.instreamSig, tt.instreamErr)
			}
			res, err = scanPath(t, fildes, p, 0, false)
			if err != nil || res.Signature != tt.fildesSig || res.Infected != (tt.fildesSig != "") {
				t.Errorf("FILDES: %+v, %v; want signature %q", res, err, tt.fildesSig)
			}
		})
	}
}

// TestPoolMixedTransports: each backend of a pool uses its own transport
// (auto: FILDES on the unix socket, INSTREAM over TCP), and Status says
// which.
func TestPoolMixedTransports(t *testing.T) {
	c, tcp := clamdWithTCP(t, clamdtest.Options{})
	unix, tcpClient := clientWith(t, c.Address(), clamav.TransportAuto), clientWith(t, tcp, clamav.TransportAuto)
	p, err := clamav.NewPool([]*clamav.Client{unix, tcpClient}, clamav.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if up := p.Check(t.Context()); up != 2 {
		t.Fatalf("Check: %d up; want 2: %+v", up, p.Status())
	}
	for _, s := range p.Status() {
		want := clamav.TransportFildes
		if strings.HasPrefix(s.Address, "tcp://") {
			want = clamav.TransportInstream
		}
		if s.Transport != want {
			t.Errorf("%s: Transport %q; want %q", s.Address, s.Transport, want)
		}
	}
	dir := t.TempDir()
	byBackend := map[string]int{}
	for i := range 10 {
		data := []byte(fmt.Sprintf("file %d\n", i))
		if i%2 == 1 {
			data = append(data, clamdtest.Marker()...)
		}
		path := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.ScanFile(t.Context(), f, int64(len(data)))
		f.Close()
		if err != nil || res.Infected != (i%2 == 1) {
			t.Fatalf("scan %d: %+v, %v", i, res, err)
		}
		byBackend[res.Backend]++
	}
	if byBackend[c.Address()] == 0 || byBackend[tcp] == 0 {
		t.Errorf("scans by backend = %v; want both used", byBackend)
	}
}

// TestPoolSetBackendsTransport: a backend keeps its state across
// SetBackends only with the same address and transport; a new transport
// (a reload changing clamd.transport) makes a new backend.
func TestPoolSetBackendsTransport(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "none.sock")
	p, err := clamav.NewPool([]*clamav.Client{clientWith(t, addr, clamav.TransportAuto)}, clamav.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.Check(t.Context()) // counts an unavailable error
	errs := func() uint64 { return p.Status()[0].Errors["unavailable"] }
	if errs() != 1 {
		t.Fatalf("status %+v; want one unavailable error", p.Status())
	}
	for _, step := range []struct {
		transport clamav.Transport
		kept      bool
	}{
		{clamav.TransportAuto, true},
		{clamav.TransportInstream, false},
	} {
		if err := p.SetBackends([]*clamav.Client{clientWith(t, addr, step.transport)}); err != nil {
			t.Fatal(err)
		}
		s := p.Status()[0]
		if kept := errs() == 1; kept != step.kept || s.Transport != clientWith(t, addr, step.transport).Transport() {
			t.Errorf("SetBackends with transport %q: %+v; want state kept %v", step.transport, s, step.kept)
		}
	}
}
