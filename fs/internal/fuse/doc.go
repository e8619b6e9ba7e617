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
// Keep those blocks few and small: the code they call lives in files of
// clamfuse's own, named clamfuse_*.go. upstream_test.go records, for each
// block, the upstream text it replaces; TestSameAsUpstream puts that text
// back in place of every block and requires the result to equal
// upstream's file, and requires the same set of files as upstream but for
// clamfuse's own (doc.go, clamfuse_*.go and tests).
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
//     31 such as InitPassthrough).
//   - fuse.go, "sticky": (*Attr).attr passes os.ModeSticky on as S_ISVTX
//     (upstream drops it, so stat through a mount hid the sticky bit).
//   - fuse.go, "unix time": unixTime encodes attribute times as seconds
//     and nanoseconds directly, not through UnixNano, which showed times
//     before 1970 with a fraction of a second, and after 2262, wrong.
//     (SetattrRequest's times are decoded with time.Unix, which is exact.)
//   - fuse_linux.go, "max write", and fuse.go, "conn", "init reply": the
//     INIT reply is clamfuse_init.go's, with max_pages: with InitMaxPages
//     (RequestInitFlags) a READ or WRITE carries up to 1 MiB (maxWrite,
//     up from 128 KiB), Conn.MaxPages reports it. SetReadahead raises
//     the mount's readahead to match, which INIT cannot
//     (clamfuse_readahead.go).
//   - fuse.go, "read buffer", "put message": requests are read into
//     buffers of maxWrite (the kernel requires room for the largest
//     WRITE), but one that fits in 4 KiB is copied into a small buffer
//     and the big one reused at once, so requests held long (an OPEN
//     waiting for its scan) do not hold 1 MiB each (clamfuse_buffer.go).
//     The big buffers are mapped outside the Go heap: they cost only
//     the pages the kernel writes into, and do not count toward the
//     heap the garbage collector lets grow to twice its live size.
//   - Conn.Pending reports whether a request waits to be read (poll(2)
//     of /dev/fuse), for the request loop of fusefs (clamfuse_pending.go).
//   - IsNopDebug reports whether a debug function is Debug's default,
//     so that fusefs makes no debug message per request when nobody reads
//     them (clamfuse_debug.go).
//   - fuse.go, "read in place field", "read in place respond":
//     ReadRequest.ResponseData gives a READ's handler room for its data
//     inside the reply's own buffer, sent without a copy; the buffer
//     comes from a pool by size class and goes back to it once the reply
//     is written, so that READs of small files (not in passthrough)
//     allocate nothing per request (clamfuse_read.go).
//   - fuse_kernel.go, "protocol minor": protocol 7.40 (upstream: 7.33).
//     From 7.34 to 7.40 the kernel changed no message this package reads
//     unless the server asks, by an INIT flag, for what changes it
//     (security contexts and supplementary groups in the extension
//     header of CREATE, MKDIR, MKNOD, SYMLINK and TMPFILE, 7.36/7.38, are
//     never asked for; fuse_in_header's padding became total_extlen,
//     always 0 then). It added fields to replies in what was padding or
//     unused (fuse_open_out.backing_id, fuse_init_out.flags2 and
//     max_stack_depth, fuse_notify_inval_entry_out.flags), sent as zero
//     by upstream, and requests (SYNCFS, TMPFILE, STATX) that get ENOSYS
//     when not served, as before. The INIT reply fills flags2 (with
//     InitInitExt) and max_stack_depth; a kernel of an older protocol gets
//     its own (7.38 on Linux 6.1) and no flags2 it does not offer.
//   - fuse_kernel.go, "backing id", "open flag names", fuse.go, "open
//     response", "open backing id", "create backing id": OPEN and CREATE
//     replies carry OpenResponse.BackingID, with OpenPassthrough and the
//     other OPEN flags upstream lacks (clamfuse_passthrough.go); options.go,
//     "mount config": the Passthrough mount option; Conn.BackingOpen and
//     BackingClose register backing files (FUSE_DEV_IOC_BACKING_OPEN and
//     _CLOSE); Conn.Features2 reports the flags2 granted.
//   - fuse.go, "opcodes": ReadRequest decodes the requests upstream
//     does not know, in clamfuse_*.go: READDIRPLUS (ReadDirPlusRequest,
//     with AppendDirentPlus for its reply, and AppendDirentAt for a
//     READDIR at offsets of one's own; InitDoReaddirplus and
//     InitReaddirplusAuto requestable); RENAME2, renameat2(2) with flags,
//     as a RenameRequest with Flags (block "rename flags"); TMPFILE,
//     open(2) with O_TMPFILE (TmpfileRequest).
//   - Notifications (clamfuse_notify.go): Conn.InvalidateNodeAttr
//     invalidates a node's attributes and cached ACLs but not its data
//     (InvalidateNode's documentation is wrong: offset 0, size 0 drops
//     all the data); Conn.ExpireEntry expires a cached entry without
//     dropping it (FUSE_EXPIRE_ONLY, with InitHasExpireOnly, asked for
//     with RequestInitFlags2).
//
// To move to a new bazil.org/fuse version: bump go.mod, copy upstream's
// non-test, non-FreeBSD root .go files, LICENSE and fuseutil/fuseutil.go
// over these, put each marked block back in its place (adapting it to
// upstream's new code), and record in upstream_test.go the upstream text
// each block now replaces. Do the same for fs/internal/fusefs (see its
// doc.go). TestSameAsUpstream in both packages then passes.

package fuse
