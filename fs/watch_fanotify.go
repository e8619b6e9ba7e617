package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Reading the backing filesystem's changes from fanotify (see watch.go).

// fanotifyMask is what the watcher asks to hear of: names created,
// removed and renamed, attributes (mode, owner, times, ACLs and other
// extended attributes, link count) and contents changed, on files and
// directories.
const fanotifyMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_ATTRIB | unix.FAN_MODIFY | unix.FAN_CLOSE_WRITE |
	unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

// atHandleFID is AT_HANDLE_FID (Linux 6.5): a file handle that need not
// be decodable, as fanotify reports it, also from filesystems that
// cannot open by handle.
const atHandleFID = 0x200

// fanotifyInit opens the group: notification only (no permission
// events, nothing blocks), reporting the directory's file handle and the
// name, and the child's handle too (of the target of a removal or rename
// too where the kernel can, 5.17 and later). The descriptor is blocking,
// so that os.NewFile leaves it out of Go's poller: there, every event on
// the whole filesystem (a log line written elsewhere on it) woke the
// runtime's poller thread, edge-triggered, although the reader was not
// waiting for it but pausing (readPause): 4 to 6 wake-ups per first open
// of a file, with the bench's clamd logging each scan on the same
// filesystem. The reader waits for events in poll(2) instead (reader).
func fanotifyInit() (int, error) {
	const base = unix.FAN_CLASS_NOTIF | unix.FAN_CLOEXEC | unix.FAN_REPORT_DFID_NAME | unix.FAN_REPORT_FID
	fd, err := unix.FanotifyInit(base|unix.FAN_REPORT_TARGET_FID, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_LARGEFILE)
	if err == unix.EINVAL {
		fd, err = unix.FanotifyInit(base, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_LARGEFILE)
	}
	return fd, err
}

// startFanotify opens the group and marks the source's filesystem, or
// says why it cannot.
func (w *watcher) startFanotify() error {
	fd, err := fanotifyInit()
	if err != nil {
		switch err {
		case unix.EPERM:
			return fmt.Errorf("fanotify_init: %v (needs root: CAP_SYS_ADMIN)", err)
		case unix.EINVAL:
			return fmt.Errorf("fanotify_init: %v (the kernel cannot report names: Linux 5.9 or later needed)", err)
		}
		return fmt.Errorf("fanotify_init: %v", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("eventfd: %v", err)
	}
	w.fan, w.stopFD = os.NewFile(uintptr(fd), "fanotify"), stop
	w.fanMask = fanotifyMask
	// A handle for fanotify's purposes, where the kernel knows the flag.
	w.handleFlags = atHandleFID
	if _, _, err := unix.NameToHandleAt(w.fsys.root, "", unix.AT_EMPTY_PATH|atHandleFID); err == unix.EINVAL {
		w.handleFlags = 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(w.fsys.root, &st); err != nil {
		w.fan.Close()
		unix.Close(w.stopFD)
		w.fan = nil
		return err
	}
	d := w.filesystem(w.fsys.root, &st, w.fsys.rootN)
	if !d.ok {
		w.fan.Close()
		unix.Close(w.stopFD)
		w.fan = nil
		return errors.New(d.why)
	}
	w.register(w.fsys.rootN, w.fsys.root, "")
	return nil
}

// mark marks the filesystem of the directory fd (FAN_MARK_FILESYSTEM).
func (w *watcher) mark(fd int) *watchedFS {
	d := &watchedFS{fd: -1}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		d.why = "statfs: " + err.Error()
		return d
	}
	binary.NativeEndian.PutUint32(d.fsid[0:4], uint32(sfs.Fsid.Val[0]))
	binary.NativeEndian.PutUint32(d.fsid[4:8], uint32(sfs.Fsid.Val[1]))
	err := unix.FanotifyMark(int(w.fan.Fd()), unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, w.fanMask, fd, ".")
	switch err {
	case nil:
	case unix.ENODEV, unix.EOPNOTSUPP, unix.EXDEV:
		d.why = fmt.Sprintf("fanotify_mark: %v (the filesystem cannot report file handles, or not for the whole filesystem)", err)
		return d
	case unix.EPERM:
		d.why = fmt.Sprintf("fanotify_mark: %v (needs CAP_SYS_ADMIN)", err)
		return d
	default:
		d.why = "fanotify_mark: " + err.Error()
		return d
	}
	// A descriptor on the filesystem, for open_by_handle_at (which
	// refuses O_PATH ones).
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		d.why = "open: " + err.Error()
		unix.FanotifyMark(int(w.fan.Fd()), unix.FAN_MARK_REMOVE|unix.FAN_MARK_FILESYSTEM, w.fanMask, fd, ".")
		return d
	}
	d.ok, d.fd = true, dup
	return d
}

// Layout of what read(2) returns from a fanotify group reporting fids:
// struct fanotify_event_metadata, then info records, each a struct
// fanotify_event_info_header and, for the fid types, the fsid, a struct
// file_handle, and for DFID_NAME the name, NUL-terminated.
const (
	fanMetaSize     = 24 // event_len u32, vers u8, reserved u8, metadata_len u16, mask u64, fd s32, pid s32
	fanInfoFidSize  = 4 + 8 + 8
	fanInfoFID      = 1 // FAN_EVENT_INFO_TYPE_FID
	fanInfoDFIDName = 2 // FAN_EVENT_INFO_TYPE_DFID_NAME
	fanInfoDFID     = 3 // FAN_EVENT_INFO_TYPE_DFID
)

