package clamav

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestZZMessages(t *testing.T) {
	for _, h := range []struct{ n string; s int; f func(*fakeClamd, netConn) }{} { _ = h }
	f := startFake(t, replyAfter(64<<10, ""))
	c := f.client(t, 300*time.Millisecond, 64<<10)
	_, err := c.Scan(context.Background(), bytes.NewReader(make([]byte, 8<<20)))
	t.Log(err)
	f2 := startFake(t, replyAfter(1<<20, "INSTREAM size limit exceeded. ERROR\x00"))
	_, err = f2.client(t, time.Second, 0).Scan(context.Background(), bytes.NewReader(make([]byte, 16<<20)))
	t.Log(err)
	_, err = f2.client(t, time.Second, 0).Scan(context.Background(), &errReader{data: make([]byte, 10), err: syscall.EIO})
	t.Log(err)
	ctx, cancel := context.WithCancel(context.Background()); cancel()
	_, err = f2.client(t, time.Second, 0).Scan(ctx, strings.NewReader("x"))
	t.Log(err)
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond); defer cancel()
	f3 := startFake(t, stall)
	_, err = f3.client(t, time.Second, 0).Scan(ctx, strings.NewReader("x"))
	t.Log(err)
	c4, _ := New(Options{Network: "unix", Address: "/nonexistent.sock", Timeout: time.Second})
	_, err = c4.Scan(context.Background(), strings.NewReader("x"))
	t.Log(err)
	t.Log(c4.Ping(context.Background()))
}
type netConn = interface{}
