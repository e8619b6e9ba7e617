package fs

import (
	"errors"
	"syscall"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// errno maps an error to the errno the caller sees. bazil turns errors it
// does not know into EIO, so every error leaving this package passes here.
func errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == 0 {
			return nil
		}
		return fuse.Errno(e)
	}
	return fuse.Errno(syscall.EIO)
}

// denied is the errno of an open the gate refused: EACCES for every
// reason (infected, no verdict, oversize, unstable), EINTR when the opener
// was interrupted while waiting.
func denied(d cache.Decision) error {
	if d.Reason == cache.ReasonCancelled {
		return fuse.Errno(syscall.EINTR)
	}
	return fuse.Errno(syscall.EACCES)
}
