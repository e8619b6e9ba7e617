package cache

import (
	"context"
	"fmt"
	"testing"
)

// TestSlotUsersInTurn: the opens' scans waiting for a slot are served
// user by user in turn, each user's in the order they came; a user whose
// first scan comes joins the end of the round; a scan that stops waiting
// leaves no trace.
func TestSlotUsersInTurn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ops    []string // "push U N" (the N-th scan of user U), "remove U N", "pop"
		popped string
	}{
		{"one user, in order", []string{"push 1 a", "push 1 b", "push 1 c", "pop", "pop", "pop", "pop"}, "1a 1b 1c -"},
		{"a user with many, another with one", []string{"push 1 a", "push 1 b", "push 1 c", "push 2 a", "pop", "pop", "pop", "pop"}, "1a 2a 1b 1c"},
		{"three users in turn", []string{"push 1 a", "push 1 b", "push 2 a", "push 2 b", "push 3 a", "pop", "pop", "pop", "pop", "pop"}, "1a 2a 3a 1b 2b"},
		{"a newcomer joins the end", []string{"push 1 a", "push 1 b", "push 1 c", "push 2 a", "pop", "push 3 a", "pop", "pop", "pop", "pop"}, "1a 2a 1b 3a 1c"},
		{"removed first of a user: the user keeps its place", []string{"push 1 a", "push 1 b", "push 2 a", "remove 1 a", "pop", "pop", "pop"}, "1b 2a -"},
		{"removed last of a user", []string{"push 1 a", "push 2 a", "push 3 a", "remove 2 a", "pop", "pop", "pop"}, "1a 3a -"},
		{"removed twice", []string{"push 1 a", "push 2 a", "remove 2 a", "remove 2 a", "pop", "pop"}, "1a -"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var u users
			ws := map[string]*slotWaiter{}
			names := map[*slotWaiter]string{}
			var popped []string
			for _, op := range tc.ops {
				var verb, n string
				var uid uint32
				fmt.Sscan(op, &verb, &uid, &n)
				key := fmt.Sprint(uid, n)
				switch verb {
				case "push":
					ws[key] = &slotWaiter{}
					names[ws[key]] = key
					u.push(uid, ws[key])
				case "remove":
					u.remove(uid, ws[key])
				case "pop":
					if w := u.pop(); w != nil {
						popped = append(popped, names[w])
					} else {
						popped = append(popped, "-")
					}
				}
			}
			if got := fmt.Sprint(popped); got != "["+tc.popped+"]" {
				t.Errorf("served %s; want [%s]", got, tc.popped)
			}
			if u.n == 0 && (len(u.round) != 0 || len(u.wait) != 0) {
				t.Errorf("none waiting, but %v in the round, %v waiting", u.round, u.wait)
			}
		})
	}
}

// TestSlotsInTurn: with the only slot taken, a user's many scans and
// another's one wait; the slots go in turn, the other user's second, and
// a background scan's only once no open's waits.
func TestSlotsInTurn(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	if !s.acquire(ctx, 1, false, nil) {
		t.Fatal("the free slot not taken")
	}
	got := make(chan string, 8)
	wait := func(uid uint32, bg bool, name string) {
		queued := make(chan struct{})
		go func() {
			if s.acquire(ctx, uid, bg, func() { close(queued) }) {
				got <- name
			}
		}()
		<-queued
	}
	wait(1, true, "bg")
	wait(1, false, "1a")
	wait(1, false, "1b")
	wait(1, false, "1c")
	wait(2, false, "2a")
	var order []string
	for range 5 {
		s.release()
		order = append(order, <-got)
	}
	if fmt.Sprint(order) != "[1a 2a 1b 1c bg]" {
		t.Errorf("slots went to %v; want [1a 2a 1b 1c bg]", order)
	}
	s.release()
	if n := s.taken(1); n != 0 {
		t.Errorf("%d taken once all are done", n)
	}
}
