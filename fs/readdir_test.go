package fs

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// fuseEnt is one entry of a READDIR reply.
type fuseEnt struct {
	name string
	ino  uint64
	off  int64
	typ  uint32
}

// readdirAt serves one READDIR the way fusefs does, and checks that
// every entry returned fits the reply: fusefs would drop the others.
func readdirAt(t *testing.T, d *dirHandle, off int64, size int) []fuseEnt {
	return readdirPlusAt(t, d, off, size, false)
}

func readdirPlusAt(t *testing.T, d *dirHandle, off int64, size int, plus bool) []fuseEnt {
	t.Helper()
	ents, err := d.ReadDirPlus(context.Background(), fusefs.DirRead{Offset: off, Size: size, Plus: plus})
	if err != nil {
		t.Fatalf("READDIR at %d, %d bytes: %v", off, size, err)
	}
	used := 0
	var out []fuseEnt
	for _, e := range ents {
		if plus {
			used += fuse.DirentPlusSize(e.Name)
		} else {
			used += fuse.DirentSize(e.Name)
		}
		out = append(out, fuseEnt{name: e.Name, ino: e.Inode, off: int64(e.Offset), typ: uint32(e.Type)})
	}
	if used > size {
		t.Fatalf("READDIR at %d returned %d bytes of entries for %d", off, used, size)
	}
	return out
}

// listAll lists d from off to the end in READDIRs of size bytes, as the
// kernel does: each at the cookie of the last entry of the one before.
func listAll(t *testing.T, d *dirHandle, off int64, size int) []fuseEnt {
	t.Helper()
	return listAllPlus(t, d, off, size, false)
}

// listAllPlus is listAll with READDIRPLUS requests when plus is set.
func listAllPlus(t *testing.T, d *dirHandle, off int64, size int, plus bool) []fuseEnt {
	t.Helper()
	var all []fuseEnt
	for {
		ents := readdirPlusAt(t, d, off, size, plus)
		if len(ents) == 0 {
			return all
		}
		all = append(all, ents...)
		off = ents[len(ents)-1].off
	}
}

func openDirHandle(t *testing.T, dir string) *dirHandle {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fsys := &FS{quota: newQuota(DeriveLimits(1024, 0), nil)}
	fsys.quota.take(0, 0)
	fsys.quota.settle(0, true)
	d := newDirHandle(fsys, fd, 0)
	t.Cleanup(func() { d.Release(context.Background(), nil) })
	return d
}

func names(ents []fuseEnt) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.name)
	}
	return out
}

// TestDirHandleStreams: listings in READDIRs of any size give every
// entry once, with the backing directory's own cookies as offsets, and
// resume at any cookie handed out, as getdents on the backing does.
func TestDirHandleStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names func(i int) string
		n     int
	}{
		// FUSE dirents are 4/3 the size of getdents records for names
		// of 1 to 4 bytes, the same size for long ones.
		{"1-byte names", func(i int) string {
			return string(rune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[i]))
		}, 62},
		{"4-byte names", func(i int) string { return fmt.Sprintf("%04d", i) }, 1000},
		{"255-byte names", func(i int) string { return fmt.Sprintf("%0255d", i) }, 1000},
		{"mixed", func(i int) string {
			d := strconv.Itoa(i)
			return strings.Repeat("x", max(1+i%255-len(d), 0)) + d
		}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i := range tc.n {
				name := tc.names(i)
				if i%10 == 0 {
					mustNoErr(t, os.Mkdir(filepath.Join(dir, name), 0o755))
				} else {
					mustNoErr(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
				}
			}
			// The backing directory's own listing.
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			mustNoErr(t, err)
			var want []fuseEnt
			buf := make([]byte, 8192)
			for {
				k, err := unix.Getdents(fd, buf)
				mustNoErr(t, err)
				if k == 0 {
					break
				}
				for b := buf[:k]; len(b) > 0; {
					reclen := int(binary.NativeEndian.Uint16(b[16:18]))
					name := string(b[19:reclen])
					name = name[:strings.IndexByte(name, 0)]
					want = append(want, fuseEnt{name: name, ino: binary.NativeEndian.Uint64(b[0:8]),
						off: int64(binary.NativeEndian.Uint64(b[8:16])), typ: uint32(b[18])})
					b = b[reclen:]
				}
			}
			unix.Close(fd)

			d := openDirHandle(t, dir)
			for _, size := range []int{4096, 1000, 333, 65536, 128 << 10} {
				got := listAll(t, d, 0, size)
				if !slices.Equal(got, want) {
					t.Fatalf("READDIRs of %d bytes: %d entries, want %d as getdents gives them (first %v, want %v)",
						size, len(got), len(want), names(got[:min(3, len(got))]), names(want[:3]))
				}
			}
			for _, size := range []int{4096, 65536} {
				if got := listAllPlus(t, d, 0, size, true); !slices.Equal(got, want) {
					t.Fatalf("READDIRPLUSes of %d bytes: %d entries, want %d", size, len(got), len(want))
				}
			}
			// A kernel that uses only the first entries of each reply
			// (the caller's buffer is smaller) and asks again at the
			// cookie of the last one it used.
			rng := rand.New(rand.NewPCG(uint64(tc.n), 7))
			for _, size := range []int{4096, 8192} {
				var got []fuseEnt
				off := int64(0)
				for {
					ents := readdirAt(t, d, off, size)
					if len(ents) == 0 {
						break
					}
					ents = ents[:1+rng.IntN(len(ents))]
					got = append(got, ents...)
					off = ents[len(ents)-1].off
				}
				if !slices.Equal(got, want) {
					t.Fatalf("READDIRs of %d bytes, partly used: %d entries, want %d", size, len(got), len(want))
				}
			}
			if d.kept != nil && d.fsys.kept.Load() != int64(cap(d.kept)) {
				t.Errorf("kept bytes %d, but the handle keeps %d", d.fsys.kept.Load(), cap(d.kept))
			}
			// Resume at cookies, in any order.
			for _, k := range []int{len(want) / 2, 0, len(want) - 1, 7, len(want) - 2} {
				rest := listAll(t, d, want[k].off, 4096)
				if !slices.Equal(rest, want[k+1:]) {
					t.Errorf("after seeking to the cookie of entry %d: %d entries, want %d", k, len(rest), len(want)-k-1)
				}
			}
		})
	}
}
