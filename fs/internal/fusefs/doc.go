// Package fusefs is bazil.org/fuse/fs, the FUSE service loop and node
// interfaces, with one change: requests are served on the goroutines that
// read them (readLoop) rather than on a new goroutine each. With one
// reader and a goroutine per request, about 40% of clamfuse's CPU went to
// the Go scheduler and each request cost ~85 µs; serving inline roughly
// halves `ls -lR` and cached re-open times (bench/RESULTS.md).
//
// serve.go is upstream's file at the version go.mod pins, changed only
// between its "clamfuse:" markers, under upstream's license (LICENSE
// here). TestSameAsUpstream compares it with the module's copy, so a
// version bump that changes upstream fails until the copy is redone: copy
// the new serve.go, and put the marked block back in place of its request
// loop.
package fusefs
