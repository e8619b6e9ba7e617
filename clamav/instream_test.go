package clamav

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const eicarReply = "stream: Eicar-Test-Signature FOUND\x00"

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestScanClean(t *testing.T) {
	f := startFake(t, replyAfterStream("stream: OK\x00"))
	c := f.client(t, 2*time.Second, 0)
	res, err := c.Scan(context.Background(), strings.NewReader("hello"))
	if err != nil || res != (Result{}) {
		t.Fatalf("Scan = %+v, %v; want clean", res, err)
	}
}

func TestScanFound(t *testing.T) {
	f := startFake(t, replyAfterStream(eicarReply))
	c := f.client(t, 2*time.Second, 0)
	res, err := c.Scan(context.Background(), strings.NewReader("X5O!P%@AP"))
	want := Result{Infected: true, Signature: "Eicar-Test-Signature"}
	if err != nil || res != want {
		t.Fatalf("Scan = %+v, %v; want %+v", res, err, want)
	}
}

// TestScanFraming checks what clamd receives: the command, chunks of exactly
// ChunkSize but the last, the zero-length end marker, and the exact bytes.
func TestScanFraming(t *testing.T) {
	tests := []struct {
		chunk, size int
		chunks      []int
	}{
		{chunk: 1000, size: 0, chunks: []int{0}},
		{chunk: 1000, size: 1, chunks: []int{1, 0}},
		{chunk: 1000, size: 999, chunks: []int{999, 0}},
		{chunk: 1000, size: 1000, chunks: []int{1000, 0}},
		{chunk: 1000, size: 1001, chunks: []int{1000, 1, 0}},
		{chunk: 1000, size: 3500, chunks: []int{1000, 1000, 1000, 500, 0}},
		{chunk: 1000, size: 3000, chunks: []int{1000, 1000, 1000, 0}},
		{chunk: 1, size: 3, chunks: []int{1, 1, 1, 0}},
		{chunk: 0, size: 2<<20 + 5, chunks: []int{1 << 20, 1 << 20, 5, 0}}, // default 1 MiB
	}
	f := startFake(t, replyAfterStream("stream: OK\x00"))
	for _, tt := range tests {
		t.Run(fmt.Sprintf("chunk=%d/size=%d", tt.chunk, tt.size), func(t *testing.T) {
			c := f.client(t, 5*time.Second, tt.chunk)
			data := randomData(tt.size, uint64(tt.size))
			// iotest-style reader that returns short reads, so chunking
			// cannot rely on the reader's own read sizes.
			res, err := c.Scan(context.Background(), &shortReader{r: bytes.NewReader(data), max: 333})
			if err != nil || res.Infected {
				t.Fatalf("Scan = %+v, %v", res, err)
			}
			req := <-f.requests
			if req.cmd != "zINSTREAM\x00" {
				t.Errorf("command %q", req.cmd)
			}
			if fmt.Sprint(req.chunks) != fmt.Sprint(tt.chunks) {
				t.Errorf("chunks %v, want %v", req.chunks, tt.chunks)
			}
			if !bytes.Equal(req.data, data) {
				t.Errorf("reassembled %d bytes differ from the %d sent", len(req.data), len(data))
			}
		})
	}
}

// shortReader returns at most max bytes per Read.
type shortReader struct {
	r   io.Reader
	max int
}

func (s *shortReader) Read(p []byte) (int, error) {
	if len(p) > s.max {
		p = p[:s.max]
	}
	return s.r.Read(p)
}

