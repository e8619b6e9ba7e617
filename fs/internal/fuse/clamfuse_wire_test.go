package fuse

// A fake kernel on a SOCK_SEQPACKET socket pair, which keeps message
// boundaries as /dev/fuse does: tests write requests laid out by hand as
// include/uapi/linux/fuse.h lays them out (not through this package's
// structs), and decode the replies the same way.

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

var le = binary.LittleEndian // every Linux FUSE host clamfuse runs on

// fakeKernel is the kernel's end of a Conn.
type fakeKernel struct {
	t testing.TB
	f *os.File
}

// newFakeKernel returns a Conn at protocol proto with features flags,
// talking to a fake kernel.
func newFakeKernel(t testing.TB, proto Protocol, flags InitFlags) (*Conn, *fakeKernel) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Room for a WRITE of max_write bytes in one message (the FORCE
	// variants need root; the defaults hold about 200 KiB).
	for _, fd := range fds {
		for _, opt := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[0], 4<<20) != nil {
				unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt[1], 4<<20)
			}
		}
	}
	c := &Conn{dev: os.NewFile(uintptr(fds[0]), "fuse"), proto: proto, flags: flags}
	k := &fakeKernel{t: t, f: os.NewFile(uintptr(fds[1]), "kernel")}
	t.Cleanup(func() { c.Close(); k.f.Close() })
	return c, k
}

// send writes a request: fuse_in_header (40 bytes) and body.
func (k *fakeKernel) send(opcode uint32, unique, nodeid uint64, body ...[]byte) {
	k.t.Helper()
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	h := make([]byte, 40)
	le.PutUint32(h[0:], uint32(40+len(b)))
	le.PutUint32(h[4:], opcode)
	le.PutUint64(h[8:], unique)
	le.PutUint64(h[16:], nodeid)
	le.PutUint32(h[24:], 1000) // uid
	le.PutUint32(h[28:], 1001) // gid
	le.PutUint32(h[32:], 4242) // pid
	if _, err := k.f.Write(append(h, b...)); err != nil {
		k.t.Fatalf("fake kernel: write: %v", err)
	}
}

// reply reads one reply: fuse_out_header (16 bytes: len, error, unique)
// and what follows.
func (k *fakeKernel) reply(unique uint64) (errno int32, body []byte) {
	k.t.Helper()
	buf := make([]byte, 2<<20)
	n, err := k.f.Read(buf)
	if err != nil {
		k.t.Fatalf("fake kernel: read: %v", err)
	}
	buf = buf[:n]
	if n < 16 || le.Uint32(buf[0:]) != uint32(n) {
		k.t.Fatalf("reply of %d bytes, header says %d", n, le.Uint32(buf[0:]))
	}
	if u := le.Uint64(buf[8:]); u != unique {
		k.t.Fatalf("reply to request %d, want %d", u, unique)
	}
	return int32(le.Uint32(buf[4:])), buf[16:]
}

// cstr is name NUL-terminated, as the kernel sends names.
func cstr(name string) []byte { return append([]byte(name), 0) }

// u32s lays out 32-bit words.
func u32s(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		le.PutUint32(b[4*i:], x)
	}
	return b
}

// u64s lays out 64-bit words.
func u64s(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		le.PutUint64(b[8*i:], x)
	}
	return b
}

// fuseInitIn is struct fuse_init_in as a kernel of minor sends it: 16
// bytes before 7.36, 64 (flags2 and 11 unused words) since.
func fuseInitIn(minor, maxReadahead uint32, flags InitFlags, flags2 uint32) []byte {
	if minor < 36 {
		return u32s(7, minor, maxReadahead, uint32(flags))
	}
	return append(u32s(7, minor, maxReadahead, uint32(flags), flags2), make([]byte, 44)...)
}

// fuseInitOut decodes struct fuse_init_out (include/uapi/linux/fuse.h).
type fuseInitOut struct {
	major, minor, maxReadahead, flags uint32
	maxBackground, congestion         uint16
	maxWrite, timeGran                uint32
	maxPages, mapAlignment            uint16
	flags2, maxStackDepth             uint32
	requestTimeout                    uint16
}

