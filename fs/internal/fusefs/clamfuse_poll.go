package fusefs

import (
	"context"
	"syscall"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// pollUnsupported answers a FUSE_POLL with ENOSYS, before anything else
// is looked at (the request loop calls it for every POLL). Upstream answers every
// POLL "ready" from its fallback, or ESTALE when it cannot find the
// handle or node; the kernel then asks again at every poll, select or
// epoll_ctl of every file of the mount: Go registers each file it opens
// with epoll, so each os.Open made a POLL round trip, and any error
// reply became EPOLLERR, which Go's netpoller turns into "not pollable"
// at the file's next read. At ENOSYS the kernel stops asking and answers
// every later poll itself as ready (DEFAULT_POLLMASK), as for a file of
// a local filesystem. Nothing in clamfuse waits for readiness. The
// Config's WithContext still sees the request.
func (s *Server) pollUnsupported(p *fuse.PollRequest) {
	if s.context != nil {
		s.context(context.Background(), p)
	}
	p.RespondError(syscall.ENOSYS)
}
