package cache

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/testenv"
)

// TestGateLeaderLeaves: the open that starts a scan runs it itself
// (lead). When it leaves before the verdict (its context done: the opener
// is dying), it gets ReasonCancelled at once, wherever the scan waits,
// and the scan goes on in a goroutine of its own, with a descriptor of
// its own: the opens that joined it get its verdict, the verdict is
// cached, and nothing is left behind once it is over. A scan cut short
// while it waited for clamd's answer is sent again (the real client
// closes that connection: clamav's TestSessions "cancelled"); one that
// waited for a scan slot is sent once.
func TestGateLeaderLeaves(t *testing.T) {
	tests := []struct {
		name      string
		direct    bool // the leader's own descriptor is scanned (Opener.ReadOnly)
		slot      bool // the leader leaves while it waits for a scan slot
		follower  bool // another open joined the scan
		wantCalls int  // scans of the file sent
	}{
		{name: "waiting for clamd, joined", follower: true, wantCalls: 2},
		{name: "waiting for clamd, joined, direct", direct: true, follower: true, wantCalls: 2},
		{name: "waiting for clamd, alone, direct", direct: true, wantCalls: 2},
		{name: "waiting for a slot, joined", slot: true, follower: true, wantCalls: 1},
		{name: "waiting for a slot, alone, direct", slot: true, direct: true, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR"), honorCtx: true}
			release := s.hold(t)
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 1, VerifyMaxSize: 1 << 20})
			var queued atomic.Int32
			g.hooks.slotWait = func() { queued.Add(1) }
			other := 0 // scans of another file, holding the one slot
			if tt.slot {
				checkAsync(t.Context(), g, openFile(t, writeFile(t, "holds the slot")), someone)
				waitFor(t, "the other scan to hold the slot", func() bool { return s.Calls() == 1 })
				other = 1
			}
			p := writeFile(t, "EICAR here")
			leaver, who := openLeader(t, p, tt.direct)
			ctx, cancel := context.WithCancel(t.Context())
			ch := checkAsync(ctx, g, leaver, who)
			if tt.slot {
				waitFor(t, "the leader to wait for a slot", func() bool { return queued.Load() == 1 })
			} else {
				waitFor(t, "the leader's scan to start", func() bool { return s.Calls() == 1 })
			}
			var stayer <-chan Decision
			joined := 0
			if tt.follower {
				f := openFile(t, p)
				ch := checkAsync(t.Context(), g, f, someone)
				stayer = closeAfter(ch, f)
				joined = 1
				waitFor(t, "the second opener to join the scan", func() bool { return g.Stats().Misses == uint64(other+2) })
			}

			cancel()
			checkDecision(t, "leaver", recv(t, ch), expect{reason: ReasonCancelled, err: context.Canceled})
			// The opener closes its descriptor at once (fs/ does on any
			// denial): the scan goes on with its own.
			leaver.Close()
			if !tt.slot {
				waitFor(t, "the scan to be sent again", func() bool { return s.Calls() == 2 })
				if got := s.Cancelled(); got != 1 {
					t.Errorf("scans cut short = %d; want 1", got)
				}
			}
			if w := waiting(g); w != other+joined+1 {
				t.Errorf("while the scan goes on: %d scans waited for; want %d", w, other+joined+1)
			}
			release()
			if tt.follower {
				checkDecision(t, "stayer", recv(t, stayer), expect{reason: ReasonInfected, sig: eicarSig})
			}
			waitFor(t, "the scan to end and let go of the file", func() bool { return waiting(g) == 0 && descriptorsOf(t, p) == 0 })
			checkDecision(t, "later opener", g.Check(t.Context(), openFile(t, p), someone),
				expect{reason: ReasonInfected, sig: eicarSig, cached: true})
			if got := s.Calls() - other; got != tt.wantCalls {
				t.Errorf("scans of the file = %d; want %d", got, tt.wantCalls)
			}
			// Whatever the scan was given after the leader left, it was
			// not the leader's (closed) descriptor, and was read-only.
			for call := other + 1; call <= s.Calls(); call++ {
				if f := s.File(call); f.flags&unix.O_ACCMODE != unix.O_RDONLY || f.st.Size != int64(len("EICAR here")) {
					t.Errorf("scan %d: flags %#x, size %d; want a read-only descriptor of the file", call, f.flags, f.st.Size)
				}
			}
		})
	}
}