func decodeInitOut(t *testing.T, b []byte) fuseInitOut {
	t.Helper()
	if len(b) != 64 {
		t.Fatalf("fuse_init_out of %d bytes, want 64", len(b))
	}
	return fuseInitOut{
		major: le.Uint32(b[0:]), minor: le.Uint32(b[4:]), maxReadahead: le.Uint32(b[8:]), flags: le.Uint32(b[12:]),
		maxBackground: le.Uint16(b[16:]), congestion: le.Uint16(b[18:]),
		maxWrite: le.Uint32(b[20:]), timeGran: le.Uint32(b[24:]),
		maxPages: le.Uint16(b[28:]), mapAlignment: le.Uint16(b[30:]),
		flags2: le.Uint32(b[32:]), maxStackDepth: le.Uint32(b[36:]),
		requestTimeout: le.Uint16(b[40:]),
	}
}

// kernelInit runs initMount against a fake kernel of minor offering
// flags and flags2, with the mount options opts, and returns the reply.
func kernelInit(t *testing.T, minor uint32, flags InitFlags, flags2 uint32, opts ...MountOption) (*Conn, fuseInitOut) {
	t.Helper()
	c, k := newFakeKernel(t, Protocol{}, 0)
	conf := mountConfig{options: map[string]string{}, initFlags: InitAsyncDIO | InitSetxattrExt}
	for _, o := range opts {
		if err := o(&conf); err != nil {
			t.Fatal(err)
		}
	}
	k.send(opInit, 1, 0, fuseInitIn(minor, 128<<10, flags, flags2))
	if err := initMount(c, &conf); err != nil {
		t.Fatalf("initMount: %v", err)
	}
	errno, body := k.reply(1)
	if errno != 0 {
		t.Fatalf("INIT reply: error %d", errno)
	}
	return c, decodeInitOut(t, body)
}

// kernel61Flags are the INIT flags Linux 6.1 (Debian 12, protocol 7.38)
// offers; kernel618Flags those of Linux 6.18, and kernel618Flags2 its
// flags2 (CONFIG_FUSE_PASSTHROUGH=y).
const (
	kernel61Flags = InitAsyncRead | InitPOSIXLocks | InitAtomicTrunc | InitExportSupport |
		InitBigWrites | InitDontMask | InitSpliceWrite | InitSpliceMove | InitSpliceRead |
		InitFlockLocks | InitHasIoctlDir | InitAutoInvalData | InitDoReaddirplus |
		InitReaddirplusAuto | InitAsyncDIO | InitWritebackCache | InitNoOpenSupport |
		InitParallelDirOps | InitHandleKillPriv | InitPosixACL | InitAbortError | InitMaxPages |
		InitCacheSymlinks | InitNoOpenDirSupport | InitExplicitInvalidateData |
		InitHandleKillPrivV2 | InitSetxattrExt | InitInitExt
	kernel61Flags2  = uint32(InitSecurityCtx | InitCreateSuppGroup | InitHasExpireOnly)
	kernel618Flags  = kernel61Flags
	kernel618Flags2 = kernel61Flags2 | uint32(InitDirectIOAllowMmap|InitPassthrough|
		InitNoExportSupport|InitHasResend|InitAllowIdmap|InitOverIOURing|InitRequestTimeout)
)

