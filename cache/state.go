package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Verdicts across restarts.
//
// A package upgrade or a reboot would otherwise have every file of a big
// share scanned again at its first open. SaveState writes the verdicts
// worth keeping to a state file, ReadState reads one back, and Restore
// puts its verdicts in the cache, where each counts only while the file
// is in the state it judged: the key is looked up as for any verdict, so
// a file changed while clamfuse was down simply does not match (the check
// is lazy: no walk of the tree at start), and an entry nobody asks for
// again goes as any other, least recently used first or at its expiry.
//
// What is kept: clean and infected verdicts (never errors) made under the
// signature database version in force, at the Gate's generation in force
// (no invalidation since), of files not written through the mount since
// (their write generation is the current one), of files on the backing
// root's own filesystem (see RootID), and of files over verify_max_size:
// the digest that verifies the contents of smaller files is keyed by a
// seed that never leaves the process (verify.go), so it cannot be checked
// after a restart, and those files are cheap to scan again. Each keeps
// what was left of its cache.ttl.
//
// On load, a file that is corrupt (checksum), of another format version,
// made for another filesystem, not a regular file owned by clamfuse's
// user and readable by it alone, or unreadable, is ignored whole (the
// caller logs it at WARN): it is never trusted in part. A file made under
// another signature version is dropped whole when the version is known
// (at start, or once clamd first answers); an entry older than its TTL,
// of a file written through the mount since start, or of a size now
// verified, is dropped alone. Restored verdicts are keyed at write
// generation 0 (write generations start at 0 in every process, and a
// file written through the mount since start has moved past it, so its
// restored verdict never matches) and generation 0 (they are dropped
// when the Gate was invalidated before they could be restored).
//
// The file is written atomically: a new file (0600) in the same
// directory, synced, renamed over the old one, and the directory synced.
//
// Format (version 1): the magic "clamfuse-state\n", then uvarint version,
// then the body, then the SHA-256 digest of everything before it. The
// body: varint save time (Unix ns); string database version; uvarints
// root device, root inode, root fsid; uvarint count of strings, then the
// strings (string 0 is "" and is not written); uvarint count of entries,
// each: uvarint inode, varints size, mtime ns, ctime ns, expiry (Unix ns;
// 0 for never), uvarint flags (1: infected), uvarints string ids of the
// signature, the backend and the SHA-256. A string is a uvarint length
// and its bytes.

const (
	stateMagic   = "clamfuse-state\n"
	stateVersion = 1
	// maxStateSize bounds the file read: 100 000 entries take about 5 MB.
	maxStateSize = 256 << 20
)

// RootID identifies the filesystem of the backing root across restarts.
// The device number of a filesystem may change from one boot to the next
// (loop devices, btrfs subvolumes, NFS, disks found in another order), so
// the filesystem is known by its statfs fsid, which for most filesystems
// (ext4, btrfs, NFS...) derives from its UUID, and the root's inode; the
// device number of the verdicts restored is then the current one. A
// filesystem without an fsid (0) must also keep its device number. Only
// the verdicts of files on the root's own filesystem are kept: those on
// filesystems mounted below the backing root are scanned again after a
// restart.
type RootID struct {
	Dev, Ino uint64 // of the backing root
	Fsid     uint64 // its filesystem's statfs f_fsid, 0 for none
}

// RootOf identifies the filesystem of the directory open as fd.
func RootOf(fd int) (RootID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return RootID{}, err
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return RootID{}, err
	}
	fsid := uint64(uint32(fs.Fsid.Val[0]))<<32 | uint64(uint32(fs.Fsid.Val[1]))
	return RootID{Dev: st.Dev, Ino: st.Ino, Fsid: fsid}, nil
}

// same reports whether r and now name one filesystem (see RootID).
func (r RootID) same(now RootID) bool {
	if r.Ino != now.Ino || r.Fsid != now.Fsid {
		return false
	}
	return r.Fsid != 0 || r.Dev == now.Dev
}

// State is a state file read back.
type State struct {
	Database string    // the signature database version its verdicts were made under
	Saved    time.Time // when it was written
	Entries  []Entry   // most recently used first; each Key without DB, with the device of now's root
}

// ErrStateNotTrusted wraps the reasons ReadState ignores a state file for.
var ErrStateNotTrusted = errors.New("state file not trusted")

// restore is a state file waiting to be restored (see Restore).
type restore struct {
	mu      sync.Mutex // guards pending and saved; a leaf but for LRU.mu
	pending *State
	saved   savedMark // what the last save wrote

	saves, failed atomic.Uint64 // state files written, and failures to
}

// savedMark is what the cache was like at the last save: a save with
// nothing changed since is skipped.
type savedMark struct {
	ok           bool
	mods, writes uint64
	db           string
	gen          uint64
	path         string
	root         RootID
}

