package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// sizes are the data set's dimensions; -quick shrinks them.
type sizes struct {
	smallFiles int   // first-open and re-open workloads
	smallSize  int   // bytes per small file
	bigSize    int64 // the large random file
	treeFiles  int   // ls -lR and find | xargs stat
	writeSize  int64 // dd through the mount
	// afterWrite: files written, then opened, through the mount. 2000 in
	// a full run: with 500 (about 25 ms a pass) a run's figure moved by
	// up to half from run to run (whether the reader and the server's
	// thread ran on one CPU or two: 55 against 112 ms for 2000 cached
	// opens here), and hid 30 scans more per 2000 files (sameWrites).
	afterWrite int
	rssFiles   int // files opened once for the RSS figure
	rssTarget  int // the verdict count the RSS target speaks of
}

func sizesFor(quick bool) sizes {
	if quick {
		return sizes{
			smallFiles: 300, smallSize: 16 << 10, bigSize: 128 << 20, treeFiles: 2000,
			writeSize: 64 << 20, afterWrite: 100, rssFiles: 10000, rssTarget: 100000,
		}
	}
	return sizes{
		smallFiles: 2000, smallSize: 16 << 10, bigSize: 1 << 30, treeFiles: 10000,
		writeSize: 512 << 20, afterWrite: 2000, rssFiles: 100000, rssTarget: 100000,
	}
}

// bytesNeeded estimates the disk space of the data set plus scratch space
// (the dd output, clamd's INSTREAM temporary copy of the large file).
func (s sizes) bytesNeeded() int64 {
	const block = 4096
	files := int64(s.smallFiles+s.treeFiles+s.rssFiles+s.afterWrite) * block
	return files + 2*s.bigSize + s.writeSize + 64<<20
}

// dataset is the data on disk, relative paths included so that every
// system reads the same names under its own root.
type dataset struct {
	src     string   // the backing directory every system mirrors
	small   string   // dir of smallFiles files (relative to src)
	smallF  []string // its files, sorted (relative to src)
	big     string   // the large file (relative to src)
	tree    string   // dir of treeFiles files in subdirectories
	many    string   // dir of rssFiles files in subdirectories
	manyF   []string
	scratch string // src/scratch: written by the write workloads
}

// makeDataset creates what is missing of the data set under src. Each part
// lives in a directory named after its dimensions, completed by a marker
// file, so the quick and full data sets coexist and later runs reuse them.
func makeDataset(ctx context.Context, src string, sz sizes) (dataset, error) {
	d := dataset{
		src:     src,
		small:   fmt.Sprintf("small-%dx%dK", sz.smallFiles, sz.smallSize>>10),
		big:     fmt.Sprintf("big-%dM.bin", sz.bigSize>>20),
		tree:    fmt.Sprintf("tree-%d", sz.treeFiles),
		many:    fmt.Sprintf("many-%d", sz.rssFiles),
		scratch: filepath.Join(src, "scratch"),
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		return d, err
	}
	_ = os.RemoveAll(d.scratch) // left by an interrupted run
	if err := os.Mkdir(d.scratch, 0o755); err != nil {
		return d, err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'l', 'a', 'm', 'f', 'u', 's', 'e'}))
	parts := []struct {
		name string
		make func(string) error
	}{
		{d.small, func(p string) error { return makeFlat(p, sz.smallFiles, sz.smallSize, rng) }},
		{d.big, func(p string) error { return makeRandomFile(p, sz.bigSize, rng) }},
		{d.tree, func(p string) error { return makeTree(p, sz.treeFiles, 100, 100) }},
		{d.many, func(p string) error { return makeTree(p, sz.rssFiles, 1000, 64) }},
	}
	made := false
	for _, part := range parts {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		p := filepath.Join(src, part.name)
		marker := filepath.Join(src, "."+part.name+".done")
		if _, err := os.Stat(marker); err == nil {
			continue
		}
		logf("creating %s", p)
		if err := os.RemoveAll(p); err != nil {
			return d, err
		}
		if err := part.make(p); err != nil {
			return d, fmt.Errorf("creating %s: %v", p, err)
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return d, err
		}
		made = true
	}
	if made {
		syscall.Sync() // no dirty pages left to flush during the runs
	}
	var err error
	if d.smallF, err = listFiles(src, d.small); err != nil {
		return d, err
	}
	if d.manyF, err = listFiles(src, d.many); err != nil {
		return d, err
	}
	if len(d.smallF) != sz.smallFiles || len(d.manyF) != sz.rssFiles {
		return d, fmt.Errorf("data set in %s is incomplete: remove it and run again", src)
	}
	return d, nil
}

// makeFlat makes n files of size random bytes in a new directory.
func makeFlat(dir string, n, size int, rng *rand.Rand) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	buf := make([]byte, size)
	for i := range n {
		fillRandom(buf, rng)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// makeTree makes n files of size bytes (distinct contents) in
// subdirectories of perDir files each.
func makeTree(dir string, n, perDir, size int) error {
	buf := make([]byte, size)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/perDir))
		if i%perDir == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		for j := range buf {
			buf[j] = byte('a' + (i+j)%26)
		}
		binary.BigEndian.PutUint64(buf, uint64(i))
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func makeRandomFile(p string, size int64, rng *rand.Rand) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		fillRandom(buf[:n], rng)
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fillRandom(p []byte, rng *rand.Rand) {
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
}

// listFiles returns the regular files under src/rel, relative to src, in
// lexical order.
func listFiles(src, rel string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(filepath.Join(src, rel), func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type().IsRegular() {
			r, _ := filepath.Rel(src, p)
			out = append(out, r)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}