func TestInitReplyMaxPages(t *testing.T) {
	page := uint32(syscall.Getpagesize())
	tests := []struct {
		name      string
		minor     uint32
		flags     InitFlags
		opts      []MountOption
		wantMinor uint32
		wantPages uint16 // 0: InitMaxPages not granted
	}{
		{"6.18, asked", 45, kernel618Flags, []MountOption{RequestInitFlags(InitMaxPages)}, 40, uint16(maxWrite / page)},
		{"6.1, asked", 38, kernel61Flags, []MountOption{RequestInitFlags(InitMaxPages)}, 38, uint16(maxWrite / page)},
		{"not asked", 45, kernel618Flags, nil, 40, 0},
		{"not offered (before 4.20)", 27, kernel61Flags &^ InitMaxPages, []MountOption{RequestInitFlags(InitMaxPages)}, 27, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, out := kernelInit(t, tt.minor, tt.flags, 0, tt.opts...)
			if out.major != 7 || out.minor != tt.wantMinor {
				t.Errorf("protocol %d.%d, want 7.%d", out.major, out.minor, tt.wantMinor)
			}
			if out.maxWrite != maxWrite {
				t.Errorf("max_write %d, want %d", out.maxWrite, maxWrite)
			}
			if out.maxPages != tt.wantPages || c.MaxPages() != int(tt.wantPages) {
				t.Errorf("max_pages %d, Conn.MaxPages %d; want %d", out.maxPages, c.MaxPages(), tt.wantPages)
			}
			granted := InitFlags(out.flags)&InitMaxPages != 0
			if granted != (tt.wantPages != 0) || c.Features()&InitMaxPages != InitFlags(out.flags)&InitMaxPages {
				t.Errorf("flags %v, Features %v: InitMaxPages granted %v, want %v", InitFlags(out.flags), c.Features(), granted, tt.wantPages != 0)
			}
			if want := InitBigWrites | InitParallelDirOps | InitAsyncDIO; InitFlags(out.flags)&want != want {
				t.Errorf("flags %v lack %v", InitFlags(out.flags), want)
			}
		})
	}
}

// TestReadBuffers checks that a request that fits in a small message is
// read into one (so a request held long holds no 1 MiB buffer), and that
// a WRITE of max_write bytes, the largest the kernel may send, arrives
// whole.
func TestReadBuffers(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 33}, 0)

	k.send(opLookup, 2, 1, cstr("name"))
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := req.(*LookupRequest); !ok || r.Name != "name" {
		t.Fatalf("got %v, want a LOOKUP of name", req)
	}
	if got := cap(req.Hdr().msg.buf); got != smallSize {
		t.Errorf("a LOOKUP is held in a buffer of %d bytes, want %d", got, smallSize)
	}
	req.RespondError(Errno(syscall.ENOENT))
	if errno, _ := k.reply(2); errno != -int32(syscall.ENOENT) {
		t.Errorf("reply error %d", errno)
	}

	data := make([]byte, maxWrite)
	for i := range data {
		data[i] = byte(i * 7)
	}
	// fuse_write_in: fh, offset, size, write_flags, lock_owner, flags, padding.
	in := append(u64s(5, 1<<20), u32s(maxWrite, 0)...)
	in = append(in, u64s(0)...)
	in = append(in, u32s(uint32(os.O_RDWR), 0)...)
	k.send(opWrite, 3, 9, in, data)
	req, err = c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	w, ok := req.(*WriteRequest)
	if !ok {
		t.Fatalf("got %v, want a WRITE", req)
	}
	if w.Handle != 5 || w.Offset != 1<<20 || len(w.Data) != maxWrite || string(w.Data) != string(data) {
		t.Errorf("WRITE handle %v offset %d, %d bytes: not what was sent", w.Handle, w.Offset, len(w.Data))
	}
	w.Respond(&WriteResponse{Size: len(w.Data)})
	if _, body := k.reply(3); le.Uint32(body) != maxWrite {
		t.Errorf("write_out.size %d, want %d", le.Uint32(body), maxWrite)
	}

	// Messages go back to the pool of their size, whichever it was.
	for range 3 {
		k.send(opLookup, 4, 1, cstr("again"))
		req, err := c.ReadRequest()
		if err != nil {
			t.Fatal(err)
		}
		req.RespondError(Errno(syscall.ENOENT))
		k.reply(4)
	}
}

func unsafeSizeof[T any](v T) uintptr { return unsafe.Sizeof(v) }

// BenchmarkReadSmallRequest reads LOOKUPs: the 1 MiB read buffer is
// reused from the pool, and a request costs only its small copy.
func BenchmarkReadSmallRequest(b *testing.B) {
	c, k := newFakeKernel(b, Protocol{7, 40}, 0)
	b.ReportAllocs()
	for b.Loop() {
		k.send(opLookup, 2, 1, cstr("name"))
		req, err := c.ReadRequest()
		if err != nil {
			b.Fatal(err)
		}
		req.Hdr().noResponse()
	}
}
