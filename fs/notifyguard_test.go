package fs

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// guardRec records the notifications a guard ran, in order.
type guardRec struct {
	mu   sync.Mutex
	ran  []string
	wake chan struct{}
}

func (r *guardRec) f(name string, block <-chan struct{}) func() {
	return func() {
		if block != nil {
			<-block
		}
		r.mu.Lock()
		r.ran = append(r.ran, name)
		r.mu.Unlock()
	}
}

func (r *guardRec) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ran)
}

func newTestGuard(t *testing.T) (*guard, *guardRec, *[]*Node) {
	r := &guardRec{wake: make(chan struct{}, 1)}
	var stalled []*Node
	g := newGuard(func() {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}, func(n *Node) { stalled = append(stalled, n) })
	g.stallAfter = 20 * time.Millisecond
	t.Cleanup(g.stop)
	return g, r, &stalled
}

// TestGuardStalledNodeAside: a notification that waits (a directory's
// lock held by a process listing it into memory that does not come)
// holds up neither the notifier nor the notifications of other nodes;
// the later ones of its node are put aside, in order, and handed back
// once it is sent, with nothing lost and nothing sent twice.
func TestGuardStalledNodeAside(t *testing.T) {
	g, r, stalled := newTestGuard(t)
	a, b := &Node{}, &Node{}
	block := make(chan struct{})

	start := time.Now()
	g.do(a, r.f("a1", block))
	if d := time.Since(start); d > 10*g.stallAfter {
		t.Fatalf("do of a notification that waits returned after %v; want about %v", d, g.stallAfter)
	}
	if len(*stalled) != 1 || (*stalled)[0] != a || g.waiting() != 1 {
		t.Fatalf("stalled %v, waiting %d; want a, 1", *stalled, g.waiting())
	}
	g.do(b, r.f("b1", nil))
	g.do(a, r.f("a2", nil))
	g.do(b, r.f("b2", nil))
	g.do(a, r.f("a3", nil))
	if got, want := r.got(), []string{"b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("while a's notification waits, ran %v; want %v (a's later ones put aside)", got, want)
	}
	if back, _ := g.takeBack(); len(back) != 0 {
		t.Fatalf("handed back %d before a's notification was sent", len(back))
	}

	close(block)
	select {
	case <-r.wake:
	case <-time.After(time.Minute):
		t.Fatal("the notifier was not woken once a's notification was sent")
	}
	back, dropped := g.takeBack()
	if dropped || len(back) != 1 || back[0].key != a || len(back[0].fs) != 2 {
		t.Fatalf("handed back %+v, dropped %v; want a's two, in order", back, dropped)
	}
	for _, f := range back[0].fs {
		g.do(a, f)
	}
	if got, want := r.got(), []string{"b1", "b2", "a1", "a2", "a3"}; !slices.Equal(got, want) {
		t.Fatalf("ran %v; want %v", got, want)
	}
	if g.waiting() != 0 {
		t.Fatalf("waiting %d after all were sent", g.waiting())
	}
	g.do(a, r.f("a4", nil)) // a is no longer put aside
	if got := r.got(); got[len(got)-1] != "a4" {
		t.Fatalf("a's next notification did not run at once: %v", got)
	}
}

// TestGuardBounds: at most maxStalled notifications are left waiting (a
// thread each); past that the notifier waits for its writer, as before
// the guard. Past maxAside notifications put aside behind one node, the
// rest are dropped and the notifier is told to invalidate everything.
func TestGuardBounds(t *testing.T) {
	g, r, _ := newTestGuard(t)
	block := make(chan struct{})
	nodes := make([]*Node, maxStalled+1)
	for i := range nodes {
		nodes[i] = &Node{}
	}
	for i := range maxStalled {
		g.do(nodes[i], r.f("stalled", block))
	}
	if g.waiting() != maxStalled {
		t.Fatalf("waiting %d; want %d", g.waiting(), maxStalled)
	}
	for range maxAside + 5 {
		g.do(nodes[0], r.f("aside", nil))
	}
	returned := make(chan struct{})
	go func() {
		g.do(nodes[maxStalled], r.f("last", block))
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatalf("a notification that waits returned with %d already left waiting", maxStalled)
	case <-time.After(10 * g.stallAfter): // the absence of an event: bounded
	}
	close(block)
	<-returned
	if g.waiting() != 0 {
		// The writers left waiting end once their write returns.
		deadline := time.Now().Add(time.Minute)
		for g.waiting() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polls a condition
		}
	}
	back, dropped := g.takeBack()
	if !dropped {
		t.Errorf("%d notifications put aside behind one node: none reported dropped", maxAside+5)
	}
	n := 0
	for _, b := range back {
		n += len(b.fs)
	}
	if n != maxAside {
		t.Errorf("handed back %d; want %d", n, maxAside)
	}
}

// BenchmarkGuardDo is what the guard adds to each notification: the
// hand-off to the writer and back.
func BenchmarkGuardDo(b *testing.B) {
	g := newGuard(func() {}, func(*Node) {})
	defer g.stop()
	n := &Node{}
	f := func() {}
	for b.Loop() {
		g.do(n, f)
	}
}
