package actions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// A quarantine moves the infected file out of the backing directory into
// QuarantineDir under a new unique name, and writes NAME.json beside it.
//
// Same filesystem: renameat2(RENAME_NOREPLACE), atomic. Another
// filesystem (EXDEV): the file is read through a descriptor opened
// beneath the backing root (dirfd, name, O_NOFOLLOW), copied to a new
// file, the copy fsynced, read back and compared by SHA-256, the
// directory fsynced, and only then is the original unlinked. Every step
// checks that the name still leads to the inode that was judged, in the
// state that was judged; when anything fails the original stays.

// record is the NAME.json written beside a quarantined file.
type record struct {
	Path          string `json:"path"`           // relative to the mount root
	Source        string `json:"source"`         // absolute path in the backing directory
	MountPath     string `json:"mount_path"`     // absolute path under the mountpoint
	QuarantinedAs string `json:"quarantined_as"` // absolute path of the quarantined file
	Method        string `json:"method"`         // "rename" or "copy"
	Signature     string `json:"signature"`
	Clamd         string `json:"clamd"`
	Time          string `json:"time"` // RFC 3339
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256"`
	Mode          string `json:"mode"` // permission bits the file had
	OwnerUID      uint32 `json:"owner_uid"`
	OwnerGID      uint32 `json:"owner_gid"`
	OpenerPID     uint32 `json:"opener_pid"`
	OpenerUID     uint32 `json:"opener_uid"`
}

type quarantined struct {
	path      string // of the quarantined file
	recordErr error  // the file is safe, but its record could not be written
}

// maxBase bounds the part of the original name kept in the quarantined
// name, leaving room for the prefix and ".json" within NAME_MAX (255).
const maxBase = 200

// quarantineName is a new unique name: UTC time, 64 random bits, and the
// original base name with control characters replaced.
func quarantineName(name string, now time.Time) string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails on Linux
	base := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, name)
	if len(base) > maxBase {
		base = base[:maxBase]
	}
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:]) + "-" + base
}

// sameState reports whether st is the file state k judged. A zero key
// (unknown state) only requires a regular file.
func sameState(st *unix.Stat_t, k cache.Key) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	if k.Ino == 0 && k.Dev == 0 {
		return true
	}
	return st.Dev == k.Dev && st.Ino == k.Ino && st.Size == k.Size &&
		st.Mtim.Nano() == k.MtimeNs && st.Ctim.Nano() == k.CtimeNs
}

func quarantine(o *Options, d cache.Decision, who cache.Opener, dirfd int, name string, now time.Time) (quarantined, error) {
	if name == "" {
		return quarantined{}, errors.New("the file has no name in the backing directory")
	}
	qfd, err := unix.Open(o.QuarantineDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return quarantined{}, fmt.Errorf("quarantine directory %s: %w", o.QuarantineDir, err)
	}
	defer unix.Close(qfd)

	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return quarantined{}, fmt.Errorf("stat: %w", err)
	}
	if !sameState(&st, d.Key) {
		return quarantined{}, errors.New("the file changed since it was scanned; left in place")
	}

	qname := quarantineName(name, now)
	method := "rename"
	sum, size, err := moveRename(dirfd, name, qfd, qname, &st)
	if errors.Is(err, unix.EXDEV) {
		method = "copy"
		sum, size, err = moveCopy(dirfd, name, qfd, qname, d.Key)
	}
	if err != nil {
		return quarantined{}, err
	}
	// The file is safe in the quarantine from here on.
	_ = unix.Fchmodat(qfd, qname, 0o400, 0)
	q := quarantined{path: filepath.Join(o.QuarantineDir, qname)}
	rec := record{
		Path: who.Path, Source: joinRel(o.Source, who.Path), MountPath: joinRel(o.MountPoint, who.Path),
		QuarantinedAs: q.path, Method: method,
		Signature: d.Verdict.Signature, Clamd: d.Verdict.Backend,
		Time: now.UTC().Format(time.RFC3339), Size: size, SHA256: sum,
		Mode: describe(st.Mode), OwnerUID: st.Uid, OwnerGID: st.Gid,
		OpenerPID: who.Pid, OpenerUID: who.Uid,
	}
	q.recordErr = writeRecord(qfd, qname+".json", rec)
	return q, nil
}

