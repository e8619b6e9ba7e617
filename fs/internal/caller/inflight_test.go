package caller

import (
	"sync"
	"testing"
	"time"
)

// TestInFlightBound: a user's requests past MaxInFlight wait for a turn,
// without holding anything up for other users or root, while they are
// no more than MaxWaiting and carry no more than MaxWaitingBytes (past
// either a request is refused at once); the calls that return let the
// waiting ones in, and a user with nothing in flight leaves no trace.
func TestInFlightBound(t *testing.T) {
	const attacker, other = 60001, 60002
	block := make(chan struct{})
	var entered sync.WaitGroup
	var mu sync.Mutex
	var order []int
	call := func(uid uint32, i int) {
		if i < MaxInFlight {
			Enter(uid)
		} else {
			turn, ok := Queue(uid, MaxWaitingBytes/4)
			if !ok {
				t.Errorf("call %d refused", i)
				return
			}
			if turn != nil {
				<-turn
			}
		}
		defer Leave(uid)
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
		entered.Done()
		if uid == attacker && i < MaxInFlight {
			<-block // a lock someone else holds
		}
	}
	entered.Add(MaxInFlight)
	for i := range MaxInFlight {
		go call(attacker, i)
	}
	entered.Wait()
	// More of the attacker's wait, without entering.
	done := make(chan int, 3)
	for i := MaxInFlight; i < MaxInFlight+3; i++ {
		waitingBefore := i - MaxInFlight
		entered.Add(1)
		go func() { call(attacker, i); done <- i }()
		deadline := time.Now().Add(time.Minute)
		for {
			if n, w, b := InFlight(attacker); n == MaxInFlight && w == waitingBefore+1 && b == w*MaxWaitingBytes/4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("call %d: not waiting", i)
			}
			time.Sleep(time.Millisecond) // polls a condition
		}
	}
	// What the waiting calls carry is bounded: 3/4 of MaxWaitingBytes
	// carried, a call that would carry more than the rest is refused at
	// once.
	if turn, ok := Queue(attacker, MaxWaitingBytes/4+1); ok {
		t.Fatalf("a call past MaxWaitingBytes queued (turn %v)", turn)
	}
	// Not another user's, whose turn is free whatever it carries.
	if turn, ok := Queue(other, MaxWaitingBytes+1); turn != nil || !ok {
		t.Fatalf("another user's call did not take a turn at once (%v, %v)", turn, ok)
	}
	Leave(other)
	// Another user and root go on.
	for _, uid := range []uint32{other, 0} {
		entered.Add(1)
		ran := make(chan struct{})
		go func() { call(uid, -1); close(ran) }()
		select {
		case <-ran:
		case <-time.After(time.Minute):
			t.Fatalf("uid %d held up by another user's calls in flight", uid)
		}
	}
	// The calls that return let the waiting ones in.
	close(block)
	for range 3 {
		if got := <-done; got < MaxInFlight {
			t.Fatalf("done %d", got)
		}
	}
	mu.Lock()
	if len(order) != MaxInFlight+3+2 {
		t.Errorf("%d calls ran; want %d", len(order), MaxInFlight+3+2)
	}
	mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for {
		n, w, b := InFlight(attacker)
		if n == 0 && w == 0 && b == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after all returned: %d in flight, %d waiting, holding %d", n, w, b)
		}
		time.Sleep(time.Millisecond) // polls a condition
	}
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	if len(inflight.users) != 0 {
		t.Errorf("users left counted: %d", len(inflight.users))
	}
}

// TestWaitingBound: past MaxWaiting requests of one user waiting for a
// turn, carrying nothing, the next is refused, not another user's; every
// turn handed on and given back leaves no trace.
func TestWaitingBound(t *testing.T) {
	const uid = 60004
	for range MaxInFlight {
		Enter(uid)
	}
	for i := range MaxWaiting {
		if turn, ok := Queue(uid, 0); turn == nil || !ok {
			t.Fatalf("request %d waiting: %v, %v; want it in line", i+1, turn, ok)
		}
	}
	if turn, ok := Queue(uid, 0); ok {
		t.Fatalf("request %d waiting queued (%v); want it refused", MaxWaiting+1, turn)
	}
	if turn, ok := Queue(uid+1, 0); turn != nil || !ok {
		t.Fatalf("another user's request: %v, %v; want a turn at once", turn, ok)
	}
	Leave(uid + 1)
	for range MaxInFlight + MaxWaiting {
		Leave(uid) // each hands its turn to the next in line, then the last ones end
	}
	if n, w, b := InFlight(uid); n != 0 || w != 0 || b != 0 {
		t.Errorf("%d in flight, %d waiting, carrying %d; want none", n, w, b)
	}
}

// BenchmarkEnterLeave is what the bound adds to each call.
func BenchmarkEnterLeave(b *testing.B) {
	for b.Loop() {
		Enter(60003)
		Leave(60003)
	}
}
