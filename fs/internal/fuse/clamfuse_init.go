package fuse

// clamfuse: the INIT reply (block "init reply" of initMount), with what
// upstream does not negotiate: max_pages, flags2 and with them
// passthrough's max_stack_depth.

import (
	"encoding/binary"
	"os"
	"unsafe"
)

// connExt is what a Conn negotiated beyond upstream's fields. It is set
// by initMount, before the Conn is shared, and only read afterwards.
type connExt struct {
	flags2   InitFlags2 // granted INIT flags above bit 31
	maxPages uint16     // pages in one READ or WRITE, 0 unless InitMaxPages
}

// mountExt is what clamfuse's mount options ask for beyond upstream's
// mountConfig fields.
type mountExt struct {
	initFlags2    InitFlags2
	maxStackDepth uint32 // with InitPassthrough
}

// initOutExt is struct fuse_init_out of protocol 7.40 (64 bytes; upstream's
// initOut keeps the fields after map_alignment unused).
type initOutExt struct {
	Major               uint32
	Minor               uint32
	MaxReadahead        uint32
	Flags               uint32
	MaxBackground       uint16
	CongestionThreshold uint16
	MaxWrite            uint32
	TimeGran            uint32
	MaxPages            uint16
	MapAlignment        uint16
	Flags2              uint32
	MaxStackDepth       uint32
	RequestTimeout      uint16
	_                   [11]uint16
}

// initInFlags2 returns fuse_init_in.flags2 of the INIT request r: the
// kernel sends it (from 7.36 on) only with InitInitExt in flags, after
// major, minor, max_readahead and flags.
func initInFlags2(r *initRequest) InitFlags2 {
	b := r.msg.buf[inHeaderSize:]
	if r.Flags&InitInitExt == 0 || len(b) < 5*4 {
		return 0
	}
	return InitFlags2(binary.NativeEndian.Uint32(b[4*4:]))
}

// initReply answers the INIT request r for c, at protocol c.proto, with
// what conf asks for and the kernel offers, and records what was granted.
func (c *Conn) initReply(r *initRequest, conf *mountConfig) {
	c.flags = r.Flags & (InitBigWrites | InitParallelDirOps | conf.initFlags)
	flags2 := initInFlags2(r) & conf.ext.initFlags2
	if c.flags&InitWritebackCache != 0 {
		// The kernel does not pass through with the writeback cache.
		flags2 &^= InitPassthrough
	}
	if flags2 != 0 {
		c.flags |= InitInitExt
	}
	c.ext.flags2 = flags2

	buf := newBuffer(unsafe.Sizeof(initOutExt{}))
	out := (*initOutExt)(buf.alloc(unsafe.Sizeof(initOutExt{})))
	out.Major = c.proto.Major
	out.Minor = c.proto.Minor
	out.MaxReadahead = conf.maxReadahead
	out.Flags = uint32(c.flags)
	out.MaxBackground = conf.maxBackground
	out.CongestionThreshold = conf.congestionThreshold
	out.MaxWrite = maxWrite
	if c.flags&InitMaxPages != 0 {
		// The kernel takes at most its max_pages_limit; a WRITE of more
		// than maxWrite cannot come, whatever it takes.
		c.ext.maxPages = uint16(maxWrite / os.Getpagesize())
		out.MaxPages = c.ext.maxPages
	}
	out.Flags2 = uint32(flags2)
	if flags2&InitPassthrough != 0 {
		out.MaxStackDepth = conf.ext.maxStackDepth
	}
	if c.proto.LT(Protocol{7, 23}) {
		// fuse_init_out was 24 bytes (FUSE_COMPAT_22_INIT_OUT_SIZE).
		buf = buf[:unsafe.Sizeof(outHeader{})+24]
	}
	r.respond(buf)
}

// Features2 reports the INIT flags above bit 31 negotiated between the
// kernel and the FUSE library, as Features does the others: those asked
// for (RequestInitFlags2, Passthrough) that the kernel offered. With any,
// Features has InitInitExt.
func (c *Conn) Features2() InitFlags2 {
	return c.ext.flags2
}

// MaxPages reports how many pages one READ or WRITE request may carry,
// when InitMaxPages was granted (0 otherwise: the kernel's default of 32).
func (c *Conn) MaxPages() int {
	return int(c.ext.maxPages)
}
