// Package fusefs is bazil.org/fuse/fs, the FUSE service loop and node
// interfaces, with clamfuse's changes:
//
//   - Requests are served on the goroutines that read them (readLoop,
//     clamfuse_readloop.go) rather than on a new goroutine each. With one
//     reader and a goroutine per request, about 40% of clamfuse's CPU went
//     to the Go scheduler and each request cost ~85 µs; serving inline
//     roughly halves `ls -lR` and cached re-open times (bench/RESULTS.md).
//     One goroutine at a time waits in read(2); a request that is about to
//     wait (Server.Blocking) or is served longer than handoverAfter hands
//     the reading to another. With several waiting, the kernel woke a
//     different, cold thread for every request: one reader took a third
//     off the CPU of a cached re-open and four fifths of its context
//     switches.
//   - FUSE_POLL is answered ENOSYS by the request loop, so the kernel
//     stops asking and polls every file as ready itself
//     (clamfuse_poll.go).
//   - READDIRPLUS is served (clamfuse_readdirplus.go): from a
//     HandleReadDirPluser, which lists with the entries' nodes, counted as
//     Lookup counts them (but for "." and ".."), and serves READDIR at
//     the same offsets; or from a HandleReadDirAller, entries listed
//     without lookups.
//   - A rename with renameat2(2) flags reaches only a NodeRenameFlagger
//     that says it handles them; to other nodes it is ENOSYS, so the
//     kernel fails it with EINVAL as before (clamfuse_rename.go).
//   - O_TMPFILE opens reach a NodeTmpfiler (clamfuse_tmpfile.go); to
//     other directories they are ENOSYS, so EOPNOTSUPP as before.
//   - InvalidateNodeAttr invalidates the attributes only (upstream's
//     offset 0 dropped the data too); ExpireEntry expires a cached entry
//     without dropping it (clamfuse_notify.go).
//   - A Node that implements NodeIDKeeper keeps the NodeID the server
//     gave it, in place of upstream's map entry from Node to NodeID, one
//     per inode the kernel caches (clamfuse_nodeid.go; blocks "root id",
//     "save node id", "drop node id" and the notifications' "... id").
//   - A serveNode waits for the notifications using its NodeID with an
//     8-byte nodeWaitGroup in place of a sync.WaitGroup (16), so that it
//     is 48 bytes, in the 48-byte allocation class, not 56 in the 64-byte
//     one: 16 bytes less per inode the kernel caches (clamfuse_waitgroup.go;
//     block "serve node wait group").
//   - The attributes a LOOKUP's handler filled itself (Attr.Inode set),
//     from the stat that found the entry, are answered as they are;
//     upstream asks Node.Attr for them, a second stat of the entry
//     (clamfuse_lookupattr.go; block "lookup attr").
//   - The debug messages of each request are not made when the debug
//     function is fuse.Debug's default, which drops them (blocks "quiet
//     field", "quiet set", "request log", "response log";
//     fuse/clamfuse_debug.go): two allocations less per request.
//
// serve.go is upstream's file at the version go.mod pins, changed only in
// blocks between "// clamfuse: begin NAME" and "// clamfuse: end NAME"
// lines, under upstream's license (LICENSE here); the code the blocks call
// is in files of clamfuse's own (clamfuse_*.go). upstream_test.go records
// the upstream text each block replaces, and TestSameAsUpstream (with the
// helper in fs/internal/upstream) requires serve.go with those texts put
// back to equal the module's copy, so a version bump that changes upstream
// fails until the copy is redone: copy the new serve.go, put each marked
// block back in its place (its package clause, its imports of the in-tree
// fs/internal/fuse, its request loop, the requests it adds, the rename
// flags check, the offset of InvalidateNodeAttr), and record in
// upstream_test.go the upstream text each now replaces. fs/internal/fuse
// is redone the same way (see its doc.go).
package fusefs
