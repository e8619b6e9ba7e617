// Package fusefs is bazil.org/fuse/fs, the FUSE service loop and node
// interfaces, with two changes. Requests are served on the goroutines that
// read them (readLoop) rather than on a new goroutine each. With one
// reader and a goroutine per request, about 40% of clamfuse's CPU went to
// the Go scheduler and each request cost ~85 µs; serving inline roughly
// halves `ls -lR` and cached re-open times (bench/RESULTS.md). And a
// directory handle that is a HandleReader without ReadDirAll gets each
// READDIR request as the kernel sent it (the "readdir" block), so that
// clamfuse streams listings by the backing directory's own offsets
// instead of keeping each whole listing per handle; upstream answers
// such a request with no entries.
//
// serve.go is upstream's file at the version go.mod pins, changed only
// between its "clamfuse:" markers, under upstream's license (LICENSE
// here). TestSameAsUpstream compares it with the module's copy, so a
// version bump that changes upstream fails until the copy is redone: copy
// the new serve.go, put the marked block back in place of its request
// loop, and the readdir block before the Dir branch of ReadRequest.
package fusefs