// SaveState writes the verdicts worth keeping (see above) to path for
// the backing root root, and returns how many. It writes nothing (wrote
// is false) while no signature version is known or a state file read at
// start waits for one (the file there is kept as it is), and when
// nothing changed since the last save to the same path.
func (g *Gate) SaveState(path string, root RootID) (n int, wrote bool, err error) {
	g.state.mu.Lock()
	defer g.state.mu.Unlock()
	db := g.Database()
	if db == "" || g.state.pending != nil {
		return 0, false, nil
	}
	gen := g.fresh.gen.Load()
	entries, mods := g.lru.Entries()
	mark := savedMark{ok: true, mods: mods, writes: g.writes.total.Load(), db: db, gen: gen, path: path, root: root}
	if mark == g.state.saved {
		return 0, false, nil
	}
	kept := entries[:0]
	for _, e := range entries {
		k := e.Key
		if k.DB != db || k.Gen != gen || k.Dev != root.Dev || !sameWrites(k.Writes, g.writes.of(k.Dev, k.Ino)) || g.verifies(k.Size) {
			continue
		}
		kept = append(kept, e)
	}
	data := encodeState(db, root, time.Now(), kept)
	if err := writeFileAtomic(path, data); err != nil {
		g.state.failed.Add(1)
		return 0, false, err
	}
	g.state.saves.Add(1)
	g.state.saved = mark
	return len(kept), true, nil
}

// Restore puts the verdicts of s in the cache, now if the signature
// database version is known, else once SetDatabase first says it. It
// logs what it restored and dropped at INFO.
func (g *Gate) Restore(s *State) {
	g.state.mu.Lock()
	defer g.state.mu.Unlock()
	if g.Database() == "" {
		g.state.pending = s
		g.log.Info("state file read; its verdicts are restored once clamd's signature version is known",
			"entries", len(s.Entries), "database", s.Database)
		return
	}
	g.restore(s)
}

// restorePending restores a state file that waited for the database
// version; SetDatabase calls it.
func (g *Gate) restorePending() {
	g.state.mu.Lock()
	defer g.state.mu.Unlock()
	if s := g.state.pending; s != nil && g.Database() != "" {
		g.state.pending = nil
		g.restore(s)
	}
}

// restore puts the verdicts of s in the cache; g.state.mu is held.
func (g *Gate) restore(s *State) {
	db := g.Database()
	switch {
	case s.Database != db:
		g.log.Info("state file made under another signature database version; its verdicts are dropped",
			"entries", len(s.Entries), "made_under", s.Database, "database", db)
		return
	case g.fresh.gen.Load() != 0:
		g.log.Info("cached verdicts were invalidated since start; the state file's verdicts are dropped", "entries", len(s.Entries))
		return
	}
	var expired, written, verified, restored int
	// Least recently used first, so that the cache keeps the most recent
	// when it cannot hold them all.
	for i := len(s.Entries) - 1; i >= 0; i-- {
		e := s.Entries[i]
		k := e.Key
		k.DB, k.Gen, k.Writes = db, 0, 0
		switch {
		case e.TTL < 0:
			expired++
			continue
		case !sameWrites(0, g.writes.of(k.Dev, k.Ino)):
			written++
			continue
		case g.verifies(k.Size):
			verified++
			continue
		}
		ttl := e.TTL
		if ttl == 0 || (g.opts.TTL > 0 && ttl > g.opts.TTL) {
			ttl = g.opts.TTL // a clock set back, or a verdict that never expired
		}
		g.lru.putFor(k, e.Verdict, 0, ttl)
		restored++
	}
	g.restored.Add(uint64(restored))
	g.log.Info("verdicts restored from the state file", "restored", restored, "expired", expired,
		"written_since", written, "verified_size", verified, "saved", s.Saved.Format(time.RFC3339), "database", db)
}

// ReadState reads the state file at path, made for the backing root
// root. The entries' TTL is what is left of it now (negative when
// expired). An error wrapping os.ErrNotExist means there is none yet;
// any other means it is ignored whole.
func ReadState(path string, root RootID) (*State, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrStateNotTrusted, path)
	case st.Uid != uint32(os.Geteuid()):
		return nil, fmt.Errorf("%w: %s is owned by uid %d, not %d", ErrStateNotTrusted, path, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return nil, fmt.Errorf("%w: %s has mode %#o: others may read or change it", ErrStateNotTrusted, path, st.Mode&0o7777)
	case st.Size > maxStateSize:
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrStateNotTrusted, path, st.Size, maxStateSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	s, saved, err := decodeState(data, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStateNotTrusted, path, err)
	}
	if !saved.same(root) {
		return nil, fmt.Errorf("%w: %s was made for another filesystem (root %+v, now %+v)", ErrStateNotTrusted, path, saved, root)
	}
	for i := range s.Entries {
		s.Entries[i].Key.Dev = root.Dev
	}
	return s, nil
}