// moveRename renames the file into the quarantine without replacing
// anything, and checks that what moved is the judged inode; if it is not
// (the name was swapped meanwhile), it moves it back.
func moveRename(dirfd int, name string, qfd int, qname string, judged *unix.Stat_t) (string, int64, error) {
	err := unix.Renameat2(dirfd, name, qfd, qname, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE here; qname is new and unique.
		var st unix.Stat_t
		if unix.Fstatat(qfd, qname, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return "", 0, fmt.Errorf("quarantine name %s exists", qname)
		}
		err = unix.Renameat(dirfd, name, qfd, qname)
	}
	if err != nil {
		return "", 0, fmt.Errorf("rename: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(qfd, qname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Dev != judged.Dev || st.Ino != judged.Ino {
		if berr := unix.Renameat2(qfd, qname, dirfd, name, unix.RENAME_NOREPLACE); berr != nil {
			return "", 0, fmt.Errorf("another file took the name during the move; it is in the quarantine as %s (moving it back: %v)", qname, berr)
		}
		return "", 0, errors.New("another file took the name during the move; moved back")
	}
	fd, err := unix.Openat(qfd, qname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		// Moved, but unreadable for the checksum: the record says so.
		return "", st.Size, nil
	}
	f := os.NewFile(uintptr(fd), qname)
	defer f.Close()
	sum, n, err := hashFile(f)
	if err != nil {
		return "", st.Size, nil
	}
	return sum, n, nil
}

// moveCopy copies the file into the quarantine and removes the original
// once the copy is durable and verified.
func moveCopy(dirfd int, name string, qfd int, qname string, k cache.Key) (sum string, size int64, err error) {
	sfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		sfd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "", 0, fmt.Errorf("open: %w", err)
	}
	src := os.NewFile(uintptr(sfd), name)
	defer src.Close()
	var before unix.Stat_t
	if err := unix.Fstat(sfd, &before); err != nil {
		return "", 0, fmt.Errorf("fstat: %w", err)
	}
	if !sameState(&before, k) {
		return "", 0, errors.New("the file changed since it was scanned; left in place")
	}

	dfd, err := unix.Openat(qfd, qname, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("create in the quarantine: %w", err)
	}
	dst := os.NewFile(uintptr(dfd), qname)
	keep := false
	defer func() {
		dst.Close()
		if !keep {
			_ = unix.Unlinkat(qfd, qname, 0)
		}
	}()

	h := sha256.New()
	n, err := io.Copy(dst, io.TeeReader(src, h))
	if err != nil {
		return "", 0, fmt.Errorf("copy: %w", err)
	}
	if err := dst.Sync(); err != nil {
		return "", 0, fmt.Errorf("fsync the copy: %w", err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(sfd, &after); err != nil {
		return "", 0, fmt.Errorf("fstat: %w", err)
	}
	if after.Size != n || after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		return "", 0, errors.New("the file changed during the copy; left in place")
	}
	sum = hex.EncodeToString(h.Sum(nil))

	// Verify: what the quarantine holds reads back as what was read.
	vfd, err := unix.Openat(qfd, qname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, fmt.Errorf("reopen the copy: %w", err)
	}
	vf := os.NewFile(uintptr(vfd), qname)
	vsum, vn, err := hashFile(vf)
	vf.Close()
	if err != nil {
		return "", 0, fmt.Errorf("read back the copy: %w", err)
	}
	if vsum != sum || vn != n {
		return "", 0, fmt.Errorf("the copy reads back differently (sha256 %s, %d bytes; want %s, %d bytes)", vsum, vn, sum, n)
	}
	if err := unix.Fsync(qfd); err != nil {
		return "", 0, fmt.Errorf("fsync the quarantine directory: %w", err)
	}

	// Remove the original, if the name still leads to it.
	var now unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", 0, fmt.Errorf("stat before unlink: %w", err)
	}
	if now.Dev != before.Dev || now.Ino != before.Ino {
		return "", 0, errors.New("another file took the name during the copy; left in place")
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return "", 0, fmt.Errorf("remove the original after copying: %w", err)
	}
	keep = true
	return sum, n, nil
}

func hashFile(f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// writeRecord writes rec as name in the quarantine directory, durably.
func writeRecord(qfd int, name string, rec record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	fd, err := unix.Openat(qfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	_, werr := f.Write(append(data, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		_ = unix.Unlinkat(qfd, name, 0)
		return werr
	}
	return unix.Fsync(qfd)
}
