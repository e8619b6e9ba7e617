package fs

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

func TestDeriveLimits(t *testing.T) {
	for _, tc := range []struct {
		nofile, perUser int
		want            Limits
	}{
		{1024, 0, Limits{NoFile: 1024, Reserve: 128, DirFDs: 128, Orphans: 16, MaxOpen: 752, MaxOpenPerUser: 188}},
		{4096, 0, Limits{NoFile: 4096, Reserve: 512, DirFDs: 512, Orphans: 64, MaxOpen: 3008, MaxOpenPerUser: 752}},
		{20000, 0, Limits{NoFile: 20000, Reserve: 2500, DirFDs: 2500, Orphans: 256, MaxOpen: 14744, MaxOpenPerUser: 3686}},
		{524288, 0, Limits{NoFile: 524288, Reserve: 4096, DirFDs: 4096, Orphans: 256, MaxOpen: 515840, MaxOpenPerUser: 128960}},
		{4096, 100, Limits{NoFile: 4096, Reserve: 512, DirFDs: 512, Orphans: 64, MaxOpen: 3008, MaxOpenPerUser: 100}},
		{64, 0, Limits{NoFile: 64, Reserve: 64, DirFDs: 16, Orphans: 8, MaxOpen: 1, MaxOpenPerUser: 1}},
	} {
		if got := DeriveLimits(tc.nofile, tc.perUser); got != tc.want {
			t.Errorf("DeriveLimits(%d, %d) = %+v, want %+v", tc.nofile, tc.perUser, got, tc.want)
		}
	}
}

func isErrno(err error, e syscall.Errno) bool {
	var fe fuse.Errno
	return errors.As(err, &fe) && syscall.Errno(fe) == e
}

// TestQuota: a uid is refused with EMFILE at its limit and only that
// uid; ENFILE when the total is used up; an open in progress counts
// twice; a closed handle makes room; refusals are counted, and logged
// once per interval and uid.
func TestQuota(t *testing.T) {
	var logBuf bytes.Buffer
	q := newQuota(Limits{MaxOpen: 8, MaxOpenPerUser: 3}, slog.New(slog.NewTextHandler(&logBuf, nil)))
	open := func(uid uint32) error {
		if err := q.take(uid, 100+uid); err != nil {
			return err
		}
		q.settle(uid, true)
		return nil
	}
	for i := range 3 {
		if err := open(1); err != nil {
			t.Fatalf("uid 1, open %d: %v", i+1, err)
		}
	}
	for range 2 {
		if err := open(1); !isErrno(err, syscall.EMFILE) {
			t.Fatalf("uid 1 over its limit: %v, want EMFILE", err)
		}
	}
	if err := open(0); err != nil {
		t.Fatalf("root while uid 1 is at its limit: %v", err)
	}
	// An open in progress holds two: uid 2 with one open and one in
	// progress holds 3, and the total (8) has room for one more.
	if err := open(2); err != nil {
		t.Fatal(err)
	}
	if err := q.take(2, 102); err != nil {
		t.Fatal(err)
	}
	if got := q.held(2); got != 3 {
		t.Errorf("uid 2 holds %d, want 3 (one open, one in progress)", got)
	}
	if err := open(3); err != nil {
		t.Fatalf("uid 3, with the total at 7 of 8: %v", err)
	}
	if err := open(4); !isErrno(err, syscall.ENFILE) {
		t.Fatalf("uid 4 with the total used up: %v, want ENFILE", err)
	}
	q.settle(2, false) // the open in progress failed
	if err := open(4); err != nil {
		t.Fatalf("uid 4 after an open failed and gave back: %v", err)
	}
	q.give(1, 1) // uid 1 closes one
	q.give(4, 1)
	if err := open(1); err != nil {
		t.Fatalf("uid 1 after closing one: %v", err)
	}
	for uid, want := range map[uint32]int{0: 1, 1: 3, 2: 1, 3: 1, 4: 0} {
		if got := q.held(uid); got != want {
			t.Errorf("uid %d holds %d, want %d", uid, got, want)
		}
	}
	if q.sum != 6 {
		t.Errorf("%d held in all, want 6", q.sum)
	}
	if q.refused != (Refusals{PerUser: 2, Total: 1}) {
		t.Errorf("refusals counted %+v; want 2 per user, 1 in all", q.refused)
	}
	log := logBuf.String()
	if n := strings.Count(log, "max_open_per_user (EMFILE)\" uid=1 "); n != 1 {
		t.Errorf("%d EMFILE lines for uid 1, want 1 (the first of the interval):\n%s", n, log)
	}
	if n := strings.Count(log, "(ENFILE)"); n != 1 {
		t.Errorf("%d ENFILE lines, want 1:\n%s", n, log)
	}
}

// TestCallerTurnsRefusal: a request refused a turn, its user's waiting
// requests carrying too much, is counted, and logged once per interval
// and user.
func TestCallerTurnsRefusal(t *testing.T) {
	const uid = 60011
	var logBuf bytes.Buffer
	turns := callerTurns{q: newQuota(Limits{MaxOpen: 8, MaxOpenPerUser: 3}, slog.New(slog.NewTextHandler(&logBuf, nil)))}
	for range caller.MaxInFlight {
		caller.Enter(uid)
	}
	defer func() {
		for range caller.MaxInFlight {
			caller.Leave(uid)
		}
	}()
	for range 3 {
		if turn, ok := turns.Queue(uid, 4242, caller.MaxWaitingBytes+1); ok {
			t.Fatalf("a request carrying more than caller.MaxWaitingBytes queued (%v)", turn)
		}
	}
	if turn, ok := turns.Queue(uid+1, 4243, caller.MaxWaitingBytes+1); turn != nil || !ok {
		t.Fatalf("another user's request: %v, %v; want a turn at once", turn, ok)
	}
	turns.Leave(uid + 1)
	if got := turns.q.refused; got != (Refusals{Waiting: 3}) {
		t.Errorf("refusals counted %+v; want 3 waiting", got)
	}
	logs := logBuf.String()
	if n := strings.Count(logs, "request refused (ENOMEM)"); n != 1 || !strings.Contains(logs, "uid=60011 pid=4242") {
		t.Errorf("logged %d times, want once with uid and pid:\n%s", n, logs)
	}
}
