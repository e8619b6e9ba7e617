// Package fusefs is bazil.org/fuse/fs, the FUSE service loop and node
// interfaces, with one change: requests are served on the goroutines that
// read them (readLoop) rather than on a new goroutine each. With one
// reader and a goroutine per request, about 40% of clamfuse's CPU went to
// the Go scheduler and each request cost ~85 µs; serving inline roughly
// halves `ls -lR` and cached re-open times (bench/RESULTS.md).
//
// serve.go is upstream's file at the version go.mod pins, changed only in
// blocks between "// clamfuse: begin NAME" and "// clamfuse: end NAME"
// lines, under upstream's license (LICENSE here). upstream_test.go records
// the upstream text each block replaces, and TestSameAsUpstream (with the
// helper in fs/internal/upstream) requires serve.go with those texts put
// back to equal the module's copy, so a version bump that changes upstream
// fails until the copy is redone: copy the new serve.go, put each marked
// block back in its place (its package clause, its imports of the in-tree
// fs/internal/fuse, its request loop), and record in upstream_test.go the
// upstream text each now replaces. fs/internal/fuse is redone the same way
// (see its doc.go).
package fusefs
