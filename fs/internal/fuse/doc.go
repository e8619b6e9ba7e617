// clamfuse: this package is bazil.org/fuse, the FUSE protocol layer (the
// module's root package), and fuseutil/ is bazil.org/fuse/fuseutil, both
// at the version go.mod pins, under upstream's license (LICENSE here).
// They are copied so that clamfuse can use kernel features upstream does
// not negotiate or keeps private, while staying on bazil.org/fuse.
//
// Every non-test .go file of upstream's root package is here but the
// FreeBSD ones (clamfuse runs on Linux only). Each is upstream's file
// verbatim, changed only in blocks between lines
//
//	// clamfuse: begin NAME
//	// clamfuse: end NAME
//
// Keep those blocks few and small. upstream_test.go records, for each
// block, the upstream text it replaces; TestSameAsUpstream puts that text
// back in place of every block and requires the result to equal
// upstream's file, and requires the same set of files as upstream.
//
// The changes:
//   - fuseutil/fuseutil.go imports this package instead of bazil.org/fuse
//     (its types must be this package's; fs/internal/fusefs uses it).
//   - options.go, "request init flags": the RequestInitFlags mount option
//     asks the kernel for more INIT flags (those in RequestableInitFlags,
//     which need nothing more from this package, e.g. InitPosixACL);
//     initMount already grants only what the kernel offers, and
//     Conn.Features reports it.
//   - fuse_kernel.go, "init flags", "init flags2", "init flag names": the
//     INIT flags upstream lacks (InitInitExt, and the InitFlags2 above bit
//     31 such as InitPassthrough), as constants only.
//   - fuse.go, "sticky": (*Attr).attr passes os.ModeSticky on as S_ISVTX
//     (upstream drops it, so stat through a mount hid the sticky bit).
//   - fuse.go, "unix time": unixTime encodes attribute times as seconds
//     and nanoseconds directly, not through UnixNano, which showed times
//     before 1970 with a fraction of a second, and after 2262, wrong.
//     (SetattrRequest's times are decoded with time.Unix, which is exact.)
//
// To move to a new bazil.org/fuse version: bump go.mod, copy upstream's
// non-test, non-FreeBSD root .go files, LICENSE and fuseutil/fuseutil.go
// over these, put each marked block back in its place (adapting it to
// upstream's new code), and record in upstream_test.go the upstream text
// each block now replaces. Do the same for fs/internal/fusefs (see its
// doc.go). TestSameAsUpstream in both packages then passes.

package fuse