// readPause is how long the reader lets events gather after a read that
// did not fill its buffer: what a change in the backing directory waits
// at most before its invalidation is queued.
const readPause = 2 * time.Millisecond

// reader drains the group, filtering and queueing, until stop. It waits
// for events in poll(2) on its own thread, not in Go's poller (see
// fanotifyInit), and for stop's eventfd beside them.
func (w *watcher) reader() {
	defer w.wg.Done()
	buf := make([]byte, 256<<10)
	fds := []unix.PollFd{{Fd: int32(w.fan.Fd()), Events: unix.POLLIN}, {Fd: int32(w.stopFD), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			select {
			case <-w.done:
				return
			default:
			}
			if err != unix.EINTR {
				w.log.Warn("waiting for fanotify events", "err", err)
				time.Sleep(readPause)
			}
			continue
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(int(fds[0].Fd), buf)
		if err != nil {
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			// Events may have been lost.
			w.log.Warn("reading fanotify events", "err", err)
			w.queueAll("reading fanotify events failed: " + err.Error())
			time.Sleep(readPause)
			continue
		}
		if w.parse(buf[:n]) {
			w.signal()
		}
		if n < len(buf)/2 {
			// Let events gather for a moment: a whole filesystem's
			// worth of them, mostly elsewhere, in far fewer reads,
			// and repeats (a file written again and again) merged by
			// the kernel.
			time.Sleep(readPause)
		}
	}
}

// parse queues the work of the events in b and reports whether there is
// any.
func (w *watcher) parse(b []byte) bool {
	queued := false
	for len(b) >= fanMetaSize {
		evlen := int(binary.NativeEndian.Uint32(b[0:4]))
		if evlen < fanMetaSize || evlen > len(b) {
			break
		}
		ev := b[:evlen]
		b = b[evlen:]
		mask := binary.NativeEndian.Uint64(ev[8:16])
		if mask&unix.FAN_Q_OVERFLOW != 0 {
			w.queueAll("the kernel's fanotify queue overflowed")
			return true
		}
		if int32(binary.NativeEndian.Uint32(ev[20:24])) == w.pid {
			continue // clamfuse's own system call: the kernel knows
		}
		metaLen := int(binary.NativeEndian.Uint16(ev[6:8]))
		if metaLen < fanMetaSize || metaLen > len(ev) {
			continue
		}
		if w.event(mask, ev[metaLen:]) {
			queued = true
		}
	}
	return queued
}

// event queues the work of one event, given its info records, and
// reports whether there was any.
func (w *watcher) event(mask uint64, info []byte) bool {
	var (
		dir       *Node
		name      string
		child     []byte // the child's fsid and handle, from an FID record
		childType uint32
		haveDir   bool
	)
	for len(info) >= 4 {
		typ := info[0]
		l := int(binary.NativeEndian.Uint16(info[2:4]))
		if l < 4 || l > len(info) {
			return false
		}
		rec := info[:l]
		info = info[l:]
		if typ != fanInfoFID && typ != fanInfoDFIDName && typ != fanInfoDFID {
			continue
		}
		if len(rec) < fanInfoFidSize {
			return false
		}
		fsid := rec[4:12]
		hlen := int(binary.NativeEndian.Uint32(rec[12:16]))
		htype := binary.NativeEndian.Uint32(rec[16:20])
		if fanInfoFidSize+hlen > len(rec) {
			return false
		}
		handle := rec[fanInfoFidSize : fanInfoFidSize+hlen]
		if typ == fanInfoFID {
			child, childType = append(append([]byte(nil), fsid...), handle...), htype
			continue
		}
		haveDir = true
		var key [12 + 128]byte
		k := key[:0]
		k = append(k, fsid...)
		k = append(k, byte(htype), byte(htype>>8), byte(htype>>16), byte(htype>>24))
		k = append(k, handle...)
		if dir = w.dirByHandle(k); dir == nil {
			// Not a directory the kernel knows: nothing cached.
			return false
		}
		if typ == fanInfoDFIDName {
			nb := rec[fanInfoFidSize+hlen:]
			for i, c := range nb {
				if c == 0 {
					nb = nb[:i]
					break
				}
			}
			name = string(nb)
		}
	}
	if !haveDir || dir == nil {
		return false
	}
	if name == "" || name == "." {
		// The directory itself: its attributes, or it was removed or
		// moved (its old parent's events name it).
		w.queueAttr(dir)
		return true
	}
	if mask&(unix.FAN_CREATE|unix.FAN_DELETE|unix.FAN_MOVED_FROM|unix.FAN_MOVED_TO) != 0 {
		w.queueEntry(dir, name)
		if mask&(unix.FAN_DELETE|unix.FAN_MOVED_FROM) != 0 && child != nil {
			// The name no longer leads to what it named: find that by
			// handle, for its link count and change time.
			fsid, handle := child[:8], child[8:]
			if mask&unix.FAN_ONDIR != 0 {
				if c := w.dirByHandle([]byte(handleKey(fsid, childType, handle))); c != nil {
					w.queueAttr(c)
				}
			} else if dev, ok := w.devOf(fsid); ok {
				w.queueFID(childFID{dev, handleKey(nil, childType, handle)})
			}
		}
		return true
	}
	w.queueChild(dir, name)
	return true
}

// devOf returns the watched filesystem with this fsid.
func (w *watcher) devOf(fsid []byte) (uint64, bool) {
	for dev, d := range *w.devs.Load() {
		if d.ok && string(d.fsid[:]) == string(fsid) {
			return dev, true
		}
	}
	return 0, false
}
