package fusefs

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// memFS is a small in-memory file system for the mounted tests: a root
// directory of files and directories, every READ and WRITE counted.
type memFS struct {
	root  *memDir
	count counter

	mu    sync.Mutex
	inode uint64 // last inode number given
}

func newMemFS() *memFS {
	f := &memFS{inode: 1}
	f.root = &memDir{fs: f, inode: 1, entries: map[string]Node{}}
	return f
}

func (f *memFS) Root() (Node, error) { return f.root, nil }

func (f *memFS) nextInode() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inode++
	return f.inode
}

// file adds a file named name with data to dir.
func (d *memDir) file(name string, data []byte) *memFile {
	n := &memFile{fs: d.fs, inode: d.fs.nextInode(), data: data}
	d.mu.Lock()
	d.entries[name] = n
	d.mu.Unlock()
	return n
}

// dir adds a directory named name to dir.
func (d *memDir) dir(name string) *memDir {
	n := &memDir{fs: d.fs, inode: d.fs.nextInode(), entries: map[string]Node{}}
	d.mu.Lock()
	d.entries[name] = n
	d.mu.Unlock()
	return n
}

type memDir struct {
	fs    *memFS
	inode uint64

	mu      sync.Mutex // guards entries
	entries map[string]Node

	lookups, forgets atomic.Int32
}

var (
	_ NodeStringLookuper = (*memDir)(nil)
	_ HandleReadDirAller = (*memDir)(nil)
	_ NodeForgetter      = (*memDir)(nil)
)

func (d *memDir) Forget() { d.forgets.Add(1) }

func (d *memDir) Attr(ctx context.Context, a *fuse.Attr) error {
	a.Inode = d.inode
	a.Mode = os.ModeDir | 0o755
	a.Valid = 0
	return nil
}

func (d *memDir) Lookup(ctx context.Context, name string) (Node, error) {
	d.lookups.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.entries[name]; ok {
		return n, nil
	}
	return nil, syscall.ENOENT
}

func (d *memDir) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []fuse.Dirent
	for name, n := range d.entries {
		switch n := n.(type) {
		case *memFile:
			out = append(out, fuse.Dirent{Inode: n.inode, Type: fuse.DT_File, Name: name})
		case *memDir:
			out = append(out, fuse.Dirent{Inode: n.inode, Type: fuse.DT_Dir, Name: name})
		}
	}
	return out, nil
}

// memFile is a file; it is its own handle.
type memFile struct {
	fs    *memFS
	inode uint64

	mu   sync.Mutex // guards data
	data []byte

	keepCache bool // opens keep the kernel's page cache
	forgets   atomic.Int32
}

var (
	_ HandleReader  = (*memFile)(nil)
	_ HandleWriter  = (*memFile)(nil)
	_ NodeSetattrer = (*memFile)(nil)
	_ NodeForgetter = (*memFile)(nil)
	_ NodeOpener    = (*memFile)(nil)
)

func (f *memFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (Handle, error) {
	if f.keepCache {
		resp.Flags |= fuse.OpenKeepCache
	}
	return f, nil
}

func (f *memFile) Forget() { f.forgets.Add(1) }

func (f *memFile) Attr(ctx context.Context, a *fuse.Attr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a.Inode = f.inode
	a.Mode = 0o644
	a.Size = uint64(len(f.data))
	a.Valid = 0
	return nil
}

func (f *memFile) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	f.fs.count.add("read", req.Size)
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Offset < int64(len(f.data)) {
		end := min(req.Offset+int64(req.Size), int64(len(f.data)))
		resp.Data = append(resp.Data[:0], f.data[req.Offset:end]...)
	}
	return nil
}

func (f *memFile) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	f.fs.count.add("write", len(req.Data))
	f.mu.Lock()
	defer f.mu.Unlock()
	end := int(req.Offset) + len(req.Data)
	if end > len(f.data) {
		f.data = append(f.data, make([]byte, end-len(f.data))...)
	}
	copy(f.data[req.Offset:], req.Data)
	resp.Size = len(req.Data)
	return nil
}

func (f *memFile) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if req.Valid.Size() {
		f.mu.Lock()
		if int(req.Size) <= len(f.data) {
			f.data = f.data[:req.Size]
		} else {
			f.data = append(f.data, make([]byte, int(req.Size)-len(f.data))...)
		}
		f.mu.Unlock()
	}
	return nil
}

var _ NodeRenamer = (*memDir)(nil)

// memDirOf returns the memDir of a directory node of the test file
// systems.
func memDirOf(n Node) *memDir {
	switch d := n.(type) {
	case *memDir:
		return d
	case *plusDir:
		return d.memDir
	case *flagDir:
		return d.memDir
	}
	return nil
}

// Rename moves old to new, honouring req.Flags (NOREPLACE and EXCHANGE;
// memDir itself does not say so, flagDir does).
func (d *memDir) Rename(ctx context.Context, req *fuse.RenameRequest, newDir Node) error {
	nd := memDirOf(newDir)
	if nd == nil {
		return syscall.EXDEV
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if nd != d {
		nd.mu.Lock()
		defer nd.mu.Unlock()
	}
	n, ok := d.entries[req.OldName]
	if !ok {
		return syscall.ENOENT
	}
	other, exists := nd.entries[req.NewName]
	switch {
	case req.Flags&fuse.RenameNoReplace != 0 && exists:
		return syscall.EEXIST
	case req.Flags&fuse.RenameExchange != 0:
		if !exists {
			return syscall.ENOENT
		}
		d.entries[req.OldName], nd.entries[req.NewName] = other, n
	default:
		delete(d.entries, req.OldName)
		nd.entries[req.NewName] = n
	}
	return nil
}

// flagDir is a memDir that says its Rename honours renameat2's flags
// RENAME_NOREPLACE and RENAME_EXCHANGE.
type flagDir struct{ *memDir }

var _ NodeRenameFlagger = (*flagDir)(nil)

func (d *flagDir) RenameFlags() fuse.RenameFlags {
	return fuse.RenameNoReplace | fuse.RenameExchange
}

var _ NodeLinker = (*memDir)(nil)

// Link gives the file old the name req.NewName too.
func (d *memDir) Link(ctx context.Context, req *fuse.LinkRequest, old Node) (Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.entries[req.NewName]; ok {
		return nil, syscall.EEXIST
	}
	d.entries[req.NewName] = old
	return old, nil
}