// TestScanFaults drives every reply and connection fault the fake can stage.
func TestScanFaults(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name    string
		handle  func(*fakeClamd, net.Conn)
		size    int
		want    error  // kind; nil means a Result
		result  Result // when want is nil
		msg     string // substring of the error message
		notMsg  string // must not be in the error message
		timeout bool   // must take about Options.Timeout
	}{
		{name: "ok", handle: replyAfterStream("stream: OK\x00"), size: 10},
		{name: "ok with n delimiter", handle: replyAfterStream("stream: OK\n\x00"), size: 10},
		{name: "found", handle: replyAfterStream(eicarReply), size: 10,
			result: Result{Infected: true, Signature: "Eicar-Test-Signature"}},
		{name: "heuristics found", handle: replyAfterStream("stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\x00"), size: 10,
			result: Result{Infected: true, Signature: "Heuristics.Limits.Exceeded.MaxFileSize"}},
		{name: "found then more replies", handle: replyAfterStream(eicarReply + "stream: Other FOUND\x00"), size: 10,
			result: Result{Infected: true, Signature: "Eicar-Test-Signature"}},
		{name: "garbage reply", handle: replyAfterStream("HELLO\x00"), size: 10,
			want: ErrProtocol, msg: `unexpected reply "HELLO"`},
		{name: "lowercase ok", handle: replyAfterStream("stream: ok\x00"), size: 10, want: ErrProtocol},
		{name: "ok without NUL then close", handle: replyAfterStream("stream: OK"), size: 10,
			want: ErrProtocol, msg: `reply not NUL-terminated: "stream: OK"`},
		{name: "ok then trailing data", handle: replyAfterStream("stream: OK\x00stream: OK\x00"), size: 10,
			want: ErrProtocol, msg: "unexpected data after reply"},
		{name: "closed without reply", handle: replyAfterStream(""), size: 10,
			want: ErrProtocol, msg: "connection closed without a reply"},
		{name: "reply too long", handle: replyAfterStream(strings.Repeat("A", 5000)), size: 10,
			want: ErrProtocol, msg: "no NUL in the first 4096 bytes"},
		{name: "connection dropped mid-stream", handle: replyAfter(64<<10, ""), size: 8 << 20,
			want: ErrProtocol},
		{name: "accepts and never answers", handle: func(f *fakeClamd, conn net.Conn) {
			readRequest(bufio.NewReader(conn), true)
			<-f.closed
		}, size: 10, want: ErrTimeout, timeout: true, msg: "clamd timeout after 300ms waiting for reply"},
		{name: "never reads", handle: stall, size: 32 << 20,
			want: ErrTimeout, timeout: true, msg: "clamd timeout after 300ms while sending"},
		{name: "size limit after stream", handle: replyAfterStream("INSTREAM size limit exceeded. ERROR\x00"), size: 10,
			want: ErrSizeLimit, msg: `"INSTREAM size limit exceeded. ERROR"`},
		{name: "size limit then close while sending", handle: replyAfter(1<<20, "INSTREAM size limit exceeded. ERROR\x00"), size: 16 << 20,
			want: ErrSizeLimit, notMsg: "broken pipe"},
		{name: "ok then close while sending", handle: replyAfter(1<<20, "stream: OK\x00"), size: 16 << 20,
			want: ErrProtocol, msg: "before end of stream"},
		{name: "other error", handle: replyAfterStream("stream: Can't allocate memory ERROR\x00"), size: 10,
			want: ErrClamd, msg: `"stream: Can't allocate memory ERROR"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, tt.handle)
			// Only the timeout cases use the short timeout; the others must
			// not depend on machine load.
			c := f.client(t, 5*time.Second, 64<<10)
			if tt.timeout {
				c = f.client(t, timeout, 64<<10)
			}
			start := time.Now()
			res, err := c.Scan(context.Background(), bytes.NewReader(make([]byte, tt.size)))
			elapsed := time.Since(start)
			if tt.want == nil {
				if err != nil || res != tt.result {
					t.Fatalf("Scan = %+v, %v; want %+v", res, err, tt.result)
				}
				return
			}
			if res != (Result{}) {
				t.Errorf("Result %+v with error", res)
			}
			wantKind(t, err, tt.want)
			if !strings.HasPrefix(err.Error(), "clamd unix:"+f.path+": ") {
				t.Errorf("message %q does not start with the address", err)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not contain %q", err, tt.msg)
			}
			if tt.notMsg != "" && strings.Contains(err.Error(), tt.notMsg) {
				t.Errorf("message %q contains %q", err, tt.notMsg)
			}
			if tt.timeout && (elapsed < timeout-10*time.Millisecond || elapsed > timeout+time.Second) {
				t.Errorf("took %v with Timeout %v", elapsed, timeout)
			}
			if !tt.timeout && elapsed > 2*time.Second {
				t.Errorf("took %v for a fault that needs no wait", elapsed)
			}
		})
	}
}

func TestScanTimeoutMessage(t *testing.T) {
	f := startFake(t, stall)
	c := f.client(t, 300*time.Millisecond, 0)
	_, err := c.Scan(context.Background(), strings.NewReader("x"))
	want := "clamd unix:" + f.path + ": clamd timeout after 300ms waiting for reply"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestScanUnavailable(t *testing.T) {
	t.Run("no socket", func(t *testing.T) {
		c, err := New(Options{Network: "unix", Address: t.TempDir() + "/none.sock", Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Scan(context.Background(), strings.NewReader("x"))
		wantKind(t, err, ErrUnavailable)
		if !errors.Is(err, syscall.ENOENT) {
			t.Errorf("%v does not wrap ENOENT", err)
		}
	})
	t.Run("tcp refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, err := New(Options{Network: "tcp", Address: addr, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Scan(context.Background(), strings.NewReader("x"))
		wantKind(t, err, ErrUnavailable)
		if !strings.HasPrefix(err.Error(), "clamd tcp://"+addr+": clamd unavailable: ") {
			t.Errorf("message %q", err)
		}
	})
}

func TestScanCanceled(t *testing.T) {
	f := startFake(t, func(f *fakeClamd, conn net.Conn) {
		readRequest(bufio.NewReader(conn), true)
		<-f.closed
	})
	c := f.client(t, 5*time.Second, 0)

	t.Run("while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.Scan(ctx, strings.NewReader("x"))
		wantKind(t, err, context.Canceled)
		if d := time.Since(start); d > time.Second {
			t.Errorf("returned %v after cancel", d)
		}
	})
	t.Run("before start", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Scan(ctx, strings.NewReader("x"))
		wantKind(t, err, context.Canceled)
	})
	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Scan(ctx, strings.NewReader("x"))
		wantKind(t, err, ErrTimeout)
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %v with a 100ms context deadline", d)
		}
	})
}

// errReader returns its data, then err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestScanReadError(t *testing.T) {
	f := startFake(t, replyAfterStream("stream: OK\x00"))
	c := f.client(t, 2*time.Second, 1024)
	for _, readErr := range []error{
		syscall.EIO,
		// Regression: io.ReadFull would take this for a short last chunk and
		// send a truncated stream that clamd might call clean.
		io.ErrUnexpectedEOF,
	} {
		t.Run(readErr.Error(), func(t *testing.T) {
			res, err := c.Scan(context.Background(), &errReader{data: make([]byte, 5000), err: readErr})
			wantKind(t, err, ErrRead)
			if !errors.Is(err, readErr) || res != (Result{}) {
				t.Errorf("Scan = %+v, %v; want wrapped %v", res, err, readErr)
			}
		})
	}
	t.Run("no progress", func(t *testing.T) {
		_, err := c.Scan(context.Background(), &errReader{err: nil})
		wantKind(t, err, ErrRead)
	})
	t.Run("nil reader", func(t *testing.T) {
		_, err := c.Scan(context.Background(), nil)
		wantKind(t, err, ErrRead)
	})
}

// TestScanConcurrent runs scans in parallel on one Client (sharing its buffer
// pool); the fake names each stream's CRC as the signature.
func TestScanConcurrent(t *testing.T) {
	f := startFake(t, func(f *fakeClamd, conn net.Conn) {
		req, err := readRequest(bufio.NewReader(conn), false)
		if err != nil {
			return
		}
		fmt.Fprintf(conn, "stream: crc-%08x FOUND\x00", crc32.ChecksumIEEE(req.data))
	})
	c := f.client(t, 5*time.Second, 4096)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			data := randomData(10000+i*1000, uint64(i))
			res, err := c.Scan(context.Background(), bytes.NewReader(data))
			want := fmt.Sprintf("crc-%08x", crc32.ChecksumIEEE(data))
			if err != nil || res.Signature != want {
				t.Errorf("scan %d: %+v, %v; want %s", i, res, err, want)
			}
		})
	}
	wg.Wait()
}

// BenchmarkScan shows the effect of the chunk size on a 64 MiB stream
// (baruwa's ScanReader uses 1 KiB chunks).
func BenchmarkScan(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	for _, cs := range []struct {
		name string
		size int
	}{{"chunk=1KiB", 1 << 10}, {"chunk=1MiB", 1 << 20}} {
		b.Run(cs.name, func(b *testing.B) {
			f := startFake(b, func(f *fakeClamd, conn net.Conn) {
				if _, err := readRequest(bufio.NewReaderSize(conn, 1<<20), true); err != nil {
					return
				}
				io.WriteString(conn, "stream: OK\x00")
			})
			c := f.client(b, time.Minute, cs.size)
			b.SetBytes(size)
			for b.Loop() {
				if _, err := c.Scan(context.Background(), bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
