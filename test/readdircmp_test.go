package test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// caseReaddirChanging lists a directory while entries are added and
// removed, rewinds, resumes one descriptor at cookies another handed
// out, and lets two threads read one descriptor at once: what POSIX
// leaves open (whether an entry added or removed during the listing
// shows) is not recorded, what it promises is.
func caseReaddirChanging(root string) (string, error) {
	var r rec
	d := filepath.Join(root, "dir")
	mustDoP(os.Mkdir(d, 0o755))
	const n = 1200
	for i := range n {
		mustDoP(openClose(filepath.Join(d, fmt.Sprintf("f-%04d", i)), unix.O_CREAT|unix.O_WRONLY, 0o644))
	}
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if !r.do("open", err) {
		return r.done()
	}
	defer unix.Close(fd)

	// A third of the listing, then a third of the entries removed (some
	// listed already, some not) and 400 added, then the rest.
	var listed []dent
	buf := make([]byte, 1024)
	for len(listed) < n/3 {
		k, err := unix.Getdents(fd, buf)
		if err != nil || k == 0 {
			r.do("list the first third", err)
			return r.done()
		}
		listed = append(listed, parseDents(buf[:k])...)
	}
	want := map[string]bool{".": true, "..": true}
	for i := range n {
		name := fmt.Sprintf("f-%04d", i)
		if i%3 == 0 {
			mustDoP(os.Remove(filepath.Join(d, name)))
		} else {
			want[name] = true
		}
	}
	for i := range 400 {
		name := fmt.Sprintf("g-%04d", i)
		mustDoP(openClose(filepath.Join(d, name), unix.O_CREAT|unix.O_WRONLY, 0o644))
		want[name] = true
	}
	rest, err := getdentsAll(fd, 1024)
	r.do("list the rest", err)
	listed = append(listed, rest...)
	seen := map[string]int{}
	for _, e := range listed {
		seen[e.name]++
	}
	dups, unchanged := 0, true
	for _, k := range seen {
		if k > 1 {
			dups++
		}
	}
	for i := range n {
		if name := fmt.Sprintf("f-%04d", i); i%3 != 0 && seen[name] != 1 {
			unchanged = false
		}
	}
	r.val("listed while changing", "duplicates=%d every entry there throughout listed once=%v", dups, unchanged)

	// Rewound, the listing is the directory as it is now.
	_, err = unix.Seek(fd, 0, io.SeekStart)
	r.do("rewind", err)
	again, err := getdentsAll(fd, 4096)
	r.do("list again", err)
	now := map[string]bool{}
	for _, e := range again {
		now[e.name] = true
	}
	r.val("after rewind", "entries=%d as the directory holds them=%v", len(again), mapsEqual(now, want))

	// Cookies are the directory's, not one descriptor's.
	fd2, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if !r.do("open another", err) {
		return r.done()
	}
	defer unix.Close(fd2)
	ents2, err := getdentsAll(fd2, 2048)
	r.do("list through it", err)
	resumed := true
	for _, k := range []int{0, 1, len(ents2) / 2, len(ents2) - 2, len(ents2) - 1} {
		if _, err := unix.Seek(fd, ents2[k].off, io.SeekStart); err != nil {
			r.do(fmt.Sprintf("seek to the cookie of entry %d of the other", k), err)
			resumed = false
			continue
		}
		tail, err := getdentsAll(fd, 700)
		if err != nil || len(tail) != len(ents2)-k-1 || (len(tail) > 0 && tail[0].name != ents2[k+1].name) {
			resumed = false
		}
	}
	r.val("a descriptor resumes at another's cookies", "%v", resumed)

	// Two threads reading one descriptor share its position.
	fd3, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if !r.do("open a third", err) {
		return r.done()
	}
	defer unix.Close(fd3)
	var wg sync.WaitGroup
	parts := make([][]dent, 2)
	errs := make([]error, 2)
	for i := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[i], errs[i] = getdentsAll(fd3, 512)
		}()
	}
	wg.Wait()
	r.do("reader 1", errs[0])
	r.do("reader 2", errs[1])
	both := map[string]int{}
	total := 0
	for _, p := range parts {
		for _, e := range p {
			both[e.name]++
			total++
		}
	}
	dups = 0
	for _, k := range both {
		if k > 1 {
			dups++
		}
	}
	r.val("two readers of one descriptor", "entries=%d duplicates=%d", total, dups)
	return r.done()
}

// parseDents decodes the linux_dirent64 records of one getdents call.
func parseDents(b []byte) []dent {
	var out []dent
	for len(b) >= 19 {
		reclen := int(uint16(b[16]) | uint16(b[17])<<8)
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		out = append(out, dent{string(name), b[18], int64(nativeUint64(b[8:16]))})
		b = b[reclen:]
	}
	return out
}