// closeAfter passes on the Decision of ch, closing f once it came.
func closeAfter(ch <-chan Decision, f *os.File) <-chan Decision {
	out := make(chan Decision, 1)
	go func() {
		d := <-ch
		f.Close()
		out <- d
	}()
	return out
}

// openLeader opens p for reading the way fs/ opens a file it checks:
// with direct, O_NOATIME set and said so (Opener.NoAtime, ReadOnly).
func openLeader(t *testing.T, p string, direct bool) (*os.File, Opener) {
	t.Helper()
	if !direct {
		return openFile(t, p), someone
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	who := someone
	who.NoAtime, who.ReadOnly = true, true
	return f, who
}

// TestGateScansOpenersDescriptor: the scan an open runs itself judges
// the opener's own descriptor when it is read-only with O_NOATIME
// (Opener.ReadOnly, NoAtime): nothing is opened again for it. Any other
// descriptor, one open for writing above all (clamd must never get a
// descriptor it could write through), is opened again, read-only.
func TestGateScansOpenersDescriptor(t *testing.T) {
	tests := []struct {
		name      string
		flag      int
		who       func(*Opener)
		wantOwn   bool // the opener's descriptor itself is scanned
		wantFlags int  // of the scanned one, O_ACCMODE|O_NOATIME
	}{
		{"read-only, O_NOATIME", os.O_RDONLY | unix.O_NOATIME, func(o *Opener) { o.NoAtime, o.ReadOnly = true, true }, true, unix.O_RDONLY | unix.O_NOATIME},
		{"read-write, O_NOATIME", os.O_RDWR | unix.O_NOATIME, func(o *Opener) { o.NoAtime = true }, false, unix.O_RDONLY | unix.O_NOATIME},
		{"read-only, no O_NOATIME", os.O_RDONLY, func(o *Opener) { o.ReadOnly = true }, false, unix.O_RDONLY | unix.O_NOATIME},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeScanner{}
			g := NewGate(s, Options{MaxEntries: 16})
			p := writeFile(t, fmt.Sprintf("file of %s", tt.name))
			f, err := os.OpenFile(p, tt.flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			who := someone
			tt.who(&who)
			checkDecision(t, "Check", g.Check(t.Context(), f, who), expect{allow: true, reason: ReasonClean})
			got := s.File(1)
			if own := got.fd == f.Fd(); own != tt.wantOwn {
				t.Errorf("scanned the opener's descriptor: %v; want %v", own, tt.wantOwn)
			}
			if flags := got.flags & (unix.O_ACCMODE | unix.O_NOATIME); flags != tt.wantFlags {
				t.Errorf("scanned descriptor flags %#x; want %#x", flags, tt.wantFlags)
			}
			if n := descriptorsOf(t, p); n != 1 {
				t.Errorf("%d descriptors of the file after the Check; want 1 (the opener's)", n)
			}
		})
	}
}

// TestReopenReadOnly: the descriptor a scan opens again for itself is
// read-only even where O_NOATIME is not allowed (the file's owner is
// another user, and CAP_FOWNER is gone with fsuid 0), rather than a copy
// of the opener's, which may be open for writing.
func TestReopenReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root, to change fsuid")
	}
	p := writeFile(t, "owned by root")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	var flags int
	var rerr error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not given back to the runtime: its fsuid stays.
		unix.Setfsuid(65534)
		var g *os.File
		if g, rerr = reopen(f); rerr == nil {
			flags, rerr = unix.FcntlInt(g.Fd(), unix.F_GETFL, 0)
			g.Close()
		}
	}()
	<-done
	if rerr != nil {
		t.Fatal(rerr)
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_NOATIME != 0 {
		t.Errorf("reopened without O_NOATIME allowed: flags %#o; want O_RDONLY, no O_NOATIME", flags)
	}
}