// encodeState is the file's bytes for entries (all on root.Dev).
func encodeState(db string, root RootID, now time.Time, entries []Entry) []byte {
	ids := map[string]uint64{"": 0}
	var strs []string
	id := func(s string) uint64 {
		if i, ok := ids[s]; ok {
			return i
		}
		strs = append(strs, s)
		ids[s] = uint64(len(strs))
		return ids[s]
	}
	type rec struct {
		e             *Entry
		sig, be, hash uint64
	}
	recs := make([]rec, len(entries))
	for i := range entries {
		v := &entries[i].Verdict
		recs[i] = rec{&entries[i], id(v.Signature), id(v.Backend), id(v.SHA256)}
	}
	b := make([]byte, 0, 64+len(entries)*40)
	b = append(b, stateMagic...)
	b = binary.AppendUvarint(b, stateVersion)
	b = binary.AppendVarint(b, now.UnixNano())
	b = appendString(b, db)
	b = binary.AppendUvarint(b, root.Dev)
	b = binary.AppendUvarint(b, root.Ino)
	b = binary.AppendUvarint(b, root.Fsid)
	b = binary.AppendUvarint(b, uint64(len(strs)))
	for _, s := range strs {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		k := &r.e.Key
		var exp int64
		if r.e.TTL > 0 {
			exp = now.Add(r.e.TTL).UnixNano()
		}
		var flags uint64
		if r.e.Verdict.Infected {
			flags |= 1
		}
		b = binary.AppendUvarint(b, k.Ino)
		b = binary.AppendVarint(b, k.Size)
		b = binary.AppendVarint(b, k.MtimeNs)
		b = binary.AppendVarint(b, k.CtimeNs)
		b = binary.AppendVarint(b, exp)
		b = binary.AppendUvarint(b, flags)
		b = binary.AppendUvarint(b, r.sig)
		b = binary.AppendUvarint(b, r.be)
		b = binary.AppendUvarint(b, r.hash)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeState parses data, a whole state file, at now; it returns the
// state and the root it was made for.
func decodeState(data []byte, now time.Time) (*State, RootID, error) {
	if len(data) < len(stateMagic)+sha256.Size || !bytes.HasPrefix(data, []byte(stateMagic)) {
		return nil, RootID{}, errors.New("not a clamfuse state file")
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, RootID{}, errors.New("checksum mismatch: corrupt or truncated")
	}
	r := stateReader{b: body[len(stateMagic):]}
	if v := r.uvarint(); r.err == nil && v != stateVersion {
		return nil, RootID{}, fmt.Errorf("format version %d, not %d", v, stateVersion)
	}
	s := &State{}
	s.Saved = time.Unix(0, r.varint())
	s.Database = r.string()
	var root RootID
	root.Dev, root.Ino, root.Fsid = r.uvarint(), r.uvarint(), r.uvarint()
	n := r.count(1)
	strs := make([]string, 1, n+1)
	for range n {
		strs = append(strs, r.string())
	}
	str := func(id uint64) string {
		if id >= uint64(len(strs)) {
			r.fail("string id out of range")
			return ""
		}
		return strs[id]
	}
	n = r.count(9)
	s.Entries = make([]Entry, 0, n)
	for range n {
		var e Entry
		e.Key.Ino = r.uvarint()
		e.Key.Size, e.Key.MtimeNs, e.Key.CtimeNs = r.varint(), r.varint(), r.varint()
		if exp := r.varint(); exp != 0 {
			e.TTL = time.Unix(0, exp).Sub(now)
			if e.TTL == 0 {
				e.TTL = -1 // expires now: expired
			}
		}
		flags := r.uvarint()
		e.Verdict = Verdict{Infected: flags&1 != 0, Signature: str(r.uvarint()), Backend: str(r.uvarint()), SHA256: str(r.uvarint())}
		if r.err != nil {
			break
		}
		if e.Key.Size <= 0 || flags > 1 || e.Verdict.Infected != (e.Verdict.Signature != "") {
			r.fail("an entry that no scan can make")
			break
		}
		s.Entries = append(s.Entries, e)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, RootID{}, r.err
	}
	return s, root, nil
}

// stateReader reads a state file's body; the first error sticks.
type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New(msg)
	}
	r.b = nil
}

func (r *stateReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated or malformed number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *stateReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated or malformed number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *stateReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("string past the end")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a count of items of at least min bytes each, bounded by
// the bytes left.
func (r *stateReader) count(min int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/min) {
		r.fail("count past the end")
		return 0
	}
	return int(n)
}

// writeFileAtomic replaces path with data: a new file, mode 0600, in the
// same directory (made, mode 0700, if missing), synced, renamed over
// path; then the directory is synced.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600) // CreateTemp's mode, whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
